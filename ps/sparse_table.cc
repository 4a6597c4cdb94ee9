#include "ps/sparse_table.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <optional>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "glog/logging.h"
#include "ps/feature_key.h"
#include "ps/internal/row_index.h"
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
constexpr uint32_t kNil = UINT32_MAX;
static_assert(kNil == ps_internal::RowIndex::kNone, "a missing row reads as kNil");

constexpr uint64_t kShardSalt = 0xd1b54a32d192ed03ULL;
constexpr uintptr_t kCacheLine = 64;

// An admission counter: pushes seen (low 16 bits) and the step of the last one (high 48 bits).
constexpr uint64_t kCountBits = 16;
constexpr uint64_t kCountMask = (uint64_t{1} << kCountBits) - 1;
// Admission counters of a shard are swept for expiry when their number reaches this floor or
// twice the number left by the last sweep (amortised O(1) per counter).
constexpr size_t kMinCounterSweep = 1024;

// What a pull reads of `key` while its slot (`config`) holds no row for it: zeros in a slot with
// admission (not admitted yet, nothing stored), its initial values otherwise.
void WriteInitialValues(const SlotConfig& config, uint64_t key, uint64_t seed_mix, float* out) {
  if (config.admit_min_count > 0) {
    std::fill(out, out + config.dim, 0.0f);
    return;
  }
  for (int j = 0; j < config.dim; ++j) out[j] = ps_internal::InitValue(key, seed_mix, j, config.init_scale);
}

// Rows of one slot in one shard: values + optimizer state (`stride` floats per row), the key
// and the push count of every row and, when the slot evicts (ttl_steps or capacity), a
// doubly linked recency list through the rows with each row's last touched step. Row r lives
// in blocks[r / kBlockRows] at r % kBlockRows; rows are dense (0..rows-1): removing a row
// moves the last row into its place. Every block but the last is full.
class Arena {
 public:
  Arena(int stride, bool tracked) : stride_(stride), tracked_(tracked) {}

  uint32_t rows() const { return rows_; }
  bool tracked() const { return tracked_; }

  float* Row(uint32_t r) {
    return blocks_[r >> kBlockRowsLog2].values.data() +
           static_cast<size_t>(r & (kBlockRows - 1)) * stride_;
  }
  uint32_t& Pushes(uint32_t r) { return blocks_[r >> kBlockRowsLog2].pushes[r & (kBlockRows - 1)]; }
  uint64_t Key(uint32_t r) const { return blocks_[r >> kBlockRowsLog2].keys[r & (kBlockRows - 1)]; }

  // Appends an uninitialised row for `key`, most recently touched at `step`; returns its index.
  uint32_t Append(uint64_t key, uint64_t step) {
    if (blocks_.empty() || blocks_.back().keys.size() == kBlockRows) blocks_.emplace_back();
    Block& b = blocks_.back();
    const size_t n = b.keys.size();
    if (n == b.keys.capacity()) {
      const size_t cap = std::min<size_t>(kBlockRows, std::max<size_t>(kMinBlockRows, 2 * n));
      b.keys.reserve(cap);
      b.pushes.reserve(cap);
      b.values.reserve(cap * stride_);
      if (tracked_) b.lru.reserve(cap);
    }
    b.keys.push_back(key);
    b.pushes.push_back(0);
    b.values.resize(b.values.size() + stride_);
    const uint32_t r = rows_++;
    if (tracked_) {
      b.lru.push_back(Lru{step, kNil, kNil});
      LinkFront(r);
    }
    return r;
  }

  // Recency list (tracked arenas only). Touch makes r the most recent, touched at `step`.
  void Touch(uint32_t r, uint64_t step) {
    if (!tracked_) return;
    Node(r).touch = step;
    if (head_ == r) return;
    Unlink(r);
    LinkFront(r);
  }
  uint32_t Oldest() const { return tail_; }  // kNil when empty
  uint64_t TouchedAt(uint32_t r) { return Node(r).touch; }

