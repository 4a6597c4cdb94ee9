// Collective operations over a fixed group of ranks (DESIGN.md 2): the allreduce of dense
// gradients and the small broadcasts and barriers around it. One interface, three
// implementations:
//
//   in-process (this file)       every rank a thread of one process: local mode, cluster tests
//   MPI (core/mpi_collective.h)  one rank per process under mpirun; host memory
//   NCCL (models/cuda/nccl_collective.h)  one rank per GPU; DEVICE memory for the data calls
//
// Contract, for every implementation:
// - Every rank of the group calls the same operations in the same order, with the same element
//   count (AllReduceSum), byte count and root (Broadcast). Calls on one Collective object are
//   made one at a time (from any thread); the ranks of a group run concurrently.
// - A violation of that contract -- counts or roots that differ between ranks, one rank in
//   Barrier while another is in AllReduceSum -- gives INVALID_ARGUMENT on every rank where the
//   implementation can detect it (in-process and MPI do; NCCL cannot and times out).
// - A rank that does not arrive (dead, stuck, or gone) gives DEADLINE_EXCEEDED after the
//   implementation's timeout, naming the missing ranks where they are known, or an UNAVAILABLE
//   error where the peer's loss is detected sooner. It never hangs forever.
// - After a timeout or a lost peer the group is broken: every later call on it fails at once
//   with the same error. A contract violation detected before any data moved (INVALID_ARGUMENT)
//   does not break the group.
// - Pointers refer to HOST memory, except NcclCollective's data calls, which take device
//   memory. Buffers must stay valid until the call returns.
#ifndef CHOIR_CORE_COLLECTIVE_H_
#define CHOIR_CORE_COLLECTIVE_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace choir {

class Collective {
 public:
  virtual ~Collective() = default;

  // This rank, in [0, size()).
  virtual int rank() const = 0;
  // Number of ranks in the group (>= 1).
  virtual int size() const = 0;

  // In place: on return every rank's data[0, n) holds the element-wise sum over all ranks.
  // Every rank receives identical values. n may be 0 (data may then be null).
  virtual absl::Status AllReduceSum(float* data, int64_t n) = 0;
  virtual absl::Status AllReduceSum(double* data, int64_t n) = 0;

  // On return every rank's data[0, bytes) holds the root's bytes (unchanged on the root).
  virtual absl::Status Broadcast(void* data, size_t bytes, int root) = 0;

  // Returns once every rank of the group has called Barrier.
  virtual absl::Status Barrier() = 0;
};

// Options of an in-process group.
struct InProcessCollectiveOptions {
  // How long a rank waits at a collective for the other ranks to arrive before it gets
  // DEADLINE_EXCEEDED naming the ranks that did not (the group is then broken).
  // absl::InfiniteDuration() waits forever. Default 60 s: long enough for a slow step on a
  // loaded test machine, short enough that a forgotten rank fails a test rather than hanging it.
  absl::Duration timeout = absl::Seconds(60);
};

// Returns `size` (>= 1, CHECKed) Collective objects, element r being rank r, for `size` threads
// of this process. They share one rendezvous that counts generations (the n-th collective call
// of every rank is the n-th operation). The last rank to arrive does the work: sums are formed in
// rank order ((x0 + x1) + x2) + ... and copied to every rank, so the result is deterministic
// and bit-identical on every rank. Arguments are checked once all ranks have arrived, so a
// mismatch gives INVALID_ARGUMENT on every rank. Destroying a rank's object tells the others:
// their later calls fail at once with UNAVAILABLE naming it. The objects may be destroyed in any
// order and on any thread, but not while a call on that object is running.
std::vector<std::unique_ptr<Collective>> NewInProcessCollectives(
    int size, const InProcessCollectiveOptions& options = {});

}  // namespace choir

#endif  // CHOIR_CORE_COLLECTIVE_H_
