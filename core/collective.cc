// The in-process collective group (core/collective.h).
//
// Threads: each rank's thread enters Group::Run, records its call and waits on the group's
// condition variable; the last rank to arrive checks the calls, does the work for everyone (all
// other ranks are parked, so their buffers are stable) and starts the next generation. One mutex
// per group. std::mutex rather than absl::Mutex so that ThreadSanitizer sees the locking (the
// prebuilt abseil is not instrumented; see ps/internal/tsan_mutex_lock.h).
#include "core/collective.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "glog/logging.h"

namespace choir {
namespace {

enum class OpKind { kAllReduceFloat, kAllReduceDouble, kBroadcast, kBarrier };

// One rank's call: what it asked for and where its buffer is.
struct Call {
  OpKind kind = OpKind::kBarrier;
  void* data = nullptr;
  int64_t count = 0;  // elements (AllReduceSum), bytes (Broadcast), 0 (Barrier)
  int root = 0;       // Broadcast only
};

std::string Describe(const Call& call) {
  switch (call.kind) {
    case OpKind::kAllReduceFloat:
      return absl::StrCat("AllReduceSum(float, n=", call.count, ")");
    case OpKind::kAllReduceDouble:
      return absl::StrCat("AllReduceSum(double, n=", call.count, ")");
    case OpKind::kBroadcast:
      return absl::StrCat("Broadcast(bytes=", call.count, ", root=", call.root, ")");
    case OpKind::kBarrier:
      return "Barrier()";
  }
  return "unknown";
}

// Element-wise rank-ordered sum, written back to every rank's buffer. Element i of every
// buffer is read before any is written, so the result does not depend on aliasing.
template <typename T>
void SumInRankOrder(const std::vector<Call>& calls, int64_t n) {
  const size_t ranks = calls.size();
  std::vector<T*> bufs(ranks);
  for (size_t r = 0; r < ranks; ++r) bufs[r] = static_cast<T*>(calls[r].data);
  for (int64_t i = 0; i < n; ++i) {
    T acc = bufs[0][i];
    for (size_t r = 1; r < ranks; ++r) acc += bufs[r][i];
    for (size_t r = 0; r < ranks; ++r) bufs[r][i] = acc;
  }
}

class Group {
 public:
  Group(int size, const InProcessCollectiveOptions& options)
      : size_(size), timeout_(options.timeout), calls_(size), present_(size, false) {}

  int size() const { return size_; }

  // Enters the rendezvous as `rank` and returns the status of the operation (the same on
  // every rank), or the group's error once it is broken.
  absl::Status Run(int rank, const Call& call) {
    std::unique_lock<std::mutex> lock(mu_);
    if (!broken_.ok()) return broken_;
    CHECK(!present_[rank]) << "in-process collective: rank " << rank
                           << " entered a collective while its previous call is running";
    present_[rank] = true;
    calls_[rank] = call;
    ++arrived_;
    const uint64_t generation = generation_;
    if (arrived_ == size_) {
      CompleteLocked();
      return result_;
    }
    auto done = [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      return generation_ != generation || !broken_.ok();
    };
    if (timeout_ == absl::InfiniteDuration()) {
      cv_.wait(lock, done);
    } else if (!cv_.wait_for(lock, WaitLimit(), done)) {
      BreakLocked(absl::DeadlineExceededError(absl::StrCat(
          "in-process collective operation #", generation, " (", Describe(call), "): rank(s) ",
          MissingRanksLocked(), " of ", size_, " did not arrive within ",
          absl::FormatDuration(timeout_), " (waiting: rank ", rank, ")")));
      return broken_;
    }
    // A completed operation wins over a later break: this rank's part of it is done.
    if (generation_ != generation) return result_;
    return broken_;
  }

  // Called when rank `rank`'s object is destroyed: the group cannot complete another operation.
  void Leave(int rank) {
    std::lock_guard<std::mutex> lock(mu_);
    BreakLocked(
        absl::UnavailableError(absl::StrCat("in-process collective: rank ", rank, " of ", size_,
                                            " left the group (its Collective was destroyed)")));
  }

 private:
  // The timeout, capped at a year so that now + timeout cannot overflow.
  std::chrono::nanoseconds WaitLimit() const {
    return absl::ToChronoNanoseconds(std::min(timeout_, absl::Hours(24 * 365)));
  }

  void BreakLocked(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!broken_.ok()) return;  // the first error stays
    broken_ = std::move(status);
    cv_.notify_all();
  }

  std::string MissingRanksLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<int> missing;
    for (int r = 0; r < size_; ++r) {
      if (!present_[r]) missing.push_back(r);
    }
    return absl::StrJoin(missing, ",");
  }

