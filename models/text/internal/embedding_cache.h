// The append-only embedding cache of `choir embed` (docs/encoder.md, "The embedding cache"):
// every finished batch is appended and synced, so a run that dies loses at most the batches in
// flight, and a rerun embeds only what is missing.
//
// File layout (little-endian):
//   header  "CHOIREMB" (8 bytes) | version u32 (= 1) | dim u32
//   record  key u64 | dim x f32 | crc32c u32 of the key and row bytes       (12 + 4 dim bytes)
// key = EmbeddingCacheKey(embedder identity, text). Records are in completion order; a key may
// repeat (same row). Recovery on Open: bad or partial records after the last good one are a
// torn tail (a crash mid-write): dropped with a warning naming the file and offset, and the
// file is rewritten without them. A bad record followed by a good one is DATA_LOSS; a wrong
// magic, version or width is INVALID_ARGUMENT. Both messages name the file and say that
// deleting it is safe (it only costs re-embedding).
#ifndef CHOIR_MODELS_TEXT_INTERNAL_EMBEDDING_CACHE_H_
#define CHOIR_MODELS_TEXT_INTERNAL_EMBEDDING_CACHE_H_

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/fs.h"

namespace choir::text_internal {

inline constexpr char kEmbeddingCacheMagic[] = "CHOIREMB";  // 8 bytes without the NUL
inline constexpr uint32_t kEmbeddingCacheVersion = 1;
inline constexpr size_t kEmbeddingCacheHeaderSize = 16;

// 64-bit FNV-1a of identity, a NUL byte and text.
uint64_t EmbeddingCacheKey(absl::string_view identity, absl::string_view text);

// Not thread-safe: one owner appends (EmbedTexts serialises its workers' appends).
class EmbeddingCache {
 public:
  // Loads the cache at `path` (an absent file is an empty cache, created on the first Append),
  // recovering a torn tail as described above.
  static absl::StatusOr<std::unique_ptr<EmbeddingCache>> Open(FileSystem* fs,
                                                              const std::string& path);
  ~EmbeddingCache();

  // Width of the rows; 0 while the cache is empty and absent.
  int dim() const { return dim_; }
  // Distinct keys held.
  int64_t size() const { return static_cast<int64_t>(index_.size()); }
  // The row of `key` (dim() floats, valid until the next Append), or nullptr.
  const float* Find(uint64_t key) const;
  // Appends `keys.size()` rows of `dim` floats and syncs the file, creating it (with its header)
  // when absent. INVALID_ARGUMENT naming the file when `dim` differs from the cache's width;
  // I/O errors as the file system reports them (the rows are then not held, and every later
  // Append returns the same error).
  absl::Status Append(const std::vector<uint64_t>& keys, const float* rows, int dim);

  const std::string& path() const { return path_; }

 private:
  EmbeddingCache(FileSystem* fs, std::string path) : fs_(fs), path_(std::move(path)) {}
  absl::Status Load();

  FileSystem* const fs_;
  const std::string path_;
  int dim_ = 0;
  absl::flat_hash_map<uint64_t, int64_t> index_;  // key -> row in rows_
  std::vector<float> rows_;
  std::unique_ptr<WritableFile> file_;  // open for appending once the file exists
  absl::Status broken_;                 // set by a failed append; later appends return it
};

}  // namespace choir::text_internal

#endif  // CHOIR_MODELS_TEXT_INTERNAL_EMBEDDING_CACHE_H_