  // Removes row r by moving the last row into its place. Returns the key of the moved row
  // (whose index is now r), or nullopt when r was the last row.
  std::optional<uint64_t> Remove(uint32_t r) {
    const uint32_t last = rows_ - 1;
    if (tracked_) Unlink(r);
    std::optional<uint64_t> moved;
    if (r != last) {
      std::memcpy(Row(r), Row(last), static_cast<size_t>(stride_) * sizeof(float));
      Pushes(r) = Pushes(last);
      blocks_[r >> kBlockRowsLog2].keys[r & (kBlockRows - 1)] = Key(last);
      moved = Key(last);
      if (tracked_) {
        Lru& node = Node(r);
        node = Node(last);
        if (node.prev == kNil) head_ = r; else Node(node.prev).next = r;
        if (node.next == kNil) tail_ = r; else Node(node.next).prev = r;
      }
    }
    Block& b = blocks_.back();
    b.keys.pop_back();
    b.pushes.pop_back();
    b.values.resize(b.values.size() - stride_);
    if (tracked_) b.lru.pop_back();
    if (b.keys.empty()) blocks_.pop_back();
    --rows_;
    return moved;
  }

  size_t MemoryBytes() const {
    size_t bytes = blocks_.capacity() * sizeof(Block);
    for (const Block& b : blocks_) {
      bytes += b.values.capacity() * sizeof(float) + b.keys.capacity() * sizeof(uint64_t) +
               b.pushes.capacity() * sizeof(uint32_t) + b.lru.capacity() * sizeof(Lru);
    }
    return bytes;
  }

 private:
  struct Lru {
    uint64_t touch;  // the step of the last Pull or Push of the row
    uint32_t prev;   // more recently touched row, kNil at the head
    uint32_t next;   // less recently touched row, kNil at the tail
  };
  struct Block {
    std::vector<float> values;
    std::vector<uint64_t> keys;  // for eviction (swap-remove) and checkpoints
    std::vector<uint32_t> pushes;
    std::vector<Lru> lru;  // tracked arenas only
  };

  Lru& Node(uint32_t r) { return blocks_[r >> kBlockRowsLog2].lru[r & (kBlockRows - 1)]; }
  void Unlink(uint32_t r) {
    Lru& node = Node(r);
    if (node.prev == kNil) head_ = node.next; else Node(node.prev).next = node.next;
    if (node.next == kNil) tail_ = node.prev; else Node(node.next).prev = node.prev;
    node.prev = node.next = kNil;
  }
  void LinkFront(uint32_t r) {
    Lru& node = Node(r);
    node.prev = kNil;
    node.next = head_;
    if (head_ != kNil) Node(head_).prev = r;
    head_ = r;
    if (tail_ == kNil) tail_ = r;
  }

  const int stride_;
  const bool tracked_;
  uint32_t rows_ = 0;
  uint32_t head_ = kNil;  // most recently touched row
  uint32_t tail_ = kNil;  // least recently touched row
  std::vector<Block> blocks_;
};

}  // namespace

struct SparseTable::SlotInfo {
  SlotConfig config;
  int stride = 0;        // floats per row
  bool tracked = false;  // ttl_steps or capacity: rows keep a recency list
};

// One independently locked part of the table: key -> row index in the arena of the key's
// slot, admission counters of keys not admitted yet, and per-slot counters.
class SparseTable::Shard {
 public:
  // `capacity[si]`: this shard's share of slot si's capacity (0: unlimited).
  Shard(const std::vector<SlotInfo>& slot_infos, const std::vector<int16_t>& slot_index,
        std::vector<uint64_t> capacity)
      : slot_infos_(slot_infos),
        slot_index_(slot_index),
        capacity_(std::move(capacity)),
        counters_(slot_infos.size()) {
    arenas_.reserve(slot_infos.size());
    for (const SlotInfo& info : slot_infos) arenas_.emplace_back(info.stride, info.tracked);
  }

