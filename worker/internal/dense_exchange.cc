#include "worker/internal/dense_exchange.h"

#include <algorithm>
#include <limits>
#include <utility>

#include "core/status.h"
#include "glog/logging.h"

namespace choir::worker::internal {
namespace {

using models::Device;
using models::DeviceBackend;
using models::GetDeviceBackend;
using models::Tensor;

// Copies n floats from `src` (memory of `from`) to `dst` (memory of `to`); one of the two
// devices is the host or both are the same device.
void CopyFloats(const float* src, Device from, float* dst, Device to, int64_t n) {
  if (n == 0) return;
  const size_t bytes = static_cast<size_t>(n) * sizeof(float);
  if (from == Device::kCpu && to == Device::kCpu) {
    std::copy_n(src, n, dst);
  } else if (to == Device::kCpu) {
    GetDeviceBackend(from)->CopyToHost(dst, src, bytes);
  } else if (from == Device::kCpu) {
    GetDeviceBackend(to)->CopyToDevice(dst, src, bytes);
  } else {
    CHECK(from == to) << "dense exchange between two devices";
    GetDeviceBackend(to)->CopyOnDevice(dst, src, bytes);
  }
}

}  // namespace

DenseExchange::DenseExchange(std::vector<models::Param<float>*> params, Collective* collective,
                             Device buffer_device)
    : params_(std::move(params)), collective_(collective), count_(models::ParamCount(params_)),
      flat_(buffer_device) {
  CHECK_LT(count_, int64_t{std::numeric_limits<int>::max()}) << "dense parameters beyond one tensor's int range";
  flat_.ResizeUninitialized(1, static_cast<int>(count_ + 1));
}

void DenseExchange::Pack(What what) {
  float* dst = flat_.data();
  for (const models::Param<float>* p : params_) {
    const Tensor<float>& t = what == What::kGrads ? p->grad : p->value;
    CopyFloats(t.data(), t.device(), dst, flat_.device(), t.size());
    dst += t.size();
  }
}

void DenseExchange::Unpack(What what) {
  const float* src = flat_.data();
  for (models::Param<float>* p : params_) {
    Tensor<float>& t = what == What::kGrads ? p->grad : p->value;
    CopyFloats(src, flat_.device(), t.data(), t.device(), t.size());
    src += t.size();
  }
}

absl::Status DenseExchange::BroadcastFromWorker0() {
  if (collective_ == nullptr) return absl::OkStatus();
  Pack(What::kValues);
  RETURN_IF_ERROR(collective_->Broadcast(flat_.data(), static_cast<size_t>(count_) * sizeof(float), 0));
  Unpack(What::kValues);
  return absl::OkStatus();
}

absl::StatusOr<double> DenseExchange::AllReduce(float share, double loss) {
  if ((collective_ == nullptr || collective_->size() == 1) && share == 1) {
    // A lone worker: the sum is its own gradient (no copies through the buffer); the loss is
    // rounded to float as the exchanged one would be.
    return static_cast<double>(static_cast<float>(loss));
  }
  Pack(What::kGrads);
  float weighted_loss = static_cast<float>(loss * share);
  if (flat_.on_host()) {
    if (share != 1) {
      for (int64_t i = 0; i < count_; ++i) flat_.data()[i] *= share;
    }
    flat_.data()[count_] = weighted_loss;
  } else {
    DeviceBackend* backend = GetDeviceBackend(flat_.device());
    if (share != 1) backend->Scale(flat_.data(), count_, share);
    backend->CopyToDevice(flat_.data() + count_, &weighted_loss, sizeof(float));
  }
  if (collective_ != nullptr) RETURN_IF_ERROR(collective_->AllReduceSum(flat_.data(), count_ + 1));
  Unpack(What::kGrads);
  CopyFloats(flat_.data() + count_, flat_.device(), &weighted_loss, Device::kCpu, 1);
  return static_cast<double>(weighted_loss);
}

}  // namespace choir::worker::internal
