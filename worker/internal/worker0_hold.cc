#include "worker/internal/worker0_hold.h"

#include <algorithm>
#include <cstdint>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "core/status.h"
#include "glog/logging.h"

namespace choir::worker::internal {
namespace {

// The one byte of each broadcast.
enum : uint8_t { kWorking = 1, kDone = 2, kFailed = 3 };

}  // namespace

absl::Status HoldOthersDuring(Collective* group, absl::Duration every, absl::Duration limit,
                              const char* what, absl::FunctionRef<absl::Status()> work) {
  CHECK_EQ(group->rank(), 0) << "HoldOthersDuring runs on worker 0";
  absl::Notification finished;
  absl::Status group_status;  // the ticker's; read after the join
  const absl::Time give_up = absl::Now() + limit;
  std::thread ticker([&] {
    while (!finished.WaitForNotificationWithTimeout(every)) {
      if (absl::Now() >= give_up) {
        LOG(ERROR) << "worker 0 has been " << what << " for longer than "
                   << absl::FormatDuration(limit)
                   << " (cluster.checkpoint_deadline_ms); the other workers will time out";
        return;
      }
      uint8_t state = kWorking;
      group_status = group->Broadcast(&state, 1, 0);
      if (!group_status.ok()) return;
    }
  });
  const absl::Status status = work();
  finished.Notify();
  ticker.join();
  if (!status.ok()) {
    // Tell the others at once (they would otherwise wait out the collective's timeout); a
    // broken group has already told them.
    uint8_t state = kFailed;
    if (group_status.ok()) group->Broadcast(&state, 1, 0).IgnoreError();
    return status;
  }
  if (!group_status.ok()) {
    return absl::Status(
        group_status.code(),
        absl::StrCat("worker 0 (", what, "): the workers' group: ", group_status.message()));
  }
  uint8_t state = kDone;
  return group->Broadcast(&state, 1, 0);
}

absl::Status WaitForWorker0(Collective* group, const char* what) {
  CHECK_NE(group->rank(), 0) << "worker 0 holds the others; it does not wait";
  for (;;) {
    uint8_t state = 0;
    if (absl::Status s = group->Broadcast(&state, 1, 0); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrCat("waiting for worker 0 (", what, "): ", s.message()));
    }
    switch (state) {
      case kWorking:
        continue;
      case kDone:
        return absl::OkStatus();
      case kFailed:
        return absl::AbortedError(
            absl::StrCat("worker 0 failed (", what, "); its own error is in its log"));
      default:
        return absl::InternalError(absl::StrCat("waiting for worker 0 (", what, "): it broadcast ",
                                                state, ", not a hold message"));
    }
  }
}

absl::Duration HoldInterval(absl::Duration timeout) {
  return std::max(timeout / 4, absl::Milliseconds(1));
}

}  // namespace choir::worker::internal