  // Calls visit(i, si, row, pushes) for the key positions i = order[begin..end) of this
  // shard, in that order: `si` is slot_of[i], `row` the key's row touched at `step` (nullptr
  // when the shard has none) and `pushes` its push count. `visit` may Create rows.
  //
  // Software-pipelined, because a large table is far bigger than the caches and each key
  // costs two dependent misses (its hash-map group, then its row): the group of the key
  // 2 * kAhead positions ahead and the row of the key kAhead ahead are prefetched, so the
  // misses of many keys overlap. A key looked up before it was created (a duplicate, or a key
  // created earlier in the call) is looked up again when visited; after a row is removed
  // (capacity eviction moves another row's index) every later key is.
  // `touch` false leaves the rows' recency alone (a read that is not training's).
  template <typename Visit>
  void ForEachRow(absl::Span<const uint64_t> keys, const uint32_t* order, uint32_t begin,
                  uint32_t end, const int16_t* slot_of, uint64_t step, bool whole_row,
                  const Visit& visit, bool touch = true) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    constexpr uint32_t kAhead = 16;
    uint32_t ring[kAhead];
    const uint64_t removals = removals_;
    auto look_up = [&](uint32_t k) {
      const uint32_t i = order[k];
      const uint32_t r = index_.Find(keys[i]);
      if (r != kNil) {
        const int si = slot_of[i];
        const char* row = reinterpret_cast<const char*>(arenas_[si].Row(r));
        const int floats = whole_row ? slot_infos_[si].stride : slot_infos_[si].config.dim;
        const char* row_end = row + static_cast<size_t>(floats) * sizeof(float);
        // Every cache line the row touches: rows need not start on a line.
        const char* p = reinterpret_cast<const char*>(reinterpret_cast<uintptr_t>(row) &
                                                      ~uintptr_t{kCacheLine - 1});
        for (; p < row_end; p += kCacheLine) __builtin_prefetch(p);
        if (whole_row) __builtin_prefetch(&arenas_[si].Pushes(r));
      }
      ring[k % kAhead] = r;
    };
    for (uint32_t k = begin; k < std::min(end, begin + 2 * kAhead); ++k) {
      index_.Prefetch(keys[order[k]]);
    }
    for (uint32_t k = begin; k < std::min(end, begin + kAhead); ++k) look_up(k);
    for (uint32_t k = begin; k < end; ++k) {
      const uint32_t i = order[k];
      const int si = slot_of[i];
      uint32_t r = ring[k % kAhead];
      if (r == kNil || removals_ != removals) {
        r = index_.Find(keys[i]);
      }
      if (k + kAhead < end) look_up(k + kAhead);
      if (k + 2 * kAhead < end) index_.Prefetch(keys[order[k + 2 * kAhead]]);
      if (r == kNil) {
        visit(i, si, static_cast<float*>(nullptr), static_cast<uint32_t*>(nullptr));
        continue;
      }
      Arena& arena = arenas_[si];
      if (touch) arena.Touch(r, step);
      visit(i, si, arena.Row(r), &arena.Pushes(r));
    }
  }

  // Creates the row of unseen `key` with its initial values, touched at `step`, first
  // evicting the slot's least recently touched row when the shard's share of its capacity is
  // full.
  float* Create(uint64_t key, int si, uint64_t seed_mix, uint64_t step, uint32_t** pushes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Arena& arena = arenas_[si];
    if (capacity_[si] != 0 && arena.rows() >= capacity_[si]) {
      RemoveRow(si, arena.Oldest());
      ++counters_[si].evicted_capacity;
    }
    CHECK_LT(arena.rows(), UINT32_MAX - 1) << "too many rows in one shard";
    const uint32_t r = arena.Append(key, step);
    index_.Insert(key, r);
    ps_internal::InitRow(slot_infos_[si].config, key, seed_mix, arena.Row(r));
    ++counters_[si].admitted;
    if (pushes != nullptr) *pushes = &arena.Pushes(r);
    return arena.Row(r);
  }

  // Counts a push of unadmitted `key` at `step`; true when that admits it (the counter is
  // then gone and the caller creates the row).
  bool CountTowardsAdmission(uint64_t key, int si, uint64_t step)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    const uint64_t need = static_cast<uint64_t>(slot_infos_[si].config.admit_min_count);
    auto [it, inserted] = pending_.try_emplace(key, 0);
    if (inserted) ++counters_[si].unadmitted;
    const uint64_t count = (it->second & kCountMask) + 1;
    if (count >= need) {
      pending_.erase(it);
      --counters_[si].unadmitted;
      return true;
    }
    it->second = (step << kCountBits) | count;
    if (pending_.size() >= sweep_counters_at_) SweepCounters(step);
    return false;
  }

  // Evicts rows untouched for their slot's ttl_steps at step `now`, oldest first.
  void SweepRows(uint64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (size_t si = 0; si < arenas_.size(); ++si) {
      const int64_t ttl = slot_infos_[si].config.ttl_steps;
      if (ttl == 0) continue;
      Arena& arena = arenas_[si];
      // `touch + ttl < now`, not `now - touch > ttl`: a concurrent Push may have touched a
      // row at a later step than `now`.
      for (uint32_t r = arena.Oldest();
           r != kNil && arena.TouchedAt(r) + static_cast<uint64_t>(ttl) < now; r = arena.Oldest()) {
        RemoveRow(static_cast<int>(si), r);
        ++counters_[si].evicted_ttl;
      }
    }
  }

  void AddStats(std::vector<SlotStats>* stats) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (size_t si = 0; si < arenas_.size(); ++si) {
      SlotStats& s = (*stats)[si];
      const SlotStats& c = counters_[si];
      s.rows += arenas_[si].rows();
      s.admitted += c.admitted;
      s.evicted_ttl += c.evicted_ttl;
      s.evicted_capacity += c.evicted_capacity;
      s.unadmitted += c.unadmitted;
      s.unadmitted_expired += c.unadmitted_expired;
    }
  }

  size_t Size() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return index_.size(); }

  // Every stored row: visit(key, slot index, row, pushes); stops at the first error.
  template <typename Visit>
  absl::Status ForEachStored(const Visit& visit) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (size_t si = 0; si < arenas_.size(); ++si) {
      Arena& arena = arenas_[si];
      for (uint32_t r = 0; r < arena.rows(); ++r) {
        absl::Status status = visit(arena.Key(r), static_cast<int>(si), arena.Row(r),
                                    arena.Pushes(r));
        if (!status.ok()) return status;
      }
    }
    return absl::OkStatus();
  }

  // The row of `key` touched at `step`, created (uninitialised values) when missing.
  float* FindOrAppend(uint64_t key, int si, uint64_t step, uint32_t** pushes)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    Arena& arena = arenas_[si];
    uint32_t r = index_.Find(key);
    if (r == kNil) {
      if (capacity_[si] != 0 && arena.rows() >= capacity_[si]) {
        RemoveRow(si, arena.Oldest());
        ++counters_[si].evicted_capacity;
      }
      r = arena.Append(key, step);
      index_.Insert(key, r);
      ++counters_[si].admitted;
    } else {
      arena.Touch(r, step);
    }
    *pushes = &arena.Pushes(r);
    return arena.Row(r);
  }

  size_t MemoryBytes() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    // Swiss tables: one slot (key, value) plus one control byte per bucket.
    size_t bytes = index_.MemoryBytes();
    bytes += pending_.capacity() * (sizeof(std::pair<const uint64_t, uint64_t>) + 1);
    bytes += arenas_.capacity() * sizeof(Arena);
    for (const Arena& a : arenas_) bytes += a.MemoryBytes();
    return bytes;
  }

  mutable absl::Mutex mu;

 private:
  void RemoveRow(int si, uint32_t r) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    ++removals_;
    Arena& arena = arenas_[si];
    index_.Erase(arena.Key(r));
    if (std::optional<uint64_t> moved = arena.Remove(r)) index_.Update(*moved, r);
  }

  // Drops admission counters untouched for their slot's ttl_steps at step `now`.
  void SweepCounters(uint64_t now) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
    for (auto it = pending_.begin(); it != pending_.end();) {
      const int si = slot_index_[SlotOf(it->first)];  // configured: checked before counting
      const int64_t ttl = slot_infos_[si].config.ttl_steps;
      if (ttl > 0 && (it->second >> kCountBits) + static_cast<uint64_t>(ttl) < now) {
        --counters_[si].unadmitted;
        ++counters_[si].unadmitted_expired;
        pending_.erase(it++);
      } else {
        ++it;
      }
    }
    sweep_counters_at_ = std::max(kMinCounterSweep, 2 * pending_.size());
  }

  const std::vector<SlotInfo>& slot_infos_;   // the table's, immutable
  const std::vector<int16_t>& slot_index_;    // the table's, immutable
  const std::vector<uint64_t> capacity_;  // per slot index; 0: unlimited
  ps_internal::RowIndex index_ ABSL_GUARDED_BY(mu);
  std::vector<Arena> arenas_ ABSL_GUARDED_BY(mu);  // one per configured slot
  // Keys of admitting slots not admitted yet -> (step of last push << 16 | pushes seen).
  absl::flat_hash_map<uint64_t, uint64_t> pending_ ABSL_GUARDED_BY(mu);
  size_t sweep_counters_at_ ABSL_GUARDED_BY(mu) = kMinCounterSweep;
  uint64_t removals_ ABSL_GUARDED_BY(mu) = 0;  // rows removed: their indices were reused
  std::vector<SlotStats> counters_ ABSL_GUARDED_BY(mu);  // per slot index; rows unused
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
    if (config.capacity != 0 && config.capacity < options.num_shards) {
      return absl::InvalidArgumentError(
          absl::StrCat("slot ", slot, ": capacity ", config.capacity, " is split over ",
                       options.num_shards, " shards; want 0 (unlimited) or >= num_shards"));
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
    slot_infos_.push_back(SlotInfo{config, ps_internal::Stride(config),
                                   config.ttl_steps > 0 || config.capacity > 0});
    any_ttl_ = any_ttl_ || config.ttl_steps > 0;
  }
  const uint64_t n = static_cast<uint64_t>(options_.num_shards);
  shards_.reserve(options_.num_shards);
  for (uint64_t i = 0; i < n; ++i) {
    std::vector<uint64_t> capacity;
    for (const SlotInfo& info : slot_infos_) {
      const uint64_t c = static_cast<uint64_t>(info.config.capacity);
      capacity.push_back(c == 0 ? 0 : c / n + (i < c % n ? 1 : 0));
    }
    shards_.push_back(std::make_unique<Shard>(slot_infos_, slot_index_, std::move(capacity)));
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

absl::Status SparseTable::PlanCall(const char* op, absl::Span<const uint64_t> keys, size_t floats,
                                   Batch* batch) const {
  absl::StatusOr<size_t> total = Plan(keys, batch);
  if (!total.ok()) return total.status();
  if (*total != floats) {
    return absl::InvalidArgumentError(
        absl::StrCat(op, " of ", keys.size(), " keys needs ", *total, " floats, got ", floats));
  }
  return absl::OkStatus();
}

absl::Status SparseTable::Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) {
  Batch batch;
  if (absl::Status planned = PlanCall("pull", keys, out.size(), &batch); !planned.ok()) return planned;
  for (int s = 0; s < options_.num_shards; ++s) {
    const uint32_t begin = batch.shard_begin[s], end = batch.shard_begin[s + 1];
    if (begin == end) continue;
    Shard& shard = *shards_[s];
    ps_internal::TsanMutexLock lock(&shard.mu);
    // Read under the shard lock: touches of one shard never go back in time.
    const uint64_t step = step_.load(std::memory_order_acquire);
    shard.ForEachRow(
        keys, batch.order.data(), begin, end, batch.slot_of.data(), step, /*whole_row=*/false,
        [&](uint32_t i, int si, const float* row, uint32_t*) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          const SlotInfo& info = slot_infos_[si];
          float* dst = out.data() + batch.offset_of[i];
          if (row == nullptr) {
            if (info.config.admit_min_count > 0) {
              std::fill(dst, dst + info.config.dim, 0.0f);  // not admitted: zeros, not stored
              return;
            }
            row = shard.Create(keys[i], si, seed_mix_, step, nullptr);
          }
          std::memcpy(dst, row, info.config.dim * sizeof(float));
        });
  }
  return absl::OkStatus();
}

