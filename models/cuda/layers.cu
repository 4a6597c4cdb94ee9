// The single-input layers on the GPU: Linear (cuBLAS products), the element-wise activations,
// PReLU, Dice and LayerNorm (kernels). Each one computes what its CPU counterpart in
// models/cpu_layers.cc computes, with the same formulas, parameters and buffers; parameters are
// made by the CPU layer and moved to the GPU, so the same seed gives the same values.
//
// Every reduction is deterministic. A per-feature (column) sum over the batch is two kernels:
// blocks of 32 features x kColumnChunk rows sum their chunk in a fixed order (8 row threads,
// then a fixed tree), and one thread per feature adds the chunks in order (ColumnSums); Linear's
// bias gradient is a cuBLAS product with a vector of ones like the weight gradient; a per-row
// sum is one block with a fixed shared-memory tree. No float atomics, so repeated runs give
// bit-identical results (in another summation order than the CPU's: within the tests'
// tolerance).
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "glog/logging.h"
#include "models/cuda/cuda.h"
#include "models/cuda/internal/cuda_util.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models::cuda {
namespace {

using internal::Blocks;
using internal::CheckOnDevice;
using internal::kThreads;
using internal::Stream;
using models::ActivationKind;
using models::Param;
using models::Tensor;

// ---------------------------------------------------------------------------------------------
// Device math, one overload per precision (no reliance on implicit float/double promotion).

__device__ inline float DeviceExp(float v) { return expf(v); }
__device__ inline double DeviceExp(double v) { return exp(v); }
__device__ inline float DeviceTanh(float v) { return tanhf(v); }
__device__ inline double DeviceTanh(double v) { return tanh(v); }
__device__ inline float DeviceSqrt(float v) { return sqrtf(v); }
__device__ inline double DeviceSqrt(double v) { return sqrt(v); }

// The numerically stable logistic function of models::Sigmoid.
template <typename T>
__device__ inline T DeviceSigmoid(T v) {
  if (v >= T(0)) return T(1) / (T(1) + DeviceExp(-v));
  const T e = DeviceExp(v);
  return e / (T(1) + e);
}

// Sum of `v` over the threads of the block; blockDim.x must be kThreads (a power of two) and
// every thread of the block must call it. `shared` holds kThreads values and may be reused
// right after the call returns.
template <typename T>
__device__ T BlockSum(T v, T* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int stride = blockDim.x / 2; stride > 0; stride /= 2) {
    if (threadIdx.x < stride) shared[threadIdx.x] += shared[threadIdx.x + stride];
    __syncthreads();
  }
  const T total = shared[0];
  __syncthreads();
  return total;
}

// Blocks for a kernel that gives each row to one block (grid-stride over rows).
inline int RowBlocks(int rows) { return std::max(1, std::min(rows, 65535)); }

// ---------------------------------------------------------------------------------------------
// Column sums: sums[k * dim + c] = sum over rows r of f(r, c)[k], for K quantities at once.

constexpr int kColumnTile = 32;     // features per block (threadIdx.x)
constexpr int kColumnThreads = 8;   // row threads per block (threadIdx.y)
constexpr int kColumnChunk = 256;   // rows per block (blockIdx.y)

// partial[(chunk * K + k) * dim + c]: the sum over the chunk's rows, each row thread taking rows
// ty, ty + 8, ... in order, then the 8 row threads added in order.
template <typename T, int K, typename F>
__global__ void ColumnPartialsKernel(int rows, int dim, F f, T* partial) {
  __shared__ T shared[K][kColumnThreads][kColumnTile];
  const int c = blockIdx.x * kColumnTile + threadIdx.x;
  const int begin = blockIdx.y * kColumnChunk;
  const int end = min(rows, begin + kColumnChunk);
  T acc[K];
  for (int k = 0; k < K; ++k) acc[k] = T(0);
  if (c < dim) {
    T v[K];
    for (int r = begin + threadIdx.y; r < end; r += kColumnThreads) {
      f(r, c, v);
      for (int k = 0; k < K; ++k) acc[k] += v[k];
    }
  }
  for (int k = 0; k < K; ++k) shared[k][threadIdx.y][threadIdx.x] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < dim) {
    for (int k = 0; k < K; ++k) {
      T sum = shared[k][0][threadIdx.x];
      for (int y = 1; y < kColumnThreads; ++y) sum += shared[k][y][threadIdx.x];
      partial[(static_cast<int64_t>(blockIdx.y) * K + k) * dim + c] = sum;
    }
  }
}

// sums[i] = sum over chunks, in order, of partial[chunk * K * dim + i], i < K * dim.
template <typename T>
__global__ void AddChunksKernel(const T* partial, int chunks, int64_t width, T* sums) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < width;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    T sum = partial[i];
    for (int chunk = 1; chunk < chunks; ++chunk) sum += partial[chunk * width + i];
    sums[i] = sum;
  }
}

