// SparseTable: an in-memory, sharded table of embedding rows keyed by 64-bit feature keys
// (ps/feature_key.h), with lazy deterministic initialisation and a per-slot sparse optimizer
// applied on push. Used in-process by worker/local_embedding_store.h and, behind the transport,
// by the parameter servers.
//
// Rows: a key's slot (SlotOf(key)) picks its SlotConfig, hence its width `dim` and optimizer.
// A row holds dim values, StateFloatsPerDim(optimizer) * dim optimizer-state floats and a
// 32-bit count of the pushes applied to it (Adam's bias-correction step). Memory layout and
// update formulas: ps/README.md.
//
// Thread map: a SparseTable runs no threads of its own. Any number of threads may call any
// method at once. Each shard has one mutex guarding its hash map and row arenas; a call locks
// one shard at a time, never two, and runs no user code under a lock. A Pull or Push spanning
// several shards is atomic per row, not as a whole.
#ifndef CHOIR_PS_SPARSE_TABLE_H_
#define CHOIR_PS_SPARSE_TABLE_H_

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <vector>

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
  // INVALID_ARGUMENT. Slots must be < kMaxSlots (4096). Must not be empty.
  std::map<uint32_t, SlotConfig> slots;
};

// OK when the options and every slot config are valid; INVALID_ARGUMENT otherwise.
absl::Status ValidateTableOptions(const TableOptions& options);

// The shard (in [0, num_shards)) of `key` inside one table: a re-mix of the key, so that it is
// independent of key-range or key-modulo sharding across servers.
int ShardOf(uint64_t key, int num_shards);

class SparseTable {
 public:
  // INVALID_ARGUMENT when ValidateTableOptions fails.
  static absl::StatusOr<std::unique_ptr<SparseTable>> Create(TableOptions options);
  ~SparseTable();

  SparseTable(const SparseTable&) = delete;
  SparseTable& operator=(const SparseTable&) = delete;

  // Copies the rows of `keys` into `out`, the concatenation of each key's Dim(key) floats in
  // key order. Unseen keys are created first with their deterministic initial values.
  // `keys` should be unique (duplicates are allowed and read the same row twice).
  // INVALID_ARGUMENT, before any row is created, when a key's slot is not configured or
  // out.size() differs from the sum of the keys' dims.
  absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out);

  // Applies each key's slot optimizer to its row with gradient `grads` (laid out as Pull's
  // `out`), and counts one push for the row. Unseen keys (e.g. never pulled) are first created
  // as Pull would. `keys` must be unique: a duplicated key is updated once per occurrence, in
  // order, which is not the same as one update with the summed gradient (see DedupKeys and
  // SumDuplicateGrads in worker/keys.h). INVALID_ARGUMENT, before any row changes, for an
  // unconfigured slot, a size mismatch or a non-finite gradient.
  absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads);

  // Width of the rows of key's slot; 0 when the slot is not configured.
  int Dim(uint64_t key) const;

  // Number of rows created so far.
  size_t size() const;

  // Bytes held by the rows: hash-map capacity plus row-arena capacity (values, optimizer state,
  // key and push count of each row, including slack of partly used blocks). Excludes the
  // fixed-size object itself. See ps/README.md for the per-row figure.
  size_t MemoryBytes() const;

  const TableOptions& options() const { return options_; }

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

  // Fills `batch` and returns the floats the keys' rows need, or INVALID_ARGUMENT naming the
  // first key of an unconfigured slot.
  absl::StatusOr<size_t> Plan(absl::Span<const uint64_t> keys, Batch* batch) const;

  const TableOptions options_;
  const uint64_t seed_mix_;                  // initialisation seed, pre-mixed
  std::vector<SlotInfo> slot_infos_;         // one per configured slot, in slot order
  std::vector<int16_t> slot_index_;          // slot -> index into slot_infos_, -1 if unknown
  std::vector<std::unique_ptr<Shard>> shards_;
};

}  // namespace choir

#endif  // CHOIR_PS_SPARSE_TABLE_H_