absl::Status SparseTable::Lookup(absl::Span<const uint64_t> keys, absl::Span<float> out) const {
  Batch batch;
  if (absl::Status planned = PlanCall("lookup", keys, out.size(), &batch); !planned.ok()) return planned;
  for (int s = 0; s < options_.num_shards; ++s) {
    const uint32_t begin = batch.shard_begin[s], end = batch.shard_begin[s + 1];
    if (begin == end) continue;
    Shard& shard = *shards_[s];
    ps_internal::TsanMutexLock lock(&shard.mu);
    shard.ForEachRow(
        keys, batch.order.data(), begin, end, batch.slot_of.data(), /*step=*/0, /*whole_row=*/false,
        [&](uint32_t i, int si, const float* row, uint32_t*) {
          const SlotConfig& config = slot_infos_[si].config;
          float* dst = out.data() + batch.offset_of[i];
          if (row != nullptr) {
            std::memcpy(dst, row, config.dim * sizeof(float));
          } else {
            WriteInitialValues(config, keys[i], seed_mix_, dst);
          }
        },
        /*touch=*/false);
  }
  return absl::OkStatus();
}

absl::Status SparseTable::Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) {
  Batch batch;
  if (absl::Status planned = PlanCall("push", keys, grads.size(), &batch); !planned.ok()) return planned;
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
    const uint64_t step = step_.load(std::memory_order_acquire);
    shard.ForEachRow(
        keys, batch.order.data(), begin, end, batch.slot_of.data(), step, /*whole_row=*/true,
        [&](uint32_t i, int si, float* row, uint32_t* pushes) ABSL_NO_THREAD_SAFETY_ANALYSIS {
          const SlotInfo& info = slot_infos_[si];
          if (row == nullptr) {
            if (info.config.admit_min_count > 0) {
              // Not admitted: count the push; the admitting push creates the row, and drops
              // its gradient like the earlier ones (it was computed against zeros).
              if (shard.CountTowardsAdmission(keys[i], si, step)) {
                shard.Create(keys[i], si, seed_mix_, step, nullptr);
              }
              return;
            }
            row = shard.Create(keys[i], si, seed_mix_, step, &pushes);
          }
          if (*pushes < UINT32_MAX) ++*pushes;  // saturates; Adam's bias correction is 1 then
          ps_internal::ApplyUpdate(info.config, grads.data() + batch.offset_of[i], *pushes, row);
        });
  }
  const uint64_t now = step_.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (any_ttl_) SweepExpired(now);
  return absl::OkStatus();
}