// Fills `sums` (K * dim values, a GPU tensor reshaped here) with the column sums of f over
// `rows` rows (zeros when there are none); `scratch` holds the per-chunk partial sums.
template <typename T, int K, typename F>
void ColumnSums(int rows, int dim, const F& f, Tensor<T>* scratch, Tensor<T>* sums) {
  if (rows == 0 || dim == 0) {
    sums->SetDevice(models::Device::kCuda);
    sums->Resize(K, dim, T(0));
    return;
  }
  const int chunks = (rows + kColumnChunk - 1) / kColumnChunk;
  CHECK_LE(chunks, 65535) << "column sums over " << rows << " rows";
  const int64_t width = static_cast<int64_t>(K) * dim;
  scratch->SetDevice(models::Device::kCuda);
  scratch->ResizeUninitialized(chunks, static_cast<int>(width));
  sums->SetDevice(models::Device::kCuda);
  sums->ResizeUninitialized(K, dim);
  const dim3 grid((dim + kColumnTile - 1) / kColumnTile, chunks);
  const dim3 block(kColumnTile, kColumnThreads);
  ColumnPartialsKernel<T, K, F><<<grid, block, 0, Stream()>>>(rows, dim, f, scratch->data());
  CHOIR_CUDA_CHECK_LAUNCH();
  AddChunksKernel<<<Blocks(width), kThreads, 0, Stream()>>>(scratch->data(), chunks, width,
                                                            sums->data());
  CHOIR_CUDA_CHECK_LAUNCH();
}

// out0[c] += sums[c] and, when out1 is not null, out1[c] += sums[dim + c].
template <typename T>
__global__ void AccumulateKernel(const T* sums, int dim, T* out0, T* out1) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x) {
    out0[c] += sums[c];
    if (out1 != nullptr) out1[c] += sums[dim + c];
  }
}

// ---------------------------------------------------------------------------------------------
// Kernels shared by several layers.

// y[r, c] = b[c] for every element of the row-major [rows, cols] y.
template <typename T>
__global__ void BroadcastRowKernel(const T* b, int rows, int cols, T* y) {
  const int64_t n = static_cast<int64_t>(rows) * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    y[i] = b[i % cols];
  }
}

// ---------------------------------------------------------------------------------------------
// cuBLAS, row-major.

void GemmColMajor(cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n, int k,
                  float alpha, const float* a, int lda, const float* b, int ldb, float beta,
                  float* c, int ldc) {
  if (internal::Precision() == MatmulPrecision::kBf16) {
    // fp32 tensors, inputs rounded to bf16 on the tensor cores, fp32 accumulation and output.
    CHOIR_CUBLAS_CHECK(cublasGemmEx(internal::Blas(), trans_a, trans_b, m, n, k, &alpha, a,
                                    CUDA_R_32F, lda, b, CUDA_R_32F, ldb, &beta, c, CUDA_R_32F, ldc,
                                    CUBLAS_COMPUTE_32F_FAST_16BF, CUBLAS_GEMM_DEFAULT));
    return;
  }
  CHOIR_CUBLAS_CHECK(cublasSgemm(internal::Blas(), trans_a, trans_b, m, n, k, &alpha, a, lda, b,
                                 ldb, &beta, c, ldc));
}

void GemmColMajor(cublasOperation_t trans_a, cublasOperation_t trans_b, int m, int n, int k,
                  double alpha, const double* a, int lda, const double* b, int ldb, double beta,
                  double* c, int ldc) {
  CHOIR_CUBLAS_CHECK(cublasDgemm(internal::Blas(), trans_a, trans_b, m, n, k, &alpha, a, lda, b,
                                 ldb, &beta, c, ldc));
}

// Row-major C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C, the contract of the CPU's
// internal::Gemm, on device pointers. A row-major [r, c] matrix is, read column-major, its
// transpose [c, r] with leading dimension c; so the column-major product
// C^T[n, m] = op(B)^T[n, k] * op(A)^T[k, m] is computed, with B first. A stored row-major as
// [m, k] (or [k, m] when transposed) has leading dimension k (or m); B likewise n (or k).
// With beta == 0, C is not read (it may hold anything). Every dimension must be positive.
template <typename T>
void RowMajorGemm(bool trans_a, bool trans_b, int m, int n, int k, T alpha, const T* a, const T* b,
                  T beta, T* c) {
  CHECK(m > 0 && n > 0 && k > 0) << "gemm with an empty dimension: " << m << "x" << n << "x" << k;
  internal::CountMatmulFlops(m, n, k);
  GemmColMajor(trans_b ? CUBLAS_OP_T : CUBLAS_OP_N, trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k,
               alpha, b, trans_b ? k : n, a, trans_a ? m : k, beta, c, n);
}

// ---------------------------------------------------------------------------------------------
// Host-side helpers.

template <typename T>
void CheckCols(const Tensor<T>& x, int cols, const char* what) {
  CHECK_EQ(x.cols(), cols) << what << ": input has " << x.cols() << " features, layer expects "
                           << cols;
}

