// Worker 0's one-sided work (worker/internal/worker0_hold.h) over an in-process group: work
// lasting several of the group's timeouts holds the others, which a plain broadcast after the
// same work does not; a failure reaches the others at once, named; a rank that never arrives,
// or work past the hold's limit, still ends the wait with the group's error.
//
// Tests that expect the hold to succeed use a 1 s timeout (a tick every 250 ms: 750 ms of slack
// for a stalled thread on a loaded machine); those that expect a timeout use 200 ms.
#include "worker/internal/worker0_hold.h"

#include <memory>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace choir::worker::internal {
namespace {

constexpr absl::Duration kTimeout = absl::Seconds(1);
constexpr absl::Duration kShortTimeout = absl::Milliseconds(200);
constexpr absl::Duration kNoLimit = absl::Hours(1);

// Runs body(rank) on one thread per rank of a fresh group of `size` whose calls time out after
// `timeout`, and returns each status.
template <typename F>
std::vector<absl::Status> OnEveryRank(int size, absl::Duration timeout, F body) {
  InProcessCollectiveOptions options;
  options.timeout = timeout;
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
  const std::vector<absl::Status> status =
      OnEveryRank(3, kTimeout, [](Collective* group) -> absl::Status {
        if (group->rank() == 0) {
          absl::Status s =
              HoldOthersDuring(group, HoldInterval(kTimeout), kNoLimit, "restoring", [] {
                absl::SleepFor(2.5 * kTimeout);
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
  const std::vector<absl::Status> status = OnEveryRank(3, kShortTimeout, [](Collective* group) {
    if (group->rank() == 0) absl::SleepFor(2.5 * kTimeout);
    char byte = 0;
    return group->Broadcast(&byte, 1, 0);
  });
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[1])) << status[1];
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[2])) << status[2];
}

TEST(Worker0HoldTest, AFailureReachesTheOthersAtOnceNamed) {
  const std::vector<absl::Status> status = OnEveryRank(3, kTimeout, [](Collective* group) {
    if (group->rank() == 0) {
      return HoldOthersDuring(group, HoldInterval(kTimeout), kNoLimit, "restoring the checkpoint",
                              [] {
                                absl::SleepFor(absl::Milliseconds(400));
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
  const std::vector<absl::Status> status =
      OnEveryRank(3, kShortTimeout, [](Collective* group) -> absl::Status {
        switch (group->rank()) {
          case 0:
            return HoldOthersDuring(group, HoldInterval(kShortTimeout), kNoLimit, "saving", [] {
              absl::SleepFor(3 * kShortTimeout);
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

// Work that outlasts the hold's limit (a hung file system) is not held forever: the others time
// out, and worker 0 learns that the group broke.
TEST(Worker0HoldTest, WorkPastTheLimitLetsTheOthersTimeOut) {
  const std::vector<absl::Status> status =
      OnEveryRank(2, kShortTimeout, [](Collective* group) -> absl::Status {
        if (group->rank() == 0) {
          return HoldOthersDuring(group, HoldInterval(kShortTimeout), absl::Milliseconds(300),
                                  "saving", [] {
                                    absl::SleepFor(absl::Milliseconds(1500));
                                    return absl::OkStatus();
                                  });
        }
        return WaitForWorker0(group, "saving");
      });
  EXPECT_FALSE(status[0].ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(status[1])) << status[1];
  EXPECT_NE(status[1].message().find("waiting for worker 0 (saving)"), std::string::npos)
      << status[1];
}

}  // namespace
}  // namespace choir::worker::internal
