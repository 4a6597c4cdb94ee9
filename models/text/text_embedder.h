// The one interface `choir embed` (models/text/embed.h) sees, whatever computes the vectors:
// the built-in all-MiniLM-L6-v2 encoder (minilm.h) or an OpenAI-compatible embeddings endpoint
// (remote_encoder.h).
#ifndef CHOIR_MODELS_TEXT_TEXT_EMBEDDER_H_
#define CHOIR_MODELS_TEXT_TEXT_EMBEDDER_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace choir {

// `rows` embeddings of `dim` floats, row-major in `values` (rows * dim floats).
struct EmbeddingMatrix {
  int64_t rows = 0;
  int dim = 0;
  std::vector<float> values;
};

class TextEmbedder {
 public:
  virtual ~TextEmbedder() = default;

  // Names the model and everything else that changes its vectors, e.g.
  // "minilm:/models/all-MiniLM-L6-v2" or "endpoint:http://host/v1/embeddings:bge-m3". Part of
  // the embedding-cache key: two embedders with one identity must give one vector per text.
  virtual std::string Identity() const = 0;

  // Embeds `texts` (at least one): row i of the result is the L2-normalised embedding of
  // texts[i]. Every successful call of one embedder gives the same width, and the same text
  // gives the same row whatever else is in the call. Thread-safe: EmbedTexts calls it from
  // several threads at once. Errors are the implementation's (see its header).
  virtual absl::StatusOr<EmbeddingMatrix> Embed(const std::vector<std::string>& texts) = 0;
};

}  // namespace choir

#endif  // CHOIR_MODELS_TEXT_TEXT_EMBEDDER_H_