// Makes `out` a GPU tensor of the given shape; its values are undefined until written.
template <typename T>
void PrepareOutput(Tensor<T>* out, int rows, int cols) {
  out->SetDevice(models::Device::kCuda);
  out->ResizeUninitialized(rows, cols);
}

// A GPU copy of `src` (a GPU tensor or an empty one) in `dst`, reusing dst's allocation.
template <typename T>
void CacheCopy(const Tensor<T>& src, Tensor<T>* dst) {
  dst->SetDevice(models::Device::kCuda);
  dst->CopyFrom(src);
}

// Moves the parameters (and buffers) of a freshly made CPU layer into `params` (and `buffers`)
// and then to the GPU: the GPU layer starts from exactly the CPU layer's values.
template <typename T>
void AdoptState(models::Layer<T>* cpu_layer, const std::vector<Param<T>*>& params,
                const std::vector<Tensor<T>*>& buffers) {
  const std::vector<Param<T>*> cpu_params = cpu_layer->Params();
  CHECK_EQ(cpu_params.size(), params.size()) << "CPU and CUDA layers differ in parameters";
  for (size_t i = 0; i < params.size(); ++i) *params[i] = std::move(*cpu_params[i]);
  internal::MoveParamsToDevice(params);
  const std::vector<Tensor<T>*> cpu_buffers = cpu_layer->Buffers();
  CHECK_EQ(cpu_buffers.size(), buffers.size()) << "CPU and CUDA layers differ in buffers";
  for (size_t i = 0; i < buffers.size(); ++i) {
    *buffers[i] = std::move(*cpu_buffers[i]);
    internal::MoveToDevice(buffers[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Linear: y = x W + b.

template <typename T>
class CudaLinear : public models::Layer<T> {
 public:
  CudaLinear(int in, int out, uint64_t seed) : in_(in), out_(out) {
    models::CpuLayerFactory<T> cpu;
    std::unique_ptr<models::Layer<T>> reference = cpu.MakeLinear(in, out, seed);
    AdoptState<T>(reference.get(), {&w_, &b_}, {});
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckOnDevice(x, "Linear");
    CheckCols(x, in_, "Linear");
    CacheCopy(x, &x_);
    const int n = x.rows();
    PrepareOutput(y, n, out_);
    if (n == 0) return;
    // y = b in every row, then y += x W (beta = 1), as on the CPU.
    const int64_t count = static_cast<int64_t>(n) * out_;
    BroadcastRowKernel<<<Blocks(count), kThreads, 0, Stream()>>>(b_.value.data(), n, out_,
                                                                 y->data());
    CHOIR_CUDA_CHECK_LAUNCH();
    RowMajorGemm(false, false, n, out_, in_, T(1), x.data(), w_.value.data(), T(1), y->data());
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CheckOnDevice(dy, "Linear backward");
    const int n = x_.rows();
    CHECK_EQ(dy.rows(), n) << "Linear backward: dy has " << dy.rows()
                           << " rows, the forward input had " << n;
    CheckCols(dy, out_, "Linear backward");
    if (dx != nullptr) PrepareOutput(dx, n, in_);
    if (n == 0) return;  // no rows: no gradient contribution, dx is [0, in]
    // dW[in, out] += x^T[in, n] dy[n, out].
    RowMajorGemm(true, false, in_, out_, n, T(1), x_.data(), dy.data(), T(1), w_.grad.data());
    // db[1, out] += ones[1, n] dy[n, out]: the column sums of dy as a product, so the batch is
    // reduced in parallel (one thread per column would walk all n rows alone: milliseconds at
    // B = 16384, tens of them over the attention MLP's B * L rows).
    if (ones_.rows() != n) ones_.Resize(n, 1, T(1));
    RowMajorGemm(false, false, 1, out_, n, T(1), ones_.data(), dy.data(), T(1), b_.grad.data());
    // dx[n, in] = dy[n, out] W^T[out, in].
    if (dx != nullptr) {
      RowMajorGemm(false, true, n, in_, out_, T(1), dy.data(), w_.value.data(), T(0), dx->data());
    }
  }

  std::vector<Param<T>*> Params() override { return {&w_, &b_}; }

 private:
  int in_;
  int out_;
  Param<T> w_;
  Param<T> b_;
  Tensor<T> x_{models::Device::kCuda};
  Tensor<T> ones_{models::Device::kCuda};  // [n, 1] of 1 for the bias gradient; only written here
};

// ---------------------------------------------------------------------------------------------
// Element-wise activations without parameters.

template <typename T, ActivationKind kKind>
__global__ void PointwiseForwardKernel(const T* x, int64_t n, T* y) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T v = x[i];
    if constexpr (kKind == ActivationKind::kIdentity) {
      y[i] = v;
    } else if constexpr (kKind == ActivationKind::kRelu) {
      y[i] = v > T(0) ? v : T(0);
    } else if constexpr (kKind == ActivationKind::kSigmoid) {
      y[i] = DeviceSigmoid(v);
    } else {
      static_assert(kKind == ActivationKind::kTanh, "not a pointwise activation");
      y[i] = DeviceTanh(v);
    }
  }
}

// dx from dy and the forward output y.
template <typename T, ActivationKind kKind>
__global__ void PointwiseBackwardKernel(const T* dy, const T* y, int64_t n, T* dx) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T g = dy[i];
    const T out = y[i];
    if constexpr (kKind == ActivationKind::kIdentity) {
      dx[i] = g;
    } else if constexpr (kKind == ActivationKind::kRelu) {
      dx[i] = out > T(0) ? g : T(0);
    } else if constexpr (kKind == ActivationKind::kSigmoid) {
      dx[i] = g * out * (T(1) - out);
    } else {
      static_assert(kKind == ActivationKind::kTanh, "not a pointwise activation");
      dx[i] = g * (T(1) - out * out);
    }
  }
}

