#include "data/groups/rq_kmeans.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "data/groups/npy.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace choir::groups {
namespace {

// Rows per distance GEMM: bounds the [block, k] scratch at 4096 * k floats.
constexpr int64_t kBlockRows = 4096;
// Rows per chunk when assigning or measuring: bounds the residual copy at chunk * d floats.
constexpr int64_t kChunkRows = 65536;
constexpr char kManifestName[] = "codebooks.json";
constexpr char kManifestFormat[] = "choir-rq-codebooks";

// A uniform double in [0, 1) from 53 random bits (the same on every platform, unlike
// std::uniform_real_distribution).
double Uniform(std::mt19937_64& rng) { return static_cast<double>(rng() >> 11) * 0x1.0p-53; }

std::vector<float> RowNorms(const float* x, int64_t n, int d) {
  std::vector<float> norms(n);
  for (int64_t i = 0; i < n; ++i) {
    const float* r = x + i * d;
    double s = 0;
    for (int j = 0; j < d; ++j) s += static_cast<double>(r[j]) * r[j];
    norms[i] = static_cast<float>(s);
  }
  return norms;
}

// For each row of x ([n, d]) the nearest of the k centroids c ([k, d]) and its squared
// distance (clamped at 0 against rounding). Ties go to the lower index.
void Nearest(const float* x, int64_t n, int d, const float* c, int k, int32_t* assign,
             float* dist) {
  const std::vector<float> c_norms = RowNorms(c, k, d);
  std::vector<float> dots(static_cast<size_t>(std::min(n, kBlockRows)) * k);
  for (int64_t start = 0; start < n; start += kBlockRows) {
    const int rows = static_cast<int>(std::min(kBlockRows, n - start));
    const float* xb = x + start * d;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, k, d, 1.0f, xb, d, c, d, 0.0f,
                dots.data(), k);
    for (int i = 0; i < rows; ++i) {
      const float* xi = xb + static_cast<int64_t>(i) * d;
      float xn = 0;
      for (int j = 0; j < d; ++j) xn += xi[j] * xi[j];
      const float* row = dots.data() + static_cast<int64_t>(i) * k;
      int best = 0;
      float best_d = c_norms[0] - 2 * row[0];
      for (int j = 1; j < k; ++j) {
        const float dj = c_norms[j] - 2 * row[j];
        if (dj < best_d) {
          best_d = dj;
          best = j;
        }
      }
      assign[start + i] = best;
      dist[start + i] = std::max(0.0f, xn + best_d);
    }
  }
}

// k-means++ seeding (Arthur & Vassilvitskii): the first centroid uniformly, each next one
// with probability proportional to the squared distance to the nearest chosen one. When
// every point coincides with a chosen centroid, the remaining ones repeat the first point.
std::vector<float> KMeansPlusPlus(const float* x, int64_t n, int d, int k, std::mt19937_64& rng) {
  std::vector<float> c(static_cast<size_t>(k) * d);
  const std::vector<float> x_norms = RowNorms(x, n, d);
  std::vector<float> min_d(n, std::numeric_limits<float>::infinity());
  std::vector<float> dots(n);
  int64_t chosen = static_cast<int64_t>(Uniform(rng) * n);
  for (int j = 0; j < k; ++j) {
    const float* cj = x + chosen * d;
    std::memcpy(c.data() + static_cast<int64_t>(j) * d, cj, sizeof(float) * d);
    if (j + 1 == k) break;
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(n), d, 1.0f, x, d, cj, 1, 0.0f,
                dots.data(), 1);
    double total = 0;
    for (int64_t i = 0; i < n; ++i) {
      const float di = std::max(0.0f, x_norms[i] - 2 * dots[i] + x_norms[chosen]);
      min_d[i] = std::min(min_d[i], di);
      total += min_d[i];
    }
    if (!(total > 0)) {
      chosen = 0;
      continue;
    }
    const double target = Uniform(rng) * total;
    double acc = 0;
    chosen = n - 1;
    for (int64_t i = 0; i < n; ++i) {
      acc += min_d[i];
      if (acc > target && min_d[i] > 0) {
        chosen = i;
        break;
      }
    }
  }
  return c;
}

