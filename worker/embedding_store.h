// EmbeddingStore: the only way models reach sparse parameters.
//
// Models name rows by 64-bit feature keys (ps/feature_key.h: FeatureKey(slot, raw_id)), pull
// their current values before the forward pass and push their gradients after the backward
// pass; the store applies the slot's sparse optimizer (ps/slot_config.h). Implementations:
// in-process (worker/local_embedding_store.h, a ps/SparseTable) and, later, a client of the
// parameter servers. Every implementation is thread-safe.
#ifndef CHOIR_WORKER_EMBEDDING_STORE_H_
#define CHOIR_WORKER_EMBEDDING_STORE_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/types/span.h"

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

  // Applies the gradients `grads` (laid out as Pull's `out`) to the rows of `keys` with each
  // slot's optimizer. `keys` must be unique: sum the gradients of duplicates first
  // (SumDuplicateGrads in worker/keys.h). INVALID_ARGUMENT for an unconfigured slot, a wrong
  // grads.size() or a non-finite gradient (then no row changes).
  virtual absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) = 0;

  // Width of the rows of key's slot; 0 when the slot is not configured.
  virtual int Dim(uint64_t key) const = 0;
};

}  // namespace choir

#endif  // CHOIR_WORKER_EMBEDDING_STORE_H_