template <typename T>
void LaunchPointwiseForward(ActivationKind kind, const T* x, int64_t n, T* y) {
  switch (kind) {
    case ActivationKind::kIdentity:
      PointwiseForwardKernel<T, ActivationKind::kIdentity>
          <<<Blocks(n), kThreads, 0, Stream()>>>(x, n, y);
      break;
    case ActivationKind::kRelu:
      PointwiseForwardKernel<T, ActivationKind::kRelu>
          <<<Blocks(n), kThreads, 0, Stream()>>>(x, n, y);
      break;
    case ActivationKind::kSigmoid:
      PointwiseForwardKernel<T, ActivationKind::kSigmoid>
          <<<Blocks(n), kThreads, 0, Stream()>>>(x, n, y);
      break;
    case ActivationKind::kTanh:
      PointwiseForwardKernel<T, ActivationKind::kTanh>
          <<<Blocks(n), kThreads, 0, Stream()>>>(x, n, y);
      break;
    default:
      LOG(FATAL) << "not a pointwise activation: " << models::ActivationKindName(kind);
  }
  CHOIR_CUDA_CHECK_LAUNCH();
}

template <typename T>
void LaunchPointwiseBackward(ActivationKind kind, const T* dy, const T* y, int64_t n, T* dx) {
  switch (kind) {
    case ActivationKind::kIdentity:
      PointwiseBackwardKernel<T, ActivationKind::kIdentity>
          <<<Blocks(n), kThreads, 0, Stream()>>>(dy, y, n, dx);
      break;
    case ActivationKind::kRelu:
      PointwiseBackwardKernel<T, ActivationKind::kRelu>
          <<<Blocks(n), kThreads, 0, Stream()>>>(dy, y, n, dx);
      break;
    case ActivationKind::kSigmoid:
      PointwiseBackwardKernel<T, ActivationKind::kSigmoid>
          <<<Blocks(n), kThreads, 0, Stream()>>>(dy, y, n, dx);
      break;
    case ActivationKind::kTanh:
      PointwiseBackwardKernel<T, ActivationKind::kTanh>
          <<<Blocks(n), kThreads, 0, Stream()>>>(dy, y, n, dx);
      break;
    default:
      LOG(FATAL) << "not a pointwise activation: " << models::ActivationKindName(kind);
  }
  CHOIR_CUDA_CHECK_LAUNCH();
}

// Identity, ReLU, sigmoid, tanh; the forward output is cached (every derivative needs only it).
template <typename T>
class CudaPointwise : public models::Layer<T> {
 public:
  CudaPointwise(ActivationKind kind, int dim) : kind_(kind), dim_(dim) {}

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckOnDevice(x, models::ActivationKindName(kind_));
    CheckCols(x, dim_, models::ActivationKindName(kind_));
    PrepareOutput(y, x.rows(), x.cols());
    if (x.size() > 0) LaunchPointwiseForward(kind_, x.data(), x.size(), y->data());
    CacheCopy(*y, &y_);
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CheckOnDevice(dy, "activation backward");
    CHECK(dy.SameShape(y_)) << "activation backward: dy shape differs from the forward output";
    if (dx == nullptr) return;
    PrepareOutput(dx, dy.rows(), dy.cols());
    if (dy.size() > 0) LaunchPointwiseBackward(kind_, dy.data(), y_.data(), dy.size(), dx->data());
  }

 private:
  ActivationKind kind_;
  int dim_;
  Tensor<T> y_{models::Device::kCuda};
};

// ---------------------------------------------------------------------------------------------
// PReLU: y = x (x > 0), alpha_c * x otherwise.

template <typename T>
__global__ void PreluForwardKernel(const T* x, const T* alpha, int rows, int dim, T* y) {
  const int64_t n = static_cast<int64_t>(rows) * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const T v = x[i];
    y[i] = v > T(0) ? v : alpha[i % dim] * v;
  }
}

// The terms of dalpha[c]: dy * x where x <= 0.
template <typename T>
struct PreluAlphaTerms {
  const T* dy;
  const T* x;
  int dim;
  __device__ void operator()(int r, int c, T* v) const {
    const int64_t i = static_cast<int64_t>(r) * dim + c;
    v[0] = x[i] <= T(0) ? dy[i] * x[i] : T(0);
  }
};

