// The single-tower ranking models: `dnn` (embeddings + MLP, the individual channel of
// DESIGN.md 1.3 and the paper's base), `din` (dnn + DIN target attention over the user's
// behaviour sequences) and `dnn+groupid` (dnn with the user's semantic group ids as plain
// features, DESIGN.md 1.4). The dual-channel ChoirRec model is in choirrec_model.h.
#ifndef CHOIR_MODELS_RANKING_MODEL_H_
#define CHOIR_MODELS_RANKING_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/proto/job.pb.h"
#include "models/layers.h"
#include "models/model.h"
#include "models/tensor.h"

namespace choir::models {

class RankingModel : public Model {
 public:
  // INVALID_ARGUMENT for an unknown type or activation; FAILED_PRECONDITION for din when the
  // data has no behaviour sequences or for dnn+groupid without group levels. The tower reads
  // slots, dense, the attention outputs (din) and the group ids (dnn+groupid).
  static absl::StatusOr<std::unique_ptr<RankingModel>> Create(const ModelConfig& config,
                                                              const ModelShape& shape,
                                                              uint64_t seed,
                                                              LayerFactory<float>* factory);

  void Forward(const ModelInputs& in, Tensor<float>* logits) override;
  // Gradients of the last Forward for dL/dlogits: parameters accumulate; dslots
  // [B, num_slots * d], dsequences (per sequence [B * L, d]) and, when the model reads group
  // ids, dgroup_ids [B, levels * d] are overwritten.
  void Backward(const Tensor<float>& dlogits, Tensor<float>* dslots,
                std::vector<Tensor<float>>* dsequences, Tensor<float>* dgroup_ids = nullptr);
  // BCE on the logits, then Backward.
  LossStats TrainBackward(absl::Span<const float> labels, absl::Span<const float> weights,
                          ModelGrads* grads, std::vector<float>* per_sample_bce) override;
  std::vector<Param<float>*> Params() override;
  std::vector<Tensor<float>*> Buffers() override;
  void SetTraining(bool training) override;
  const ModelShape& shape() const override { return shape_; }
  bool uses_sequences() const { return !attention_.empty(); }

 private:
  RankingModel(ModelShape shape, Device device) : shape_(std::move(shape)), device_(device) {}

  ModelShape shape_;
  Device device_;
  InputStager<float> stager_;
  ModelGrads device_grads_;  // the gradients on device_, when that is not the host
  std::vector<std::unique_ptr<TargetAttention<float>>> attention_;  // din: one per sequence
  std::unique_ptr<Layer<float>> tower_;
  // Scratch of the last Forward.
  std::vector<Tensor<float>> queries_, pooled_;
  Tensor<float> tower_in_, dtower_in_, logits_, dlogits_;
};

}  // namespace choir::models

#endif  // CHOIR_MODELS_RANKING_MODEL_H_