void SparseTable::SweepExpired(uint64_t now) {
  for (const auto& shard : shards_) {
    ps_internal::TsanMutexLock lock(&shard->mu);
    shard->SweepRows(now);
  }
}

int SparseTable::StoredFloats(uint64_t key) const {
  const int si = slot_index_[SlotOf(key)];
  return si < 0 ? 0 : slot_infos_[si].stride;
}

absl::Status SparseTable::ForEachStoredRow(
    absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>
        visit) const {
  for (const auto& shard : shards_) {
    ps_internal::TsanMutexLock lock(&shard->mu);
    absl::Status status = shard->ForEachStored(
        [&](uint64_t key, int si, const float* row, uint32_t pushes) {
          return visit(key,
                       absl::MakeConstSpan(row, static_cast<size_t>(slot_infos_[si].stride)),
                       pushes);
        });
    if (!status.ok()) return status;
  }
  return absl::OkStatus();
}

absl::Status SparseTable::RestoreRow(uint64_t key, absl::Span<const float> row, uint32_t pushes) {
  const int si = slot_index_[SlotOf(key)];
  if (si < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("restore: key ", key, " has slot ", SlotOf(key), ", which is not configured"));
  }
  if (row.size() != static_cast<size_t>(slot_infos_[si].stride)) {
    return absl::InvalidArgumentError(absl::StrCat("restore: key ", key, " of slot ", SlotOf(key),
                                                   " needs ", slot_infos_[si].stride,
                                                   " floats, got ", row.size()));
  }
  for (float v : row) {
    if (!std::isfinite(v)) {
      return absl::InvalidArgumentError(
          absl::StrCat("restore: key ", key, " has a non-finite float (", v, ")"));
    }
  }
  Shard& shard = *shards_[ShardOf(key, options_.num_shards)];
  ps_internal::TsanMutexLock lock(&shard.mu);
  uint32_t* stored_pushes = nullptr;
  float* dst = shard.FindOrAppend(key, si, step_.load(std::memory_order_acquire), &stored_pushes);
  std::copy(row.begin(), row.end(), dst);
  *stored_pushes = pushes;
  return absl::OkStatus();
}

