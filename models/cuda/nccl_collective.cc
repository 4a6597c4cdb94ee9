// The NCCL collective (models/cuda/nccl_collective.h).
//
// Threads: calls are serialised by one mutex per object; each call first selects the rank's
// device on the calling thread (the current device is per thread). A waiting call records an
// event after its operation and polls it, together with ncclCommGetAsyncError and the deadline;
// on an error or a timeout the communicator is aborted (which also ends kernels stuck waiting
// for a peer) and the error is kept for every later call.
#include "models/cuda/nccl_collective.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <algorithm>
#include <chrono>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/status.h"
#include "glog/logging.h"
#include "models/cuda/cuda.h"
#include "models/cuda/internal/cuda_util.h"

namespace choir::models::cuda {
namespace {

absl::Status NcclErrorToStatus(ncclResult_t result, ncclComm_t comm, absl::string_view expr,
                               absl::string_view file, int line) {
  const char* last = ncclGetLastError(comm);
  const std::string message =
      absl::StrCat(expr, " at ", file, ":", line, ": NCCL error ", static_cast<int>(result), " (",
                   ncclGetErrorString(result), ")", last != nullptr && *last ? ": " : "",
                   last != nullptr ? last : "");
  switch (result) {
    case ncclInvalidArgument:
    case ncclInvalidUsage:
      return absl::InvalidArgumentError(message);
    case ncclSystemError:
    case ncclRemoteError:
      return absl::UnavailableError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status CudaErrorToStatus(cudaError_t err, absl::string_view expr, absl::string_view file,
                               int line) {
  const std::string message = absl::StrCat(expr, " at ", file, ":", line, ": ",
                                           cudaGetErrorName(err), ": ", cudaGetErrorString(err));
  if (err == cudaErrorNoDevice || err == cudaErrorInsufficientDriver ||
      err == cudaErrorInvalidDevice) {
    return absl::FailedPreconditionError(message);
  }
  if (err == cudaErrorMemoryAllocation) return absl::ResourceExhaustedError(message);
  return absl::InternalError(message);
}

}  // namespace
}  // namespace choir::models::cuda

// Return from the enclosing function with a status naming the call, file and line when the
// NCCL call `expr` (on communicator `comm`, or nullptr) or the CUDA runtime call `expr` fails.
#define CHOIR_NCCL_CALL(expr, comm)                                                               \
  do {                                                                                            \
    const ncclResult_t choir_nccl_result = (expr);                                                \
    if (choir_nccl_result != ncclSuccess) {                                                       \
      return ::choir::models::cuda::NcclErrorToStatus(choir_nccl_result, (comm), #expr, __FILE__, \
                                                      __LINE__);                                  \
    }                                                                                             \
  } while (0)

#define CHOIR_NCCL_CUDA_CALL(expr)                                                       \
  do {                                                                                   \
    const cudaError_t choir_cuda_error = (expr);                                         \
    if (choir_cuda_error != cudaSuccess) {                                               \
      return ::choir::models::cuda::CudaErrorToStatus(choir_cuda_error, #expr, __FILE__, \
                                                      __LINE__);                         \
    }                                                                                    \
  } while (0)

namespace choir::models::cuda {

class NcclCollective::Impl {
 public:
  using Clock = std::chrono::steady_clock;

  Impl(int rank, int size, const NcclCollectiveOptions& options)
      : rank_(rank), size_(size), options_(options) {}

