// Choir's built-in sentence encoder: sentence-transformers/all-MiniLM-L6-v2 (a 6-layer,
// 384-wide BERT) on the CPU, BLAS-backed, with the sentence-transformers recipe -- mean pooling
// over the attention mask, then L2 normalisation. Used for the profile embeddings of
// DESIGN.md 1.1 (`choir embed`).
//
// A model directory holds model.safetensors, vocab.txt, config.json and optionally
// sentence_bert_config.json (max_seq_length, default 256) -- the layout of the Hugging Face
// repository, as tools/setup.sh extracts it. Texts are truncated to max_seq_length tokens.
//
// Thread-safety: after Load the encoder is immutable; Encode may be called concurrently.
// Encode with threads > 1 runs that many std::threads, each calling cblas_sgemm; OpenBLAS's own
// thread count is the process's business (a caller that passes threads > 1 usually wants
// openblas_set_num_threads(1)).
#ifndef CHOIR_MODELS_TEXT_MINILM_H_
#define CHOIR_MODELS_TEXT_MINILM_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "models/text/text_embedder.h"
#include "models/text/wordpiece.h"

namespace choir {

// The sizes read from config.json.
struct BertConfig {
  int vocab_size = 30522;
  int hidden = 384;
  int layers = 6;
  int heads = 12;
  int intermediate = 1536;
  int max_positions = 512;
  int type_vocab_size = 2;
  float layer_norm_eps = 1e-12f;
  int max_seq_length = 256;  // From sentence_bert_config.json.
};

class SentenceEncoder : public TextEmbedder {
 public:
  ~SentenceEncoder() override;

  // Loads the model from `model_dir`. NOT_FOUND naming the path when the directory or one of
  // its files is absent; DATA_LOSS for a corrupt safetensors file; INVALID_ARGUMENT for a
  // config this encoder does not support or a tensor of the wrong shape.
  static absl::StatusOr<std::unique_ptr<SentenceEncoder>> Load(FileSystem* fs,
                                                               const std::string& model_dir);

  // Embeds `texts` into `out` (texts.size() x dim() floats, row i for texts[i]), each row
  // L2-normalised. `batch_size` texts share one packed forward pass (>= 1); `threads` workers
  // (>= 1) take batches in turn. INVALID_ARGUMENT for a non-positive batch_size or threads.
  absl::Status Encode(const std::vector<std::string>& texts, int batch_size, int threads,
                      float* out) const;

  // TextEmbedder: identity "minilm:<model_dir as given to Load>"; Embed runs Encode with the
  // whole call as one batch on the calling thread (callers parallelise over calls).
  std::string Identity() const override;
  absl::StatusOr<EmbeddingMatrix> Embed(const std::vector<std::string>& texts) override;

  int dim() const { return config_.hidden; }
  const BertConfig& config() const { return config_; }
  const BertTokenizer& tokenizer() const { return *tokenizer_; }

 private:
  struct Layer;
  struct Scratch;

  SentenceEncoder() = default;

  // Embeds one batch of tokenised texts into `out` (ids.size() rows).
  void EncodeBatch(const std::vector<std::vector<int32_t>>& ids, Scratch* scratch,
                   float* out) const;

  std::string model_dir_;
  BertConfig config_;
  std::unique_ptr<BertTokenizer> tokenizer_;
  std::vector<float> word_emb_;   // [vocab, hidden]
  std::vector<float> pos_emb_;    // [max_positions, hidden]
  std::vector<float> type_emb_;   // [type_vocab, hidden]; texts use type 0
  std::vector<float> emb_ln_gamma_, emb_ln_beta_;
  std::vector<Layer> layers_;
};

}  // namespace choir

#endif  // CHOIR_MODELS_TEXT_MINILM_H_