// Lloyd's algorithm on x ([n, d]) from the centroids in c ([k, d]), updated in place; leaves
// the final assignment of x to c in assign/dist. Empty clusters take, in index order, the
// points farthest from their centroids (ties to the lower row), one point each.
void Lloyd(const float* x, int64_t n, int d, int k, int iterations, std::vector<float>* c,
           std::vector<int32_t>* assign, std::vector<float>* dist) {
  std::vector<int32_t> previous;
  std::vector<double> sums(static_cast<size_t>(k) * d);
  std::vector<int64_t> counts(k);
  Nearest(x, n, d, c->data(), k, assign->data(), dist->data());
  for (int it = 0; it < iterations; ++it) {
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), 0);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t a = (*assign)[i];
      ++counts[a];
      double* s = sums.data() + static_cast<int64_t>(a) * d;
      const float* xi = x + i * d;
      for (int j = 0; j < d; ++j) s[j] += xi[j];
    }
    std::vector<int64_t> far;  // rows by decreasing distance, filled on first need
    size_t next_far = 0;
    for (int a = 0; a < k; ++a) {
      float* ca = c->data() + static_cast<int64_t>(a) * d;
      if (counts[a] > 0) {
        const double* s = sums.data() + static_cast<int64_t>(a) * d;
        for (int j = 0; j < d; ++j) ca[j] = static_cast<float>(s[j] / counts[a]);
        continue;
      }
      if (far.empty()) {
        far.resize(n);
        std::iota(far.begin(), far.end(), 0);
        std::stable_sort(far.begin(), far.end(),
                         [&](int64_t p, int64_t q) { return (*dist)[p] > (*dist)[q]; });
      }
      const int64_t row = far[next_far % far.size()];
      ++next_far;
      std::memcpy(ca, x + row * d, sizeof(float) * d);
    }
    previous = *assign;
    Nearest(x, n, d, c->data(), k, assign->data(), dist->data());
    if (next_far == 0 && previous == *assign) break;  // converged: centroids are the means
  }
}

