#include "worker/local_embedding_store.h"

#include "absl/strings/str_cat.h"
#include "checkpoint/files.h"

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
  absl::Status Lookup(absl::Span<const uint64_t> keys, absl::Span<float> out) override {
    return table_->Lookup(keys, out);
  }
  absl::Status Push(absl::Span<const uint64_t> keys, absl::Span<const float> grads) override {
    return table_->Push(keys, grads);
  }
  int Dim(uint64_t key) const override { return table_->Dim(key); }
  absl::StatusOr<TableStats> Stats() const override { return table_->stats(); }

  absl::StatusOr<std::map<std::string, checkpoint::FileInfo>> SaveRows(
      FileSystem* fs, const std::string& dir) override {
    absl::StatusOr<std::string> bytes = checkpoint::EncodeSparseRows(
        [&](checkpoint::RowVisitor visit) { return table_->ForEachStoredRow(visit); });
    if (!bytes.ok()) return bytes.status();
    const std::string name = "sparse-0-of-1.bin";
    absl::StatusOr<checkpoint::FileInfo> info =
        checkpoint::WriteCheckpointFile(fs, dir, name, *bytes);
    if (!info.ok()) return info.status();
    return std::map<std::string, checkpoint::FileInfo>{{name, *info}};
  }

  absl::Status LoadRows(const checkpoint::Reader& checkpoint, uint64_t table_step) override {
    const std::vector<std::string> files = SparseRowsFiles(checkpoint);
    if (files.empty()) {
      return absl::DataLossError(
          absl::StrCat("checkpoint ", checkpoint.dir(), " has no sparse rows file"));
    }
    table_->set_step(table_step);
    for (const std::string& name : files) {
      absl::Status status = ForEachCheckpointRow(
          checkpoint, name, [&](uint64_t key, absl::Span<const float> row, uint32_t pushes) {
            return table_->RestoreRow(key, row, pushes);
          });
      if (!status.ok()) return status;
    }
    return absl::OkStatus();
  }

  void ResumeAt(uint64_t step) override { table_->set_step(step); }

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
