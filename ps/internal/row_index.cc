#include "ps/internal/row_index.h"

#include <utility>

#include "glog/logging.h"

namespace choir {
namespace ps_internal {
namespace {

constexpr size_t kMinCapacity = 16;

}  // namespace

void RowIndex::Insert(uint64_t key, uint32_t row) {
  DCHECK_NE(row, kNone);
  if (entries_ == nullptr || (size_ + 1) * 4 > capacity() * 3) Grow();
  size_t i = Home(key);
  while (entries_[i].row != kNone) {
    DCHECK_NE(entries_[i].key, key) << "key inserted twice";
    i = (i + 1) & mask_;
  }
  entries_[i] = Entry{key, row};
  ++size_;
}

void RowIndex::Update(uint64_t key, uint32_t row) {
  DCHECK_NE(row, kNone);
  for (size_t i = Home(key);; i = (i + 1) & mask_) {
    CHECK_NE(entries_[i].row, kNone) << "RowIndex::Update of a missing key";
    if (entries_[i].key == key) {
      entries_[i].row = row;
      return;
    }
  }
}

void RowIndex::Erase(uint64_t key) {
  if (size_ == 0) return;
  size_t hole = Home(key);
  for (;; hole = (hole + 1) & mask_) {
    if (entries_[hole].row == kNone) return;
    if (entries_[hole].key == key) break;
  }
  // Backward shift: move later entries of the run into the hole when the hole lies on their
  // probe path (between their home and their slot, cyclically).
  for (size_t j = (hole + 1) & mask_; entries_[j].row != kNone; j = (j + 1) & mask_) {
    const size_t home = Home(entries_[j].key);
    if (((j - home) & mask_) >= ((j - hole) & mask_)) {
      entries_[hole] = entries_[j];
      hole = j;
    }
  }
  entries_[hole].row = kNone;
  --size_;
}

void RowIndex::Grow() {
  const size_t new_capacity = entries_ == nullptr ? kMinCapacity : 2 * capacity();
  std::unique_ptr<Entry[]> old = std::move(entries_);
  const size_t old_capacity = old != nullptr ? capacity() : 0;
  entries_.reset(new Entry[new_capacity]);
  for (size_t i = 0; i < new_capacity; ++i) entries_[i].row = kNone;
  mask_ = new_capacity - 1;
  for (size_t i = 0; i < old_capacity; ++i) {
    if (old[i].row == kNone) continue;
    size_t j = Home(old[i].key);
    while (entries_[j].row != kNone) j = (j + 1) & mask_;
    entries_[j] = old[i];
  }
}

}  // namespace ps_internal
}  // namespace choir
