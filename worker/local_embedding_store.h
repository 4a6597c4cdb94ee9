// The in-process EmbeddingStore: a ps/SparseTable in the worker's own memory (local mode,
// tests, single-process training). Thread-safe; see ps/sparse_table.h for its locking.
#ifndef CHOIR_WORKER_LOCAL_EMBEDDING_STORE_H_
#define CHOIR_WORKER_LOCAL_EMBEDDING_STORE_H_

#include <memory>

#include "absl/status/statusor.h"
#include "ps/sparse_table.h"
#include "worker/embedding_store.h"

namespace choir {

// A store over a new SparseTable with `options`. INVALID_ARGUMENT when the options are invalid
// (ValidateTableOptions); they come from the job file, so this is not CHECKed.
absl::StatusOr<std::unique_ptr<EmbeddingStore>> NewLocalEmbeddingStore(TableOptions options);

}  // namespace choir

#endif  // CHOIR_WORKER_LOCAL_EMBEDDING_STORE_H_
