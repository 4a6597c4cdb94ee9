// The CUDA context (device, stream, cuBLAS handle) and the DeviceBackend that device tensors
// and the layers.h free functions use.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_format.h"
#include "core/status.h"
#include "models/cuda/cuda.h"
#include "models/cuda/internal/cuda_util.h"
#include "models/cuda/internal/ops.h"

namespace choir::models::cuda {
namespace internal {
namespace {

struct Context {
  int device = -1;
  cudaStream_t stream = nullptr;         // the compute lane
  cudaStream_t upload_stream = nullptr;  // the upload lane
  cublasHandle_t blas = nullptr;
  // Whether device memory comes from the stream-ordered pool (cudaMallocAsync); false where the
  // device has none (cudaDevAttrMemoryPoolsSupported = 0, seen on some virtualised GPUs) or
  // CudaOptions::memory_pools is false: then BlockCache below.
  bool pools = true;
};

Context& Ctx() {
  static Context* ctx = new Context;  // lives until exit: tensors may be freed at exit
  return *ctx;
}

std::mutex& InitMutex() {
  static std::mutex* mu = new std::mutex;
  return *mu;
}

// Errors of calls made while the process exits (objects destroyed after the runtime unloaded):
// what they would release is gone with the context.
bool ExitingError(cudaError_t err) {
  return err == cudaErrorCudartUnloading || err == cudaErrorContextIsDestroyed;
}

cudaStream_t LaneStream(models::Lane lane);

// Selects InitCuda's device on this thread (a prefetch thread's first CUDA call may be one of
// these): a call on an unbound thread would act on device 0 and create a context there.
void BindThread() { static_cast<void>(Stream()); }

void CudaSynchronizeBoth();

// Device memory without the stream-ordered pool: cudaMalloc'd blocks, kept for reuse when freed
// (the pool with an unlimited release threshold, which InitCuda sets, does the same). Freed
// blocks go back for reuse in the order of the compute stream, exactly as cudaFreeAsync on it
// would: a later allocation's kernels queue behind the earlier owner's. Thread-safe.
class BlockCache {
 public:
  void* Allocate(size_t bytes) {
    const size_t size = (std::max<size_t>(bytes, 1) + kGrain - 1) / kGrain * kGrain;
    {
      std::lock_guard<std::mutex> lock(mu_);
      std::vector<void*>& free = free_[size];
      if (!free.empty()) {
        void* ptr = free.back();
        free.pop_back();
        return ptr;
      }
    }
    void* ptr = nullptr;
    cudaError_t err = cudaMalloc(&ptr, size);
    if (err == cudaErrorMemoryAllocation) {
      // The cached blocks of other sizes back to the driver, once queued work no longer uses them.
      cudaGetLastError();
      ReleaseCached();
      err = cudaMalloc(&ptr, size);
    }
    CHOIR_CUDA_CHECK(err);
    std::lock_guard<std::mutex> lock(mu_);
    size_of_[ptr] = size;
    return ptr;
  }
  void Free(void* ptr) {
    std::lock_guard<std::mutex> lock(mu_);
    const auto it = size_of_.find(ptr);
    CHECK(it != size_of_.end()) << "freeing device memory this backend did not allocate";
    free_[it->second].push_back(ptr);
  }