template <typename T>
__global__ void PreluInputGradKernel(const T* dy, const T* x, const T* alpha, int rows, int dim,
                                     T* dx) {
  const int64_t n = static_cast<int64_t>(rows) * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    dx[i] = x[i] > T(0) ? dy[i] : alpha[i % dim] * dy[i];
  }
}

template <typename T>
class CudaPrelu : public models::Layer<T> {
 public:
  explicit CudaPrelu(int dim) : dim_(dim) {
    models::CpuLayerFactory<T> cpu;
    std::unique_ptr<models::Layer<T>> reference =
        cpu.MakeActivation(ActivationKind::kPrelu, dim, models::DiceOptions());
    AdoptState<T>(reference.get(), {&alpha_}, {});
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckOnDevice(x, "prelu");
    CheckCols(x, dim_, "prelu");
    CacheCopy(x, &x_);
    const int n = x.rows();
    PrepareOutput(y, n, dim_);
    if (x.size() == 0) return;
    PreluForwardKernel<<<Blocks(x.size()), kThreads, 0, Stream()>>>(x.data(), alpha_.value.data(),
                                                                    n, dim_, y->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CheckOnDevice(dy, "prelu backward");
    CHECK(dy.SameShape(x_)) << "prelu backward: dy shape differs from the forward input";
    const int n = dy.rows();
    if (dx != nullptr) PrepareOutput(dx, n, dim_);
    if (dy.size() == 0) return;
    ColumnSums<T, 1>(n, dim_, PreluAlphaTerms<T>{dy.data(), x_.data(), dim_}, &scratch_, &sums_);
    AccumulateKernel<<<Blocks(dim_), kThreads, 0, Stream()>>>(sums_.data(), dim_, alpha_.grad.data(),
                                                              static_cast<T*>(nullptr));
    CHOIR_CUDA_CHECK_LAUNCH();
    if (dx != nullptr) {
      PreluInputGradKernel<<<Blocks(dy.size()), kThreads, 0, Stream()>>>(
          dy.data(), x_.data(), alpha_.value.data(), n, dim_, dx->data());
      CHOIR_CUDA_CHECK_LAUNCH();
    }
  }

  std::vector<Param<T>*> Params() override { return {&alpha_}; }

 private:
  int dim_;
  Param<T> alpha_;
  Tensor<T> x_{models::Device::kCuda};
  Tensor<T> scratch_{models::Device::kCuda};  // column sums: per-chunk partials, totals
  Tensor<T> sums_{models::Device::kCuda};
};

// ---------------------------------------------------------------------------------------------
// Dice: y = x * (alpha + (1 - alpha) * p), p = sigmoid((x - mean) / sqrt(var + eps)).

// Training: per feature the batch mean (from the column sums of x), then the biased variance
// (from the column sums of (x - mean)^2), the inverse standard deviation, and the running
// averages' update.
template <typename T>
struct ColumnValues {
  const T* x;
  int dim;
  __device__ void operator()(int r, int c, T* v) const { v[0] = x[static_cast<int64_t>(r) * dim + c]; }
};

template <typename T>
struct SquaredDeviations {
  const T* x;
  const T* mean;
  int dim;
  __device__ void operator()(int r, int c, T* v) const {
    const T d = x[static_cast<int64_t>(r) * dim + c] - mean[c];
    v[0] = d * d;
  }
};

template <typename T>
__global__ void DiceMeanKernel(const T* sums, int rows, int dim, T* mean) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x) {
    mean[c] = sums[c] / rows;
  }
}

template <typename T>
__global__ void DiceBatchStatsKernel(const T* squares, const T* mean, int rows, int dim, T eps,
                                     T momentum, T* inv_std, T* running_mean, T* running_var) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x) {
    const T m = mean[c];
    const T var = squares[c] / rows;
    inv_std[c] = T(1) / DeviceSqrt(var + eps);
    running_mean[c] = momentum * running_mean[c] + (T(1) - momentum) * m;
    running_var[c] = momentum * running_var[c] + (T(1) - momentum) * var;
  }
}

// Evaluation: the statistics are the running averages.
template <typename T>
__global__ void DiceRunningStatsKernel(const T* running_mean, const T* running_var, int dim, T eps,
                                       T* mean, T* inv_std) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x) {
    mean[c] = running_mean[c];
    inv_std[c] = T(1) / DeviceSqrt(running_var[c] + eps);
  }
}

template <typename T>
__global__ void DiceForwardKernel(const T* x, const T* mean, const T* inv_std, const T* alpha,
                                  int rows, int dim, T* xhat, T* p, T* y) {
  const int64_t n = static_cast<int64_t>(rows) * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % dim);
    const T v = x[i];
    const T xh = (v - mean[c]) * inv_std[c];
    const T pv = DeviceSigmoid(xh);
    const T a = alpha[c];
    xhat[i] = xh;
    p[i] = pv;
    y[i] = v * (a + (T(1) - a) * pv);
  }
}