absl::Status CheckDim(const Codebooks& codebooks, int d) {
  if (d != codebooks.dim) {
    return absl::InvalidArgumentError(absl::StrCat("vectors have dimension ", d,
                                                   ", the codebooks ", codebooks.dim));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status CheckFinite(const float* x, int64_t n, int d, absl::Span<const int64_t> ids) {
  for (int64_t i = 0; i < n * d; ++i) {
    if (!std::isfinite(x[i])) {
      const int64_t row = i / d;
      return absl::InvalidArgumentError(absl::StrCat(
          "row ", row, static_cast<size_t>(row) < ids.size() ? absl::StrCat(" (user ", ids[row], ")") : "",
          " has a non-finite value (", x[i], ") at column ", i % d));
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<Codebooks> TrainRqKMeans(const float* x, int64_t n, int d,
                                        const RqKMeansOptions& options) {
  if (n < 1 || d < 1) {
    return absl::InvalidArgumentError(absl::StrCat("RQ-KMeans needs at least one vector of "
                                                   "dimension >= 1, got [", n, ", ", d, "]"));
  }
  if (options.levels < 1 || options.k < 1 || options.iterations < 0 ||
      options.min_points_per_centroid < 1 || options.max_points_per_centroid < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad RQ-KMeans options: levels ", options.levels, ", k ", options.k, ", iterations ",
        options.iterations, ", min_points_per_centroid ", options.min_points_per_centroid,
        ", max_points_per_centroid ", options.max_points_per_centroid));
  }
  RETURN_IF_ERROR(CheckFinite(x, n, d));
  int k = options.k;
  const int64_t cap = std::max<int64_t>(1, n / options.min_points_per_centroid);
  if (k > cap) {
    LOG(WARNING) << "RQ-KMeans: " << n << " vectors are too few for k = " << k << " at "
                 << options.min_points_per_centroid << " points per centroid; using k = " << cap;
    k = static_cast<int>(cap);
  }

  // The training sample: all rows, or a seeded subset kept in row order.
  std::mt19937_64 sample_rng(options.seed);
  std::vector<int64_t> rows(n);
  std::iota(rows.begin(), rows.end(), 0);
  const int64_t limit = options.max_points_per_centroid == 0
                            ? n
                            : static_cast<int64_t>(k) * options.max_points_per_centroid;
  if (n > limit) {
    for (int64_t i = 0; i < limit; ++i) {
      const int64_t j = i + static_cast<int64_t>(Uniform(sample_rng) * (n - i));
      std::swap(rows[i], rows[j]);
    }
    rows.resize(limit);
    std::sort(rows.begin(), rows.end());
    LOG(INFO) << "RQ-KMeans: training on a sample of " << limit << " of " << n << " vectors";
  }
  const int64_t m = static_cast<int64_t>(rows.size());
  std::vector<float> r(static_cast<size_t>(m) * d);
  for (int64_t i = 0; i < m; ++i) std::memcpy(&r[i * d], x + rows[i] * d, sizeof(float) * d);

  Codebooks cb;
  cb.dim = d;
  std::vector<int32_t> assign(m);
  std::vector<float> dist(m);
  for (int l = 0; l < options.levels; ++l) {
    std::mt19937_64 rng(options.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(l) + 1);
    std::vector<float> c = KMeansPlusPlus(r.data(), m, d, k, rng);
    Lloyd(r.data(), m, d, k, options.iterations, &c, &assign, &dist);
    double err = 0;
    for (int64_t i = 0; i < m; ++i) {
      float* ri = &r[i * d];
      const float* ca = c.data() + static_cast<int64_t>(assign[i]) * d;
      for (int j = 0; j < d; ++j) ri[j] -= ca[j];
      err += dist[i];
    }
    LOG(INFO) << "RQ-KMeans level " << l + 1 << ": k " << k << ", training residual "
              << err / m;
    cb.k.push_back(k);
    cb.centroids.push_back(std::move(c));
  }
  return cb;
}

absl::StatusOr<std::vector<int32_t>> AssignRqCodes(const Codebooks& codebooks, const float* x,
                                                   int64_t n, int d) {
  RETURN_IF_ERROR(CheckDim(codebooks, d));
  RETURN_IF_ERROR(CheckFinite(x, n, d));
  const int levels = codebooks.levels();
  std::vector<int32_t> codes(static_cast<size_t>(n) * levels);
  std::vector<float> r;
  std::vector<int32_t> assign;
  std::vector<float> dist;
  for (int64_t start = 0; start < n; start += kChunkRows) {
    const int64_t rows = std::min(kChunkRows, n - start);
    r.assign(x + start * d, x + (start + rows) * d);
    assign.resize(rows);
    dist.resize(rows);
    for (int l = 0; l < levels; ++l) {
      const float* c = codebooks.centroids[l].data();
      Nearest(r.data(), rows, d, c, codebooks.k[l], assign.data(), dist.data());
      for (int64_t i = 0; i < rows; ++i) {
        codes[(start + i) * levels + l] = assign[i];
        float* ri = r.data() + i * d;
        const float* ca = c + static_cast<int64_t>(assign[i]) * d;
        for (int j = 0; j < d; ++j) ri[j] -= ca[j];
      }
    }
  }
  return codes;
}

std::vector<double> ReconstructionErrors(const Codebooks& codebooks, const float* x, int64_t n,
                                         const std::vector<int32_t>& codes) {
  const int d = codebooks.dim;
  const int levels = codebooks.levels();
  CHECK_EQ(codes.size(), static_cast<size_t>(n) * levels);
  std::vector<double> err(levels, 0.0);
  std::vector<float> r(d);
  for (int64_t i = 0; i < n; ++i) {
    std::memcpy(r.data(), x + i * d, sizeof(float) * d);
    for (int l = 0; l < levels; ++l) {
      const float* ca = codebooks.centroids[l].data() + static_cast<int64_t>(codes[i * levels + l]) * d;
      double s = 0;
      for (int j = 0; j < d; ++j) {
        r[j] -= ca[j];
        s += static_cast<double>(r[j]) * r[j];
      }
      err[l] += s;
    }
  }
  for (double& e : err) e = n > 0 ? e / n : 0.0;
  return err;
}

absl::Status SaveCodebooks(FileSystem* fs, const std::string& dir, const Codebooks& codebooks) {
  RETURN_IF_ERROR(fs->CreateDirs(dir));
  nlohmann::json j;
  j["format"] = kManifestFormat;
  j["version"] = 1;
  j["dim"] = codebooks.dim;
  j["levels"] = codebooks.levels();
  j["k"] = codebooks.k;
  j["files"] = nlohmann::json::array();
  for (int l = 0; l < codebooks.levels(); ++l) {
    const std::string name = absl::StrCat("level-", l + 1, ".npy");
    RETURN_IF_ERROR(WriteNpy(fs, JoinPath(dir, name), codebooks.centroids[l].data(),
                             codebooks.k[l], codebooks.dim));
    j["files"].push_back(name);
  }
  return fs->WriteStringToFileAtomic(JoinPath(dir, kManifestName), j.dump(2) + "\n");
}

absl::StatusOr<Codebooks> LoadCodebooks(FileSystem* fs, const std::string& dir) {
  const std::string path = JoinPath(dir, kManifestName);
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": ", what));
  };
  if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
  if (j.value("format", "") != kManifestFormat) return bad("not a Choir codebooks manifest");
  if (!j.contains("version") || !j["version"].is_number_integer() || j["version"] != 1) {
    return bad("unsupported version (expected 1)");
  }
  if (!j.contains("dim") || !j["dim"].is_number_integer() || !j.contains("files") ||
      !j["files"].is_array() || !j.contains("k") || !j["k"].is_array() ||
      j["k"].size() != j["files"].size() || j["files"].empty()) {
    return bad("needs integer 'dim' and non-empty 'k' and 'files' arrays of equal length");
  }
  Codebooks cb;
  cb.dim = j["dim"].get<int>();
  for (size_t l = 0; l < j["files"].size(); ++l) {
    if (!j["files"][l].is_string() || !j["k"][l].is_number_integer()) {
      return bad(absl::StrCat("bad entry ", l, " of 'files' or 'k'"));
    }
    const std::string file = JoinPath(dir, j["files"][l].get<std::string>());
    ASSIGN_OR_RETURN(FloatMatrix m, ReadNpy(fs, file));
    const int64_t k = j["k"][l].get<int64_t>();
    if (m.rows != k || m.cols != cb.dim || k < 1) {
      return absl::DataLossError(absl::StrCat(file, ": shape (", m.rows, ", ", m.cols, "), ",
                                              path, " says (", k, ", ", cb.dim, ")"));
    }
    if (absl::Status finite = CheckFinite(m.values.data(), m.rows, static_cast<int>(m.cols)); !finite.ok()) {
      return absl::DataLossError(absl::StrCat(file, ": centroid ", finite.message()));
    }
    cb.k.push_back(static_cast<int>(k));
    cb.centroids.push_back(std::move(m.values));
  }
  return cb;
}

}  // namespace choir::groups
