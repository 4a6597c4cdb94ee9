// Where tensors live. Host memory (Device::kCpu) is always there; a backend for another device
// (the CUDA backend in gpu/) registers itself here, so models/ never depends on CUDA: a Tensor on
// kCuda allocates, fills and copies through the registered DeviceBackend, and the few free
// functions of layers.h that models call directly (ConcatCols, SplitCols, AddToCols, CopyCols,
// BinaryCrossEntropy), ChoirRec's head (fusion_head.h) and the dense optimizers dispatch to it.
#ifndef CHOIR_MODELS_DEVICE_H_
#define CHOIR_MODELS_DEVICE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/types/span.h"

namespace choir::models {

enum class Device { kCpu, kCuda };

const char* DeviceName(Device device);

template <typename T>
class Tensor;
template <typename T>
struct FusionHeads;
template <typename T>
struct HeadGrads;
struct FusionLossOptions;
struct FusionLoss;

// A device's two queues. Compute: everything below unless a lane is named (kernels, products,
// copies). Upload: copies from host memory that run while compute works (the next batch's
// inputs); events order the two.
enum class Lane { kCompute, kUpload };

// One device's memory and the tensor operations that model code calls between layers. Every
// call is ordered on the backend's compute lane; only the copies to host (and the functions
// that return a host value) wait for it.
class DeviceBackend {
 public:
  virtual ~DeviceBackend() = default;

  // Page-locked host memory: copies from it to the device run asynchronously at the bus's full
  // speed (Tensor::PinHost uses it).
  virtual void* AllocatePinnedHost(size_t bytes) = 0;
  virtual void FreePinnedHost(void* ptr) = 0;
  // Queues a copy from host memory on `lane`. The host bytes must stay unchanged until the copy
  // has run (an event recorded after it, then SynchronizeEvent).
  virtual void CopyToDeviceAsync(void* dst, const void* host_src, size_t bytes, Lane lane) = 0;
  // Events: a point in one lane's queue that the other lane (on the device) or the host can
  // wait for. An event never recorded counts as reached.
  virtual void* CreateEvent() = 0;
  virtual void DestroyEvent(void* event) = 0;
  // The event marks the work queued on `lane` so far.
  virtual void RecordEvent(void* event, Lane lane) = 0;
  // Work queued on `lane` afterwards starts once the event's work has run; the host goes on.
  virtual void WaitEvent(void* event, Lane lane) = 0;
  // The host waits until the event's work has run.
  virtual void SynchronizeEvent(void* event) = 0;

