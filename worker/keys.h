// Helpers for callers whose keys repeat within a batch (the same item in many samples):
// deduplicate before EmbeddingStore::Pull, gather the unique rows back to every occurrence
// for the forward pass, and sum the occurrences' gradients before EmbeddingStore::Push.
//
//   std::vector<uint64_t> unique;  std::vector<uint32_t> index;
//   DedupKeys(keys, &unique, &index);
//   store->Pull(unique, unique_rows);            GatherRows(index, dim, unique_rows, rows);
//   ... backward fills grads (one row per occurrence) ...
//   SumDuplicateGrads(index, dim, grads, unique_grads);  store->Push(unique, unique_grads);
//
// Overloads taking `unique_dims` serve batches whose keys span slots of different widths:
// occurrence i's row then has unique_dims[index_of_each[i]] floats.
#ifndef CHOIR_WORKER_KEYS_H_
#define CHOIR_WORKER_KEYS_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace choir {

// Sets *unique to the distinct keys in order of first occurrence and *index_of_each to, for
// every keys[i], the position of keys[i] in *unique. Both outputs are overwritten.
void DedupKeys(absl::Span<const uint64_t> keys, std::vector<uint64_t>* unique,
               std::vector<uint32_t>* index_of_each);

// out[i*dim .. (i+1)*dim) = unique_rows[index_of_each[i]*dim ..]. INVALID_ARGUMENT on a size
// mismatch or an index out of range.
absl::Status GatherRows(absl::Span<const uint32_t> index_of_each, int dim,
                        absl::Span<const float> unique_rows, absl::Span<float> out);
absl::Status GatherRows(absl::Span<const uint32_t> index_of_each,
                        absl::Span<const int> unique_dims, absl::Span<const float> unique_rows,
                        absl::Span<float> out);

// grads_of_unique[u] = sum of grads_of_each[i] over every i with index_of_each[i] == u
// (summed in occurrence order; unique rows with no occurrence get 0). INVALID_ARGUMENT on a
// size mismatch or an index out of range.
absl::Status SumDuplicateGrads(absl::Span<const uint32_t> index_of_each, int dim,
                               absl::Span<const float> grads_of_each,
                               absl::Span<float> grads_of_unique);
absl::Status SumDuplicateGrads(absl::Span<const uint32_t> index_of_each,
                               absl::Span<const int> unique_dims,
                               absl::Span<const float> grads_of_each,
                               absl::Span<float> grads_of_unique);

}  // namespace choir

#endif  // CHOIR_WORKER_KEYS_H_