 private:
  static constexpr size_t kGrain = 512;
  void ReleaseCached() {
    CudaSynchronizeBoth();
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [size, blocks] : free_) {
      for (void* ptr : blocks) {
        CHOIR_CUDA_CHECK(cudaFree(ptr));
        size_of_.erase(ptr);
      }
      blocks.clear();
    }
  }
  std::mutex mu_;
  std::unordered_map<size_t, std::vector<void*>> free_;  // guarded by mu_: by rounded size
  std::unordered_map<void*, size_t> size_of_;            // guarded by mu_: every live block
};

BlockCache& Blocks() {
  static BlockCache* cache = new BlockCache;  // lives until exit, as Ctx()
  return *cache;
}

class CudaBackend : public models::DeviceBackend {
 public:
  void* AllocatePinnedHost(size_t bytes) override {
    BindThread();
    void* ptr = nullptr;
    CHOIR_CUDA_CHECK(cudaHostAlloc(&ptr, std::max<size_t>(bytes, 1), cudaHostAllocDefault));
    return ptr;
  }
  void FreePinnedHost(void* ptr) override {
    BindThread();
    const cudaError_t err = cudaFreeHost(ptr);
    if (!ExitingError(err)) CHOIR_CUDA_CHECK(err);
  }
  void CopyToDeviceAsync(void* dst, const void* host_src, size_t bytes, models::Lane lane) override {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, LaneStream(lane)));
  }
  void* CreateEvent() override {
    BindThread();
    cudaEvent_t event = nullptr;
    CHOIR_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming));
    return event;
  }
  void DestroyEvent(void* event) override {
    BindThread();
    const cudaError_t err = cudaEventDestroy(static_cast<cudaEvent_t>(event));
    if (!ExitingError(err)) CHOIR_CUDA_CHECK(err);
  }
  void RecordEvent(void* event, models::Lane lane) override {
    CHOIR_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(event), LaneStream(lane)));
  }
  void WaitEvent(void* event, models::Lane lane) override {
    CHOIR_CUDA_CHECK(cudaStreamWaitEvent(LaneStream(lane), static_cast<cudaEvent_t>(event), 0));
  }
  void SynchronizeEvent(void* event) override {
    BindThread();
    CHOIR_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(event)));
  }

  void* Allocate(size_t bytes) override {
    cudaStream_t stream = Stream();  // checks InitCuda and binds the thread
    if (!Ctx().pools) return Blocks().Allocate(bytes);
    void* ptr = nullptr;
    // Stream-ordered allocation from the device's pool: steady-state steps reuse memory
    // without a device-wide synchronisation.
    CHOIR_CUDA_CHECK(cudaMallocAsync(&ptr, std::max<size_t>(bytes, 1), stream));
    return ptr;
  }
  void Free(void* ptr) override {
    if (!Ctx().pools) return Blocks().Free(ptr);
    const cudaError_t err = cudaFreeAsync(ptr, Stream());
    // A tensor destroyed during process exit, after the runtime has unloaded: the memory is gone
    // with the context anyway.
    if (!ExitingError(err)) CHOIR_CUDA_CHECK(err);
  }
  void CopyToDevice(void* dst, const void* host_src, size_t bytes) override {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, Stream()));
  }
  void CopyToHost(void* host_dst, const void* src, size_t bytes) override {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, Stream()));
    CHOIR_CUDA_CHECK(cudaStreamSynchronize(Stream()));
  }
  void CopyOnDevice(void* dst, const void* src, size_t bytes) override {
    CHOIR_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, Stream()));
  }
  void Synchronize() override { CudaSynchronize(); }

  void Fill(float* ptr, int64_t n, float value) override { FillDevice(ptr, n, value); }
  void Fill(double* ptr, int64_t n, double value) override { FillDevice(ptr, n, value); }
  void ConcatCols(const std::vector<const models::Tensor<float>*>& xs,
                  models::Tensor<float>* y) override {
    ConcatColsDevice(xs, y);
  }
  void ConcatCols(const std::vector<const models::Tensor<double>*>& xs,
                  models::Tensor<double>* y) override {
    ConcatColsDevice(xs, y);
  }
  void SplitCols(const models::Tensor<float>& y, const std::vector<int>& widths,
                 const std::vector<models::Tensor<float>*>& outs) override {
    SplitColsDevice(y, widths, outs);
  }
  void SplitCols(const models::Tensor<double>& y, const std::vector<int>& widths,
                 const std::vector<models::Tensor<double>*>& outs) override {
    SplitColsDevice(y, widths, outs);
  }
  void AddToCols(const models::Tensor<float>& x, int offset, models::Tensor<float>* y) override {
    AddToColsDevice(x, offset, y);
  }
  void AddToCols(const models::Tensor<double>& x, int offset,
                 models::Tensor<double>* y) override {
    AddToColsDevice(x, offset, y);
  }
  void CopyCols(const models::Tensor<float>& src, int offset, int width,
                models::Tensor<float>* dst) override {
    CopyColsDevice(src, offset, width, dst);
  }
  void CopyCols(const models::Tensor<double>& src, int offset, int width,
                models::Tensor<double>* dst) override {
    CopyColsDevice(src, offset, width, dst);
  }
  void SgdUpdate(float* w, const float* g, int64_t n, float lr) override {
    SgdUpdateDevice(w, g, n, lr);
  }
  void SgdUpdate(double* w, const double* g, int64_t n, double lr) override {
    SgdUpdateDevice(w, g, n, lr);
  }
  void AdagradUpdate(float* w, const float* g, float* acc, int64_t n, float lr,
                     float eps) override {
    AdagradUpdateDevice(w, g, acc, n, lr, eps);
  }
  void AdagradUpdate(double* w, const double* g, double* acc, int64_t n, double lr,
                     double eps) override {
    AdagradUpdateDevice(w, g, acc, n, lr, eps);
  }
  void Scale(float* x, int64_t n, float a) override { ScaleDevice(x, n, a); }
  void Scale(double* x, int64_t n, double a) override { ScaleDevice(x, n, a); }
  float BinaryCrossEntropy(const models::Tensor<float>& logits, absl::Span<const float> labels,
                           absl::Span<const float> weights, models::Tensor<float>* dlogits,
                           std::vector<float>* per_sample) override {
    return BinaryCrossEntropyDevice(logits, labels, weights, dlogits, per_sample);
  }
  double BinaryCrossEntropy(const models::Tensor<double>& logits,
                            absl::Span<const double> labels, absl::Span<const double> weights,
                            models::Tensor<double>* dlogits,
                            std::vector<double>* per_sample) override {
    return BinaryCrossEntropyDevice(logits, labels, weights, dlogits, per_sample);
  }
  void FuseLogits(const models::FusionHeads<float>& heads, models::Tensor<float>* z) override {
    FuseLogitsDevice(heads, z);
  }
  void FuseLogits(const models::FusionHeads<double>& heads, models::Tensor<double>* z) override {
    FuseLogitsDevice(heads, z);
  }
  models::FusionLoss FusionHeadLoss(const models::FusionHeads<float>& heads,
                                    const models::Tensor<float>& z, absl::Span<const float> labels,
                                    absl::Span<const float> weights,
                                    absl::Span<const float> purchases,
                                    const models::FusionLossOptions& options,
                                    models::HeadGrads<float>* grads,
                                    std::vector<float>* per_sample_bce) override {
    return FusionHeadLossDevice(heads, z, labels, weights, purchases, options, grads,
                                per_sample_bce);
  }
  models::FusionLoss FusionHeadLoss(const models::FusionHeads<double>& heads,
                                    const models::Tensor<double>& z,
                                    absl::Span<const double> labels,
                                    absl::Span<const double> weights,
                                    absl::Span<const double> purchases,
                                    const models::FusionLossOptions& options,
                                    models::HeadGrads<double>* grads,
                                    std::vector<double>* per_sample_bce) override {
    return FusionHeadLossDevice(heads, z, labels, weights, purchases, options, grads,
                                per_sample_bce);
  }
  void FusionBackward(const models::FusionHeads<float>& heads, const models::Tensor<float>& dz,
                      const models::Tensor<float>& dz_ind, const models::Tensor<float>& dz_grp,
                      const models::Tensor<float>& da_fuse, const models::Tensor<float>& da_kd,
                      models::Tensor<float>* dz_ind_total, models::Tensor<float>* dz_grp_total,
                      models::Tensor<float>* dgates) override {
    FusionBackwardDevice(heads, dz, dz_ind, dz_grp, da_fuse, da_kd, dz_ind_total, dz_grp_total,
                         dgates);
  }
  void FusionBackward(const models::FusionHeads<double>& heads, const models::Tensor<double>& dz,
                      const models::Tensor<double>& dz_ind, const models::Tensor<double>& dz_grp,
                      const models::Tensor<double>& da_fuse, const models::Tensor<double>& da_kd,
                      models::Tensor<double>* dz_ind_total, models::Tensor<double>* dz_grp_total,
                      models::Tensor<double>* dgates) override {
    FusionBackwardDevice(heads, dz, dz_ind, dz_grp, da_fuse, da_kd, dz_ind_total, dz_grp_total,
                         dgates);
  }
};

}  // namespace

