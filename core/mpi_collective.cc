// MPI bootstrap and the MPI collective (core/mpi_collective.h).
//
// Each operation is: (1) a header allreduce in which every rank contributes its operation,
// counts, root and sequence number (and their negations, so one MPI_MAX gives both the maximum
// and the minimum of each field), which doubles as the barrier; (2) unless the headers
// disagree, the data, chunk by chunk through a staging buffer. Every MPI request is
// non-blocking and polled against the operation's deadline. A request that misses the deadline
// stays owned by MPI: the group is broken and its buffers are never freed or reused.
#include "core/mpi_collective.h"

#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "glog/logging.h"

namespace choir {
namespace {

// Status of a failed MPI call: the error class picks the code, MPI_Error_string the words.
absl::Status MpiErrorToStatus(int rc, absl::string_view expr, absl::string_view file, int line) {
  char text[MPI_MAX_ERROR_STRING] = {};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) len = 0;
  int error_class = MPI_ERR_UNKNOWN;
  if (MPI_Error_class(rc, &error_class) != MPI_SUCCESS) error_class = MPI_ERR_UNKNOWN;
  const std::string message = absl::StrCat(expr, " at ", file, ":", line, ": MPI error ", rc, ": ",
                                           absl::string_view(text, std::max(len, 0)));
  switch (error_class) {
    case MPI_ERR_ARG:
    case MPI_ERR_BUFFER:
    case MPI_ERR_COUNT:
    case MPI_ERR_OP:
    case MPI_ERR_RANK:
    case MPI_ERR_ROOT:
    case MPI_ERR_TRUNCATE:
    case MPI_ERR_TYPE:
    case MPI_ERR_GROUP:
      return absl::InvalidArgumentError(message);
    case MPI_ERR_NO_MEM:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::UnavailableError(message);
  }
}

}  // namespace
}  // namespace choir

