// EmbeddingStore: the only way models reach sparse parameters.
//
// Models name rows by 64-bit feature keys (ps/feature_key.h: FeatureKey(slot, raw_id)), pull
// their current values before the forward pass and push their gradients after the backward
// pass; the store applies the slot's sparse optimizer (ps/slot_config.h). Implementations:
// in-process (worker/local_embedding_store.h, a ps/SparseTable) and a client of the parameter
// servers (worker/remote_embedding_store.h). Every implementation is thread-safe.
#ifndef CHOIR_WORKER_EMBEDDING_STORE_H_
#define CHOIR_WORKER_EMBEDDING_STORE_H_

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "checkpoint/checkpoint.h"
#include "core/fs.h"
#include "ps/sparse_table.h"

namespace choir {

class EmbeddingStore {
 public:
  virtual ~EmbeddingStore();

  // Copies the rows of `keys` into `out`, the concatenation of each key's Dim(key) floats in
  // key order; rows never seen are created with their deterministic initial values.
  // `keys` must be unique (deduplicate with DedupKeys in worker/keys.h). INVALID_ARGUMENT for
  // a key of an unconfigured slot or a wrong out.size(); remote stores add UNAVAILABLE and
  // DEADLINE_EXCEEDED. On error `out` is unspecified.
  virtual absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) = 0;

  // Reads like Pull without changing the store (evaluation's reads): a key without a row reads
  // what Pull would give it (its initial values; zeros in a slot with admission), and no row is
  // created, touched (recency for TTL and capacity) or evicted. Errors as Pull's.
  virtual absl::Status Lookup(absl::Span<const uint64_t> keys, absl::Span<float> out) = 0;

  // Applies the gradients `grads` (laid out as Pull's `out`) to the rows of `keys` with each
  // slot's optimizer. `keys` must be unique: sum the gradients of duplicates first
  // (SumDuplicateGrads in worker/keys.h). INVALID_ARGUMENT for an unconfigured slot, a wrong
  // grads.size() or a non-finite gradient (then no row changes).
  virtual absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) = 0;

  // Width of the rows of key's slot; 0 when the slot is not configured.
  virtual int Dim(uint64_t key) const = 0;

  // The rows held and the admission and eviction counts (ps/sparse_table.h) of a store that
  // holds its rows in this process; UNIMPLEMENTED for one that does not (the parameter servers
  // log their own when they stop).
  virtual absl::StatusOr<TableStats> Stats() const {
    return absl::UnimplementedError("this embedding store keeps no table in this process");
  }

  // --- Checkpoints (checkpoint/checkpoint.h, docs/checkpoints.md) ----------------------------
  // Writes every row (values, optimizer state, push count) into checkpoint directory `dir` as
  // sparse rows files ("sparse-<i>-of-<n>.bin", one per table) and returns what the manifest
  // records of each, by name. Call it where no Push runs (between steps).
  virtual absl::StatusOr<std::map<std::string, checkpoint::FileInfo>> SaveRows(
      FileSystem* fs, const std::string& dir) = 0;
  // Restores the rows of every sparse rows file of `checkpoint` (written by any number of
  // tables: each row goes where this store keeps its key) and sets the tables' step (the TTL
  // clock) to `table_step`. DATA_LOSS naming the file for a damaged one; INVALID_ARGUMENT when
  // a row does not fit this store's slots.
  virtual absl::Status LoadRows(const checkpoint::Reader& checkpoint, uint64_t table_step) = 0;
  // Continues at training step `step`: the next Push is that step (synchronous stores number
  // their pushes). In a cluster one worker calls LoadRows and every worker calls this.
  virtual void ResumeAt(uint64_t step) = 0;
};

// The names of the sparse rows files of `checkpoint`.
std::vector<std::string> SparseRowsFiles(const checkpoint::Reader& checkpoint);

// Reads sparse rows file `name` of `checkpoint` and restores each of its rows with `restore`;
// errors name the file and the row's key.
absl::Status ForEachCheckpointRow(
    const checkpoint::Reader& checkpoint, const std::string& name,
    absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>
        restore);

}  // namespace choir

#endif  // CHOIR_WORKER_EMBEDDING_STORE_H_
