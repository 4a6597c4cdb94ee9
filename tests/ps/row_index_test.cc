// ps/internal/row_index.h against absl::flat_hash_map under random inserts, updates and
// erases, including long probe runs that wrap around the end of the array.
#include "ps/internal/row_index.h"

#include <cstdint>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "gtest/gtest.h"

namespace choir {
namespace ps_internal {
namespace {

void ExpectSame(const RowIndex& index, const absl::flat_hash_map<uint64_t, uint32_t>& reference,
                const std::vector<uint64_t>& universe) {
  ASSERT_EQ(index.size(), reference.size());
  for (uint64_t key : universe) {
    auto it = reference.find(key);
    const uint32_t expected = it == reference.end() ? RowIndex::kNone : it->second;
    ASSERT_EQ(index.Find(key), expected) << "key " << key;
  }
}

TEST(RowIndexTest, EmptyFindsNothing) {
  RowIndex index;
  EXPECT_EQ(index.Find(0), RowIndex::kNone);
  EXPECT_EQ(index.Find(~uint64_t{0}), RowIndex::kNone);
  index.Prefetch(7);  // no array yet: must not touch memory
  index.Erase(7);
  EXPECT_EQ(index.size(), 0u);
  EXPECT_EQ(index.MemoryBytes(), 0u);
}

TEST(RowIndexTest, RandomOperationsMatchAReferenceMap) {
  std::mt19937_64 rng(20261128);
  // A small universe, so that keys are re-inserted after erasure, and key 0 and ~0 included.
  std::vector<uint64_t> universe = {0, ~uint64_t{0}};
  for (int i = 0; i < 3000; ++i) universe.push_back(rng());
  RowIndex index;
  absl::flat_hash_map<uint64_t, uint32_t> reference;
  for (int op = 0; op < 200000; ++op) {
    const uint64_t key = universe[rng() % universe.size()];
    const uint32_t row = static_cast<uint32_t>(rng() % 1000000);
    const bool present = reference.contains(key);
    switch (rng() % 4) {
      case 0:
      case 1:
        if (!present) {
          index.Insert(key, row);
          reference[key] = row;
        }
        break;
      case 2:
        if (present) {
          index.Update(key, row);
          reference[key] = row;
        }
        break;
      case 3:
        index.Erase(key);
        reference.erase(key);
        break;
    }
    if (op % 5000 == 0) ExpectSame(index, reference, universe);
  }
  ExpectSame(index, reference, universe);
  EXPECT_LE(index.size() * 4, index.capacity() * 3);  // at most 3/4 full
  // Erase everything: lookups of every key then fail, and the index is reusable.
  for (uint64_t key : universe) index.Erase(key);
  reference.clear();
  ExpectSame(index, reference, universe);
  index.Insert(universe[5], 42);
  EXPECT_EQ(index.Find(universe[5]), 42u);
}

TEST(RowIndexTest, DenseClustersSurviveErasureInTheMiddle) {
  // 12 keys in a 16-entry array: long runs that wrap around the end. Erasing any one key in
  // any order keeps every other key findable (backward shift, no tombstones).
  std::vector<uint64_t> keys;
  for (uint64_t k = 0; k < 12; ++k) keys.push_back(k * 0x100000001b3ULL);
  for (size_t first = 0; first < keys.size(); ++first) {
    RowIndex index;
    absl::flat_hash_map<uint64_t, uint32_t> reference;
    for (size_t i = 0; i < keys.size(); ++i) {
      index.Insert(keys[i], static_cast<uint32_t>(i));
      reference[keys[i]] = static_cast<uint32_t>(i);
    }
    ASSERT_EQ(index.capacity(), 16u);
    for (size_t j = 0; j < keys.size(); ++j) {
      const uint64_t key = keys[(first + j * 5) % keys.size()];
      index.Erase(key);
      reference.erase(key);
      ExpectSame(index, reference, keys);
    }
  }
}

}  // namespace
}  // namespace ps_internal
}  // namespace choir
