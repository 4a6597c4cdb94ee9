#include "models/device.h"

#include <atomic>

#include "glog/logging.h"

namespace choir::models {
namespace {
std::atomic<DeviceBackend*> g_cuda_backend{nullptr};
}  // namespace

const char* DeviceName(Device device) {
  switch (device) {
    case Device::kCpu:
      return "cpu";
    case Device::kCuda:
      return "cuda";
  }
  return "unknown";
}

void RegisterDeviceBackend(Device device, DeviceBackend* backend) {
  CHECK(device == Device::kCuda) << "only the cuda backend is registered";
  g_cuda_backend.store(backend);
}

bool HasDeviceBackend(Device device) {
  return device == Device::kCuda && g_cuda_backend.load() != nullptr;
}

DeviceBackend* GetDeviceBackend(Device device) {
  DeviceBackend* backend = device == Device::kCuda ? g_cuda_backend.load() : nullptr;
  CHECK(backend != nullptr) << "no backend registered for device " << DeviceName(device)
                            << " (is Choir built with CUDA and was the GPU initialised?)";
  return backend;
}

}  // namespace choir::models
