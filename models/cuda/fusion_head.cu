// ChoirRec's per-sample head on the GPU (models/fusion_head.h): the gated fusion of the two
// logits, the loss at the heads with its gradients, and the gradients back through the fusion.
// One thread per sample in grid-stride loops; the loss sums reduce per block in double and come
// back with the per-sample BCE in one synchronisation.
#include <cmath>

#include "models/cuda/internal/cuda_util.h"
#include "models/cuda/internal/ops.h"

namespace choir::models::cuda::internal {
namespace {

// The loss sums each block reduces: weighted BCE of z, z_ind and z_grp, the KD sum, the number
// of open KD gates, and the sums of a_fuse and a_kd.
enum Sum { kBce, kAuxInd, kAuxGrp, kKd, kKdActive, kFuse, kKdGate, kSums };

template <typename T>
__device__ T SigmoidOf(T x) {
  return x >= T(0) ? T(1) / (T(1) + exp(-x)) : exp(x) / (T(1) + exp(x));
}

template <typename T>
__device__ T BceOf(T z, T y) {
  return (z > T(0) ? z : T(0)) - z * y + log1p(exp(-fabs(z)));
}

template <typename T>
__global__ void FuseKernel(const T* z_ind, const T* z_grp, const T* gates, int n, T* z) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const T a = gates == nullptr ? T(0.5) : gates[2 * i];
    z[i] = (1 - a) * z_ind[i] + a * z_grp[i];
  }
}

template <typename T>
struct LossArgs {
  const T* z;
  const T* z_ind;
  const T* z_grp;
  const T* gates;  // [n, 2] or null (0.5 each)
  const T* labels;
  const T* weights;  // null: all 1
  const T* purchases;
  int n;
  T inv_n, aux, lambda, margin;
  double confidence;
  int min_purchases;
  bool ind_teaches;  // KdDirection::kIndividualToGroup
  bool squared;      // MarginForm::kSquaredHinge (else the plain hinge)
  T* dz;
  T* dz_ind;
  T* dz_grp;
  T* da_kd;
  T* per_sample;
  double* partial;  // [gridDim.x, kSums]
};

template <typename T>
__global__ void FusionLossKernel(LossArgs<T> a) {
  __shared__ double shared[kSums][kThreads];
  double sums[kSums] = {0, 0, 0, 0, 0, 0, 0};
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < a.n; i += gridDim.x * blockDim.x) {
    const T y = a.labels[i];
    const T w = a.weights == nullptr ? T(1) : a.weights[i];
    const T zi = a.z_ind[i], zg = a.z_grp[i];
    const T a_fuse = a.gates == nullptr ? T(0.5) : a.gates[2 * i];
    const T a_kd = a.gates == nullptr ? T(0.5) : a.gates[2 * i + 1];
    const T z = a.z[i];
    const T l = BceOf(z, y);
    a.dz[i] = w * (SigmoidOf(z) - y) * a.inv_n;
    sums[kBce] += w * l;
    if (a.per_sample != nullptr) a.per_sample[i] = l;
    T dzi = 0, dzg = 0, dakd = 0;
    if (a.aux > T(0)) {
      sums[kAuxInd] += w * BceOf(zi, y);
      dzi += a.aux * (w * (SigmoidOf(zi) - y) * a.inv_n);
      sums[kAuxGrp] += w * BceOf(zg, y);
      dzg += a.aux * (w * (SigmoidOf(zg) - y) * a.inv_n);
    }
    if (a.lambda > T(0)) {
      const T p_ind = SigmoidOf(zi), p_grp = SigmoidOf(zg);
      const T p_teacher = a.ind_teaches ? p_ind : p_grp;
      const T p_student = a.ind_teaches ? p_grp : p_ind;
      const bool active =
          a.ind_teaches ? a.purchases[i] >= a.min_purchases : a.purchases[i] < a.min_purchases;
      if (active && static_cast<double>(fabs(p_teacher - T(0.5))) > a.confidence) {
        sums[kKdActive] += 1;
        const T diff = p_student - p_teacher;
        const T excess = fabs(diff) - a.margin;
        if (excess > T(0)) {
          const T sign = diff > T(0) ? T(1) : T(-1);
          const T m = a.squared ? excess * excess : excess;
          const T dmargin = a.squared ? 2 * excess * sign : sign;
          sums[kKd] += w * a_kd * m;
          // Only the student's logit moves: the teacher's probability is a constant here.
          const T dstudent = a.lambda * a.inv_n * w * a_kd * dmargin * p_student * (1 - p_student);
          if (a.ind_teaches) {
            dzg += dstudent;
          } else {
            dzi += dstudent;
          }
          dakd = a.lambda * a.inv_n * w * m;
        }
      }
    }
    a.dz_ind[i] = dzi;
    a.dz_grp[i] = dzg;
    a.da_kd[i] = dakd;
    sums[kFuse] += a_fuse;
    sums[kKdGate] += a_kd;
  }
  for (int k = 0; k < kSums; ++k) shared[k][threadIdx.x] = sums[k];
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) {
      for (int k = 0; k < kSums; ++k) shared[k][threadIdx.x] += shared[k][threadIdx.x + stride];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) {
    for (int k = 0; k < kSums; ++k) a.partial[blockIdx.x * kSums + k] = shared[k][0];
  }
}

