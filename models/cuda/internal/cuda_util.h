// Private helpers of the CUDA backend: error checks, the process's stream and cuBLAS handle,
// launch geometry, and copies of host parameters.
#ifndef CHOIR_MODELS_CUDA_INTERNAL_CUDA_UTIL_H_
#define CHOIR_MODELS_CUDA_INTERNAL_CUDA_UTIL_H_

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "glog/logging.h"
#include "models/layers.h"
#include "models/tensor.h"

// CHECK-fails with the CUDA error string when `expr` is not cudaSuccess. A fault inside a kernel
// (an illegal address, say) is asynchronous: it fails whichever call comes next, so the message
// says how to find the kernel.
#define CHOIR_CUDA_CHECK(expr)                                                              \
  do {                                                                                      \
    const cudaError_t choir_cuda_err = (expr);                                              \
    CHECK(choir_cuda_err == cudaSuccess)                                                    \
        << #expr << ": " << cudaGetErrorName(choir_cuda_err) << ": "                      \
        << cudaGetErrorString(choir_cuda_err)                                               \
        << " (an error from an earlier kernel surfaces at a later call: rerun with "        \
           "CUDA_LAUNCH_BLOCKING=1 or under compute-sanitizer to find it)";                 \
  } while (0)

#define CHOIR_CUBLAS_CHECK(expr)                                                            \
  do {                                                                                      \
    const cublasStatus_t choir_cublas_status = (expr);                                      \
    CHECK(choir_cublas_status == CUBLAS_STATUS_SUCCESS)                                     \
        << #expr << ": " << cublasGetStatusName(choir_cublas_status) << ": "              \
        << cublasGetStatusString(choir_cublas_status);                                      \
  } while (0)

// After every kernel launch: launch-configuration errors surface here, at the launch site.
#define CHOIR_CUDA_CHECK_LAUNCH() CHOIR_CUDA_CHECK(cudaGetLastError())

#include "models/cuda/cuda.h"

namespace choir::models::cuda::internal {

// The process's stream: every kernel, copy and cuBLAS call of the backend is queued on it.
cudaStream_t Stream();
// The cuBLAS handle, bound to Stream().
cublasHandle_t Blas();
// The precision SetMatmulPrecision chose.
MatmulPrecision Precision();

// Adds a product's 2 m n k to MatmulFlopsIssued().
void CountMatmulFlops(int64_t m, int64_t n, int64_t k);

constexpr int kThreads = 256;
// Blocks for a grid-stride loop over n elements.
inline int Blocks(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535LL * 8)));
}

// Moves a tensor to the GPU (values kept).
template <typename T>
void MoveToDevice(models::Tensor<T>* t) {
  if (t->device() == models::Device::kCuda) return;
  models::Tensor<T> d = t->To(models::Device::kCuda);
  *t = std::move(d);
}

// Gives every parameter value and gradient of `params` (made by a CPU layer, so initialised
// exactly as on the CPU) a GPU copy.
template <typename T>
void MoveParamsToDevice(const std::vector<models::Param<T>*>& params) {
  for (models::Param<T>* p : params) {
    MoveToDevice(&p->value);
    MoveToDevice(&p->grad);
  }
}

// Uploads `host` into a device buffer (grown as needed) and returns its pointer.
template <typename T>
const T* Upload(const std::vector<T>& host, models::Tensor<T>* buffer) {
  buffer->SetDevice(models::Device::kCuda);
  buffer->ResizeUninitialized(1, static_cast<int>(host.size()));
  if (!host.empty()) {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(buffer->data(), host.data(), host.size() * sizeof(T),
                                     cudaMemcpyHostToDevice, Stream()));
  }
  return buffer->data();
}

// CHECK that a tensor handed to a CUDA layer lives on the GPU.
template <typename T>
void CheckOnDevice(const models::Tensor<T>& t, const char* what) {
  CHECK(t.device() == models::Device::kCuda || t.empty())
      << what << ": a CUDA layer was handed a " << models::DeviceName(t.device()) << " tensor";
}

}  // namespace choir::models::cuda::internal

#endif  // CHOIR_MODELS_CUDA_INTERNAL_CUDA_UTIL_H_