std::atomic<int64_t> g_matmul_flops{0};

void CountMatmulFlops(int64_t m, int64_t n, int64_t k) {
  g_matmul_flops.fetch_add(2 * m * n * k, std::memory_order_relaxed);
}

namespace {
// The current device is per host thread, while the stream, the cuBLAS handle and the memory pool
// belong to the device InitCuda chose: a thread other than InitCuda's (one that frees a tensor,
// or runs a model) must select that device first, or its launches on the stream fail.
void BindThreadToDevice() {
  thread_local int bound = -1;
  const int device = Ctx().device;
  if (device >= 0 && bound != device) {
    CHOIR_CUDA_CHECK(cudaSetDevice(device));
    bound = device;
  }
}
}  // namespace

cudaStream_t Stream() {
  CHECK(Ctx().stream != nullptr) << "CUDA used before InitCuda()";
  BindThreadToDevice();
  return Ctx().stream;
}

namespace {
cudaStream_t LaneStream(models::Lane lane) {
  cudaStream_t compute = Stream();  // checks InitCuda and binds the thread
  return lane == models::Lane::kUpload ? Ctx().upload_stream : compute;
}
}  // namespace

cublasHandle_t Blas() {
  CHECK(Ctx().blas != nullptr) << "CUDA used before InitCuda()";
  BindThreadToDevice();
  return Ctx().blas;
}

}  // namespace internal

