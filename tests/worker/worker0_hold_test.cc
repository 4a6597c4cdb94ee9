// Worker 0's one-sided work (worker/internal/worker0_hold.h) over an in-process group with a
// short timeout: work lasting several timeouts holds the others without a timeout, which a plain
// broadcast after the same work does not; a failure reaches the others at once, named; a rank
// that never arrives still ends the hold with the group's error.
#include "worker/internal/worker0_hold.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace choir::worker::internal {
namespace {

constexpr absl::Duration kTimeout = absl::Milliseconds(200);

// Runs body(rank) on one thread per rank of a fresh group of `size` and returns each status.
template <typename F>
std::vector<absl::Status> OnEveryRank(int size, F body) {
  InProcessCollectiveOptions options;
  options.timeout = kTimeout;
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(size, options);
  std::vector<absl::Status> status(size);
  std::vector<std::thread> threads;
  for (int r = 0; r < size; ++r) {
    threads.emplace_back([&, r] { status[r] = body(group[r].get()); });
  }
  for (std::thread& t : threads) t.join();
  return status;
}

TEST(Worker0HoldTest, WorkLongerThanTheTimeoutHoldsTheOthers) {
  const std::vector<absl::Status> status = OnEveryRank(3, [](Collective* group) -> absl::Status {
    if (group->rank() == 0) {
      absl::Status s = HoldOthersDuring(group, HoldInterval(kTimeout), "restoring", [] {
        absl::SleepFor(5 * kTimeout);
        return absl::OkStatus();
      });
      if (!s.ok()) return s;
    } else if (absl::Status s = WaitForWorker0(group, "restoring"); !s.ok()) {
      return s;
    }
    return group->Barrier();  // the group is in step and unbroken afterwards
  });
  for (const absl::Status& s : status) EXPECT_TRUE(s.ok()) << s;
}

TEST(Worker0HoldTest, WithoutTheHoldTheSameWorkTimesTheOthersOut) {
  const std::vector<absl::Status> status = OnEveryRank(3, [](Collective* group) {
    if (group->rank() == 0) absl::SleepFor(5 * kTimeout);
    char byte = 0;
    return group->Broadcast(&byte, 1, 0);
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[1])) << status[1];
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[2])) << status[2];
}

TEST(Worker0HoldTest, AFailureReachesTheOthersAtOnceNamed) {
  const std::vector<absl::Status> status = OnEveryRank(3, [](Collective* group) {
    if (group->rank() == 0) {
      return HoldOthersDuring(group, HoldInterval(kTimeout), "restoring the checkpoint", [] {
        absl::SleepFor(2 * kTimeout);
        return absl::DataLossError("sparse-0-of-1.bin: bad checksum");
      });
    }
    return WaitForWorker0(group, "restoring the checkpoint");
  });
  EXPECT_TRUE(absl::IsDataLoss(status[0])) << status[0];
  for (int r : {1, 2}) {
    // Told with the failure (ABORTED), not left to time out (DEADLINE_EXCEEDED).
    EXPECT_TRUE(absl::IsAborted(status[r])) << status[r];
    EXPECT_NE(status[r].message().find("worker 0 failed (restoring the checkpoint)"),
              std::string::npos)
        << status[r];
  }
}

TEST(Worker0HoldTest, ARankThatNeverArrivesEndsTheHoldWithTheGroupsError) {
  const std::vector<absl::Status> status = OnEveryRank(3, [](Collective* group) -> absl::Status {
    switch (group->rank()) {
      case 0:
        return HoldOthersDuring(group, HoldInterval(kTimeout), "saving", [] {
          absl::SleepFor(3 * kTimeout);
          return absl::OkStatus();
        });
      case 1:
        return WaitForWorker0(group, "saving");
      default:
        return absl::OkStatus();  // rank 2 is gone
    }
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[0])) << status[0];
  EXPECT_NE(status[0].message().find("worker 0 (saving)"), std::string::npos) << status[0];
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[1])) << status[1];
  EXPECT_NE(status[1].message().find("waiting for worker 0 (saving)"), std::string::npos)
      << status[1];
}

}  // namespace
}  // namespace choir::worker::internal
