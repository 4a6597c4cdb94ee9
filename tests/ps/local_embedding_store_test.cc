#include "worker/local_embedding_store.h"

#include <vector>

#include "gtest/gtest.h"
#include "ps/feature_key.h"
#include "worker/keys.h"

namespace choir {
namespace {

TableOptions Options() {
  TableOptions options;
  options.seed = 3;
  options.slots[1].dim = 2;
  options.slots[1].optimizer = OptimizerKind::kSgd;
  options.slots[1].learning_rate = 0.5f;
  options.slots[2].dim = 3;  // Adagrad
  return options;
}

TEST(LocalEmbeddingStoreTest, InvalidOptionsAreAnError) {
  TableOptions options;  // no slots
  EXPECT_EQ(NewLocalEmbeddingStore(options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(LocalEmbeddingStoreTest, BehavesAsTheSparseTable) {
  auto store = NewLocalEmbeddingStore(Options());
  ASSERT_TRUE(store.ok()) << store.status();
  auto table = SparseTable::Create(Options());
  ASSERT_TRUE(table.ok());
  const std::vector<uint64_t> keys = {FeatureKey(2, 8), FeatureKey(1, 8)};
  EXPECT_EQ((*store)->Dim(keys[0]), 3);
  EXPECT_EQ((*store)->Dim(keys[1]), 2);
  EXPECT_EQ((*store)->Dim(FeatureKey(9, 8)), 0);
  const std::vector<float> grads = {0.1f, 0.2f, 0.3f, 0.4f, 0.5f};
  std::vector<float> a(5), b(5);
  ASSERT_TRUE((*store)->Push(keys, grads).ok());
  ASSERT_TRUE((*table)->Push(keys, grads).ok());
  ASSERT_TRUE((*store)->Pull(keys, absl::MakeSpan(a)).ok());
  ASSERT_TRUE((*table)->Pull(keys, absl::MakeSpan(b)).ok());
  EXPECT_EQ(a, b);
  EXPECT_EQ((*store)->Pull(keys, absl::MakeSpan(a).subspan(1)).code(),
            absl::StatusCode::kInvalidArgument);
}

// A batch with repeated keys: deduplicate, pull once, gather per occurrence, sum the
// occurrences' gradients and push once. With SGD the row moves by lr * (sum of gradients).
TEST(LocalEmbeddingStoreTest, DedupPullGatherSumPushRoundTrip) {
  auto store = NewLocalEmbeddingStore(Options());
  ASSERT_TRUE(store.ok());
  const uint64_t x = FeatureKey(1, 100), y = FeatureKey(1, 200);
  const std::vector<uint64_t> batch = {x, y, x, x};
  std::vector<uint64_t> unique;
  std::vector<uint32_t> index;
  DedupKeys(batch, &unique, &index);
  ASSERT_EQ(unique.size(), 2u);

  std::vector<float> unique_rows(4), rows(8);
  ASSERT_TRUE((*store)->Pull(unique, absl::MakeSpan(unique_rows)).ok());
  ASSERT_TRUE(GatherRows(index, 2, unique_rows, absl::MakeSpan(rows)).ok());
  EXPECT_EQ(rows[0], rows[4]);
  EXPECT_EQ(rows[1], rows[7]);

  const std::vector<float> grads = {1, 2, 0.5f, 0.5f, 0.25f, 0.25f, 0.125f, 0.125f};
  std::vector<float> summed(4);
  ASSERT_TRUE(SumDuplicateGrads(index, 2, grads, absl::MakeSpan(summed)).ok());
  EXPECT_EQ(summed, (std::vector<float>{1.375f, 2.375f, 0.5f, 0.5f}));
  ASSERT_TRUE((*store)->Push(unique, summed).ok());

  std::vector<float> after(4);
  ASSERT_TRUE((*store)->Pull(unique, absl::MakeSpan(after)).ok());
  for (int j = 0; j < 4; ++j) EXPECT_EQ(after[j], unique_rows[j] - 0.5f * summed[j]) << j;
}

}  // namespace
}  // namespace choir