  virtual void* Allocate(size_t bytes) = 0;
  virtual void Free(void* ptr) = 0;
  virtual void CopyToDevice(void* dst, const void* host_src, size_t bytes) = 0;
  // Synchronous: the host bytes are valid on return.
  virtual void CopyToHost(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void CopyOnDevice(void* dst, const void* src, size_t bytes) = 0;
  // Waits until every queued operation has finished (for timing and before host reads).
  virtual void Synchronize() = 0;

  virtual void Fill(float* ptr, int64_t n, float value) = 0;
  virtual void Fill(double* ptr, int64_t n, double value) = 0;

  // The layers.h free functions, with the same contracts, on tensors of this device.
  virtual void ConcatCols(const std::vector<const Tensor<float>*>& xs, Tensor<float>* y) = 0;
  virtual void ConcatCols(const std::vector<const Tensor<double>*>& xs, Tensor<double>* y) = 0;
  virtual void SplitCols(const Tensor<float>& y, const std::vector<int>& widths,
                         const std::vector<Tensor<float>*>& outs) = 0;
  virtual void SplitCols(const Tensor<double>& y, const std::vector<int>& widths,
                         const std::vector<Tensor<double>*>& outs) = 0;
  // y[:, offset : offset + x.cols()] += x.
  virtual void AddToCols(const Tensor<float>& x, int offset, Tensor<float>* y) = 0;
  virtual void AddToCols(const Tensor<double>& x, int offset, Tensor<double>* y) = 0;
  // dst [B, width] = src[:, offset : offset + width].
  virtual void CopyCols(const Tensor<float>& src, int offset, int width, Tensor<float>* dst) = 0;
  virtual void CopyCols(const Tensor<double>& src, int offset, int width, Tensor<double>* dst) = 0;
  // The dense optimizers' element-wise updates (optimizer.h): w -= lr * g, and Adagrad's
  // acc += g * g; w -= lr * g / (sqrt(acc) + eps).
  virtual void SgdUpdate(float* w, const float* g, int64_t n, float lr) = 0;
  virtual void SgdUpdate(double* w, const double* g, int64_t n, double lr) = 0;
  virtual void AdagradUpdate(float* w, const float* g, float* acc, int64_t n, float lr,
                             float eps) = 0;
  virtual void AdagradUpdate(double* w, const double* g, double* acc, int64_t n, double lr,
                             double eps) = 0;
  // x *= a, element-wise (a worker's gradients scaled by its share of the global batch).
  virtual void Scale(float* x, int64_t n, float a) = 0;
  virtual void Scale(double* x, int64_t n, double a) = 0;
  // labels, weights and per_sample are host memory; logits and dlogits live on this device.
  virtual float BinaryCrossEntropy(const Tensor<float>& logits, absl::Span<const float> labels,
                                   absl::Span<const float> weights, Tensor<float>* dlogits,
                                   std::vector<float>* per_sample) = 0;
  virtual double BinaryCrossEntropy(const Tensor<double>& logits, absl::Span<const double> labels,
                                    absl::Span<const double> weights, Tensor<double>* dlogits,
                                    std::vector<double>* per_sample) = 0;
  // fusion_head.h, with its contracts. The heads and head gradients live on this device (the
  // caller has copied them over); labels, weights, purchases and per_sample_bce are host memory.
  // FusionBackward's dgates is null when the heads have no gates.
  virtual void FuseLogits(const FusionHeads<float>& heads, Tensor<float>* z) = 0;
  virtual void FuseLogits(const FusionHeads<double>& heads, Tensor<double>* z) = 0;
  virtual FusionLoss FusionHeadLoss(const FusionHeads<float>& heads, const Tensor<float>& z,
                                    absl::Span<const float> labels, absl::Span<const float> weights,
                                    absl::Span<const float> purchases, const FusionLossOptions& options,
                                    HeadGrads<float>* grads, std::vector<float>* per_sample_bce) = 0;
  virtual FusionLoss FusionHeadLoss(const FusionHeads<double>& heads, const Tensor<double>& z,
                                    absl::Span<const double> labels, absl::Span<const double> weights,
                                    absl::Span<const double> purchases, const FusionLossOptions& options,
                                    HeadGrads<double>* grads, std::vector<double>* per_sample_bce) = 0;
  virtual void FusionBackward(const FusionHeads<float>& heads, const Tensor<float>& dz,
                              const Tensor<float>& dz_ind, const Tensor<float>& dz_grp,
                              const Tensor<float>& da_fuse, const Tensor<float>& da_kd,
                              Tensor<float>* dz_ind_total, Tensor<float>* dz_grp_total,
                              Tensor<float>* dgates) = 0;
  virtual void FusionBackward(const FusionHeads<double>& heads, const Tensor<double>& dz,
                              const Tensor<double>& dz_ind, const Tensor<double>& dz_grp,
                              const Tensor<double>& da_fuse, const Tensor<double>& da_kd,
                              Tensor<double>* dz_ind_total, Tensor<double>* dz_grp_total,
                              Tensor<double>* dgates) = 0;
};

// Installs the backend of `device` (not kCpu); the backend must outlive every tensor on it.
void RegisterDeviceBackend(Device device, DeviceBackend* backend);
// The backend of `device`; CHECK-fails naming the device when none is registered.
DeviceBackend* GetDeviceBackend(Device device);
bool HasDeviceBackend(Device device);

}  // namespace choir::models

#endif  // CHOIR_MODELS_DEVICE_H_
