// Worker 0's one-sided work in a cluster, while the other workers wait for it at the workers'
// collective. Internal to worker/.
//
// Resuming, worker 0 alone sends every sparse row of the checkpoint to the servers; at a
// checkpoint, it alone has the servers write their rows. The others have nothing to do but wait,
// and the collective's timeout (cluster.rpc_deadline_ms) is there to catch a dead peer, not a
// large table: 100M rows at the measured 1-3M rows/s outlast the default 30 s.
//
// So worker 0 runs the work under HoldOthersDuring, which broadcasts "working" over the group
// every `every` (a fraction of the collective's timeout) from a second thread, then "done" or
// "failed"; every other worker calls WaitForWorker0, which keeps receiving those broadcasts
// until the last one. A worker that dies meanwhile still ends the wait with the collective's
// error (DEADLINE_EXCEEDED or UNAVAILABLE naming it), as any collective call would.
#ifndef CHOIR_WORKER_INTERNAL_WORKER0_HOLD_H_
#define CHOIR_WORKER_INTERNAL_WORKER0_HOLD_H_

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/time/time.h"
#include "core/collective.h"

namespace choir::worker::internal {

// On rank 0 of `group`: runs `work` on this thread (where the model's device is bound) and
// returns its error if it failed, else the group's error if a broadcast failed, else OK.
// `what` names the work in the others' error when it fails ("restoring the checkpoint").
// Work still running after `limit` (a hung file system) is no longer broadcast: the others
// then time out as at any collective, instead of waiting forever.
absl::Status HoldOthersDuring(Collective* group, absl::Duration every, absl::Duration limit,
                              const char* what, absl::FunctionRef<absl::Status()> work);

// On every other rank of `group`: returns once rank 0's HoldOthersDuring has: OK when its work
// succeeded, ABORTED naming worker 0 and `what` when it failed (worker 0 reports its own error),
// the group's error when the group broke.
absl::Status WaitForWorker0(Collective* group, const char* what);

// The interval of HoldOthersDuring's broadcasts for a collective that times out after
// `timeout`: a quarter of it, at least 1 ms.
absl::Duration HoldInterval(absl::Duration timeout);

}  // namespace choir::worker::internal

#endif  // CHOIR_WORKER_INTERNAL_WORKER0_HOLD_H_
