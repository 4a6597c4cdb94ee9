#include "ps/feature_key.h"

#include <cstdint>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "gtest/gtest.h"
#include "ps/sparse_table.h"

namespace choir {
namespace {

TEST(FeatureKeyTest, SlotIsRecoveredFromTheTopBits) {
  for (uint32_t slot : {0u, 1u, 7u, 100u, 4094u, 4095u}) {
    for (int64_t raw : {int64_t{0}, int64_t{1}, int64_t{-1}, int64_t{1} << 40, INT64_MAX,
                        INT64_MIN}) {
      EXPECT_EQ(SlotOf(FeatureKey(slot, raw)), slot) << slot << " " << raw;
    }
  }
}

// Keys are persisted in checkpoints: the hash must never change silently.
TEST(FeatureKeyTest, KeysAreStableAcrossVersions) {
  EXPECT_EQ(FeatureKey(0, 0), uint64_t{0x00018226ff3cd4bf});
  EXPECT_EQ(FeatureKey(3, 42), uint64_t{0x003b665033f3b406});
  EXPECT_EQ(FeatureKey(4095, -7), uint64_t{0xfff65f3ec7944108});
}

TEST(FeatureKeyTest, DifferentRawIdsAndSlotsGiveDifferentKeys) {
  absl::flat_hash_set<uint64_t> seen;
  constexpr int kIds = 100000;
  for (uint32_t slot : {0u, 1u, 2u, 4095u}) {
    for (int64_t raw = -kIds / 2; raw < kIds / 2; ++raw) {
      EXPECT_TRUE(seen.insert(FeatureKey(slot, raw)).second) << slot << " " << raw;
    }
  }
  EXPECT_EQ(seen.size(), 4u * kIds);
}

// Sequential raw ids (the common case for converted data) spread evenly over the low bits of
// the key and over ShardOf: every one of 16 buckets within 5% of the mean.
TEST(FeatureKeyTest, SequentialIdsSpreadUniformlyOverShards) {
  constexpr int kBuckets = 16;
  constexpr int kIds = 160000;
  std::vector<int> low_bits(kBuckets, 0), shards(kBuckets, 0), server_then_shard(kBuckets, 0);
  for (int64_t raw = 0; raw < kIds; ++raw) {
    const uint64_t key = FeatureKey(5, raw);
    ++low_bits[key % kBuckets];
    ++shards[ShardOf(key, kBuckets)];
    // Keys that a server picked by key % 16 == 3 still spread over the table's shards.
    if (key % kBuckets == 3) ++server_then_shard[ShardOf(key, kBuckets)];
  }
  const double mean = static_cast<double>(kIds) / kBuckets;
  const double server_mean = static_cast<double>(low_bits[3]) / kBuckets;
  for (int b = 0; b < kBuckets; ++b) {
    EXPECT_NEAR(low_bits[b], mean, 0.05 * mean) << b;
    EXPECT_NEAR(shards[b], mean, 0.05 * mean) << b;
    EXPECT_NEAR(server_then_shard[b], server_mean, 0.15 * server_mean) << b;
  }
}

TEST(FeatureKeyDeathTest, SlotOutOfRangeIsABug) {
  EXPECT_DEATH(FeatureKey(kMaxSlots, 1), "slot out of range");
}

}  // namespace
}  // namespace choir
