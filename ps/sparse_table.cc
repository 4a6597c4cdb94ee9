#include "ps/sparse_table.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "ps/feature_key.h"
#include "ps/internal/sparse_optimizer.h"
#include "ps/internal/tsan_mutex_lock.h"

namespace choir {
namespace {

// Rows per arena block. A block grows by doubling up to this many rows, then a new block
// starts, so a table never copies more than one block when it grows and the slack per
// (shard, slot) is below one block.
constexpr uint32_t kBlockRowsLog2 = 10;
constexpr uint32_t kBlockRows = 1u << kBlockRowsLog2;
constexpr uint32_t kMinBlockRows = 8;

constexpr uint64_t kShardSalt = 0xd1b54a32d192ed03ULL;

// Rows of one slot in one shard: values + optimizer state (`stride` floats per row), the key
// and the push count of every row. Row r lives in blocks[r / kBlockRows] at r % kBlockRows.
class Arena {
 public:
  explicit Arena(int stride) : stride_(stride) {}

  uint32_t rows() const { return rows_; }

  float* Row(uint32_t r) {
    return blocks_[r >> kBlockRowsLog2].values.data() +
           static_cast<size_t>(r & (kBlockRows - 1)) * stride_;
  }
  uint32_t& Pushes(uint32_t r) { return blocks_[r >> kBlockRowsLog2].pushes[r & (kBlockRows - 1)]; }

  // Appends an uninitialised row for `key`; returns its index.
  uint32_t Append(uint64_t key) {
    if (blocks_.empty() || blocks_.back().keys.size() == kBlockRows) blocks_.emplace_back();
    Block& b = blocks_.back();
    const size_t n = b.keys.size();
    if (n == b.keys.capacity()) {
      const size_t cap = std::min<size_t>(kBlockRows, std::max<size_t>(kMinBlockRows, 2 * n));
      b.keys.reserve(cap);
      b.pushes.reserve(cap);
      b.values.reserve(cap * stride_);
    }
    b.keys.push_back(key);
    b.pushes.push_back(0);
    b.values.resize(b.values.size() + stride_);
    return rows_++;
  }

  size_t MemoryBytes() const {
    size_t bytes = blocks_.capacity() * sizeof(Block);
    for (const Block& b : blocks_) {
      bytes += b.values.capacity() * sizeof(float) + b.keys.capacity() * sizeof(uint64_t) +
               b.pushes.capacity() * sizeof(uint32_t);
    }
    return bytes;
  }

 private:
  struct Block {
    std::vector<float> values;
    std::vector<uint64_t> keys;  // for eviction (swap-remove) and checkpoints
    std::vector<uint32_t> pushes;
  };
  const int stride_;
  uint32_t rows_ = 0;
  std::vector<Block> blocks_;
};

}  // namespace

struct SparseTable::SlotInfo {
  SlotConfig config;
  int stride = 0;  // floats per row
};

// One independently locked part of the table: key -> row index in the arena of the key's slot.
class SparseTable::Shard {
 public:
  explicit Shard(const std::vector<SlotInfo>& slot_infos) {
    arenas_.reserve(slot_infos.size());
    for (const SlotInfo& info : slot_infos) arenas_.emplace_back(info.stride);
  }

  // The row of `key` (slot index `si`), created with its initial values when unseen.
  float* FindOrCreate(uint64_t key, int si, const SlotInfo& info, uint64_t seed_mix,
                      uint32_t** pushes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Arena& arena = arenas_[si];
    auto [it, inserted] = index_.try_emplace(key, arena.rows());
    if (inserted) {
      CHECK_LT(arena.rows(), UINT32_MAX) << "too many rows in one shard";
      const uint32_t r = arena.Append(key);
      ps_internal::InitRow(info.config, key, seed_mix, arena.Row(r));
    }
    if (pushes != nullptr) *pushes = &arena.Pushes(it->second);
    return arena.Row(it->second);
  }

  size_t Size() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return index_.size(); }

  size_t MemoryBytes() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Swiss table: one slot (key, row) plus one control byte per bucket.
    size_t bytes = index_.capacity() * (sizeof(std::pair<const uint64_t, uint32_t>) + 1);
    bytes += arenas_.capacity() * sizeof(Arena);
    for (const Arena& a : arenas_) bytes += a.MemoryBytes();
    return bytes;
  }

  mutable absl::Mutex mu;

 private:
  absl::flat_hash_map<uint64_t, uint32_t> index_ ABSL_GUARDED_BY(mu);
  std::vector<Arena> arenas_ ABSL_GUARDED_BY(mu);  // one per configured slot
};

