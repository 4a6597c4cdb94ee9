#include "worker/embedding_store.h"

namespace choir {

EmbeddingStore::~EmbeddingStore() = default;

}  // namespace choir
