// Embedding many texts with any TextEmbedder, resumably (`choir embed`, docs/encoder.md):
// identical texts are embedded once, texts found in the embedding cache are not embedded
// again, and every finished batch is appended to the cache (and synced) as it completes, so a
// run that fails or is killed loses at most the batches in flight and a rerun resumes.
#ifndef CHOIR_MODELS_TEXT_EMBED_H_
#define CHOIR_MODELS_TEXT_EMBED_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "models/text/text_embedder.h"

namespace choir {

struct EmbedOptions {
  // The append-only cache file (created when absent; format in docs/encoder.md). Keys are
  // (embedder identity, text), so one file may serve several embedders of the same width.
  // Empty: no cache (a failure then loses everything). Default empty.
  std::string cache_path;
  // Texts per TextEmbedder::Embed call, and per cache append. Default 64.
  int batch_size = 64;
  // Embed calls in flight at once, each on its own thread. Default 1.
  int parallelism = 1;
  // Show a progress line. Default true.
  bool progress = true;
};

struct EmbedReport {
  int64_t texts = 0;     // rows of the result
  int64_t distinct = 0;  // distinct texts among them
  int64_t cached = 0;    // distinct texts found in the cache
  int64_t embedded = 0;  // distinct texts embedded by this call
};

// Returns texts.size() rows, row i the embedding of texts[i] (rows with 0 columns when `texts`
// is empty). A row taken from the cache is bit-identical to the one that was computed.
// Errors: the cache's (INVALID_ARGUMENT for a cache of another width or format, DATA_LOSS for a
// corrupt one, each naming the file); the embedder's first error, with its code, after the
// batches in flight have finished and been saved, its message followed by how many distinct
// texts are now in the cache and that a rerun resumes (when any are); INVALID_ARGUMENT for
// non-positive batch_size or parallelism.
absl::StatusOr<EmbeddingMatrix> EmbedTexts(FileSystem* fs, TextEmbedder* embedder,
                                           const std::vector<std::string>& texts,
                                           const EmbedOptions& options, EmbedReport* report = nullptr);

}  // namespace choir

#endif  // CHOIR_MODELS_TEXT_EMBED_H_
