// ChoirRec's dual-channel model (DESIGN.md 1.2-1.3, docs/models.md "ChoirRec"):
//
//   individual channel (teacher): slots, dense features and target attention over the user's
//     own sequences (din's inputs) -> first hidden layer h_ind
//     -> h_ind + Inject([h_ind; stopgrad(h_grp)]) -> rest of the tower -> z_ind
//   group channel (student): hierarchical group-id fusion (h_1 = e_1,
//     h_s = tanh(W_s [h_{s-1}; e_s]), then MLP(concat h_1..h_M)), attribute-completion
//     embeddings and group statistics, target attention over the group behaviour sequence, and
//     the candidate item/context slots -> first hidden layer h_grp -> tower -> z_grp
//   activity gates: MLP(activity features) -> sigmoid heads a_fuse, a_kd
//   fusion: z = (1 - a_fuse) z_ind + a_fuse z_grp, p = sigmoid(z)
//   loss: BCE(y, p) + kd_lambda * mean_b(w_b * g_b * a_kd_b * L_margin(sigmoid(z_grp_b),
//         stopgrad(sigmoid(z_ind_b)))) [+ aux_loss_weight * (BCE(y, z_ind) + BCE(y, z_grp))]
//   with g_b = 1[purchases_b >= kd_min_purchases and |sigmoid(z_ind_b) - 0.5| > kd_confidence],
//   L_margin(a, b) = max(0, |a - b| - kd_margin)^2 and w_b the sample weight (the defaults;
//   kd_direction and kd_margin_form choose the other direction and the plain hinge,
//   fusion_head.h).
//
// Stop-gradients: the injection never sends gradient into the group channel, and the KD term
// never sends gradient into the teacher's logit (z_ind by default). Every component has an
// ablation switch in ChoirRecConfig; with use_gates = false, a_fuse = a_kd = 0.5. The per-sample
// head (fusion, losses, their gradients) is fusion_head.h's and runs where the layers run.
#ifndef CHOIR_MODELS_CHOIRREC_MODEL_H_
#define CHOIR_MODELS_CHOIRREC_MODEL_H_

#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "core/proto/job.pb.h"
#include "models/fusion_head.h"
#include "models/layers.h"
#include "models/model.h"
#include "models/tensor.h"

namespace choir::models {

template <typename T>
class ChoirRecModel : public BasicModel<T> {
 public:
  // INVALID_ARGUMENT naming the field for a bad setting; FAILED_PRECONDITION when the shape
  // lacks what an enabled component reads (group levels, attributes, group sequences, activity
  // features, item slots for the group channel).
  static absl::StatusOr<std::unique_ptr<ChoirRecModel>> Create(const ModelConfig& config,
                                                               const ModelShape& shape,
                                                               uint64_t seed,
                                                               LayerFactory<T>* factory);

  void Forward(const BasicModelInputs<T>& in, Tensor<T>* logits) override;
  LossStats TrainBackward(absl::Span<const T> labels, absl::Span<const T> weights,
                          BasicModelGrads<T>* grads, std::vector<T>* per_sample_bce) override;
  std::vector<Param<T>*> Params() override;
  std::vector<Tensor<T>*> Buffers() override;
  void SetTraining(bool training) override;

  // Gradients of some loss with respect to the heads of the last Forward ([B, 1] each; an
  // empty tensor counts as zeros): the final logit z, and direct terms on z_ind, z_grp, a_fuse
  // and a_kd. BackwardFromHeads propagates them through the fusion, gates and both channels,
  // honouring the stop-gradients. TrainBackward is ComputeHeadGrads + BackwardFromHeads.
  // ComputeHeadGrads writes them on the model's device; BackwardFromHeads takes them on any.
  using HeadGrads = models::HeadGrads<T>;
  LossStats ComputeHeadGrads(absl::Span<const T> labels, absl::Span<const T> weights,
                             HeadGrads* heads, std::vector<T>* per_sample_bce) const;
  void BackwardFromHeads(const HeadGrads& heads, BasicModelGrads<T>* grads);