template <typename T>
__global__ void FusionBackwardKernel(const T* z_ind, const T* z_grp, const T* gates, const T* dz,
                                     const T* dz_ind, const T* dz_grp, const T* da_fuse,
                                     const T* da_kd, int n, T* dz_ind_total, T* dz_grp_total,
                                     T* dgates) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const T g = dz == nullptr ? T(0) : dz[i];
    const T a = gates == nullptr ? T(0.5) : gates[2 * i];
    dz_ind_total[i] = g * (1 - a) + (dz_ind == nullptr ? T(0) : dz_ind[i]);
    dz_grp_total[i] = g * a + (dz_grp == nullptr ? T(0) : dz_grp[i]);
    if (dgates != nullptr) {
      dgates[2 * i] = g * (z_grp[i] - z_ind[i]) + (da_fuse == nullptr ? T(0) : da_fuse[i]);
      dgates[2 * i + 1] = da_kd == nullptr ? T(0) : da_kd[i];
    }
  }
}

template <typename T>
const T* DataOrNull(const models::Tensor<T>& t) {
  return t.empty() ? nullptr : t.data();
}

template <typename T>
void Upload(T* dst, absl::Span<const T> host) {
  if (host.empty()) return;
  CHOIR_CUDA_CHECK(
      cudaMemcpyAsync(dst, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice, Stream()));
}

}  // namespace

template <typename T>
void FuseLogitsDevice(const models::FusionHeads<T>& heads, models::Tensor<T>* z) {
  CheckOnDevice(*heads.z_ind, "FuseLogits");
  const int n = heads.z_ind->rows();
  z->ResizeUninitialized(n, 1);
  if (n == 0) return;
  FuseKernel<<<Blocks(n), kThreads, 0, Stream()>>>(heads.z_ind->data(), heads.z_grp->data(),
                                                   DataOrNull(*heads.gates), n, z->data());
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
models::FusionLoss FusionHeadLossDevice(const models::FusionHeads<T>& heads,
                                        const models::Tensor<T>& z, absl::Span<const T> labels,
                                        absl::Span<const T> weights, absl::Span<const T> purchases,
                                        const models::FusionLossOptions& options,
                                        models::HeadGrads<T>* grads,
                                        std::vector<T>* per_sample_bce) {
  CheckOnDevice(*heads.z_ind, "FusionHeadLoss");
  const int n = heads.z_ind->rows();
  for (models::Tensor<T>* t : {&grads->dz, &grads->dz_ind, &grads->dz_grp, &grads->da_kd}) {
    t->ResizeUninitialized(n, 1);
  }
  if (per_sample_bce != nullptr) per_sample_bce->resize(n);
  models::FusionLoss loss;
  if (n == 0) return loss;
  // Labels, weights, purchases and the per-sample losses in one buffer; the block sums in another.
  const int blocks = std::min(Blocks(n), 1024);
  models::Tensor<T> staged(models::Device::kCuda);
  staged.ResizeUninitialized(4, n);
  T* d_labels = staged.data();
  T* d_weights = d_labels + n;
  T* d_purchases = d_labels + 2 * static_cast<int64_t>(n);
  T* d_per_sample = d_labels + 3 * static_cast<int64_t>(n);
  models::Tensor<double> partial(models::Device::kCuda);
  partial.ResizeUninitialized(blocks, kSums);
  Upload(d_labels, labels);
  Upload(d_weights, weights);
  Upload(d_purchases, purchases);

  LossArgs<T> a;
  a.z = z.data();
  a.z_ind = heads.z_ind->data();
  a.z_grp = heads.z_grp->data();
  a.gates = DataOrNull(*heads.gates);
  a.labels = d_labels;
  a.weights = weights.empty() ? nullptr : d_weights;
  a.purchases = d_purchases;
  a.n = n;
  a.inv_n = T(1) / n;
  a.aux = static_cast<T>(options.aux_weight);
  a.lambda = static_cast<T>(options.kd_lambda);
  a.margin = static_cast<T>(options.kd_margin);
  a.confidence = options.kd_confidence;
  a.min_purchases = options.kd_min_purchases;
  a.ind_teaches = options.kd_direction == models::KdDirection::kIndividualToGroup;
  a.squared = options.kd_margin_form == models::MarginForm::kSquaredHinge;
  a.dz = grads->dz.data();
  a.dz_ind = grads->dz_ind.data();
  a.dz_grp = grads->dz_grp.data();
  a.da_kd = grads->da_kd.data();
  a.per_sample = d_per_sample;
  a.partial = partial.data();
  FusionLossKernel<<<blocks, kThreads, 0, Stream()>>>(a);
  CHOIR_CUDA_CHECK_LAUNCH();

  std::vector<double> sums(static_cast<size_t>(blocks) * kSums);
  CHOIR_CUDA_CHECK(cudaMemcpyAsync(sums.data(), partial.data(), sums.size() * sizeof(double),
                                   cudaMemcpyDeviceToHost, Stream()));
  if (per_sample_bce != nullptr) {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(per_sample_bce->data(), d_per_sample, n * sizeof(T),
                                     cudaMemcpyDeviceToHost, Stream()));
  }
  CHOIR_CUDA_CHECK(cudaStreamSynchronize(Stream()));
  double total[kSums] = {0, 0, 0, 0, 0, 0, 0};
  for (int b = 0; b < blocks; ++b) {
    for (int k = 0; k < kSums; ++k) total[k] += sums[static_cast<size_t>(b) * kSums + k];
  }
  loss.bce = total[kBce] / n;
  loss.aux_ind = total[kAuxInd] / n;
  loss.aux_grp = total[kAuxGrp] / n;
  loss.kd = total[kKd] / n;
  loss.kd_active = static_cast<int64_t>(total[kKdActive]);
  loss.mean_a_fuse = total[kFuse] / n;
  loss.mean_a_kd = total[kKdGate] / n;
  loss.total =
      loss.bce + options.aux_weight * (loss.aux_ind + loss.aux_grp) + options.kd_lambda * loss.kd;
  return loss;
}