  ~Impl() {
    std::lock_guard<std::mutex> lock(mu_);
    if (comm_ == nullptr && done_ == nullptr && barrier_value_ == nullptr) return;
    if (cudaSetDevice(options_.device) != cudaSuccess) {
      LOG(WARNING) << "NcclCollective rank " << rank_ << ": cannot select device "
                   << options_.device << " to clean up";
    }
    if (comm_ != nullptr) {
      absl::Status drained = WaitLocked("destruction", Deadline());
      if (!drained.ok()) {
        LOG(WARNING) << "NcclCollective rank " << rank_ << ": " << drained
                     << "; aborting the communicator";
        AbortLocked();
      } else {
        // A failed Finalize leaves a live communicator to abort; after Destroy (failed or
        // not) the handle is gone and must not be aborted.
        absl::Status s = [&]() -> absl::Status {
          CHOIR_NCCL_CALL(ncclCommFinalize(comm_), comm_);
          return absl::OkStatus();
        }();
        if (!s.ok()) {
          LOG(WARNING) << "NcclCollective rank " << rank_ << ": " << s
                       << "; aborting the communicator";
          AbortLocked();
        } else {
          s = [&]() -> absl::Status {
            CHOIR_NCCL_CALL(ncclCommDestroy(comm_), nullptr);  // no last error of a destroyed comm
            return absl::OkStatus();
          }();
          if (!s.ok()) LOG(WARNING) << "NcclCollective rank " << rank_ << ": " << s;
        }
        comm_ = nullptr;
      }
    }
    if (done_ != nullptr && cudaEventDestroy(done_) != cudaSuccess) {
      LOG(WARNING) << "NcclCollective rank " << rank_ << ": cudaEventDestroy failed";
    }
    if (barrier_value_ != nullptr && cudaFree(barrier_value_) != cudaSuccess) {
      LOG(WARNING) << "NcclCollective rank " << rank_ << ": cudaFree failed";
    }
  }

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Selects the device and stream and allocates the event and the barrier's value.
  absl::Status SetUpDevice() {
    std::lock_guard<std::mutex> lock(mu_);
    if (options_.device < 0) {
      return absl::InvalidArgumentError(absl::StrCat("NcclCollective: device ", options_.device));
    }
    if (options_.timeout <= absl::ZeroDuration()) {
      return absl::InvalidArgumentError(
          absl::StrCat("NcclCollective: timeout must be positive, not ",
                       absl::FormatDuration(options_.timeout)));
    }
    if (options_.stream == nullptr) {
      absl::Status init = InitCuda(options_.device, options_.cuda);
      if (!init.ok()) return init;
      stream_ = internal::Stream();
    } else {
      stream_ = options_.stream;
    }
    CHOIR_NCCL_CUDA_CALL(cudaSetDevice(options_.device));
    CHOIR_NCCL_CUDA_CALL(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
    CHOIR_NCCL_CUDA_CALL(cudaMalloc(&barrier_value_, sizeof(float)));
    CHOIR_NCCL_CUDA_CALL(cudaMemsetAsync(barrier_value_, 0, sizeof(float), stream_));
    return absl::OkStatus();
  }

  absl::Status InitComm(const ncclUniqueId& id) {
    std::lock_guard<std::mutex> lock(mu_);
    CHOIR_NCCL_CUDA_CALL(cudaSetDevice(options_.device));
    ncclComm_t comm = nullptr;
    // On failure `comm` is not a communicator to ask for its last error.
    CHOIR_NCCL_CALL(ncclCommInitRank(&comm, size_, id, rank_), nullptr);
    comm_ = comm;
    return absl::OkStatus();
  }

  absl::Status AllReduceSum(void* data, int64_t n, ncclDataType_t type,
                            absl::string_view type_name) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string what = Describe(absl::StrCat("AllReduceSum(", type_name, ", n=", n, ")"));
    if (!broken_.ok()) return broken_;
    if (n < 0 || (n > 0 && data == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": negative count or null buffer"));
    }
    if (n == 0) return absl::OkStatus();  // every rank passes 0: nothing to exchange
    const Clock::time_point deadline = Deadline();
    absl::Status s = [&]() -> absl::Status {
      RETURN_IF_ERROR(PrepareLocked());
      CHOIR_NCCL_CALL(
          ncclAllReduce(data, data, static_cast<size_t>(n), type, ncclSum, comm_, stream_), comm_);
      if (options_.wait) RETURN_IF_ERROR(WaitLocked(what, deadline));
      return absl::OkStatus();
    }();
    return s.ok() ? s : BreakLocked(s);
  }

