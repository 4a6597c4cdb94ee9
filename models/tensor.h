// A small dense tensor for the layer library: row-major 2-D [rows, cols] (batch x features),
// owning its storage. T is float for training and double for gradient checks.
//
// A tensor lives on one device: host memory (Device::kCpu, the default) or the memory of a
// registered DeviceBackend (Device::kCuda, see device.h). data() points into that memory;
// row() and at() are host accessors. Copies (construction, assignment, CopyFrom) are deep and
// work across devices.
#ifndef CHOIR_MODELS_TENSOR_H_
#define CHOIR_MODELS_TENSOR_H_

#include <algorithm>
#include <cstdint>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "glog/logging.h"
#include "models/device.h"

namespace choir::models {

// The allocator of a tensor's host memory: ordinary memory, or page-locked memory of a device's
// backend (`pinned_for` != kCpu) so that copies to that device run asynchronously. Moves and
// swaps carry it along; a copy starts with ordinary memory.
template <typename T>
class HostAllocator {
 public:
  using value_type = T;
  using propagate_on_container_move_assignment = std::true_type;
  using propagate_on_container_swap = std::true_type;
  using propagate_on_container_copy_assignment = std::false_type;
  using is_always_equal = std::false_type;

  HostAllocator() = default;
  explicit HostAllocator(Device pinned_for) : pinned_for_(pinned_for) {}
  template <typename U>
  HostAllocator(const HostAllocator<U>& other) : pinned_for_(other.pinned_for()) {}  // NOLINT

  T* allocate(size_t n) {
    if (pinned_for_ == Device::kCpu) return std::allocator<T>().allocate(n);
    return static_cast<T*>(GetDeviceBackend(pinned_for_)->AllocatePinnedHost(std::max<size_t>(n, 1) * sizeof(T)));
  }
  void deallocate(T* ptr, size_t n) {
    if (pinned_for_ == Device::kCpu) return std::allocator<T>().deallocate(ptr, n);
    GetDeviceBackend(pinned_for_)->FreePinnedHost(ptr);
  }
  HostAllocator select_on_container_copy_construction() const { return HostAllocator(); }
  Device pinned_for() const { return pinned_for_; }
  friend bool operator==(const HostAllocator& a, const HostAllocator& b) { return a.pinned_for_ == b.pinned_for_; }
  friend bool operator!=(const HostAllocator& a, const HostAllocator& b) { return !(a == b); }

 private:
  Device pinned_for_ = Device::kCpu;
};

template <typename T>
class Tensor {
 public:
  Tensor() = default;
  // An empty tensor on `device`.
  explicit Tensor(Device device) : device_(device) {}
  // A rows x cols host tensor with every element `fill`.
  Tensor(int rows, int cols, T fill = T(0)) { Resize(rows, cols, fill); }

  Tensor(const Tensor& other) : device_(other.device_) { CopyFrom(other); }
  Tensor& operator=(const Tensor& other) {
    if (this != &other) {
      if (device_ != other.device_) SetDevice(other.device_);
      CopyFrom(other);
    }
    return *this;
  }
  Tensor(Tensor&& other) noexcept { Swap(&other); }
  Tensor& operator=(Tensor&& other) noexcept {
    if (this != &other) {
      Tensor gone(std::move(*this));
      Swap(&other);
    }
    return *this;
  }
  ~Tensor() { ReleaseDevice(); }

  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int64_t size() const { return static_cast<int64_t>(rows_) * cols_; }
  bool empty() const { return size() == 0; }
  Device device() const { return device_; }
  bool on_host() const { return device_ == Device::kCpu; }

  T* data() { return on_host() ? host_.data() : device_data_; }
  const T* data() const { return on_host() ? host_.data() : device_data_; }
  // Host accessors. Bounds are checked in debug builds only.
  T* row(int r) {
    DCHECK(on_host()) << "row() of a " << DeviceName(device_) << " tensor";
    return host_.data() + static_cast<int64_t>(r) * cols_;
  }
  const T* row(int r) const {
    DCHECK(on_host()) << "row() of a " << DeviceName(device_) << " tensor";
    return host_.data() + static_cast<int64_t>(r) * cols_;
  }
  T& at(int r, int c) {
    DCHECK(on_host() && r >= 0 && r < rows_ && c >= 0 && c < cols_) << r << "," << c;
    return host_[static_cast<int64_t>(r) * cols_ + c];
  }
  const T& at(int r, int c) const {
    DCHECK(on_host() && r >= 0 && r < rows_ && c >= 0 && c < cols_) << r << "," << c;
    return host_[static_cast<int64_t>(r) * cols_ + c];
  }