int64_t MatmulFlopsIssued() { return internal::g_matmul_flops.load(std::memory_order_relaxed); }

int CudaDeviceCount(std::string* why) {
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    if (why != nullptr) *why = absl::StrFormat("%s: %s", cudaGetErrorName(err), cudaGetErrorString(err));
    cudaGetLastError();  // clear the sticky error of a failed query
    return 0;
  }
  if (count == 0 && why != nullptr) *why = "the CUDA runtime sees no device";
  return count;
}

namespace {

// InitCuda's setup on `device`, into `ctx` (the caller clears it when this fails).
absl::Status SetUpContext(int device, const CudaOptions& options, internal::Context* ctx) {
  // A GPU that fails here (out of memory, a broken driver) is the job's error, not a crash.
  auto cuda = [device](const char* call, cudaError_t err) {
    if (err == cudaSuccess) return absl::OkStatus();
    cudaGetLastError();
    return absl::FailedPreconditionError(absl::StrFormat("CUDA device %d: %s: %s: %s", device, call,
                                                         cudaGetErrorName(err), cudaGetErrorString(err)));
  };
  auto blas = [device](const char* call, cublasStatus_t status) {
    if (status == CUBLAS_STATUS_SUCCESS) return absl::OkStatus();
    return absl::FailedPreconditionError(absl::StrFormat("CUDA device %d: %s: %s", device, call,
                                                         cublasGetStatusString(status)));
  };
  RETURN_IF_ERROR(cuda("cudaSetDevice", cudaSetDevice(device)));
  int pools = 0;
  RETURN_IF_ERROR(cuda("cudaDeviceGetAttribute(cudaDevAttrMemoryPoolsSupported)",
                       cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device)));
  ctx->pools = pools != 0 && options.memory_pools;
  if (!ctx->pools) {
    LOG(WARNING) << "CUDA device " << device << ": device memory from cudaMalloc with a cache of freed blocks ("
                 << (pools == 0 ? "the device has no stream-ordered memory pools" : "asked so") << ")";
  }
  RETURN_IF_ERROR(cuda("cudaStreamCreateWithFlags", cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking)));
  RETURN_IF_ERROR(
      cuda("cudaStreamCreateWithFlags", cudaStreamCreateWithFlags(&ctx->upload_stream, cudaStreamNonBlocking)));
  RETURN_IF_ERROR(blas("cublasCreate", cublasCreate(&ctx->blas)));
  RETURN_IF_ERROR(blas("cublasSetStream", cublasSetStream(ctx->blas, ctx->stream)));
  RETURN_IF_ERROR(blas("cublasSetMathMode", cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH)));
  if (ctx->pools) {
    // Keep freed blocks in the pool instead of returning them to the driver at each sync.
    cudaMemPool_t pool;
    RETURN_IF_ERROR(cuda("cudaDeviceGetDefaultMemPool", cudaDeviceGetDefaultMemPool(&pool, device)));
    uint64_t threshold = UINT64_MAX;
    RETURN_IF_ERROR(cuda("cudaMemPoolSetAttribute",
                         cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status InitCuda(int device, const CudaOptions& options) {
  std::lock_guard<std::mutex> lock(internal::InitMutex());
  internal::Context& ctx = internal::Ctx();
  if (device < 0) return absl::InvalidArgumentError(absl::StrFormat("CUDA device %d requested", device));
  if (ctx.device == device) return absl::OkStatus();
  if (ctx.device >= 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "CUDA already initialised on device %d; one device per process", ctx.device));
  }
  std::string why;
  const int count = CudaDeviceCount(&why);
  if (count == 0) return absl::FailedPreconditionError("no CUDA device: " + why);
  if (device >= count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("CUDA device %d requested, %d present", device, count));
  }
  if (absl::Status status = SetUpContext(device, options, &ctx); !status.ok()) {
    // Nothing half made stays behind: "used before InitCuda" still holds, and a retry starts over.
    if (ctx.blas != nullptr) cublasDestroy(ctx.blas);
    if (ctx.upload_stream != nullptr) cudaStreamDestroy(ctx.upload_stream);
    if (ctx.stream != nullptr) cudaStreamDestroy(ctx.stream);
    ctx = internal::Context();
    cudaGetLastError();
    return status;
  }
  ctx.device = device;
  static internal::CudaBackend* backend = new internal::CudaBackend;
  models::RegisterDeviceBackend(models::Device::kCuda, backend);
  return absl::OkStatus();
}