// The column terms of Dice's backward: dy * x * (1 - p) (for dalpha), h = dL/dxhat and h * xhat
// (for the batch means that batch statistics feed back into dx).
template <typename T>
struct DiceBackwardTerms {
  const T* dy;
  const T* x;
  const T* p;
  const T* xhat;
  const T* alpha;
  int dim;
  __device__ void operator()(int r, int c, T* v) const {
    const int64_t i = static_cast<int64_t>(r) * dim + c;
    const T a = alpha[c];
    const T g = dy[i];
    const T xv = x[i];
    const T pv = p[i];
    const T h = g * xv * (T(1) - a) * pv * (T(1) - pv);
    v[0] = g * xv * (T(1) - pv);
    v[1] = h;
    v[2] = h * xhat[i];
  }
};

// dalpha[c] += sums[0][c]; when mean_h is not null (dx wanted, batch statistics), mean_h[c] and
// mean_hx[c] are the batch means sums[1][c] / rows and sums[2][c] / rows.
template <typename T>
__global__ void DiceBackwardColumnsKernel(const T* sums, int rows, int dim, T* dalpha, T* mean_h,
                                          T* mean_hx) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < dim; c += gridDim.x * blockDim.x) {
    dalpha[c] += sums[c];
    if (mean_h != nullptr) {
      mean_h[c] = sums[dim + c] / rows;
      mean_hx[c] = sums[2 * dim + c] / rows;
    }
  }
}

// dx = dy * (a + (1 - a) * p) + (h - mean_h - xhat * mean_hx) * inv_std; mean_h == nullptr means
// fixed statistics (evaluation mode: the means are 0).
template <typename T>
__global__ void DiceInputGradKernel(const T* dy, const T* x, const T* p, const T* xhat,
                                    const T* alpha, const T* inv_std, const T* mean_h,
                                    const T* mean_hx, int rows, int dim, T* dx) {
  const int64_t n = static_cast<int64_t>(rows) * dim;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int c = static_cast<int>(i % dim);
    const T a = alpha[c];
    const T g = dy[i];
    const T v = x[i];
    const T pv = p[i];
    const T h = g * v * (T(1) - a) * pv * (T(1) - pv);
    const T mh = mean_h != nullptr ? mean_h[c] : T(0);
    const T mhx = mean_hx != nullptr ? mean_hx[c] : T(0);
    const T direct = g * (a + (T(1) - a) * pv);
    const T via_hat = (h - mh - xhat[i] * mhx) * inv_std[c];
    dx[i] = direct + via_hat;
  }
}

