#include "worker/keys.h"

#include <vector>

#include "gtest/gtest.h"

namespace choir {
namespace {

TEST(DedupKeysTest, KeepsFirstOccurrenceOrderAndMapsEveryKey) {
  const std::vector<uint64_t> keys = {30, 10, 30, 20, 10, 30};
  std::vector<uint64_t> unique = {99};  // overwritten
  std::vector<uint32_t> index;
  DedupKeys(keys, &unique, &index);
  EXPECT_EQ(unique, (std::vector<uint64_t>{30, 10, 20}));
  EXPECT_EQ(index, (std::vector<uint32_t>{0, 1, 0, 2, 1, 0}));
  for (size_t i = 0; i < keys.size(); ++i) EXPECT_EQ(unique[index[i]], keys[i]);

  DedupKeys({}, &unique, &index);
  EXPECT_TRUE(unique.empty());
  EXPECT_TRUE(index.empty());
}

TEST(KeysTest, GatherAndSumWithUniformDim) {
  const std::vector<uint32_t> index = {0, 1, 0, 2, 1, 0};
  const std::vector<float> unique_rows = {1, 2, 3, 4, 5, 6};  // 3 rows of dim 2
  std::vector<float> rows(12);
  ASSERT_TRUE(GatherRows(index, 2, unique_rows, absl::MakeSpan(rows)).ok());
  EXPECT_EQ(rows, (std::vector<float>{1, 2, 3, 4, 1, 2, 5, 6, 3, 4, 1, 2}));

  std::vector<float> grads = {1, 10, 2, 20, 3, 30, 4, 40, 5, 50, 6, 60};
  std::vector<float> summed(6, -1.0f);
  ASSERT_TRUE(SumDuplicateGrads(index, 2, grads, absl::MakeSpan(summed)).ok());
  EXPECT_EQ(summed, (std::vector<float>{1 + 3 + 6, 10 + 30 + 60, 2 + 5, 20 + 50, 4, 40}));
}

TEST(KeysTest, GatherAndSumWithMixedDims) {
  const std::vector<uint32_t> index = {1, 0, 1};
  const std::vector<int> dims = {3, 1};
  const std::vector<float> unique_rows = {1, 2, 3, 9};
  std::vector<float> rows(5);
  ASSERT_TRUE(GatherRows(index, dims, unique_rows, absl::MakeSpan(rows)).ok());
  EXPECT_EQ(rows, (std::vector<float>{9, 1, 2, 3, 9}));

  const std::vector<float> grads = {0.5f, 1, 2, 3, 0.25f};
  std::vector<float> summed(4);
  ASSERT_TRUE(SumDuplicateGrads(index, dims, grads, absl::MakeSpan(summed)).ok());
  EXPECT_EQ(summed, (std::vector<float>{1, 2, 3, 0.75f}));
}

TEST(KeysTest, SizeMismatchesAndBadIndicesAreRejected) {
  std::vector<float> out(4);
  EXPECT_EQ(GatherRows({0, 1}, 2, std::vector<float>(3), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GatherRows({0, 2}, 2, std::vector<float>(4), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SumDuplicateGrads({0, 0}, 2, std::vector<float>(3), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SumDuplicateGrads({0, 5}, 2, std::vector<float>(4), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  const std::vector<int> dims = {1, 3};
  EXPECT_EQ(SumDuplicateGrads({0, 1}, dims, std::vector<float>(3), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(GatherRows({2}, dims, std::vector<float>(4), absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace choir
