// RQ-KMeans training and assignment time and peak memory on clustered synthetic embeddings.
//
//   choir_bench_groups [--n 1000000] [--dim 384] [--levels 3] [--k 256] [--threads 2]
//
// The points are L2-normalised draws around 512 random unit centres (spread 0.5), like
// sentence embeddings of profiles from a few hundred personas. Prints one JSON object: wall
// seconds of training and of assigning all n points, points/s of assignment, the final mean
// squared reconstruction error, peak RSS (the data alone is n * dim * 4 bytes) and the CPU.
#include <cblas.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "core/sysinfo.h"
#include "data/groups/rq_kmeans.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"

DEFINE_int64(n, 1000000, "points");
DEFINE_int32(dim, 384, "dimension");
DEFINE_int32(levels, 3, "RQ levels");
DEFINE_int32(k, 256, "centroids per level");
DEFINE_int32(threads, 2, "OpenBLAS threads");
DEFINE_uint64(seed, 1, "seed of the data and of the training");

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  openblas_set_num_threads(FLAGS_threads);
  const int64_t n = FLAGS_n;
  const int d = FLAGS_dim;
  std::mt19937_64 rng(FLAGS_seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  constexpr int kCentres = 512;
  std::vector<float> centres(static_cast<size_t>(kCentres) * d);
  auto normalise = [d](float* v) {
    double s = 0;
    for (int j = 0; j < d; ++j) s += double(v[j]) * v[j];
    const float inv = static_cast<float>(1.0 / std::sqrt(std::max(s, 1e-30)));
    for (int j = 0; j < d; ++j) v[j] *= inv;
  };
  for (int c = 0; c < kCentres; ++c) {
    for (int j = 0; j < d; ++j) centres[size_t(c) * d + j] = normal(rng);
    normalise(&centres[size_t(c) * d]);
  }
  std::vector<float> x(static_cast<size_t>(n) * d);
  const float spread = 0.5f / std::sqrt(static_cast<float>(d));
  for (int64_t i = 0; i < n; ++i) {
    const float* c = &centres[size_t(rng() % kCentres) * d];
    float* v = &x[size_t(i) * d];
    for (int j = 0; j < d; ++j) v[j] = c[j] + spread * normal(rng);
    normalise(v);
  }
  choir::groups::RqKMeansOptions options;
  options.levels = FLAGS_levels;
  options.k = FLAGS_k;
  options.seed = FLAGS_seed;
  auto t0 = std::chrono::steady_clock::now();
  absl::StatusOr<choir::groups::Codebooks> books = choir::groups::TrainRqKMeans(x.data(), n, d, options);
  auto t1 = std::chrono::steady_clock::now();
  if (!books.ok()) {
    std::fprintf(stderr, "%s\n", books.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::vector<int32_t>> codes = choir::groups::AssignRqCodes(*books, x.data(), n, d);
  auto t2 = std::chrono::steady_clock::now();
  if (!codes.ok()) {
    std::fprintf(stderr, "%s\n", codes.status().ToString().c_str());
    return 1;
  }
  const std::vector<double> errors = choir::groups::ReconstructionErrors(*books, x.data(), n, *codes);
  const double train_s = std::chrono::duration<double>(t1 - t0).count();
  const double assign_s = std::chrono::duration<double>(t2 - t1).count();
  nlohmann::ordered_json j;
  j["bench"] = "rq_kmeans";
  j["n"] = n;
  j["dim"] = d;
  j["levels"] = FLAGS_levels;
  j["k"] = FLAGS_k;
  j["threads"] = FLAGS_threads;
  j["train_s"] = train_s;
  j["assign_s"] = assign_s;
  j["assign_points_per_s"] = n / assign_s;
  j["reconstruction_mse"] = errors.empty() ? 0.0 : errors.back();
  j["data_mb"] = static_cast<double>(n) * d * 4 / (1 << 20);
  j["peak_rss_mb"] = choir::PeakRssMb();
  j["cpu"] = choir::CpuModel();
  std::printf("%s\n", j.dump().c_str());
  return 0;
}
