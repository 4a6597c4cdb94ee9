// The CUDA backend: device tensors, the dense layers of models/ as CUDA kernels and cuBLAS
// products, behind the same LayerFactory interface as the CPU layers.
//
//   InitCuda(0);                       // registers the backend for Device::kCuda
//   CudaLayerFactory<float> factory;   // hand it to a model instead of CpuLayerFactory
//
// Everything runs in order on one CUDA stream per process; host code only waits where it reads
// a value back (losses, copies to host). Errors from the CUDA runtime or cuBLAS are programming
// or hardware errors and CHECK-fail with the call, file and line.
#ifndef CHOIR_MODELS_CUDA_CUDA_H_
#define CHOIR_MODELS_CUDA_CUDA_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "models/layers.h"

namespace choir::models::cuda {

// Number of CUDA devices this process can use (0 without a driver or GPU); `why`, when not
// null, receives the reason when 0.
int CudaDeviceCount(std::string* why = nullptr);

struct CudaOptions {
  // Device memory from the stream-ordered pool (cudaMallocAsync), where the GPU has one (else,
  // or when false: cudaMalloc with a cache of freed blocks, reused in the compute stream's order).
  bool memory_pools = true;
};

// Selects `device`, creates the stream and cuBLAS handle, and registers the backend for
// models::Device::kCuda. Idempotent for the same device (the first call's options hold).
// FAILED_PRECONDITION without a GPU, naming the reason, or when a setup call fails (nothing of
// it stays behind).
absl::Status InitCuda(int device = 0, const CudaOptions& options = {});

// After InitCuda: whether device memory comes from the stream-ordered pool.
bool CudaUsesMemoryPools();

// "NVIDIA H100 80GB HBM3, 132 SMs, 79.1 GiB, driver 13.0" (after InitCuda).
std::string CudaDeviceDescription();

// Waits for all queued GPU work.
void CudaSynchronize();

// The arithmetic of the float matrix products (Linear's forward and backward); tensors stay
// fp32 either way and products accumulate in fp32. kFp32 (the default): plain fp32. kTf32: the
// inputs rounded to TF32 (10-bit mantissas) on the tensor cores. kBf16: rounded to bf16 (7-bit
// mantissas) on the tensor cores, the fastest. Double products are always fp64. Applies to
// products issued afterwards.
enum class MatmulPrecision { kFp32, kTf32, kBf16 };
void SetMatmulPrecision(MatmulPrecision precision);
MatmulPrecision GetMatmulPrecision();
const char* MatmulPrecisionName(MatmulPrecision precision);  // "fp32", "tf32", "bf16"
// "fp32", "tf32" or "bf16"; false otherwise.
bool ParseMatmulPrecision(const std::string& name, MatmulPrecision* precision);

// Floating-point operations of the matrix products issued so far (2 m n k each), for the
// benchmark's achieved-TFLOP/s figure.
int64_t MatmulFlopsIssued();

template <typename T>
class CudaLayerFactory : public models::LayerFactory<T> {
 public:
  models::Device device() const override { return models::Device::kCuda; }
  std::unique_ptr<models::Layer<T>> MakeLinear(int in, int out, uint64_t seed) override;
  std::unique_ptr<models::Layer<T>> MakeActivation(models::ActivationKind kind, int dim,
                                                   const models::DiceOptions& dice) override;
  std::unique_ptr<models::Layer<T>> MakeLayerNorm(int dim, double eps) override;
  std::unique_ptr<models::EmbeddingBagPool<T>> MakePool(models::PoolMode mode) override;
  std::unique_ptr<models::TargetAttention<T>> MakeAttention(int dim,
                                                            const models::AttentionOptions& options,
                                                            uint64_t seed) override;
};

}  // namespace choir::models::cuda

#endif  // CHOIR_MODELS_CUDA_CUDA_H_
