#include "worker/local_embedding_store.h"

#include <utility>

namespace choir {
namespace {

// Forwards to a SparseTable; thread-safe because the table is.
class LocalEmbeddingStore : public EmbeddingStore {
 public:
  explicit LocalEmbeddingStore(std::unique_ptr<SparseTable> table) : table_(std::move(table)) {}

  absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) override {
    return table_->Pull(keys, out);
  }
  absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) override {
    return table_->Push(keys, grads);
  }
  int Dim(uint64_t key) const override { return table_->Dim(key); }

 private:
  const std::unique_ptr<SparseTable> table_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<EmbeddingStore>> NewLocalEmbeddingStore(TableOptions options) {
  absl::StatusOr<std::unique_ptr<SparseTable>> table = SparseTable::Create(std::move(options));
  if (!table.ok()) return table.status();
  return std::unique_ptr<EmbeddingStore>(new LocalEmbeddingStore(std::move(*table)));
}

}  // namespace choir
