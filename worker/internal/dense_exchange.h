// The dense half of a cluster step (DESIGN.md 2): every worker's parameter gradients, each
// scaled by its slice's share of the global batch, summed over the workers' collective with the
// step's loss riding along as one more element; and, before the first step, worker 0's
// parameters broadcast to every worker. Internal to worker/.
//
// The flat buffer lives where the collective reads: on the model's device for a device
// collective (NCCL: gradients never leave the GPU), in host memory for a host collective (MPI or
// in-process threads: gradients of a GPU model are copied down and back). On the CPU both are
// the same buffer and the same arithmetic, so a CPU run checks the packing a GPU run uses.
#ifndef CHOIR_WORKER_INTERNAL_DENSE_EXCHANGE_H_
#define CHOIR_WORKER_INTERNAL_DENSE_EXCHANGE_H_

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/collective.h"
#include "models/device.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::worker::internal {

class DenseExchange {
 public:
  // `params`: the model's parameters, all on one device (stable pointers). `collective`: the
  // workers' group, or null for a lone worker (AllReduce then only scales). `buffer_device`:
  // where the collective's data pointers must point (models::Device::kCuda for NCCL, kCpu for
  // a host collective).
  DenseExchange(std::vector<models::Param<float>*> params, Collective* collective,
                models::Device buffer_device);

  models::Device buffer_device() const { return flat_.device(); }

  // Every worker's parameter values become worker 0's.
  absl::Status BroadcastFromWorker0();

  // Every parameter's gradient becomes sum over workers of (share_w * gradient_w), and the
  // returned value is sum over workers of (share_w * loss_w): the global batch's gradient and
  // loss when every share is a slice's fraction of the global batch.
  absl::StatusOr<double> AllReduce(float share, double loss);

 private:
  enum class What { kGrads, kValues };
  void Pack(What what);
  void Unpack(What what);

  std::vector<models::Param<float>*> params_;
  Collective* collective_;
  int64_t count_;             // parameter elements; the flat buffer holds one more (the loss)
  models::Tensor<float> flat_;
};

}  // namespace choir::worker::internal

#endif  // CHOIR_WORKER_INTERNAL_DENSE_EXCHANGE_H_
