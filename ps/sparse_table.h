// SparseTable: an in-memory, sharded table of embedding rows keyed by 64-bit feature keys
// (ps/feature_key.h), with lazy deterministic initialisation, a per-slot sparse optimizer
// applied on push, and per-slot feature admission and eviction. Used in-process by
// worker/local_embedding_store.h and, behind the transport, by the parameter servers.
//
// Rows: a key's slot (SlotOf(key)) picks its SlotConfig, hence its width `dim` and optimizer.
// A row holds dim values, StateFloatsPerDim(optimizer) * dim optimizer-state floats and a
// 32-bit count of the pushes applied to it (Adam's bias-correction step). Memory layout and
// update formulas: ps/README.md.
//
// Steps: the table counts its Push calls (step(), from 0; a rejected Push does not count). A
// row is "touched" at the current step by every Pull or Push of its key; a slot's ttl_steps,
// capacity and admit_min_count (ps/slot_config.h) work on that clock. A parameter server in
// synchronous mode calls Push exactly once per training step (ps/server.h), so there a table
// step is a training step; elsewhere every push request is one step.
//
// Thread map: a SparseTable runs no threads of its own. Any number of threads may call any
// method at once. Each shard has one mutex guarding its hash map, admission counters and row
// arenas; a call locks one shard at a time, never two, and runs no user code under a lock. A
// Pull or Push spanning several shards is atomic per row, not as a whole.
#ifndef CHOIR_PS_SPARSE_TABLE_H_
#define CHOIR_PS_SPARSE_TABLE_H_

#include <cstddef>
#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "ps/slot_config.h"

namespace choir {

struct TableOptions {
  // Seed of the lazy initialisation: a row's initial values depend only on (key, seed), never
  // on the order of pulls, the number of shards or the number of servers.
  uint64_t seed = 1;
  // Number of independently locked shards; more shards, less lock contention. Does not change
  // any value. Must be in [1, 4096]. Default 16.
  int num_shards = 16;
  // Configuration of every slot the table accepts; keys of other slots are rejected with
  // INVALID_ARGUMENT. Slots must be < kMaxSlots (4096). Must not be empty. A slot's capacity
  // must be 0 or >= num_shards (it is split over the shards).
  std::map<uint32_t, SlotConfig> slots;
};

// Counters of one slot (or, summed, of a table).
struct SlotStats {
  size_t rows = 0;                // rows held now: admitted - evicted_ttl - evicted_capacity
  uint64_t admitted = 0;          // rows created: on first touch, or on admission when the
                                  // slot has admit_min_count (re-creations after eviction too)
  uint64_t evicted_ttl = 0;       // rows evicted because ttl_steps passed without a touch
  uint64_t evicted_capacity = 0;  // rows evicted to make room under capacity
  size_t unadmitted = 0;          // keys being counted towards admit_min_count now
  uint64_t unadmitted_expired = 0;  // admission counters dropped after ttl_steps untouched
};

struct TableStats {
  uint64_t step = 0;  // Push calls applied so far (SparseTable::step())
  SlotStats total;    // the sum over slots
  std::map<uint32_t, SlotStats> slots;
};

// OK when the options and every slot config are valid; INVALID_ARGUMENT otherwise.
absl::Status ValidateTableOptions(const TableOptions& options);

// The shard (in [0, num_shards)) of `key` inside one table: a re-mix of the key, so that it is
// independent of key-range or key-modulo sharding across servers.
int ShardOf(uint64_t key, int num_shards);

// What a Pull of `key` reads from a table of `options` that does not hold the key: its
// deterministic initial values, or zeros in a slot with admit_min_count (not admitted yet).
// The serving Predictor reads this for keys absent from a bundle, as the trainer's evaluation
// would. INVALID_ARGUMENT for an unconfigured slot or out.size() != the slot's dim.
absl::Status InitialValues(const TableOptions& options, uint64_t key, absl::Span<float> out);

class SparseTable {
 public:
  // INVALID_ARGUMENT when ValidateTableOptions fails.
  static absl::StatusOr<std::unique_ptr<SparseTable>> Create(TableOptions options);
  ~SparseTable();

  SparseTable(const SparseTable&) = delete;
  SparseTable& operator=(const SparseTable&) = delete;

  // Copies the rows of `keys` into `out`, the concatenation of each key's Dim(key) floats in
  // key order, and touches them. Unseen keys are created first with their deterministic
  // initial values, except in slots with admit_min_count: a key not admitted yet reads as
  // zeros and nothing is stored for it. `keys` should be unique (duplicates are allowed and
  // read the same row twice). May evict rows of a full slot (capacity). INVALID_ARGUMENT,
  // before any row is created, when a key's slot is not configured or out.size() differs from
  // the sum of the keys' dims.
  absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out);