// Returns from the enclosing function with a status naming the call, file and line when the MPI
// call `expr` does not return MPI_SUCCESS.
#define CHOIR_MPI_CALL(expr)                                                     \
  do {                                                                           \
    const int choir_mpi_rc = (expr);                                             \
    if (choir_mpi_rc != MPI_SUCCESS) {                                           \
      return ::choir::MpiErrorToStatus(choir_mpi_rc, #expr, __FILE__, __LINE__); \
    }                                                                            \
  } while (0)

namespace choir {
namespace {

absl::Status CheckMpiUsable() {
  int initialized = 0;
  int finalized = 0;
  CHOIR_MPI_CALL(MPI_Initialized(&initialized));
  CHOIR_MPI_CALL(MPI_Finalized(&finalized));
  if (!initialized) return absl::FailedPreconditionError("MPI is not initialised (call MpiInit)");
  if (finalized) return absl::FailedPreconditionError("MPI is already finalised");
  return absl::OkStatus();
}

enum OpKind : int64_t { kAllReduceFloat = 1, kAllReduceDouble = 2, kBroadcast = 3, kBarrier = 4 };

std::string Describe(int64_t kind, int64_t count, int64_t root) {
  switch (kind) {
    case kAllReduceFloat:
      return absl::StrCat("AllReduceSum(float, n=", count, ")");
    case kAllReduceDouble:
      return absl::StrCat("AllReduceSum(double, n=", count, ")");
    case kBroadcast:
      return absl::StrCat("Broadcast(bytes=", count, ", root=", root, ")");
    case kBarrier:
      return "Barrier()";
  }
  return absl::StrCat("operation ", kind);
}

// The header each rank contributes to an operation.
enum HeaderField { kSeq, kKind, kCount, kRoot, kLocalError, kHeaderFields };

// Buffers MPI reads and writes while a request is in flight. Heap-allocated and leaked when the
// object dies with a request still pending (after a timeout), since MPI may still write them.
struct InFlight {
  int64_t header_send[2 * kHeaderFields] = {};
  int64_t header_recv[2 * kHeaderFields] = {};
  std::vector<char> staging;
};

using Clock = std::chrono::steady_clock;

class MpiCollective : public Collective {
 public:
  MpiCollective(MPI_Comm comm, int rank, int size, const MpiCollectiveOptions& options)
      : comm_(comm),
        rank_(rank),
        size_(size),
        timeout_(options.timeout),
        chunk_bytes_(std::min<int64_t>(options.chunk_bytes, INT_MAX)),
        in_flight_(std::make_unique<InFlight>()) {}

  ~MpiCollective() override {
    std::lock_guard<std::mutex> lock(mu_);
    int finalized = 0;
    if (MPI_Finalized(&finalized) != MPI_SUCCESS || finalized) {
      LOG(WARNING) << "MpiCollective destroyed after MPI_Finalize; its communicator leaks";
      return;
    }
    if (pending_ != MPI_REQUEST_NULL) {
      int done = 0;
      if (MPI_Test(&pending_, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || !done) {
        // MPI still owns the request and may still write its buffers: leak both on purpose.
        LOG(WARNING) << "MpiCollective rank " << rank_ << " destroyed with an operation that "
                     << "never completed; its communicator and buffers are leaked";
        in_flight_.release();
        return;
      }
    }
    if (MPI_Comm_free(&comm_) != MPI_SUCCESS) {
      LOG(WARNING) << "MPI_Comm_free failed for MpiCollective rank " << rank_;
    }
  }

  int rank() const override { return rank_; }
  int size() const override { return size_; }

  absl::Status AllReduceSum(float* data, int64_t n) override {
    return Run(kAllReduceFloat, data, n, 0);
  }
  absl::Status AllReduceSum(double* data, int64_t n) override {
    return Run(kAllReduceDouble, data, n, 0);
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    const int64_t count = bytes > static_cast<size_t>(INT64_MAX) ? -1 : static_cast<int64_t>(bytes);
    return Run(kBroadcast, data, count, root);
  }
  // The header exchange alone: an allreduce completes only once every rank contributed.
  absl::Status Barrier() override { return Run(kBarrier, nullptr, 0, 0); }

 private:
  struct Deadline {
    bool infinite;
    Clock::time_point at;
  };

  absl::Status Run(int64_t kind, void* data, int64_t count, int root) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok()) return broken_;
    const int64_t seq = seq_++;
    const std::string what =
        absl::StrCat("MPI collective operation #", seq, " (", Describe(kind, count, root),
                     ") on rank ", rank_, " of ", size_);
    Deadline deadline{timeout_ == absl::InfiniteDuration(), Clock::now()};
    if (!deadline.infinite) {
      // Capped at a year so that the time point cannot overflow.
      deadline.at += std::chrono::duration_cast<Clock::duration>(
          absl::ToChronoNanoseconds(std::min(timeout_, absl::Hours(24 * 365))));
    }

    std::string local_error;
    if (count < 0) {
      local_error = "negative count";
    } else if (count > 0 && data == nullptr) {
      local_error = "null buffer";
    } else if (kind == kBroadcast && (root < 0 || root >= size_)) {
      local_error = absl::StrCat("root ", root, " is not a rank of a group of ", size_);
    }
    int64_t header[kHeaderFields];
    header[kSeq] = seq;
    header[kKind] = kind;
    header[kCount] = count < 0 ? -1 : count;
    header[kRoot] = root;
    header[kLocalError] = local_error.empty() ? 0 : 1;

    absl::Status agreement;
    absl::Status s = ExchangeHeaderLocked(header, what, deadline, &agreement);
    if (!s.ok()) return BreakLocked(s);
    if (!local_error.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(what, ": ", local_error));
    }
    if (!agreement.ok()) return agreement;  // every rank returns it; the group stays usable

    switch (kind) {
      case kAllReduceFloat:
        s = AllReduceLocked(static_cast<float*>(data), count, MPI_FLOAT, what, deadline);
        break;
      case kAllReduceDouble:
        s = AllReduceLocked(static_cast<double*>(data), count, MPI_DOUBLE, what, deadline);
        break;
      case kBroadcast:
        s = BroadcastLocked(static_cast<char*>(data), count, root, what, deadline);
        break;
      default:
        break;
    }
    if (!s.ok()) return BreakLocked(s);
    return absl::OkStatus();
  }

  // Allreduces the header; `agreement` becomes INVALID_ARGUMENT (identical on every rank) when
  // the ranks' headers differ or any rank found its own arguments invalid.
  absl::Status ExchangeHeaderLocked(const int64_t (&header)[kHeaderFields], const std::string& what,
                                    const Deadline& deadline, absl::Status* agreement)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    InFlight& f = *in_flight_;
    for (int i = 0; i < kHeaderFields; ++i) {
      f.header_send[i] = header[i];
      f.header_send[kHeaderFields + i] = -header[i];
    }
    MPI_Request request = MPI_REQUEST_NULL;
    CHOIR_MPI_CALL(MPI_Iallreduce(f.header_send, f.header_recv, 2 * kHeaderFields, MPI_INT64_T,
                                  MPI_MAX, comm_, &request));
    absl::Status s = WaitLocked(&request, what, deadline);
    if (!s.ok()) return s;

    int64_t max[kHeaderFields];
    int64_t min[kHeaderFields];
    for (int i = 0; i < kHeaderFields; ++i) {
      max[i] = f.header_recv[i];
      min[i] = -f.header_recv[kHeaderFields + i];
    }
    if (max[kLocalError] != 0) {
      *agreement = absl::InvalidArgumentError(
          absl::StrCat(what, ": another rank passed invalid arguments to this operation"));
      return absl::OkStatus();
    }
    std::string differences;
    auto range = [&](absl::string_view name, HeaderField field) {
      if (max[field] != min[field]) {
        absl::StrAppend(&differences, differences.empty() ? "" : ", ", name, " from ", min[field],
                        " to ", max[field]);
      }
    };
    range("sequence number", kSeq);
    range("operation", kKind);
    range("count", kCount);
    range("root", kRoot);
    if (!differences.empty()) {
      *agreement = absl::InvalidArgumentError(absl::StrCat(
          what, ": ranks called different operations (", differences,
          "; operations 1 AllReduceSum(float), 2 AllReduceSum(double), 3 Broadcast, 4 Barrier)"));
    }
    return absl::OkStatus();
  }

  template <typename T>
  absl::Status AllReduceLocked(T* data, int64_t n, MPI_Datatype type, const std::string& what,
                               const Deadline& deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const int64_t per_chunk = std::max<int64_t>(1, chunk_bytes_ / static_cast<int64_t>(sizeof(T)));
    for (int64_t offset = 0; offset < n; offset += per_chunk) {
      const int64_t len = std::min(per_chunk, n - offset);
      const size_t bytes = static_cast<size_t>(len) * sizeof(T);
      std::vector<char>& staging = StagingLocked(bytes);
      std::memcpy(staging.data(), data + offset, bytes);
      MPI_Request request = MPI_REQUEST_NULL;
      CHOIR_MPI_CALL(MPI_Iallreduce(MPI_IN_PLACE, staging.data(), static_cast<int>(len), type,
                                    MPI_SUM, comm_, &request));
      absl::Status s = WaitLocked(&request, what, deadline);
      if (!s.ok()) return s;
      std::memcpy(data + offset, staging.data(), bytes);
    }
    return absl::OkStatus();
  }

  absl::Status BroadcastLocked(char* data, int64_t bytes, int root, const std::string& what,
                               const Deadline& deadline) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (int64_t offset = 0; offset < bytes; offset += chunk_bytes_) {
      const int64_t len = std::min(chunk_bytes_, bytes - offset);
      std::vector<char>& staging = StagingLocked(static_cast<size_t>(len));
      if (rank_ == root) std::memcpy(staging.data(), data + offset, static_cast<size_t>(len));
      MPI_Request request = MPI_REQUEST_NULL;
      CHOIR_MPI_CALL(
          MPI_Ibcast(staging.data(), static_cast<int>(len), MPI_BYTE, root, comm_, &request));
      absl::Status s = WaitLocked(&request, what, deadline);
      if (!s.ok()) return s;
      if (rank_ != root) std::memcpy(data + offset, staging.data(), static_cast<size_t>(len));
    }
    return absl::OkStatus();
  }

  std::vector<char>& StagingLocked(size_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<char>& staging = in_flight_->staging;
    if (staging.size() < bytes) staging.resize(bytes);
    return staging;
  }

  // Polls `request` until it completes or the deadline passes. On timeout the request is kept
  // in pending_ (MPI still owns its buffers) and DEADLINE_EXCEEDED is returned.
  absl::Status WaitLocked(MPI_Request* request, const std::string& what, const Deadline& deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    // Polls (MPI progresses a nonblocking operation inside MPI_Test) by yielding for the first
    // kSpin, as a step's allreduce wants; a longer wait (the others holding for worker 0's
    // checkpoint, for minutes) sleeps between polls, 50 us doubling to 1 ms, instead of
    // keeping a core busy.
    constexpr auto kSpin = std::chrono::milliseconds(10);
    const Clock::time_point started = Clock::now();
    std::chrono::microseconds nap(50);
    for (;;) {
      int done = 0;
      CHOIR_MPI_CALL(MPI_Test(request, &done, MPI_STATUS_IGNORE));
      if (done) return absl::OkStatus();
      if (!deadline.infinite && Clock::now() >= deadline.at) {
        pending_ = *request;
        return absl::DeadlineExceededError(absl::StrCat(
            what, ": did not complete within ", absl::FormatDuration(timeout_),
            "; a rank is dead, stuck, or has not called this operation (MPI cannot say which)"));
      }
      if (Clock::now() - started < kSpin) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(nap);
        nap = std::min(2 * nap, std::chrono::microseconds(1000));
      }
    }
  }

  absl::Status BreakLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (broken_.ok()) broken_ = std::move(status);
    return broken_;
  }

  std::mutex mu_;  // serialises the calls (MPI_THREAD_SERIALIZED)
  MPI_Comm comm_;
  const int rank_;
  const int size_;
  const absl::Duration timeout_;
  const int64_t chunk_bytes_;
  int64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  std::unique_ptr<InFlight> in_flight_ ABSL_GUARDED_BY(mu_);
  // A request that missed its deadline; MPI_REQUEST_NULL otherwise.
  MPI_Request pending_ ABSL_GUARDED_BY(mu_) = MPI_REQUEST_NULL;
  // OK while usable; the first MPI error or timeout, for good.
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
};

}  // namespace

