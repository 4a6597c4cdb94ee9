// The ranking models trained by Choir's trainer: `dnn` (embeddings + MLP, the individual
// channel of DESIGN.md 1.3 and the paper's base) and `din` (dnn + DIN target attention over the
// user's behaviour sequences). They see only dense tensors: the trainer pulls embedding rows
// from the EmbeddingStore, gathers them into the inputs below and pushes the input gradients
// back. Layers come from a LayerFactory, so a CUDA backend changes nothing here.
#ifndef CHOIR_MODELS_RANKING_MODEL_H_
#define CHOIR_MODELS_RANKING_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/proto/job.pb.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models {

// What the inputs look like.
struct ModelShape {
  int num_slots = 0;      // categorical features, each an embedding of embedding_dim
  int embedding_dim = 16;
  int num_dense = 0;      // dense features
  int max_seq_len = 30;   // padded length of every sequence
  // For each behaviour sequence (din only): the slot of its target feature (the query).
  std::vector<int> sequence_targets;
};

// One batch of inputs, B rows.
struct ModelInputs {
  Tensor<float> slots;                  // [B, num_slots * d], slot s at columns [s*d, (s+1)*d)
  Tensor<float> dense;                  // [B, num_dense]
  std::vector<Tensor<float>> sequences;  // per sequence: [B * max_seq_len, d], padded
  std::vector<std::vector<int>> lengths;  // per sequence: B lengths
};

class RankingModel {
 public:
  // INVALID_ARGUMENT for an unknown type or activation; FAILED_PRECONDITION for din when the
  // data has no behaviour sequences.
  static absl::StatusOr<std::unique_ptr<RankingModel>> Create(const ModelConfig& config,
                                                              const ModelShape& shape,
                                                              uint64_t seed,
                                                              LayerFactory<float>* factory);

  // logits: [B, 1].
  void Forward(const ModelInputs& in, Tensor<float>* logits);
  // Gradients of the last Forward: parameters accumulate; dslots [B, num_slots * d] and
  // dsequences (per sequence [B * L, d]) are overwritten.
  void Backward(const Tensor<float>& dlogits, Tensor<float>* dslots,
                std::vector<Tensor<float>>* dsequences);
  std::vector<Param<float>*> Params();
  void SetTraining(bool training);
  const ModelShape& shape() const { return shape_; }
  bool uses_sequences() const { return !attention_.empty(); }

 private:
  RankingModel(ModelShape shape) : shape_(std::move(shape)) {}

  ModelShape shape_;
  std::vector<std::unique_ptr<TargetAttention<float>>> attention_;  // din: one per sequence
  std::unique_ptr<Layer<float>> tower_;
  // Scratch of the last Forward.
  std::vector<Tensor<float>> queries_, pooled_;
  Tensor<float> tower_in_, dtower_in_;
};

}  // namespace choir::models

#endif  // CHOIR_MODELS_RANKING_MODEL_H_
