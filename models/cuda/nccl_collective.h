// NCCL: the collective of core/collective.h between GPUs, one rank per GPU, for the allreduce
// of dense gradients that live on the device (DESIGN.md 2).
//
//   ASSIGN_OR_RETURN(auto bootstrap, NewMpiCollective(options));   // or an in-process group
//   ASSIGN_OR_RETURN(auto nccl, NcclCollective::Create(bootstrap.get()));
//   RETURN_IF_ERROR(nccl->AllReduceSum(grad.data(), grad.size()));  // a DEVICE pointer
//
// The same Collective interface and contract as the host implementations, with these
// differences:
// - AllReduceSum and Broadcast take DEVICE pointers (memory of this rank's GPU). The
//   operations are queued on one CUDA stream -- by default the backend's stream
//   (models::cuda::internal::Stream()), so they are ordered after the kernels that produced the
//   gradients and before those that use the sums.
// - NCCL cannot detect ranks that disagree on counts or roots: such a call hangs on the GPU
//   until the timeout gives DEADLINE_EXCEEDED. A dead or stuck rank gives DEADLINE_EXCEEDED,
//   or NCCL's asynchronous error where NCCL sees it first; the communicator is then aborted
//   and every later call fails with the same error. A rank's own invalid arguments (negative
//   count, null buffer, root out of range) give it INVALID_ARGUMENT before anything is queued;
//   the other ranks, which cannot know, time out.
// - Creation (ncclCommInitRank) cannot time out: a rank that never calls Create leaves the
//   others waiting there.
// Errors of NCCL calls carry ncclGetErrorString and ncclGetLastError; errors of CUDA calls
// carry the CUDA error name and string; both name the call, file and line.
//
// This header includes neither CUDA nor NCCL; link choir_nccl to use it.
#ifndef CHOIR_MODELS_CUDA_NCCL_COLLECTIVE_H_
#define CHOIR_MODELS_CUDA_NCCL_COLLECTIVE_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/collective.h"
#include "models/cuda/cuda.h"

struct CUstream_st;  // the struct behind cudaStream_t

namespace choir::models::cuda {

struct NcclCollectiveOptions {
  // This rank's CUDA device, and how InitCuda sets it up when this is the first use of CUDA.
  int device = 0;
  CudaOptions cuda;
  // The stream the operations are queued on. Null (the default): the backend's stream, after
  // InitCuda(device) (one device per process). Otherwise a caller-owned stream of `device` that
  // outlives the collective (several devices in one process, each rank on its own thread).
  CUstream_st* stream = nullptr;
  // Whether AllReduceSum and Broadcast return only once the operation finished on the GPU
  // (default). Then a lost peer or a mismatch is reported, within `timeout`, by the call that
  // hit it, at the price of a host wait per call. When false, they return once the operation
  // is queued (results are ready for later work on the same stream); an asynchronous NCCL
  // error is reported by the next call, and only Barrier (which always waits) applies the
  // timeout.
  bool wait = true;
  // How long a waiting call may take, from the call until its operation finished on the GPU;
  // this includes the work queued on the stream before it. DEADLINE_EXCEEDED after it, and
  // the communicator is aborted. Default 5 minutes.
  absl::Duration timeout = absl::Minutes(5);
};

class NcclCollective : public Collective {
 public:
  // Creates this rank's NCCL communicator. Collective over `bootstrap` (a host collective: the
  // in-process group or MPI; not owned, used only during Create): every rank sets up its
  // device, the ranks agree that all succeeded (else every rank gets an error), rank 0 calls
  // ncclGetUniqueId and broadcasts the id through `bootstrap`, and every rank calls
  // ncclCommInitRank with bootstrap's rank and size.
  static absl::StatusOr<std::unique_ptr<NcclCollective>> Create(
      Collective* bootstrap, const NcclCollectiveOptions& options = {});

  // Waits (within the timeout) for this rank's queued operations and destroys the
  // communicator, which waits for the other ranks to do the same; after an error the
  // communicator has been aborted and nothing waits.
  ~NcclCollective() override;

  NcclCollective(const NcclCollective&) = delete;
  NcclCollective& operator=(const NcclCollective&) = delete;

  int rank() const override;
  int size() const override;
  // `data`: n elements of DEVICE memory.
  absl::Status AllReduceSum(float* data, int64_t n) override;
  absl::Status AllReduceSum(double* data, int64_t n) override;
  // `data`: `bytes` bytes of DEVICE memory.
  absl::Status Broadcast(void* data, size_t bytes, int root) override;
  // An allreduce of one device value, then a wait for the stream: on return every rank has
  // called Barrier and this rank's earlier GPU work has finished.
  absl::Status Barrier() override;

 private:
  class Impl;
  explicit NcclCollective(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace choir::models::cuda

#endif  // CHOIR_MODELS_CUDA_NCCL_COLLECTIVE_H_