  // Changes the shape, keeping the allocation when it is large enough; every element becomes
  // `fill`.
  void Resize(int rows, int cols, T fill = T(0)) {
    if (on_host()) {
      SetShape(rows, cols);
      // Product of the unsigned values: the compiler then sees a bound below the maximum object
      // size (GCC 12 -O3 warns on the signed product otherwise).
      host_.assign(static_cast<size_t>(static_cast<unsigned>(rows)) * static_cast<unsigned>(cols),
                   fill);
      return;
    }
    ResizeUninitialized(rows, cols);
    Fill(fill);
  }
  // Changes the shape without initialising: values are whatever the storage held. For outputs
  // that the caller overwrites completely.
  void ResizeUninitialized(int rows, int cols) {
    SetShape(rows, cols);
    const size_t n =
        static_cast<size_t>(static_cast<unsigned>(rows)) * static_cast<unsigned>(cols);
    if (on_host()) {
      host_.resize(n);
      return;
    }
    if (static_cast<int64_t>(n) > device_capacity_) {
      ReleaseDevice();
      device_data_ = static_cast<T*>(GetDeviceBackend(device_)->Allocate(n * sizeof(T)));
      device_capacity_ = static_cast<int64_t>(n);
    }
  }
  void Fill(T value) {
    if (on_host()) {
      std::fill(host_.begin(), host_.end(), value);
    } else if (size() > 0) {
      GetDeviceBackend(device_)->Fill(device_data_, size(), value);
    }
  }
  void Zero() { Fill(T(0)); }
  // Elements the device allocation holds (0 on the host): a change means new device memory.
  int64_t device_capacity() const { return device_capacity_; }
  bool SameShape(const Tensor& other) const { return rows_ == other.rows_ && cols_ == other.cols_; }

  // A host tensor's memory becomes page-locked for copies to `device` (kCpu: ordinary memory
  // again), contents kept; later growth stays pinned. For batches staged onto a GPU.
  void PinHost(Device device) {
    CHECK(on_host()) << "PinHost of a " << DeviceName(device_) << " tensor";
    if (host_.get_allocator().pinned_for() == device) return;
    HostVector pinned{HostAllocator<T>(device)};
    pinned.reserve(host_.size());
    pinned.assign(host_.begin(), host_.end());
    host_.swap(pinned);
  }
  // The device whose pinned memory holds this host tensor (kCpu: ordinary memory).
  Device pinned_for() const { return host_.get_allocator().pinned_for(); }

  // Moves this tensor to `device`, dropping its contents when the device changes (the shape
  // becomes 0 x 0). For outputs about to be resized by a layer of that device.
  void SetDevice(Device device) {
    if (device == device_) return;
    ReleaseDevice();
    host_.clear();
    host_.shrink_to_fit();
    rows_ = cols_ = 0;
    device_ = device;
  }
  // Takes other's shape and values, on this tensor's device (copying across devices).
  void CopyFrom(const Tensor& other) {
    ResizeUninitialized(other.rows(), other.cols());
    const size_t bytes = static_cast<size_t>(size()) * sizeof(T);
    if (bytes == 0) return;
    if (on_host() && other.on_host()) {
      std::copy_n(other.host_.data(), size(), host_.data());
    } else if (on_host()) {
      GetDeviceBackend(other.device_)->CopyToHost(host_.data(), other.data(), bytes);
    } else if (other.on_host()) {
      GetDeviceBackend(device_)->CopyToDevice(device_data_, other.data(), bytes);
    } else {
      CHECK(device_ == other.device_) << "copy between two different devices";
      GetDeviceBackend(device_)->CopyOnDevice(device_data_, other.data(), bytes);
    }
  }
  // A copy of this tensor on `device`.
  Tensor To(Device device) const {
    Tensor t(device);
    t.CopyFrom(*this);
    return t;
  }

 private:
  void SetShape(int rows, int cols) {
    CHECK_GE(rows, 0);
    CHECK_GE(cols, 0);
    rows_ = rows;
    cols_ = cols;
  }
  void ReleaseDevice() {
    if (device_data_ != nullptr) GetDeviceBackend(device_)->Free(device_data_);
    device_data_ = nullptr;
    device_capacity_ = 0;
  }
  void Swap(Tensor* other) {
    std::swap(device_, other->device_);
    std::swap(rows_, other->rows_);
    std::swap(cols_, other->cols_);
    host_.swap(other->host_);
    std::swap(device_data_, other->device_data_);
    std::swap(device_capacity_, other->device_capacity_);
  }

  using HostVector = std::vector<T, HostAllocator<T>>;

  Device device_ = Device::kCpu;
  int rows_ = 0;
  int cols_ = 0;
  HostVector host_;
  T* device_data_ = nullptr;
  int64_t device_capacity_ = 0;
};

}  // namespace choir::models

#endif  // CHOIR_MODELS_TENSOR_H_
