#include "worker/embedding_store.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "checkpoint/files.h"

namespace choir {

EmbeddingStore::~EmbeddingStore() = default;

std::vector<std::string> SparseRowsFiles(const checkpoint::Reader& checkpoint) {
  std::vector<std::string> names;
  for (const std::string& name : checkpoint.FileNames()) {
    if (absl::StartsWith(name, "sparse-") && absl::EndsWith(name, ".bin")) names.push_back(name);
  }
  return names;
}

absl::Status ForEachCheckpointRow(
    const checkpoint::Reader& checkpoint, const std::string& name,
    absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>
        restore) {
  absl::StatusOr<std::string> bytes = checkpoint.ReadFile(name);
  if (!bytes.ok()) return bytes.status();
  const std::string what = JoinPath(checkpoint.dir(), name);
  return checkpoint::ReadSparseRows(
      *bytes, what, [&](uint64_t key, absl::Span<const float> row, uint32_t pushes) {
        absl::Status s = restore(key, row, pushes);
        if (s.ok()) return s;
        return absl::Status(s.code(), absl::StrFormat("%s: key %#x: %s", what, key, s.message()));
      });
}

}  // namespace choir