TableStats SparseTable::stats() const {
  std::vector<SlotStats> per_slot(slot_infos_.size());
  for (const auto& shard : shards_) {
    ps_internal::TsanMutexLock lock(&shard->mu);
    shard->AddStats(&per_slot);
  }
  TableStats stats;
  stats.step = step();
  size_t si = 0;
  for (const auto& [slot, config] : options_.slots) {
    const SlotStats& s = per_slot[si++];
    stats.slots[slot] = s;
    stats.total.rows += s.rows;
    stats.total.admitted += s.admitted;
    stats.total.evicted_ttl += s.evicted_ttl;
    stats.total.evicted_capacity += s.evicted_capacity;
    stats.total.unadmitted += s.unadmitted;
    stats.total.unadmitted_expired += s.unadmitted_expired;
  }
  return stats;
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

absl::Status InitialValues(const TableOptions& options, uint64_t key, absl::Span<float> out) {
  auto it = options.slots.find(SlotOf(key));
  if (it == options.slots.end() || static_cast<size_t>(it->second.dim) != out.size()) {
    return absl::InvalidArgumentError(absl::StrCat("initial values of key ", key, " (slot ", SlotOf(key), "): ",
                                                   it == options.slots.end() ? "slot not configured"
                                                                             : "wrong row size"));
  }
  WriteInitialValues(it->second, key, ps_internal::InitSeedMix(options.seed), out.data());
  return absl::OkStatus();
}

}  // namespace choir