  // Every rank has the same call and valid arguments; else INVALID_ARGUMENT listing the calls.
  absl::Status CheckCallsLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Call& first = calls_[0];
    bool same = true;
    for (const Call& c : calls_) {
      same = same && c.kind == first.kind && c.count == first.count && c.root == first.root;
    }
    auto list = [&] {
      std::vector<std::string> parts;
      for (int r = 0; r < size_; ++r) parts.push_back(absl::StrCat(r, ": ", Describe(calls_[r])));
      return absl::StrJoin(parts, "; ");
    };
    if (!same) {
      return absl::InvalidArgumentError(absl::StrCat("in-process collective operation #",
                                                     generation_, ": ranks disagree: ", list()));
    }
    if (first.count < 0) {
      return absl::InvalidArgumentError(absl::StrCat("in-process collective operation #",
                                                     generation_, ": negative count: ", list()));
    }
    if (first.kind == OpKind::kBroadcast && (first.root < 0 || first.root >= size_)) {
      return absl::InvalidArgumentError(absl::StrCat("in-process collective operation #",
                                                     generation_, ": root ", first.root,
                                                     " is not a rank of a group of ", size_));
    }
    for (int r = 0; r < size_; ++r) {
      if (calls_[r].count > 0 && calls_[r].data == nullptr) {
        return absl::InvalidArgumentError(
            absl::StrCat("in-process collective operation #", generation_, ": rank ", r,
                         " passed a null buffer for ", Describe(calls_[r])));
      }
    }
    return absl::OkStatus();
  }

  void ExecuteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const Call& first = calls_[0];
    switch (first.kind) {
      case OpKind::kAllReduceFloat:
        SumInRankOrder<float>(calls_, first.count);
        break;
      case OpKind::kAllReduceDouble:
        SumInRankOrder<double>(calls_, first.count);
        break;
      case OpKind::kBroadcast: {
        const void* src = calls_[first.root].data;
        for (const Call& c : calls_) {
          if (c.data != src && first.count > 0) {
            std::memcpy(c.data, src, static_cast<size_t>(first.count));
          }
        }
        break;
      }
      case OpKind::kBarrier:
        break;
    }
  }

  void CompleteLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    result_ = CheckCallsLocked();
    if (result_.ok()) ExecuteLocked();
    for (int r = 0; r < size_; ++r) {
      present_[r] = false;
      calls_[r] = Call();
    }
    arrived_ = 0;
    ++generation_;
    cv_.notify_all();
  }

  const int size_;
  const absl::Duration timeout_;

  std::mutex mu_;
  std::condition_variable cv_;
  // Operations completed; the n-th call of every rank belongs to generation n.
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 0;
  int arrived_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<Call> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<bool> present_ ABSL_GUARDED_BY(mu_);
  // Status of the last completed operation; stays valid until every rank has called again.
  absl::Status result_ ABSL_GUARDED_BY(mu_);
  // OK while the group is usable; the first timeout or departure, for good.
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
};

class InProcessCollective : public Collective {
 public:
  InProcessCollective(std::shared_ptr<Group> group, int rank)
      : group_(std::move(group)), rank_(rank) {}
  ~InProcessCollective() override { group_->Leave(rank_); }

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }

  absl::Status AllReduceSum(float* data, int64_t n) override {
    return group_->Run(rank_, Call{OpKind::kAllReduceFloat, data, n, 0});
  }
  absl::Status AllReduceSum(double* data, int64_t n) override {
    return group_->Run(rank_, Call{OpKind::kAllReduceDouble, data, n, 0});
  }
  absl::Status Broadcast(void* data, size_t bytes, int root) override {
    return group_->Run(rank_, Call{OpKind::kBroadcast, data, static_cast<int64_t>(bytes), root});
  }
  absl::Status Barrier() override {
    return group_->Run(rank_, Call{OpKind::kBarrier, nullptr, 0, 0});
  }

 private:
  const std::shared_ptr<Group> group_;
  const int rank_;
};

}  // namespace

std::vector<std::unique_ptr<Collective>> NewInProcessCollectives(
    int size, const InProcessCollectiveOptions& options) {
  CHECK_GE(size, 1) << "an in-process collective group needs at least one rank";
  auto group = std::make_shared<Group>(size, options);
  std::vector<std::unique_ptr<Collective>> ranks;
  ranks.reserve(size);
  for (int r = 0; r < size; ++r) ranks.push_back(std::make_unique<InProcessCollective>(group, r));
  return ranks;
}

}  // namespace choir
