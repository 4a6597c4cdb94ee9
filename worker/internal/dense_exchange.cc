#include "worker/internal/dense_exchange.h"

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

// Each parameter tensor's gradients or values to (to_flat) or from consecutive ranges of a flat
// buffer on the parameters' own device (the host buffer case is models::CopyGradsTo & co.).
void CopyOnDevice(const std::vector<models::Param<float>*>& params, bool grads, float* flat, bool to_flat) {
  for (models::Param<float>* p : params) {
    Tensor<float>& t = grads ? p->grad : p->value;
    if (t.size() > 0) {
      const size_t bytes = static_cast<size_t>(t.size()) * sizeof(float);
      DeviceBackend* backend = GetDeviceBackend(t.device());
      if (to_flat) {
        backend->CopyOnDevice(flat, t.data(), bytes);
      } else {
        backend->CopyOnDevice(t.data(), flat, bytes);
      }
    }
    flat += t.size();
  }
}

}  // namespace

DenseExchange::DenseExchange(std::vector<models::Param<float>*> params, Collective* collective,
                             Device buffer_device)
    : params_(std::move(params)), collective_(collective), count_(models::ParamCount(params_)),
      flat_(buffer_device) {
  CHECK_LT(count_, int64_t{std::numeric_limits<int>::max()}) << "dense parameters beyond one tensor's int range";
  flat_.ResizeUninitialized(1, static_cast<int>(count_ + 1));
  for (const models::Param<float>* p : params_) {
    CHECK(flat_.on_host() || p->value.device() == buffer_device)
        << "a device buffer for the dense exchange needs every parameter on that device (" << p->name << ")";
  }
}

void DenseExchange::Pack(What what) {
  const bool grads = what == What::kGrads;
  if (flat_.on_host()) {
    grads ? models::CopyGradsTo(params_, flat_.data()) : models::CopyValuesTo(params_, flat_.data());
  } else {
    CopyOnDevice(params_, grads, flat_.data(), /*to_flat=*/true);
  }
}

void DenseExchange::Unpack(What what) {
  const bool grads = what == What::kGrads;
  if (flat_.on_host()) {
    grads ? models::CopyGradsFrom(params_, flat_.data()) : models::CopyValuesFrom(params_, flat_.data());
  } else {
    CopyOnDevice(params_, grads, flat_.data(), /*to_flat=*/false);
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
  if (flat_.on_host()) {
    weighted_loss = flat_.data()[count_];
  } else {
    GetDeviceBackend(flat_.device())->CopyToHost(&weighted_loss, flat_.data() + count_, sizeof(float));
  }
  return static_cast<double>(weighted_loss);
}

}  // namespace choir::worker::internal
