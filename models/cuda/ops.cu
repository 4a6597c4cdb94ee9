// The tensor operations model code calls between layers, on the GPU: fill, column blocks
// (concat, split, copy, add) and the binary cross-entropy loss.
#include <cmath>

#include "models/cuda/internal/cuda_util.h"
#include "models/cuda/internal/ops.h"

namespace choir::models::cuda::internal {
namespace {

template <typename T>
__global__ void FillKernel(T* ptr, int64_t n, T value) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    ptr[i] = value;
  }
}

// dst[r, dst_offset + c] (op)= src[r, src_offset + c] for c < width, r < rows.
template <typename T, bool kAdd>
__global__ void BlockKernel(const T* src, int src_cols, int src_offset, T* dst, int dst_cols,
                            int dst_offset, int rows, int width) {
  const int64_t n = static_cast<int64_t>(rows) * width;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / width;
    const int c = static_cast<int>(i - r * width);
    const T v = src[r * src_cols + src_offset + c];
    T* out = dst + r * dst_cols + dst_offset + c;
    if (kAdd) {
      *out += v;
    } else {
      *out = v;
    }
  }
}

template <typename T, bool kAdd>
void LaunchBlock(const T* src, int src_cols, int src_offset, T* dst, int dst_cols, int dst_offset,
                 int rows, int width) {
  const int64_t n = static_cast<int64_t>(rows) * width;
  if (n == 0) return;
  BlockKernel<T, kAdd><<<Blocks(n), kThreads, 0, Stream()>>>(src, src_cols, src_offset, dst,
                                                             dst_cols, dst_offset, rows, width);
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
__global__ void SgdKernel(T* w, const T* g, int64_t n, T lr) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    w[i] -= lr * g[i];
  }
}

template <typename T>
__global__ void AdagradKernel(T* w, const T* g, T* acc, int64_t n, T lr, T eps) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T gi = g[i];
    const T a = acc[i] + gi * gi;
    acc[i] = a;
    w[i] -= lr * gi / (sqrt(a) + eps);
  }
}

template <typename T>
__global__ void ScaleKernel(T* x, int64_t n, T a) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    x[i] *= a;
  }
}

// Per sample: bce and dlogits; the weighted sum is reduced per block into partial[blockIdx].
template <typename T>
__global__ void BceKernel(const T* logits, const T* labels, const T* weights, int n, T inv_n,
                          T* dlogits, T* per_sample, T* partial) {
  __shared__ T shared[kThreads];
  T sum = 0;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const T z = logits[i];
    const T y = labels[i];
    const T w = weights == nullptr ? T(1) : weights[i];
    const T bce = (z > T(0) ? z : T(0)) - z * y + log1p(exp(-fabs(z)));
    sum += w * bce;
    if (per_sample != nullptr) per_sample[i] = bce;
    if (dlogits != nullptr) {
      const T p = z >= T(0) ? T(1) / (T(1) + exp(-z)) : exp(z) / (T(1) + exp(z));
      dlogits[i] = w * (p - y) * inv_n;
    }
  }
  shared[threadIdx.x] = sum;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) partial[blockIdx.x] = shared[0];
}

}  // namespace

