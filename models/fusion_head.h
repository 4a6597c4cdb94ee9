// ChoirRec's per-sample head (choirrec_model.h): the activity-gated fusion of the two channels'
// logits, the training loss at the heads, and the gradients the heads send back into the
// channels and the gates. A few scalars per sample; each function runs on the device of its
// tensors (device.h), so a GPU step keeps the heads on the GPU and reads back only the final
// logits and the loss sums.
#ifndef CHOIR_MODELS_FUSION_HEAD_H_
#define CHOIR_MODELS_FUSION_HEAD_H_

#include <cmath>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "models/tensor.h"

namespace choir::models {

// The heads of one batch, all on one device: z_ind and z_grp [B, 1], the two channels' logits;
// gates [B, 2] = (a_fuse, a_kd), or 0x0 when the gates are switched off (0.5 each).
template <typename T>
struct FusionHeads {
  const Tensor<T>* z_ind = nullptr;
  const Tensor<T>* z_grp = nullptr;
  const Tensor<T>* gates = nullptr;
};

// Gradients of a loss with respect to the heads, [B, 1] each on the heads' device; an empty
// tensor counts as zeros. dz is the final logit's; dz_ind, dz_grp, da_fuse and da_kd are the
// direct terms on the channels' logits and the gates (the auxiliary and KD losses).
template <typename T>
struct HeadGrads {
  Tensor<T> dz, dz_ind, dz_grp, da_fuse, da_kd;
};

// Which channel teaches the other in the KD term (ChoirRecConfig.kd_direction).
enum class KdDirection {
  kIndividualToGroup,  // teacher z_ind, student z_grp, where purchases >= kd_min_purchases
  kGroupToIndividual,  // teacher z_grp, student z_ind, where purchases < kd_min_purchases
};
// The form of L_margin(a, b), d = |a - b| (ChoirRecConfig.kd_margin_form).
enum class MarginForm {
  kSquaredHinge,  // max(0, d - margin)^2
  kHinge,         // max(0, d - margin)
};

// The loss settings (ChoirRecConfig, docs/models.md "ChoirRec").
struct FusionLossOptions {
  double aux_weight = 0;     // weight of BCE(y, z_ind) + BCE(y, z_grp); 0: no auxiliary terms
  double kd_lambda = 0;      // weight of the KD term; 0: none (use_kd off)
  double kd_margin = 0;      // the margin of L_margin
  MarginForm kd_margin_form = MarginForm::kSquaredHinge;
  KdDirection kd_direction = KdDirection::kIndividualToGroup;
  double kd_confidence = 0;  // the KD gate needs |sigmoid(z_teacher) - 0.5| > kd_confidence ...
  int kd_min_purchases = 0;  // ... and purchases >= kd_min_purchases (< for kGroupToIndividual)
};

// One batch's loss terms. Every mean is over the batch size B, weighted as BCE is
// (BinaryCrossEntropy in layers.h).
struct FusionLoss {
  double bce = 0;      // BCE(y, z)
  double aux_ind = 0;  // BCE(y, z_ind); 0 without auxiliary terms
  double aux_grp = 0;  // BCE(y, z_grp); 0 without auxiliary terms
  // mean_b w_b g_b a_kd_b L_margin(sigmoid(z_student_b), sigmoid(z_teacher_b)), before lambda
  double kd = 0;
  int64_t kd_active = 0;  // samples whose KD gate g_b is open (0 without KD)
  double mean_a_fuse = 0;
  double mean_a_kd = 0;
  // bce + aux_weight (aux_ind + aux_grp) + kd_lambda kd.
  double total = 0;
};

// z = (1 - a_fuse) z_ind + a_fuse z_grp, [B, 1] on the heads' device.
template <typename T>
void FuseLogits(const FusionHeads<T>& heads, Tensor<T>* z);

// The loss of z (FuseLogits of `heads`) for `labels` and `weights` (as BinaryCrossEntropy; empty
// weights are all 1) and `purchases` (B host values, for the KD gate), and its gradients at the
// heads: grads->dz, dz_ind, dz_grp and da_kd are written [B, 1] on the heads' device, da_fuse
// is left empty (no loss term reads a_fuse directly). Every term is weighted by the sample's
// weight, the KD term too. The KD term treats the teacher's probability as a constant: nothing
// of it reaches the teacher's logit (dz_ind by default). Writes the unweighted per-sample BCE
// of z to per_sample_bce when not null.
template <typename T>
FusionLoss FusionHeadLoss(const FusionHeads<T>& heads, const Tensor<T>& z,
                          absl::Span<const T> labels, absl::Span<const T> weights,
                          absl::Span<const T> purchases, const FusionLossOptions& options,
                          HeadGrads<T>* grads, std::vector<T>* per_sample_bce);

// Back through the fusion: the total gradients reaching the channels' logits,
//   dz_ind_total = dz (1 - a_fuse) + dz_ind,   dz_grp_total = dz a_fuse + dz_grp,
// and, when the heads have gates, dgates [B, 2] = (dz (z_grp - z_ind) + da_fuse, da_kd); dgates
// is left untouched without gates. `grads` may hold host tensors for device heads (they are
// copied over); the outputs are on the heads' device.
template <typename T>
void FusionBackward(const FusionHeads<T>& heads, const HeadGrads<T>& grads, Tensor<T>* dz_ind_total,
                    Tensor<T>* dz_grp_total, Tensor<T>* dgates);

// The KD gate of one sample, p_teacher the teacher's probability:
// g = 1[purchases >= min_purchases and |p_teacher - 0.5| > confidence] when the individual
// channel teaches, 1[purchases < min_purchases and |p_teacher - 0.5| > confidence] when the
// group channel does.
template <typename T>
bool KdGateOpen(T purchases, T p_teacher, int min_purchases, double confidence, KdDirection direction) {
  const bool active = direction == KdDirection::kIndividualToGroup ? purchases >= min_purchases
                                                                   : purchases < min_purchases;
  return active && static_cast<double>(std::abs(p_teacher - T(0.5))) > confidence;
}

// L_margin(a, b): max(0, |a - b| - margin)^2 or max(0, |a - b| - margin); writes dL/da to *da
// when not null.
template <typename T>
T MarginLoss(T a, T b, T margin, MarginForm form, T* da) {
  const T diff = a - b;
  const T excess = std::abs(diff) - margin;
  if (excess <= 0) {
    if (da != nullptr) *da = 0;
    return 0;
  }
  const T sign = diff > 0 ? T(1) : T(-1);
  if (form == MarginForm::kHinge) {
    if (da != nullptr) *da = sign;
    return excess;
  }
  if (da != nullptr) *da = 2 * excess * sign;
  return excess * excess;
}

}  // namespace choir::models

#endif  // CHOIR_MODELS_FUSION_HEAD_H_
