// MPI: process bootstrap under mpirun and the CPU collective (core/collective.h) over MPI.
// DESIGN.md 2: MPI is used for bootstrap and the CPU allreduce, never as the parameter-server
// transport. This header does not include mpi.h; link choir_mpi to use it.
//
//   if (LaunchedByMpirun()) RETURN_IF_ERROR(MpiInit(&argc, &argv));
//   ASSIGN_OR_RETURN(MpiWorld world, GetMpiWorld());      // role from world.rank
//   MpiCollectiveOptions options;
//   options.ranks = worker_ranks;                          // world ranks of the workers
//   ASSIGN_OR_RETURN(auto workers, NewMpiCollective(options));
//   ...
//   workers.reset();                                       // before MpiFinalize
//   RETURN_IF_ERROR(MpiFinalize());
//
// MPI's own collectives have no timeout; MpiCollective runs each one non-blocking and polls it
// against a deadline, so a stuck or missing rank gives DEADLINE_EXCEEDED instead of a hang.
// MPI cannot say which rank is missing. Before each operation the ranks exchange a small header
// (operation, counts, root, sequence number), so mismatched calls give INVALID_ARGUMENT on
// every rank instead of undefined behaviour.
#ifndef CHOIR_CORE_MPI_COLLECTIVE_H_
#define CHOIR_CORE_MPI_COLLECTIVE_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/collective.h"

namespace choir {

// True when this process was started by mpirun/mpiexec or a PMI launcher (OMPI_COMM_WORLD_SIZE,
// PMI_SIZE or PMIX_RANK is set). For main(); libraries take the decision as a parameter.
bool LaunchedByMpirun();

// Initialises MPI (thread level MPI_THREAD_SERIALIZED: calls from any thread, one at a time)
// and makes MPI_COMM_WORLD return errors instead of aborting. OK when MPI is already
// initialised; FAILED_PRECONDITION when MPI cannot give that thread level or was finalised.
absl::Status MpiInit(int* argc, char*** argv);

// Finalises MPI if it was initialised and not yet finalised. Destroy every MpiCollective first.
// It waits for every rank: a rank that failed must not call it while another may be frozen or
// never got as far (use MpiAbort).
absl::Status MpiFinalize();

// Ends the whole MPI job with exit status `code` (mpirun stops every rank), after flushing the
// logs and stderr: what a rank does when it failed.
[[noreturn]] void MpiAbort(int code);

// This process's place in MPI_COMM_WORLD (after MpiInit).
struct MpiWorld {
  int rank = 0;
  int size = 1;
};
absl::StatusOr<MpiWorld> GetMpiWorld();

struct MpiCollectiveOptions {
  // World ranks forming the group, in group-rank order; empty (the default) means all of
  // MPI_COMM_WORLD in world order. Only the listed ranks call NewMpiCollective (with the same
  // list); a caller that is not listed gets INVALID_ARGUMENT.
  std::vector<int> ranks;
  // How long one operation may take from the call to its completion before it fails with
  // DEADLINE_EXCEEDED and the group is broken. Includes waiting for the slowest rank to call,
  // so it must exceed the largest skew between ranks (a slow step, a long checkpoint).
  // absl::InfiniteDuration() waits forever. Default 5 minutes.
  absl::Duration timeout = absl::Minutes(5);
  // Largest message of one MPI call, bytes; longer buffers go in several calls (MPI counts are
  // int). Also the size of the staging buffer each operation goes through, so a timed-out
  // operation never writes into the caller's buffer after the call returned. Default 64 MiB:
  // large enough that splitting costs nothing measurable.
  int64_t chunk_bytes = int64_t{64} << 20;
};

// A Collective over a duplicate of MPI_COMM_WORLD (or of the group `options.ranks`), so its
// traffic never matches other MPI traffic. Creation is itself collective over the group.
// Errors of MPI calls come back as statuses carrying MPI_Error_string, the call, file and line.
// Calls from several threads are serialised.
absl::StatusOr<std::unique_ptr<Collective>> NewMpiCollective(
    const MpiCollectiveOptions& options = {});

}  // namespace choir

#endif  // CHOIR_CORE_MPI_COLLECTIVE_H_