template <typename T>
void FillDevice(T* ptr, int64_t n, T value) {
  if (n == 0) return;
  FillKernel<<<Blocks(n), kThreads, 0, Stream()>>>(ptr, n, value);
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
void ConcatColsDevice(const std::vector<const models::Tensor<T>*>& xs, models::Tensor<T>* y) {
  const int n = xs[0]->rows();
  int width = 0;
  for (const models::Tensor<T>* x : xs) {
    CHECK_EQ(x->rows(), n) << "ConcatCols: inputs differ in batch size";
    CheckOnDevice(*x, "ConcatCols");
    width += x->cols();
  }
  y->ResizeUninitialized(n, width);
  int offset = 0;
  for (const models::Tensor<T>* x : xs) {
    LaunchBlock<T, false>(x->data(), x->cols(), 0, y->data(), width, offset, n, x->cols());
    offset += x->cols();
  }
}

template <typename T>
void SplitColsDevice(const models::Tensor<T>& y, const std::vector<int>& widths,
                     const std::vector<models::Tensor<T>*>& outs) {
  CheckOnDevice(y, "SplitCols");
  const int n = y.rows();
  int offset = 0;
  for (size_t i = 0; i < outs.size(); ++i) {
    if (outs[i] != nullptr) {
      outs[i]->ResizeUninitialized(n, widths[i]);
      LaunchBlock<T, false>(y.data(), y.cols(), offset, outs[i]->data(), widths[i], 0, n,
                            widths[i]);
    }
    offset += widths[i];
  }
}

template <typename T>
void AddToColsDevice(const models::Tensor<T>& x, int offset, models::Tensor<T>* y) {
  LaunchBlock<T, true>(x.data(), x.cols(), 0, y->data(), y->cols(), offset, x.rows(), x.cols());
}

template <typename T>
void CopyColsDevice(const models::Tensor<T>& src, int offset, int width, models::Tensor<T>* dst) {
  dst->ResizeUninitialized(src.rows(), width);
  LaunchBlock<T, false>(src.data(), src.cols(), offset, dst->data(), width, 0, src.rows(), width);
}

template <typename T>
void SgdUpdateDevice(T* w, const T* g, int64_t n, T lr) {
  if (n == 0) return;
  SgdKernel<<<Blocks(n), kThreads, 0, Stream()>>>(w, g, n, lr);
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
void AdagradUpdateDevice(T* w, const T* g, T* acc, int64_t n, T lr, T eps) {
  if (n == 0) return;
  AdagradKernel<<<Blocks(n), kThreads, 0, Stream()>>>(w, g, acc, n, lr, eps);
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
void ScaleDevice(T* x, int64_t n, T a) {
  if (n == 0) return;
  ScaleKernel<<<Blocks(n), kThreads, 0, Stream()>>>(x, n, a);
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
T BinaryCrossEntropyDevice(const models::Tensor<T>& logits, absl::Span<const T> labels,
                           absl::Span<const T> weights, models::Tensor<T>* dlogits,
                           std::vector<T>* per_sample) {
  CheckOnDevice(logits, "BinaryCrossEntropy");
  const int n = logits.rows();
  if (dlogits != nullptr) dlogits->ResizeUninitialized(n, 1);
  if (per_sample != nullptr) per_sample->resize(n);
  if (n == 0) return T(0);
  // One staging buffer: labels, weights, per-sample losses, block partial sums.
  const int blocks = std::min(Blocks(n), 1024);
  const int64_t staged = 3 * static_cast<int64_t>(n) + blocks;
  models::Tensor<T> buffer(models::Device::kCuda);
  buffer.ResizeUninitialized(1, static_cast<int>(staged));
  T* d_labels = buffer.data();
  T* d_weights = weights.empty() ? nullptr : d_labels + n;
  T* d_per_sample = d_labels + 2 * static_cast<int64_t>(n);
  T* d_partial = d_per_sample + n;
  CHOIR_CUDA_CHECK(cudaMemcpyAsync(d_labels, labels.data(), n * sizeof(T), cudaMemcpyHostToDevice,
                                   Stream()));
  if (d_weights != nullptr) {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(d_weights, weights.data(), n * sizeof(T),
                                     cudaMemcpyHostToDevice, Stream()));
  }
  BceKernel<<<blocks, kThreads, 0, Stream()>>>(logits.data(), d_labels, d_weights, n, T(1) / n,
                                               dlogits == nullptr ? nullptr : dlogits->data(),
                                               d_per_sample, d_partial);
  CHOIR_CUDA_CHECK_LAUNCH();
  // Bring back the per-sample losses and the partial sums in one synchronous copy.
  std::vector<T> host(static_cast<size_t>(n) + blocks);
  CHOIR_CUDA_CHECK(cudaMemcpyAsync(host.data(), d_per_sample, host.size() * sizeof(T),
                                   cudaMemcpyDeviceToHost, Stream()));
  CHOIR_CUDA_CHECK(cudaStreamSynchronize(Stream()));
  if (per_sample != nullptr) std::copy_n(host.begin(), n, per_sample->begin());
  double total = 0;
  for (int b = 0; b < blocks; ++b) total += host[n + b];
  return static_cast<T>(total / n);
}

#define CHOIR_INSTANTIATE(T)                                                                    \
  template void FillDevice<T>(T*, int64_t, T);                                                  \
  template void ConcatColsDevice<T>(const std::vector<const models::Tensor<T>*>&,              \
                                    models::Tensor<T>*);                                        \
  template void SplitColsDevice<T>(const models::Tensor<T>&, const std::vector<int>&,          \
                                   const std::vector<models::Tensor<T>*>&);                     \
  template void AddToColsDevice<T>(const models::Tensor<T>&, int, models::Tensor<T>*);         \
  template void CopyColsDevice<T>(const models::Tensor<T>&, int, int, models::Tensor<T>*);     \
  template void SgdUpdateDevice<T>(T*, const T*, int64_t, T);                                   \
  template void AdagradUpdateDevice<T>(T*, const T*, T*, int64_t, T, T);                        \
  template void ScaleDevice<T>(T*, int64_t, T);                                                 \
  template T BinaryCrossEntropyDevice<T>(const models::Tensor<T>&, absl::Span<const T>,        \
                                         absl::Span<const T>, models::Tensor<T>*,              \
                                         std::vector<T>*);
CHOIR_INSTANTIATE(float)
CHOIR_INSTANTIATE(double)
#undef CHOIR_INSTANTIATE

}  // namespace choir::models::cuda::internal