  // Reads like Pull without changing the table: a key without a row reads what Pull would
  // return for it (InitialValues: its initial values, or zeros in a slot with admit_min_count),
  // and no row is created, touched or evicted. For evaluation, which must not change the model
  // or the rows' recency. Errors as Pull's.
  absl::Status Lookup(absl::Span<const uint64_t> keys, absl::Span<float> out) const;

  // Applies each key's slot optimizer to its row with gradient `grads` (laid out as Pull's
  // `out`), counts one push for the row and touches it. Unseen keys (e.g. never pulled) are
  // first created as Pull would; in slots with admit_min_count an unadmitted key's counter is
  // raised instead and its gradient dropped (the admitting push creates the row with its
  // initial values and drops its gradient too). Then the table's step advances by one and
  // rows (and admission counters) untouched for their slot's ttl_steps are evicted. `keys`
  // must be unique: a duplicated key is updated once per occurrence, in order, which is not
  // the same as one update with the summed gradient (see DedupKeys and SumDuplicateGrads in
  // worker/keys.h). An empty push is a step too. INVALID_ARGUMENT, before any row changes and
  // without a step, for an unconfigured slot, a size mismatch or a non-finite gradient.
  absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads);

  // Width of the rows of key's slot; 0 when the slot is not configured.
  int Dim(uint64_t key) const;

  // Number of rows held now.
  size_t size() const;

  // Push calls applied so far: the clock of ttl_steps.
  uint64_t step() const { return step_.load(std::memory_order_acquire); }

  // Rows, admissions, evictions and admission counters, per slot and in total. Each shard is
  // read under its lock; the sum is not one atomic snapshot while other threads call in.
  TableStats stats() const;

  // Bytes held by the rows: hash-map capacity plus row-arena capacity (values, optimizer state,
  // key and push count of each row, the recency list of slots with ttl_steps or capacity,
  // including slack of partly used blocks) plus admission counters. Excludes the fixed-size
  // object itself. See ps/README.md for the per-row figure.
  size_t MemoryBytes() const;

  const TableOptions& options() const { return options_; }

  // --- Checkpoints -------------------------------------------------------------------------
  // Floats a stored row of key's slot holds: its dim values, then its optimizer state
  // (StateFloatsPerDim(optimizer) * dim); 0 when the slot is not configured.
  int StoredFloats(uint64_t key) const;

  // Calls visit(key, row, pushes) for every stored row, shard by shard, with `row` its
  // StoredFloats(key) floats and `pushes` its push count, under the shard's lock (visit must
  // not call back into the table). Consistent as a whole only when no Push runs meanwhile
  // (checkpoints are taken between steps). Stops at, and returns, the first non-OK status.
  absl::Status ForEachStoredRow(
      absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>
          visit) const;

  // Stores `row` (values and optimizer state, as ForEachStoredRow gives them) and `pushes` for
  // `key`, creating the row or overwriting it, touched at the current step; bypasses
  // admission. Capacity still applies (a full slot evicts its least recently touched row).
  // INVALID_ARGUMENT for an unconfigured slot, a wrong row size or a non-finite float.
  absl::Status RestoreRow(uint64_t key, absl::Span<const float> row, uint32_t pushes);

  // Sets step() (a restored table continues its TTL clock).
  void set_step(uint64_t step) { step_.store(step, std::memory_order_release); }

 private:
  class Shard;
  struct SlotInfo;
  // A call's keys grouped by shard.
  struct Batch {
    std::vector<int16_t> slot_of;       // index into slot_infos_ of each key
    std::vector<size_t> offset_of;      // float offset of each key's row in the call's buffer
    std::vector<uint32_t> order;        // key positions sorted by shard (stable)
    std::vector<uint32_t> shard_begin;  // order[shard_begin[s] .. shard_begin[s+1]) in shard s
  };

  explicit SparseTable(TableOptions options);

  // Evicts rows and admission counters untouched for their slot's ttl_steps at step `now`.
  void SweepExpired(uint64_t now);

  // Fills `batch` and returns the floats the keys' rows need, or INVALID_ARGUMENT naming the
  // first key of an unconfigured slot.
  absl::StatusOr<size_t> Plan(absl::Span<const uint64_t> keys, Batch* batch) const;
  // Plan, then INVALID_ARGUMENT naming `op` unless the keys' rows take exactly `floats` floats.
  absl::Status PlanCall(const char* op, absl::Span<const uint64_t> keys, size_t floats, Batch* batch) const;

  const TableOptions options_;
  const uint64_t seed_mix_;                  // initialisation seed, pre-mixed
  std::vector<SlotInfo> slot_infos_;         // one per configured slot, in slot order
  std::vector<int16_t> slot_index_;          // slot -> index into slot_infos_, -1 if unknown
  std::vector<std::unique_ptr<Shard>> shards_;
  bool any_ttl_ = false;                     // some slot has ttl_steps
  std::atomic<uint64_t> step_{0};            // Push calls applied
};

}  // namespace choir

#endif  // CHOIR_PS_SPARSE_TABLE_H_