template <typename T>
class CudaDice : public models::Layer<T> {
 public:
  CudaDice(int dim, const models::DiceOptions& options) : dim_(dim), options_(options) {
    models::CpuLayerFactory<T> cpu;
    std::unique_ptr<models::Layer<T>> reference =
        cpu.MakeActivation(ActivationKind::kDice, dim, options);
    AdoptState<T>(reference.get(), {&alpha_}, {&running_mean_, &running_var_});
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckOnDevice(x, "dice");
    CheckCols(x, dim_, "dice");
    const int n = x.rows();
    CacheCopy(x, &x_);
    used_batch_stats_ = training_ && n > 0;
    mean_.ResizeUninitialized(1, dim_);
    inv_std_.ResizeUninitialized(1, dim_);
    const T eps = static_cast<T>(options_.eps);
    if (dim_ > 0) {
      if (used_batch_stats_) {
        ColumnSums<T, 1>(n, dim_, ColumnValues<T>{x.data(), dim_}, &scratch_, &sums_);
        DiceMeanKernel<<<Blocks(dim_), kThreads, 0, Stream()>>>(sums_.data(), n, dim_, mean_.data());
        CHOIR_CUDA_CHECK_LAUNCH();
        ColumnSums<T, 1>(n, dim_, SquaredDeviations<T>{x.data(), mean_.data(), dim_}, &scratch_, &sums_);
        DiceBatchStatsKernel<<<Blocks(dim_), kThreads, 0, Stream()>>>(
            sums_.data(), mean_.data(), n, dim_, eps, static_cast<T>(options_.momentum),
            inv_std_.data(), running_mean_.data(), running_var_.data());
      } else {
        DiceRunningStatsKernel<<<Blocks(dim_), kThreads, 0, Stream()>>>(
            running_mean_.data(), running_var_.data(), dim_, eps, mean_.data(), inv_std_.data());
      }
      CHOIR_CUDA_CHECK_LAUNCH();
    }
    xhat_.ResizeUninitialized(n, dim_);
    p_.ResizeUninitialized(n, dim_);
    PrepareOutput(y, n, dim_);
    if (x.size() == 0) return;
    DiceForwardKernel<<<Blocks(x.size()), kThreads, 0, Stream()>>>(
        x.data(), mean_.data(), inv_std_.data(), alpha_.value.data(), n, dim_, xhat_.data(),
        p_.data(), y->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CheckOnDevice(dy, "dice backward");
    CHECK(dy.SameShape(x_)) << "dice backward: dy shape differs from the forward input";
    const int n = dy.rows();
    // Batch means of h and h * xhat: only for dx, and only through batch statistics.
    const bool through_stats = dx != nullptr && used_batch_stats_;
    if (through_stats) {
      mean_h_.ResizeUninitialized(1, dim_);
      mean_hx_.ResizeUninitialized(1, dim_);
    }
    T* mean_h = through_stats ? mean_h_.data() : nullptr;
    T* mean_hx = through_stats ? mean_hx_.data() : nullptr;
    if (dx != nullptr) PrepareOutput(dx, n, dim_);
    if (dy.size() == 0) return;
    ColumnSums<T, 3>(n, dim_,
                     DiceBackwardTerms<T>{dy.data(), x_.data(), p_.data(), xhat_.data(),
                                          alpha_.value.data(), dim_},
                     &scratch_, &sums_);
    DiceBackwardColumnsKernel<<<Blocks(dim_), kThreads, 0, Stream()>>>(
        sums_.data(), n, dim_, alpha_.grad.data(), mean_h, mean_hx);
    CHOIR_CUDA_CHECK_LAUNCH();
    if (dx == nullptr) return;
    DiceInputGradKernel<<<Blocks(dy.size()), kThreads, 0, Stream()>>>(
        dy.data(), x_.data(), p_.data(), xhat_.data(), alpha_.value.data(), inv_std_.data(), mean_h,
        mean_hx, n, dim_, dx->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

  std::vector<Param<T>*> Params() override { return {&alpha_}; }
  std::vector<Tensor<T>*> Buffers() override { return {&running_mean_, &running_var_}; }
  void SetTraining(bool training) override { training_ = training; }

 private:
  int dim_;
  models::DiceOptions options_;
  bool training_ = true;
  bool used_batch_stats_ = true;
  Param<T> alpha_;
  Tensor<T> running_mean_;
  Tensor<T> running_var_;
  // Cached by Forward for Backward.
  Tensor<T> x_{models::Device::kCuda};
  Tensor<T> xhat_{models::Device::kCuda};
  Tensor<T> p_{models::Device::kCuda};
  Tensor<T> mean_{models::Device::kCuda};
  Tensor<T> inv_std_{models::Device::kCuda};
  // Backward scratch.
  Tensor<T> mean_h_{models::Device::kCuda};
  Tensor<T> mean_hx_{models::Device::kCuda};
  // Column sums: per-chunk partials, totals.
  Tensor<T> scratch_{models::Device::kCuda};
  Tensor<T> sums_{models::Device::kCuda};
};

// ---------------------------------------------------------------------------------------------
// LayerNorm: per row, y = gamma * (x - mean) / sqrt(var + eps) + beta.

// One block per row (grid-stride over rows); blockDim.x == kThreads.
template <typename T>
__global__ void LayerNormForwardKernel(const T* x, const T* gamma, const T* beta, int rows, int dim,
                                       T eps, T* xhat, T* inv_std, T* y) {
  __shared__ T shared[kThreads];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = static_cast<int64_t>(r) * dim;
    T sum = 0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) sum += x[base + c];
    const T mean = BlockSum(sum, shared) / dim;
    T sq = 0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
      const T d = x[base + c] - mean;
      sq += d * d;
    }
    const T var = BlockSum(sq, shared) / dim;
    const T inv = T(1) / DeviceSqrt(var + eps);
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
      const T xh = (x[base + c] - mean) * inv;
      xhat[base + c] = xh;
      y[base + c] = gamma[c] * xh + beta[c];
    }
    if (threadIdx.x == 0) inv_std[r] = inv;
  }
}

// The terms of dgamma[c] (dy * xhat) and dbeta[c] (dy).
template <typename T>
struct LayerNormParamTerms {
  const T* dy;
  const T* xhat;
  int dim;
  __device__ void operator()(int r, int c, T* v) const {
    const int64_t i = static_cast<int64_t>(r) * dim + c;
    v[0] = dy[i] * xhat[i];
    v[1] = dy[i];
  }
};

// One block per row: dxhat = dy * gamma, dx = (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
// * inv_std.
template <typename T>
__global__ void LayerNormInputGradKernel(const T* dy, const T* xhat, const T* inv_std,
                                         const T* gamma, int rows, int dim, T* dx) {
  __shared__ T shared[kThreads];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const int64_t base = static_cast<int64_t>(r) * dim;
    T sum_d = 0;
    T sum_dx = 0;
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
      const T d = dy[base + c] * gamma[c];
      sum_d += d;
      sum_dx += d * xhat[base + c];
    }
    const T mean_d = BlockSum(sum_d, shared) / dim;
    const T mean_dx = BlockSum(sum_dx, shared) / dim;
    const T inv = inv_std[r];
    for (int c = threadIdx.x; c < dim; c += blockDim.x) {
      const T d = dy[base + c] * gamma[c];
      dx[base + c] = (d - mean_d - xhat[base + c] * mean_dx) * inv;
    }
  }
}