bool LaunchedByMpirun() {
  for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"}) {
    if (std::getenv(name) != nullptr) return true;
  }
  return false;
}

absl::Status MpiInit(int* argc, char*** argv) {
  int initialized = 0;
  int finalized = 0;
  CHOIR_MPI_CALL(MPI_Initialized(&initialized));
  CHOIR_MPI_CALL(MPI_Finalized(&finalized));
  if (finalized) return absl::FailedPreconditionError("MpiInit: MPI was already finalised");
  int provided = MPI_THREAD_SINGLE;
  if (!initialized) {
    CHOIR_MPI_CALL(MPI_Init_thread(argc, argv, MPI_THREAD_SERIALIZED, &provided));
  } else {
    CHOIR_MPI_CALL(MPI_Query_thread(&provided));
  }
  CHOIR_MPI_CALL(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
  if (provided < MPI_THREAD_SERIALIZED) {
    return absl::FailedPreconditionError(
        absl::StrCat("MpiInit: the MPI library gives thread level ", provided,
                     ", Choir needs MPI_THREAD_SERIALIZED (", MPI_THREAD_SERIALIZED, ")"));
  }
  return absl::OkStatus();
}

absl::Status MpiFinalize() {
  int initialized = 0;
  int finalized = 0;
  CHOIR_MPI_CALL(MPI_Initialized(&initialized));
  CHOIR_MPI_CALL(MPI_Finalized(&finalized));
  if (initialized && !finalized) CHOIR_MPI_CALL(MPI_Finalize());
  return absl::OkStatus();
}

void MpiAbort(int code) {
  google::FlushLogFiles(google::GLOG_INFO);
  std::fflush(stdout);
  std::fflush(stderr);
  int initialized = 0;
  int finalized = 0;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

absl::StatusOr<MpiWorld> GetMpiWorld() {
  absl::Status usable = CheckMpiUsable();
  if (!usable.ok()) return usable;
  MpiWorld world;
  CHOIR_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &world.rank));
  CHOIR_MPI_CALL(MPI_Comm_size(MPI_COMM_WORLD, &world.size));
  return world;
}

