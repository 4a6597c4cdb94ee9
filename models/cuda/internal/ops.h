// Private: the tensor operations behind the CUDA DeviceBackend (ops.cu).
#ifndef CHOIR_MODELS_CUDA_INTERNAL_OPS_H_
#define CHOIR_MODELS_CUDA_INTERNAL_OPS_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "models/fusion_head.h"
#include "models/tensor.h"

namespace choir::models::cuda::internal {

template <typename T>
void FillDevice(T* ptr, int64_t n, T value);
template <typename T>
void ConcatColsDevice(const std::vector<const models::Tensor<T>*>& xs, models::Tensor<T>* y);
template <typename T>
void SplitColsDevice(const models::Tensor<T>& y, const std::vector<int>& widths,
                     const std::vector<models::Tensor<T>*>& outs);
template <typename T>
void AddToColsDevice(const models::Tensor<T>& x, int offset, models::Tensor<T>* y);
template <typename T>
void CopyColsDevice(const models::Tensor<T>& src, int offset, int width, models::Tensor<T>* dst);
template <typename T>
void SgdUpdateDevice(T* w, const T* g, int64_t n, T lr);
template <typename T>
void AdagradUpdateDevice(T* w, const T* g, T* acc, int64_t n, T lr, T eps);
template <typename T>
void ScaleDevice(T* x, int64_t n, T a);
template <typename T>
T BinaryCrossEntropyDevice(const models::Tensor<T>& logits, absl::Span<const T> labels,
                           absl::Span<const T> weights, models::Tensor<T>* dlogits,
                           std::vector<T>* per_sample);
// fusion_head.cu: ChoirRec's head (models/fusion_head.h).
template <typename T>
void FuseLogitsDevice(const models::FusionHeads<T>& heads, models::Tensor<T>* z);
template <typename T>
models::FusionLoss FusionHeadLossDevice(const models::FusionHeads<T>& heads,
                                        const models::Tensor<T>& z, absl::Span<const T> labels,
                                        absl::Span<const T> weights, absl::Span<const T> purchases,
                                        const models::FusionLossOptions& options,
                                        models::HeadGrads<T>* grads,
                                        std::vector<T>* per_sample_bce);
template <typename T>
void FusionBackwardDevice(const models::FusionHeads<T>& heads, const models::Tensor<T>& dz,
                          const models::Tensor<T>& dz_ind, const models::Tensor<T>& dz_grp,
                          const models::Tensor<T>& da_fuse, const models::Tensor<T>& da_kd,
                          models::Tensor<T>* dz_ind_total, models::Tensor<T>* dz_grp_total,
                          models::Tensor<T>* dgates);

}  // namespace choir::models::cuda::internal

#endif  // CHOIR_MODELS_CUDA_INTERNAL_OPS_H_
