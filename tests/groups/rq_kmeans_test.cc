// RQ-KMeans: recovers separated clusters, deterministic for a seed, residual levels lower the
// reconstruction error, empty clusters and small n handled, codebooks round-trip.
#include "data/groups/rq_kmeans.h"

#include <cmath>
#include <random>
#include <vector>

#include "core/fs.h"
#include "data/groups/npy.h"
#include "data/groups/quality.h"
#include "gtest/gtest.h"

namespace choir::groups {
namespace {

struct Blobs {
  std::vector<float> x;
  std::vector<int64_t> labels;
};

// `clusters` Gaussian blobs of `per` points in `d` dims, centres 10 apart, sigma 0.5.
Blobs MakeBlobs(int clusters, int per, int d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> noise(0.0f, 0.5f);
  std::vector<float> centres(clusters * d);
  std::normal_distribution<float> wide(0.0f, 10.0f);
  for (float& c : centres) c = wide(rng);
  Blobs b;
  for (int i = 0; i < clusters * per; ++i) {
    const int c = i % clusters;
    for (int j = 0; j < d; ++j) b.x.push_back(centres[c * d + j] + noise(rng));
    b.labels.push_back(c);
  }
  return b;
}

TEST(RqKMeansTest, RecoversSeparatedBlobsAndIsDeterministic) {
  const Blobs b = MakeBlobs(8, 200, 16, 3);
  const int64_t n = static_cast<int64_t>(b.labels.size());
  RqKMeansOptions opt;
  opt.levels = 2;
  opt.k = 8;
  opt.seed = 11;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(b.x.data(), n, 16, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  absl::StatusOr<std::vector<int32_t>> codes = AssignRqCodes(*cb, b.x.data(), n, 16);
  ASSERT_TRUE(codes.ok()) << codes.status();
  EXPECT_GT(NormalizedMutualInfo(CodePrefixIds(*codes, 2, 1), b.labels), 0.95);

  absl::StatusOr<Codebooks> again = TrainRqKMeans(b.x.data(), n, 16, opt);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->centroids, cb->centroids);  // bitwise-equal for the same seed
}

TEST(RqKMeansTest, ReconstructionErrorFallsWithEachLevel) {
  std::mt19937_64 rng(5);
  std::normal_distribution<float> g;
  const int64_t n = 3000;
  const int d = 24;
  std::vector<float> x(n * d);
  for (float& v : x) v = g(rng);
  RqKMeansOptions opt;
  opt.levels = 4;
  opt.k = 16;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(x.data(), n, d, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  absl::StatusOr<std::vector<int32_t>> codes = AssignRqCodes(*cb, x.data(), n, d);
  ASSERT_TRUE(codes.ok());
  const std::vector<double> err = ReconstructionErrors(*cb, x.data(), n, *codes);
  ASSERT_EQ(err.size(), 4u);
  double total = 0;
  for (float v : x) total += static_cast<double>(v) * v;
  EXPECT_LT(err[0], total / n);
  for (int l = 1; l < 4; ++l) EXPECT_LT(err[l], err[l - 1]) << l;
}

TEST(RqKMeansTest, DuplicatePointsAndMoreClustersThanDistinctPointsGiveNoNaN) {
  // 400 points but only 3 distinct values; k = 20 forces empty clusters.
  const int d = 4;
  std::vector<float> x;
  for (int i = 0; i < 400; ++i) {
    for (int j = 0; j < d; ++j) x.push_back(static_cast<float>(i % 3));
  }
  RqKMeansOptions opt;
  opt.levels = 2;
  opt.k = 20;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(x.data(), 400, d, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  EXPECT_EQ(cb->k[0], 20);
  for (const auto& level : cb->centroids) {
    for (float v : level) EXPECT_TRUE(std::isfinite(v));
  }
  absl::StatusOr<std::vector<int32_t>> codes = AssignRqCodes(*cb, x.data(), 400, d);
  ASSERT_TRUE(codes.ok());
  const std::vector<double> err = ReconstructionErrors(*cb, x.data(), 400, *codes);
  EXPECT_NEAR(err[0], 0.0, 1e-9);  // every distinct point is a centroid
  EXPECT_NEAR(err[1], 0.0, 1e-9);
}

TEST(RqKMeansTest, ScalesKDownWhenPointsAreFew) {
  const Blobs b = MakeBlobs(2, 20, 3, 1);  // 40 points
  RqKMeansOptions opt;
  opt.k = 256;
  opt.min_points_per_centroid = 8;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(b.x.data(), 40, 3, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  EXPECT_EQ(cb->k, (std::vector<int>{5, 5, 5}));
  absl::StatusOr<Codebooks> one = TrainRqKMeans(b.x.data(), 3, 3, opt);  // 3 points: k = 1
  ASSERT_TRUE(one.ok()) << one.status();
  EXPECT_EQ(one->k[0], 1);
}

TEST(RqKMeansTest, AssignOfTrainingPointsIsStableAndSampledTrainingWorks) {
  const Blobs b = MakeBlobs(4, 500, 8, 9);
  RqKMeansOptions opt;
  opt.k = 4;
  opt.levels = 3;
  opt.max_points_per_centroid = 50;  // trains on a 200-point sample
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(b.x.data(), 2000, 8, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  absl::StatusOr<std::vector<int32_t>> first = AssignRqCodes(*cb, b.x.data(), 2000, 8);
  absl::StatusOr<std::vector<int32_t>> second = AssignRqCodes(*cb, b.x.data(), 2000, 8);
  ASSERT_TRUE(first.ok() && second.ok());
  EXPECT_EQ(*first, *second);
  EXPECT_GT(NormalizedMutualInfo(CodePrefixIds(*first, 3, 1), b.labels), 0.95);
  // Assigning one row alone gives the same code as in the batch.
  for (int64_t i : {0, 777, 1999}) {
    absl::StatusOr<std::vector<int32_t>> one = AssignRqCodes(*cb, b.x.data() + i * 8, 1, 8);
    ASSERT_TRUE(one.ok());
    EXPECT_EQ(*one, std::vector<int32_t>(first->begin() + i * 3, first->begin() + i * 3 + 3));
  }
  EXPECT_EQ(AssignRqCodes(*cb, b.x.data(), 10, 7).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(RqKMeansTest, TrainCodesEqualAssignCodesWithoutSampling) {
  const Blobs b = MakeBlobs(5, 100, 6, 2);
  RqKMeansOptions opt;
  opt.k = 5;
  opt.levels = 1;
  opt.iterations = 50;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(b.x.data(), 500, 6, opt);
  ASSERT_TRUE(cb.ok());
  absl::StatusOr<std::vector<int32_t>> codes = AssignRqCodes(*cb, b.x.data(), 500, 6);
  ASSERT_TRUE(codes.ok());
  // Converged Lloyd: each centroid is the mean of the points assigned to it.
  std::vector<double> sums(5 * 6, 0.0);
  std::vector<int> counts(5, 0);
  for (int i = 0; i < 500; ++i) {
    ++counts[(*codes)[i]];
    for (int j = 0; j < 6; ++j) sums[(*codes)[i] * 6 + j] += b.x[i * 6 + j];
  }
  for (int c = 0; c < 5; ++c) {
    ASSERT_GT(counts[c], 0);
    for (int j = 0; j < 6; ++j) EXPECT_NEAR(cb->centroids[0][c * 6 + j], sums[c * 6 + j] / counts[c], 1e-4);
  }
}

TEST(RqKMeansTest, RefusesBadInput) {
  std::vector<float> x = {1, 2, NAN, 4};
  EXPECT_EQ(TrainRqKMeans(x.data(), 2, 2, {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TrainRqKMeans(x.data(), 0, 2, {}).status().code(), absl::StatusCode::kInvalidArgument);
  RqKMeansOptions bad;
  bad.levels = 0;
  x[2] = 3;
  EXPECT_EQ(TrainRqKMeans(x.data(), 2, 2, bad).status().code(), absl::StatusCode::kInvalidArgument);
}

// Assigning (new users, `choir groups assign`) refuses non-finite vectors as training does: a
// NaN would otherwise compare false with every distance and land in group 0/0/0.
TEST(RqKMeansTest, AssignRefusesNonFiniteVectorsNamingTheRowAndUser) {
  const Blobs b = MakeBlobs(3, 20, 4, 7);
  RqKMeansOptions opt;
  opt.k = 3;
  opt.levels = 2;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(b.x.data(), 60, 4, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  std::vector<float> x(b.x.begin(), b.x.begin() + 3 * 4);
  ASSERT_TRUE(AssignRqCodes(*cb, x.data(), 3, 4).ok());
  x[2 * 4 + 1] = NAN;
  absl::Status st = AssignRqCodes(*cb, x.data(), 3, 4).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("row 2 has a non-finite value (nan) at column 1"), std::string::npos) << st;
  x[2 * 4 + 1] = -INFINITY;
  const std::vector<int64_t> ids = {10, 11, 12};
  st = CheckFinite(x.data(), 3, 4, ids);
  EXPECT_NE(st.message().find("row 2 (user 12) has a non-finite value (-inf) at column 1"), std::string::npos)
      << st;
}

TEST(RqKMeansTest, CodebooksRoundTripAndBadFilesAreNamed) {
  const Blobs b = MakeBlobs(3, 50, 5, 4);
  RqKMeansOptions opt;
  opt.k = 3;
  opt.levels = 2;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(b.x.data(), 150, 5, opt);
  ASSERT_TRUE(cb.ok());
  MemFileSystem fs;
  ASSERT_TRUE(SaveCodebooks(&fs, "/cb", *cb).ok());
  absl::StatusOr<Codebooks> loaded = LoadCodebooks(&fs, "/cb");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->dim, 5);
  EXPECT_EQ(loaded->k, cb->k);
  EXPECT_EQ(loaded->centroids, cb->centroids);

  // A level file of the wrong width.
  std::vector<float> wrong(3 * 4, 0.0f);
  ASSERT_TRUE(WriteNpy(&fs, "/cb/level-2.npy", wrong.data(), 3, 4).ok());
  absl::Status st = LoadCodebooks(&fs, "/cb").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("/cb/level-2.npy"), std::string::npos) << st;
  // A level file with a NaN centroid.
  std::vector<float> nan_level = cb->centroids[1];
  nan_level[5] = NAN;
  ASSERT_TRUE(WriteNpy(&fs, "/cb/level-2.npy", nan_level.data(), 3, 5).ok());
  st = LoadCodebooks(&fs, "/cb").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("/cb/level-2.npy: centroid row 1"), std::string::npos) << st;
  // A corrupt manifest.
  ASSERT_TRUE(fs.SetContents("/cb/codebooks.json", "{not json").ok());
  st = LoadCodebooks(&fs, "/cb").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("/cb/codebooks.json"), std::string::npos) << st;
}

}  // namespace
}  // namespace choir::groups