absl::Status ValidateTableOptions(const TableOptions& options) {
  if (options.num_shards < 1 || options.num_shards > 4096) {
    return absl::InvalidArgumentError(
        absl::StrCat("table options: num_shards = ", options.num_shards, ", want 1..4096"));
  }
  if (options.slots.empty()) {
    return absl::InvalidArgumentError("table options: no slots configured");
  }
  for (const auto& [slot, config] : options.slots) {
    if (slot >= kMaxSlots) {
      return absl::InvalidArgumentError(
          absl::StrCat("table options: slot ", slot, " >= ", kMaxSlots));
    }
    absl::Status s = ValidateSlotConfig(config);
    if (!s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("slot ", slot, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

int ShardOf(uint64_t key, int num_shards) {
  // Multiply-shift range reduction of a re-mixed key: uniform and independent of the raw bits
  // servers may shard on.
  const uint64_t h = Mix64(key ^ kShardSalt);
  return static_cast<int>((static_cast<unsigned __int128>(h) * static_cast<uint64_t>(num_shards)) >>
                          64);
}

absl::StatusOr<std::unique_ptr<SparseTable>> SparseTable::Create(TableOptions options) {
  absl::Status s = ValidateTableOptions(options);
  if (!s.ok()) return s;
  return std::unique_ptr<SparseTable>(new SparseTable(std::move(options)));
}

SparseTable::SparseTable(TableOptions options)
    : options_(std::move(options)),
      seed_mix_(ps_internal::InitSeedMix(options_.seed)),
      slot_index_(kMaxSlots, -1) {
  for (const auto& [slot, config] : options_.slots) {
    slot_index_[slot] = static_cast<int16_t>(slot_infos_.size());
    slot_infos_.push_back(SlotInfo{config, ps_internal::Stride(config)});
  }
  shards_.reserve(options_.num_shards);
  for (int i = 0; i < options_.num_shards; ++i) {
    shards_.push_back(std::make_unique<Shard>(slot_infos_));
  }
}

SparseTable::~SparseTable() = default;

int SparseTable::Dim(uint64_t key) const {
  const int si = slot_index_[SlotOf(key)];
  return si < 0 ? 0 : slot_infos_[si].config.dim;
}

absl::StatusOr<size_t> SparseTable::Plan(absl::Span<const uint64_t> keys, Batch* batch) const {
  const size_t n = keys.size();
  const int num_shards = options_.num_shards;
  batch->slot_of.resize(n);
  batch->offset_of.resize(n);
  batch->order.resize(n);
  batch->shard_begin.assign(num_shards + 1, 0);
  std::vector<uint32_t> shard_of(n);
  size_t total = 0;
  for (size_t i = 0; i < n; ++i) {
    const int si = slot_index_[SlotOf(keys[i])];
    if (si < 0) {
      return absl::InvalidArgumentError(absl::StrCat(
          "key ", keys[i], " at position ", i, ": slot ", SlotOf(keys[i]), " is not configured"));
    }
    batch->slot_of[i] = static_cast<int16_t>(si);
    batch->offset_of[i] = total;
    total += slot_infos_[si].config.dim;
    shard_of[i] = num_shards == 1 ? 0 : ShardOf(keys[i], num_shards);
    ++batch->shard_begin[shard_of[i] + 1];
  }
  // Counting sort of positions by shard, stable (key order within a shard).
  for (int s = 0; s < num_shards; ++s) batch->shard_begin[s + 1] += batch->shard_begin[s];
  std::vector<uint32_t> next(batch->shard_begin.begin(), batch->shard_begin.end() - 1);
  for (size_t i = 0; i < n; ++i) batch->order[next[shard_of[i]]++] = static_cast<uint32_t>(i);
  return total;
}

absl::Status SparseTable::Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) {
  Batch batch;
  absl::StatusOr<size_t> total = Plan(keys, &batch);
  if (!total.ok()) return total.status();
  if (*total != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("pull of ", keys.size(), " keys needs ",
                                                   *total, " floats, got ", out.size()));
  }
  for (int s = 0; s < options_.num_shards; ++s) {
    const uint32_t begin = batch.shard_begin[s], end = batch.shard_begin[s + 1];
    if (begin == end) continue;
    Shard& shard = *shards_[s];
    ps_internal::TsanMutexLock lock(&shard.mu);
    for (uint32_t k = begin; k < end; ++k) {
      const uint32_t i = batch.order[k];
      const SlotInfo& info = slot_infos_[batch.slot_of[i]];
      const float* row = shard.FindOrCreate(keys[i], batch.slot_of[i], info, seed_mix_, nullptr);
      std::memcpy(out.data() + batch.offset_of[i], row, info.config.dim * sizeof(float));
    }
  }
  return absl::OkStatus();
}

absl::Status SparseTable::Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) {
  Batch batch;
  absl::StatusOr<size_t> total = Plan(keys, &batch);
  if (!total.ok()) return total.status();
  if (*total != grads.size()) {
    return absl::InvalidArgumentError(absl::StrCat("push of ", keys.size(), " keys needs ",
                                                   *total, " floats, got ", grads.size()));
  }
  for (size_t j = 0; j < grads.size(); ++j) {
    if (!std::isfinite(grads[j])) {
      return absl::InvalidArgumentError(absl::StrCat("push: non-finite gradient ", grads[j],
                                                     " at float ", j, "; no row changed"));
    }
  }
  for (int s = 0; s < options_.num_shards; ++s) {
    const uint32_t begin = batch.shard_begin[s], end = batch.shard_begin[s + 1];
    if (begin == end) continue;
    Shard& shard = *shards_[s];
    ps_internal::TsanMutexLock lock(&shard.mu);
    for (uint32_t k = begin; k < end; ++k) {
      const uint32_t i = batch.order[k];
      const SlotInfo& info = slot_infos_[batch.slot_of[i]];
      uint32_t* pushes = nullptr;
      float* row = shard.FindOrCreate(keys[i], batch.slot_of[i], info, seed_mix_, &pushes);
      if (*pushes < UINT32_MAX) ++*pushes;  // saturates; Adam's bias correction is 1 by then
      ps_internal::ApplyUpdate(info.config, grads.data() + batch.offset_of[i], *pushes, row);
    }
  }
  return absl::OkStatus();
}

size_t SparseTable::size() const {
  size_t n = 0;
  for (const auto& shard : shards_) {
    ps_internal::TsanMutexLock lock(&shard->mu);
    n += shard->Size();
  }
  return n;
}

size_t SparseTable::MemoryBytes() const {
  size_t bytes = shards_.capacity() * sizeof(std::unique_ptr<Shard>) +
                 shards_.size() * sizeof(Shard);
  for (const auto& shard : shards_) {
    ps_internal::TsanMutexLock lock(&shard->mu);
    bytes += shard->MemoryBytes();
  }
  return bytes;
}

}  // namespace choir