template <typename T>
class CudaLayerNorm : public models::Layer<T> {
 public:
  CudaLayerNorm(int dim, double eps) : dim_(dim), eps_(static_cast<T>(eps)) {
    models::CpuLayerFactory<T> cpu;
    std::unique_ptr<models::Layer<T>> reference = cpu.MakeLayerNorm(dim, eps);
    AdoptState<T>(reference.get(), {&gamma_, &beta_}, {});
  }

  void Forward(const Tensor<T>& x, Tensor<T>* y) override {
    CheckOnDevice(x, "LayerNorm");
    CheckCols(x, dim_, "LayerNorm");
    const int n = x.rows();
    xhat_.ResizeUninitialized(n, dim_);
    inv_std_.ResizeUninitialized(n, 1);
    PrepareOutput(y, n, dim_);
    if (n == 0) return;
    LayerNormForwardKernel<<<RowBlocks(n), kThreads, 0, Stream()>>>(
        x.data(), gamma_.value.data(), beta_.value.data(), n, dim_, eps_, xhat_.data(),
        inv_std_.data(), y->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

  void Backward(const Tensor<T>& dy, Tensor<T>* dx) override {
    CheckOnDevice(dy, "LayerNorm backward");
    CHECK(dy.SameShape(xhat_)) << "LayerNorm backward: dy shape differs from the forward input";
    const int n = dy.rows();
    if (dx != nullptr) PrepareOutput(dx, n, dim_);
    if (n == 0) return;
    ColumnSums<T, 2>(n, dim_, LayerNormParamTerms<T>{dy.data(), xhat_.data(), dim_}, &scratch_, &sums_);
    AccumulateKernel<<<Blocks(dim_), kThreads, 0, Stream()>>>(sums_.data(), dim_, gamma_.grad.data(),
                                                              beta_.grad.data());
    CHOIR_CUDA_CHECK_LAUNCH();
    if (dx == nullptr) return;
    LayerNormInputGradKernel<<<RowBlocks(n), kThreads, 0, Stream()>>>(
        dy.data(), xhat_.data(), inv_std_.data(), gamma_.value.data(), n, dim_, dx->data());
    CHOIR_CUDA_CHECK_LAUNCH();
  }

  std::vector<Param<T>*> Params() override { return {&gamma_, &beta_}; }

 private:
  int dim_;
  T eps_;
  Param<T> gamma_;
  Param<T> beta_;
  // Cached by Forward for Backward: the normalised input and 1 / sqrt(var + eps) per row.
  Tensor<T> xhat_{models::Device::kCuda};
  Tensor<T> inv_std_{models::Device::kCuda};
  // Column sums: per-chunk partials, totals.
  Tensor<T> scratch_{models::Device::kCuda};
  Tensor<T> sums_{models::Device::kCuda};
};

}  // namespace

template <typename T>
std::unique_ptr<models::Layer<T>> CudaLayerFactory<T>::MakeLinear(int in, int out, uint64_t seed) {
  return std::make_unique<CudaLinear<T>>(in, out, seed);
}

template <typename T>
std::unique_ptr<models::Layer<T>> CudaLayerFactory<T>::MakeActivation(
    models::ActivationKind kind, int dim, const models::DiceOptions& dice) {
  switch (kind) {
    case ActivationKind::kPrelu:
      return std::make_unique<CudaPrelu<T>>(dim);
    case ActivationKind::kDice:
      return std::make_unique<CudaDice<T>>(dim, dice);
    case ActivationKind::kIdentity:
    case ActivationKind::kRelu:
    case ActivationKind::kSigmoid:
    case ActivationKind::kTanh:
      return std::make_unique<CudaPointwise<T>>(kind, dim);
  }
  LOG(FATAL) << "unknown activation kind " << static_cast<int>(kind);
  return nullptr;
}

template <typename T>
std::unique_ptr<models::Layer<T>> CudaLayerFactory<T>::MakeLayerNorm(int dim, double eps) {
  return std::make_unique<CudaLayerNorm<T>>(dim, eps);
}

// MakePool and MakeAttention are defined in attention.cu.
#define CHOIR_INSTANTIATE(T)                                                                      \
  template std::unique_ptr<models::Layer<T>> CudaLayerFactory<T>::MakeLinear(int, int, uint64_t); \
  template std::unique_ptr<models::Layer<T>> CudaLayerFactory<T>::MakeActivation(                 \
      models::ActivationKind, int, const models::DiceOptions&);                                   \
  template std::unique_ptr<models::Layer<T>> CudaLayerFactory<T>::MakeLayerNorm(int, double);
CHOIR_INSTANTIATE(float)
CHOIR_INSTANTIATE(double)
#undef CHOIR_INSTANTIATE

}  // namespace choir::models::cuda