template <typename T>
void FusionBackwardDevice(const models::FusionHeads<T>& heads, const models::Tensor<T>& dz,
                          const models::Tensor<T>& dz_ind, const models::Tensor<T>& dz_grp,
                          const models::Tensor<T>& da_fuse, const models::Tensor<T>& da_kd,
                          models::Tensor<T>* dz_ind_total, models::Tensor<T>* dz_grp_total,
                          models::Tensor<T>* dgates) {
  CheckOnDevice(*heads.z_ind, "FusionBackward");
  const int n = heads.z_ind->rows();
  dz_ind_total->ResizeUninitialized(n, 1);
  dz_grp_total->ResizeUninitialized(n, 1);
  if (dgates != nullptr) dgates->ResizeUninitialized(n, 2);
  if (n == 0) return;
  FusionBackwardKernel<<<Blocks(n), kThreads, 0, Stream()>>>(
      heads.z_ind->data(), heads.z_grp->data(), DataOrNull(*heads.gates), DataOrNull(dz),
      DataOrNull(dz_ind), DataOrNull(dz_grp), DataOrNull(da_fuse), DataOrNull(da_kd), n,
      dz_ind_total->data(), dz_grp_total->data(), dgates == nullptr ? nullptr : dgates->data());
  CHOIR_CUDA_CHECK_LAUNCH();
}

#define CHOIR_INSTANTIATE(T)                                                             \
  template void FuseLogitsDevice<T>(const models::FusionHeads<T>&, models::Tensor<T>*);  \
  template models::FusionLoss FusionHeadLossDevice<T>(                                   \
      const models::FusionHeads<T>&, const models::Tensor<T>&, absl::Span<const T>,      \
      absl::Span<const T>, absl::Span<const T>, const models::FusionLossOptions&,        \
      models::HeadGrads<T>*, std::vector<T>*);                                           \
  template void FusionBackwardDevice<T>(                                                 \
      const models::FusionHeads<T>&, const models::Tensor<T>&, const models::Tensor<T>&, \
      const models::Tensor<T>&, const models::Tensor<T>&, const models::Tensor<T>&,      \
      models::Tensor<T>*, models::Tensor<T>*, models::Tensor<T>*);
CHOIR_INSTANTIATE(float)
CHOIR_INSTANTIATE(double)
#undef CHOIR_INSTANTIATE

}  // namespace choir::models::cuda::internal