  absl::Status Broadcast(void* data, size_t bytes, int root) {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string what =
        Describe(absl::StrCat("Broadcast(bytes=", bytes, ", root=", root, ")"));
    if (!broken_.ok()) return broken_;
    if (root < 0 || root >= size_ || (bytes > 0 && data == nullptr)) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": root out of range or null buffer"));
    }
    if (bytes == 0) return absl::OkStatus();
    const Clock::time_point deadline = Deadline();
    absl::Status s = [&]() -> absl::Status {
      RETURN_IF_ERROR(PrepareLocked());
      CHOIR_NCCL_CALL(ncclBroadcast(data, data, bytes, ncclUint8, root, comm_, stream_), comm_);
      if (options_.wait) RETURN_IF_ERROR(WaitLocked(what, deadline));
      return absl::OkStatus();
    }();
    return s.ok() ? s : BreakLocked(s);
  }

  absl::Status Barrier() {
    std::lock_guard<std::mutex> lock(mu_);
    const std::string what = Describe("Barrier()");
    if (!broken_.ok()) return broken_;
    const Clock::time_point deadline = Deadline();
    absl::Status s = [&]() -> absl::Status {
      RETURN_IF_ERROR(PrepareLocked());
      CHOIR_NCCL_CALL(
          ncclAllReduce(barrier_value_, barrier_value_, 1, ncclFloat, ncclSum, comm_, stream_),
          comm_);
      RETURN_IF_ERROR(WaitLocked(what, deadline));
      return absl::OkStatus();
    }();
    return s.ok() ? s : BreakLocked(s);
  }

 private:
  std::string Describe(absl::string_view op) const {
    return absl::StrCat("NCCL ", op, " on rank ", rank_, " of ", size_, " (device ",
                        options_.device, ")");
  }

  Clock::time_point Deadline() const {
    // absl::InfiniteDuration() saturates to a far future.
    return Clock::now() + std::chrono::duration_cast<Clock::duration>(absl::ToChronoNanoseconds(
                              std::min(options_.timeout, absl::Hours(24 * 365))));
  }

  // Selects the device on this thread and reports an asynchronous error of an earlier call.
  absl::Status PrepareLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    CHOIR_NCCL_CUDA_CALL(cudaSetDevice(options_.device));
    return AsyncErrorLocked();
  }

  absl::Status AsyncErrorLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ncclResult_t async = ncclSuccess;
    CHOIR_NCCL_CALL(ncclCommGetAsyncError(comm_, &async), comm_);
    if (async != ncclSuccess && async != ncclInProgress) {
      return NcclErrorToStatus(async, comm_, "ncclCommGetAsyncError (an earlier operation)",
                               __FILE__, __LINE__);
    }
    return absl::OkStatus();
  }

  // Waits until the work queued on the stream so far has finished, an asynchronous NCCL error
  // appears, or the deadline passes.
  absl::Status WaitLocked(absl::string_view what, Clock::time_point deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    CHOIR_NCCL_CUDA_CALL(cudaEventRecord(done_, stream_));
    for (;;) {
      const cudaError_t query = cudaEventQuery(done_);
      if (query == cudaSuccess) return absl::OkStatus();
      if (query != cudaErrorNotReady) {
        return CudaErrorToStatus(query, "cudaEventQuery(done_)", __FILE__, __LINE__);
      }
      // Not ready is not an error; do not leave it behind for the next launch check.
      (void)cudaGetLastError();
      RETURN_IF_ERROR(AsyncErrorLocked());
      if (Clock::now() >= deadline) {
        return absl::DeadlineExceededError(absl::StrCat(
            what, ": did not finish on the GPU within ", absl::FormatDuration(options_.timeout),
            "; a rank is dead, stuck, or called a different operation or count"));
      }
      std::this_thread::yield();
    }
  }

  // Keeps the first error for every later call and aborts the communicator, which ends any
  // operation still waiting for a peer.
  absl::Status BreakLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_.ok()) broken_ = std::move(status);
    AbortLocked();
    return broken_;
  }

  void AbortLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (comm_ == nullptr) return;
    const ncclResult_t r = ncclCommAbort(comm_);
    if (r != ncclSuccess) {
      LOG(WARNING) << "NcclCollective rank " << rank_
                   << ": ncclCommAbort: " << ncclGetErrorString(r);
    }
    comm_ = nullptr;
  }

  const int rank_;
  const int size_;
  const NcclCollectiveOptions options_;
  std::mutex mu_;
  cudaStream_t stream_ ABSL_GUARDED_BY(mu_) = nullptr;
  cudaEvent_t done_ ABSL_GUARDED_BY(mu_) = nullptr;
  float* barrier_value_ ABSL_GUARDED_BY(mu_) = nullptr;
  ncclComm_t comm_ ABSL_GUARDED_BY(mu_) = nullptr;  // null before init and after an abort
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
};

