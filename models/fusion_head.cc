#include "models/fusion_head.h"

#include <algorithm>

#include "glog/logging.h"
#include "models/layers.h"

namespace choir::models {
namespace {

// Gated heads carry [B, 2] gates (also when B is 0); ungated ones a 0x0 tensor.
template <typename T>
bool Gated(const FusionHeads<T>& heads) {
  return heads.gates->cols() == 2;
}

template <typename T>
void CheckHeads(const FusionHeads<T>& heads, const char* what) {
  CHECK(heads.z_ind != nullptr && heads.z_grp != nullptr && heads.gates != nullptr) << what;
  const int batch = heads.z_ind->rows();
  CHECK(heads.z_ind->cols() == 1 && heads.z_grp->rows() == batch && heads.z_grp->cols() == 1)
      << what << ": z_ind and z_grp must be [B, 1]";
  CHECK(Gated(heads) ? heads.gates->rows() == batch
                     : heads.gates->rows() == 0 && heads.gates->cols() == 0)
      << what << ": gates must be [B, 2] or 0x0";
  CHECK(heads.z_grp->device() == heads.z_ind->device() &&
        (!Gated(heads) || heads.gates->device() == heads.z_ind->device()))
      << what << ": heads on two devices";
}

template <typename T>
T Gate(const FusionHeads<T>& heads, int b, int which) {
  return Gated(heads) ? heads.gates->at(b, which) : T(0.5);
}

template <typename T>
T At(const Tensor<T>& t, int b) {
  return t.empty() ? T(0) : t.at(b, 0);
}

// `t` on `device`: itself, or a copy in *holder.
template <typename T>
const Tensor<T>& OnDevice(const Tensor<T>& t, Device device, Tensor<T>* holder) {
  if (t.empty() || t.device() == device) return t;
  *holder = t.To(device);
  return *holder;
}

}  // namespace

template <typename T>
void FuseLogits(const FusionHeads<T>& heads, Tensor<T>* z) {
  CheckHeads(heads, "FuseLogits");
  const Device device = heads.z_ind->device();
  z->SetDevice(device);
  if (device != Device::kCpu) return GetDeviceBackend(device)->FuseLogits(heads, z);
  const int batch = heads.z_ind->rows();
  z->ResizeUninitialized(batch, 1);
  for (int b = 0; b < batch; ++b) {
    const T a = Gate(heads, b, 0);
    z->at(b, 0) = (1 - a) * heads.z_ind->at(b, 0) + a * heads.z_grp->at(b, 0);
  }
}

template <typename T>
FusionLoss FusionHeadLoss(const FusionHeads<T>& heads, const Tensor<T>& z,
                          absl::Span<const T> labels, absl::Span<const T> weights,
                          absl::Span<const T> purchases, const FusionLossOptions& options,
                          HeadGrads<T>* grads, std::vector<T>* per_sample_bce) {
  CheckHeads(heads, "FusionHeadLoss");
  const int batch = heads.z_ind->rows();
  const Device device = heads.z_ind->device();
  CHECK(z.rows() == batch && z.cols() == 1 && z.device() == device)
      << "FusionHeadLoss: z must be [B, 1] beside the heads";
  CHECK_EQ(static_cast<int>(labels.size()), batch) << "FusionHeadLoss: labels";
  CHECK(weights.empty() || static_cast<int>(weights.size()) == batch) << "FusionHeadLoss: weights";
  CHECK_EQ(static_cast<int>(purchases.size()), batch) << "FusionHeadLoss: purchases";
  CHECK(options.aux_weight >= 0 && options.kd_lambda >= 0) << "FusionHeadLoss: negative weight";
  for (Tensor<T>* t :
       {&grads->dz, &grads->dz_ind, &grads->dz_grp, &grads->da_fuse, &grads->da_kd}) {
    t->SetDevice(device);
  }
  grads->da_fuse.ResizeUninitialized(0, 0);
  if (device != Device::kCpu) {
    return GetDeviceBackend(device)->FusionHeadLoss(heads, z, labels, weights, purchases, options,
                                                    grads, per_sample_bce);
  }
  grads->dz.ResizeUninitialized(batch, 1);
  grads->dz_ind.ResizeUninitialized(batch, 1);
  grads->dz_grp.ResizeUninitialized(batch, 1);
  grads->da_kd.ResizeUninitialized(batch, 1);
  if (per_sample_bce != nullptr) per_sample_bce->resize(batch);
  FusionLoss loss;
  if (batch == 0) return loss;
  const T inv_n = T(1) / batch;
  const T aux = static_cast<T>(options.aux_weight);
  const T lambda = static_cast<T>(options.kd_lambda);
  const T margin = static_cast<T>(options.kd_margin);
  const bool ind_teaches = options.kd_direction == KdDirection::kIndividualToGroup;
  // BCE of one logit, and its weighted gradient w (sigmoid(z) - y) / B.
  auto bce = [inv_n](T logit, T y, T w, T* d) {
    *d = w * (Sigmoid(logit) - y) * inv_n;
    return std::max(logit, T(0)) - logit * y + std::log1p(std::exp(-std::abs(logit)));
  };
  double bce_sum = 0, ind_sum = 0, grp_sum = 0, kd_sum = 0, fuse_sum = 0, kd_gate_sum = 0;
  for (int b = 0; b < batch; ++b) {
    const T y = labels[b];
    const T w = weights.empty() ? T(1) : weights[b];
    const T zi = heads.z_ind->at(b, 0), zg = heads.z_grp->at(b, 0);
    const T a_fuse = Gate(heads, b, 0), a_kd = Gate(heads, b, 1);
    const T l = bce(z.at(b, 0), y, w, &grads->dz.at(b, 0));
    bce_sum += w * l;
    if (per_sample_bce != nullptr) (*per_sample_bce)[b] = l;
    T dzi = 0, dzg = 0, dakd = 0;
    if (aux > 0) {
      T d = 0;
      ind_sum += w * bce(zi, y, w, &d);
      dzi += aux * d;
      grp_sum += w * bce(zg, y, w, &d);
      dzg += aux * d;
    }
    if (lambda > 0) {
      const T p_ind = Sigmoid(zi), p_grp = Sigmoid(zg);
      const T p_teacher = ind_teaches ? p_ind : p_grp, p_student = ind_teaches ? p_grp : p_ind;
      if (KdGateOpen<T>(purchases[b], p_teacher, options.kd_min_purchases, options.kd_confidence,
                        options.kd_direction)) {
        ++loss.kd_active;
        T dmargin = 0;
        const T m = MarginLoss<T>(p_student, p_teacher, margin, options.kd_margin_form, &dmargin);
        kd_sum += w * a_kd * m;
        // Only the student's logit moves: the teacher's probability is a constant here.
        (ind_teaches ? dzg : dzi) += lambda * inv_n * w * a_kd * dmargin * p_student * (1 - p_student);
        dakd = lambda * inv_n * w * m;
      }
    }
    grads->dz_ind.at(b, 0) = dzi;
    grads->dz_grp.at(b, 0) = dzg;
    grads->da_kd.at(b, 0) = dakd;
    fuse_sum += a_fuse;
    kd_gate_sum += a_kd;
  }
  loss.bce = bce_sum / batch;
  loss.aux_ind = ind_sum / batch;
  loss.aux_grp = grp_sum / batch;
  loss.kd = kd_sum / batch;
  loss.mean_a_fuse = fuse_sum / batch;
  loss.mean_a_kd = kd_gate_sum / batch;
  loss.total =
      loss.bce + options.aux_weight * (loss.aux_ind + loss.aux_grp) + options.kd_lambda * loss.kd;
  return loss;
}

template <typename T>
void FusionBackward(const FusionHeads<T>& heads, const HeadGrads<T>& grads, Tensor<T>* dz_ind_total,
                    Tensor<T>* dz_grp_total, Tensor<T>* dgates) {
  CheckHeads(heads, "FusionBackward");
  const int batch = heads.z_ind->rows();
  const Device device = heads.z_ind->device();
  for (const Tensor<T>* t :
       {&grads.dz, &grads.dz_ind, &grads.dz_grp, &grads.da_fuse, &grads.da_kd}) {
    CHECK(t->empty() || (t->rows() == batch && t->cols() == 1))
        << "FusionBackward: head gradients must be [B, 1]";
  }
  // Head gradients made on another device (a test's host values for GPU heads) are copied over.
  HeadGrads<T> moved;
  const Tensor<T>* in[5] = {&grads.dz, &grads.dz_ind, &grads.dz_grp, &grads.da_fuse, &grads.da_kd};
  Tensor<T>* holders[5] = {&moved.dz, &moved.dz_ind, &moved.dz_grp, &moved.da_fuse, &moved.da_kd};
  const Tensor<T>* g[5];
  for (int i = 0; i < 5; ++i) g[i] = &OnDevice(*in[i], device, holders[i]);
  dz_ind_total->SetDevice(device);
  dz_grp_total->SetDevice(device);
  const bool gated = Gated(heads);
  if (gated) {
    CHECK(dgates != nullptr) << "FusionBackward: gated heads need dgates";
    dgates->SetDevice(device);
  }
  if (device != Device::kCpu) {
    return GetDeviceBackend(device)->FusionBackward(heads, *g[0], *g[1], *g[2], *g[3], *g[4],
                                                    dz_ind_total, dz_grp_total,
                                                    gated ? dgates : nullptr);
  }
  dz_ind_total->ResizeUninitialized(batch, 1);
  dz_grp_total->ResizeUninitialized(batch, 1);
  if (gated) dgates->ResizeUninitialized(batch, 2);
  for (int b = 0; b < batch; ++b) {
    const T dz = At(*g[0], b);
    const T a = Gate(heads, b, 0);
    dz_ind_total->at(b, 0) = dz * (1 - a) + At(*g[1], b);
    dz_grp_total->at(b, 0) = dz * a + At(*g[2], b);
    if (gated) {
      dgates->at(b, 0) = dz * (heads.z_grp->at(b, 0) - heads.z_ind->at(b, 0)) + At(*g[3], b);
      dgates->at(b, 1) = At(*g[4], b);
    }
  }
}

#define CHOIR_INSTANTIATE(T)                                                              \
  template void FuseLogits<T>(const FusionHeads<T>&, Tensor<T>*);                         \
  template FusionLoss FusionHeadLoss<T>(                                                  \
      const FusionHeads<T>&, const Tensor<T>&, absl::Span<const T>, absl::Span<const T>,  \
      absl::Span<const T>, const FusionLossOptions&, HeadGrads<T>*, std::vector<T>*);     \
  template void FusionBackward<T>(const FusionHeads<T>&, const HeadGrads<T>&, Tensor<T>*, \
                                  Tensor<T>*, Tensor<T>*);
CHOIR_INSTANTIATE(float)
CHOIR_INSTANTIATE(double)
#undef CHOIR_INSTANTIATE

}  // namespace choir::models