bool CudaUsesMemoryPools() { return internal::Ctx().device >= 0 && internal::Ctx().pools; }

std::string CudaDeviceDescription() {
  const int device = internal::Ctx().device;
  if (device < 0) return "CUDA not initialised";
  cudaDeviceProp prop;
  CHOIR_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  int driver = 0;
  CHOIR_CUDA_CHECK(cudaDriverGetVersion(&driver));
  return absl::StrFormat("%s, %d SMs, %.1f GiB, compute %d.%d, driver CUDA %d.%d", prop.name,
                         prop.multiProcessorCount, prop.totalGlobalMem / 1073741824.0, prop.major,
                         prop.minor, driver / 1000, (driver % 1000) / 10);
}

// Both lanes: "all queued work" includes uploads queued on the upload lane.
void CudaSynchronize() { internal::CudaSynchronizeBoth(); }

namespace internal {
namespace {
void CudaSynchronizeBoth() {
  CHOIR_CUDA_CHECK(cudaStreamSynchronize(Stream()));
  CHOIR_CUDA_CHECK(cudaStreamSynchronize(Ctx().upload_stream));
}
}  // namespace
}  // namespace internal

namespace {
std::atomic<MatmulPrecision> g_precision{MatmulPrecision::kFp32};
}  // namespace

MatmulPrecision internal::Precision() { return g_precision.load(std::memory_order_relaxed); }

void SetMatmulPrecision(MatmulPrecision precision) {
  // TF32 through the handle's math mode (cublasSgemm then uses the tensor cores); bf16 through
  // cublasGemmEx's compute type at each product (layers.cu).
  CHOIR_CUBLAS_CHECK(cublasSetMathMode(internal::Blas(), precision == MatmulPrecision::kTf32
                                                             ? CUBLAS_TF32_TENSOR_OP_MATH
                                                             : CUBLAS_DEFAULT_MATH));
  g_precision.store(precision, std::memory_order_relaxed);
}

MatmulPrecision GetMatmulPrecision() { return internal::Precision(); }

const char* MatmulPrecisionName(MatmulPrecision precision) {
  switch (precision) {
    case MatmulPrecision::kFp32:
      return "fp32";
    case MatmulPrecision::kTf32:
      return "tf32";
    case MatmulPrecision::kBf16:
      return "bf16";
  }
  return "?";
}

bool ParseMatmulPrecision(const std::string& name, MatmulPrecision* precision) {
  for (MatmulPrecision p : {MatmulPrecision::kFp32, MatmulPrecision::kTf32, MatmulPrecision::kBf16}) {
    if (name == MatmulPrecisionName(p)) {
      *precision = p;
      return true;
    }
  }
  return false;
}

}  // namespace choir::models::cuda