  // Host copies of the heads of the last Forward, [B, 1] each (for tests and inspection: on a
  // GPU each call copies).
  Tensor<T> z_ind() const { return z_ind_.To(Device::kCpu); }
  Tensor<T> z_grp() const { return z_grp_.To(Device::kCpu); }
  Tensor<T> a_fuse() const { return Gate(0); }
  Tensor<T> a_kd() const { return Gate(1); }
  // KD gate of each sample of the last Forward (1 open, 0 closed).
  std::vector<int> KdGates() const;

  // Parameters by part: the individual tower with its attention and the injection; the group
  // channel (fusion, group attention, group tower); the activity gates. Params() is their
  // concatenation in this order.
  std::vector<Param<T>*> IndividualParams();
  std::vector<Param<T>*> GroupParams();
  std::vector<Param<T>*> GateParams();

  const ModelShape& shape() const override { return shape_; }

 private:
  ChoirRecModel(ModelShape shape, ChoirRecConfig config, KdDirection kd_direction, MarginForm kd_margin_form,
                Device device)
      : shape_(std::move(shape)),
        config_(std::move(config)),
        kd_direction_(kd_direction),
        kd_margin_form_(kd_margin_form),
        device_(device) {}

  void ForwardGroup(const BasicModelInputs<T>& in);
  FusionHeads<T> Heads() const { return {&z_ind_, &z_grp_, &gates_}; }
  FusionLossOptions LossOptions() const;
  Tensor<T> Gate(int which) const;
  void BackwardGroup(const Tensor<T>& dz_grp, BasicModelGrads<T>* grads);

  ModelShape shape_;
  ChoirRecConfig config_;  // switches and loss settings
  KdDirection kd_direction_;    // config_.kd_direction, parsed
  MarginForm kd_margin_form_;   // config_.kd_margin_form, parsed
  Device device_;          // where the layers and the head run
  InputStager<T> stager_;
  BasicModelGrads<T> device_grads_;  // the gradients on device_, when that is not the host

  // Individual channel.
  std::vector<std::unique_ptr<TargetAttention<T>>> attention_;
  std::unique_ptr<Layer<T>> ind_bottom_;  // Linear + activation -> h_ind
  std::unique_ptr<Layer<T>> inject_;      // Linear([h_ind; h_grp]) -> h_ind's width
  std::unique_ptr<Layer<T>> ind_top_;     // rest of the tower -> z_ind
  // Group channel.
  std::vector<std::unique_ptr<Layer<T>>> fuse_;  // level s >= 1: tanh(W_s [h_{s-1}; e_s])
  std::unique_ptr<Layer<T>> fusion_mlp_;
  std::vector<std::unique_ptr<TargetAttention<T>>> group_attention_;
  std::unique_ptr<Layer<T>> grp_bottom_;  // -> h_grp
  std::unique_ptr<Layer<T>> grp_top_;     // -> z_grp
  // Gates.
  std::unique_ptr<Layer<T>> gate_mlp_;    // -> [a_fuse, a_kd]

  // Scratch of the last Forward (and Backward).
  int batch_ = 0;
  std::vector<Tensor<T>> queries_, pooled_, group_queries_, group_pooled_;
  std::vector<Tensor<T>> levels_, fused_, fuse_in_;
  std::vector<Tensor<T>> item_blocks_;
  Tensor<T> fusion_in_, g_id_, item_feats_, grp_in_, h_grp_;
  Tensor<T> ind_in_, h_ind_, inj_in_, inj_out_, h_ind2_;
  // The heads on device_: z_ind_, z_grp_ [B, 1], gates_ [B, 2] (0x0 without gates), and the
  // fused logit z_ [B, 1]; the purchases of the batch on the host.
  Tensor<T> z_ind_, z_grp_, gates_, z_;
  std::vector<T> purchases_;
};

}  // namespace choir::models

#endif  // CHOIR_MODELS_CHOIRREC_MODEL_H_
