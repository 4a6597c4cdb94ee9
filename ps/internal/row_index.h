// RowIndex: a shard's map from 64-bit feature key to row index, built for large tables whose
// lookups miss the caches.
//
// Open addressing with linear probing over one array of 16-byte (key, row) entries, whose
// capacity is a power of two kept at most 3/4 full. A key's home entry is known from its hash
// alone, so Prefetch(key) can bring the one cache line a lookup will most likely read into
// the cache before Find runs: a caller looking up many keys prefetches a few keys ahead and
// overlaps the misses (SparseTable's Pull and Push do). A general-purpose hash map (absl's
// Swiss table) keeps its control bytes and its entries in different lines and can prefetch
// only the first, which left every lookup one serial miss behind.
//
// Erase shifts the following entries of the probe run back (no tombstones), so lookups stay
// short after many evictions. Not thread-safe: SparseTable guards each shard's index with the
// shard's lock.
#ifndef CHOIR_PS_INTERNAL_ROW_INDEX_H_
#define CHOIR_PS_INTERNAL_ROW_INDEX_H_

#include <cstddef>
#include <cstdint>
#include <memory>

namespace choir {
namespace ps_internal {

class RowIndex {
 public:
  static constexpr uint32_t kNone = UINT32_MAX;  // "no row"; never a stored row index

  RowIndex() = default;
  RowIndex(const RowIndex&) = delete;
  RowIndex& operator=(const RowIndex&) = delete;
  RowIndex(RowIndex&&) = default;
  RowIndex& operator=(RowIndex&&) = default;

  // The row of `key`, or kNone.
  uint32_t Find(uint64_t key) const {
    if (size_ == 0) return kNone;
    for (size_t i = Home(key);; i = (i + 1) & mask_) {
      const Entry& e = entries_[i];
      if (e.row == kNone) return kNone;
      if (e.key == key) return e.row;
    }
  }

  // Hints that `key` will be looked up soon: prefetches its home entry.
  void Prefetch(uint64_t key) const {
    if (entries_ != nullptr) __builtin_prefetch(&entries_[Home(key)]);
  }

  // Maps `key`, which must not be present, to `row` (not kNone).
  void Insert(uint64_t key, uint32_t row);

  // Changes the row of present `key`.
  void Update(uint64_t key, uint32_t row);

  // Removes `key` if present.
  void Erase(uint64_t key);

  size_t size() const { return size_; }
  size_t capacity() const { return mask_ + 1; }  // entries allocated (1 when empty)
  size_t MemoryBytes() const { return entries_ != nullptr ? capacity() * sizeof(Entry) : 0; }

 private:
  struct Entry {
    uint64_t key;
    uint32_t row;  // kNone: empty
  };

  // Salted so that the index's bits are independent of the bits that chose the shard.
  size_t Home(uint64_t key) const {
    uint64_t x = key ^ 0x6a09e667f3bcc909ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return static_cast<size_t>(x ^ (x >> 31)) & mask_;
  }
  void Grow();

  std::unique_ptr<Entry[]> entries_;
  size_t mask_ = 0;
  size_t size_ = 0;
};

}  // namespace ps_internal
}  // namespace choir

#endif  // CHOIR_PS_INTERNAL_ROW_INDEX_H_