absl::StatusOr<std::unique_ptr<NcclCollective>> NcclCollective::Create(
    Collective* bootstrap, const NcclCollectiveOptions& options) {
  if (bootstrap == nullptr) {
    return absl::InvalidArgumentError("NcclCollective::Create: no bootstrap collective");
  }
  const int rank = bootstrap->rank();
  const int size = bootstrap->size();
  auto impl = std::make_unique<Impl>(rank, size, options);

  // Every rank sets up its device, then the ranks agree: one rank's failure fails them all
  // instead of leaving the others waiting in the id broadcast or in ncclCommInitRank.
  const absl::Status local = impl->SetUpDevice();
  double failures = local.ok() ? 0 : 1;
  RETURN_IF_ERROR(Annotate(bootstrap->AllReduceSum(&failures, 1),
                           "NcclCollective::Create: bootstrap allreduce"));
  if (!local.ok()) return Annotate(local, absl::StrCat("NcclCollective rank ", rank));
  if (failures > 0) {
    return absl::FailedPreconditionError(absl::StrCat("NcclCollective rank ", rank, ": ", failures,
                                                      " other rank(s) failed to set up their GPU"));
  }

  // Rank 0 creates the id; the flag tells the others whether it could.
  struct IdMessage {
    int32_t ok;
    ncclUniqueId id;
  };
  IdMessage message{};
  absl::Status id_status;
  if (rank == 0) {
    id_status = [&]() -> absl::Status {
      CHOIR_NCCL_CALL(ncclGetUniqueId(&message.id), nullptr);
      return absl::OkStatus();
    }();
    message.ok = id_status.ok() ? 1 : 0;
  }
  RETURN_IF_ERROR(Annotate(bootstrap->Broadcast(&message, sizeof(message), 0),
                           "NcclCollective::Create: bootstrap broadcast of the NCCL id"));
  if (!id_status.ok()) return id_status;
  if (message.ok != 1) {
    return absl::UnavailableError(
        absl::StrCat("NcclCollective rank ", rank, ": rank 0 could not create the NCCL unique id"));
  }
  RETURN_IF_ERROR(impl->InitComm(message.id));
  return std::unique_ptr<NcclCollective>(new NcclCollective(std::move(impl)));
}

NcclCollective::NcclCollective(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
NcclCollective::~NcclCollective() = default;

int NcclCollective::rank() const { return impl_->rank(); }
int NcclCollective::size() const { return impl_->size(); }

absl::Status NcclCollective::AllReduceSum(float* data, int64_t n) {
  return impl_->AllReduceSum(data, n, ncclFloat, "float");
}
absl::Status NcclCollective::AllReduceSum(double* data, int64_t n) {
  return impl_->AllReduceSum(data, n, ncclDouble, "double");
}
absl::Status NcclCollective::Broadcast(void* data, size_t bytes, int root) {
  return impl_->Broadcast(data, bytes, root);
}
absl::Status NcclCollective::Barrier() { return impl_->Barrier(); }

}  // namespace choir::models::cuda