absl::StatusOr<std::unique_ptr<Collective>> NewMpiCollective(const MpiCollectiveOptions& options) {
  absl::Status usable = CheckMpiUsable();
  if (!usable.ok()) return usable;
  if (options.chunk_bytes < 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("NewMpiCollective: chunk_bytes must be positive, not ", options.chunk_bytes));
  }
  if (options.timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "NewMpiCollective: timeout must be positive, not ", absl::FormatDuration(options.timeout)));
  }
  int world_rank = 0;
  int world_size = 0;
  CHOIR_MPI_CALL(MPI_Comm_rank(MPI_COMM_WORLD, &world_rank));
  CHOIR_MPI_CALL(MPI_Comm_size(MPI_COMM_WORLD, &world_size));

  MPI_Comm comm = MPI_COMM_NULL;
  if (options.ranks.empty()) {
    CHOIR_MPI_CALL(MPI_Comm_dup(MPI_COMM_WORLD, &comm));
  } else {
    absl::flat_hash_set<int> seen;
    for (int r : options.ranks) {
      if (r < 0 || r >= world_size || !seen.insert(r).second) {
        return absl::InvalidArgumentError(absl::StrCat("NewMpiCollective: rank ", r,
                                                       " is out of range [0, ", world_size,
                                                       ") or listed twice"));
      }
    }
    if (!seen.contains(world_rank)) {
      return absl::InvalidArgumentError(absl::StrCat("NewMpiCollective: world rank ", world_rank,
                                                     " is not in the group it tries to join"));
    }
    MPI_Group world_group = MPI_GROUP_NULL;
    MPI_Group group = MPI_GROUP_NULL;
    CHOIR_MPI_CALL(MPI_Comm_group(MPI_COMM_WORLD, &world_group));
    absl::Status created = [&]() -> absl::Status {
      CHOIR_MPI_CALL(MPI_Group_incl(world_group, static_cast<int>(options.ranks.size()),
                                    options.ranks.data(), &group));
      // Collective over the group's members only: the other world ranks do not take part.
      CHOIR_MPI_CALL(MPI_Comm_create_group(MPI_COMM_WORLD, group, /*tag=*/0x43484f, &comm));
      return absl::OkStatus();
    }();
    if (group != MPI_GROUP_NULL) MPI_Group_free(&group);
    MPI_Group_free(&world_group);
    if (!created.ok()) return created;
  }
  int rank = 0;
  int size = 0;
  absl::Status s = [&]() -> absl::Status {
    CHOIR_MPI_CALL(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
    CHOIR_MPI_CALL(MPI_Comm_rank(comm, &rank));
    CHOIR_MPI_CALL(MPI_Comm_size(comm, &size));
    return absl::OkStatus();
  }();
  if (!s.ok()) {
    MPI_Comm_free(&comm);
    return s;
  }
  return std::unique_ptr<Collective>(std::make_unique<MpiCollective>(comm, rank, size, options));
}

}  // namespace choir
