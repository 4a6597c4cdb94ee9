// ParamServer: one shard of the sparse tables behind the transport (docs/ps.md).
//
// A parameter server owns a SparseTable (ps/sparse_table.h) holding the rows of the keys that
// the sharding policy (ps/sharding.h) assigns to it, and serves two RPC methods over an
// RpcServer (core/transport.h):
//
//   pull  request:  frame 0 uint64 keys
//         response: frame 0 float32 rows, the concatenation of each key's Dim(key) floats
//   lookup          as pull, through SparseTable::Lookup: reads without creating, touching or
//                   evicting rows (evaluation's reads)
//   push  request:  frame 0 uint64 keys, frame 1 float32 gradients laid out as pull's rows,
//                   synchronous mode only: frame 2 int64 {worker index, step}
//         response: no frames; the slots' optimizers have been applied
//
// and two for checkpoints (docs/checkpoints.md), called between steps:
//
//   save     request:  frame 0 bytes: a checkpoint directory, frame 1 bytes: a file name
//            response: frame 0 uint64 {bytes, crc32c} of the file written: every row of the
//                      table (values, optimizer state, push count), checkpoint/files.h format,
//                      through ParamServerOptions::fs
//   restore  request:  frame 0 uint64 keys, frame 1 float32 rows (each key's
//                      SparseTable::StoredFloats), frame 2 uint32 push counts, frame 3 int64
//                      {step}
//            response: no frames; the rows are stored, and the table's step and (synchronous
//                      mode) the step being collected are set to `step`
//
// Every request is checked before the table is touched (frame count, element types, gradient
// count equal to the sum of the keys' dims, every key's slot configured, finite gradients);
// a bad one is answered with INVALID_ARGUMENT naming the problem (the first key of an unknown
// slot) and changes nothing. Nothing from a peer is CHECKed.
//
// Synchronous mode (sync_workers = W > 0): every worker w in [0, W) pushes every step t =
// 0, 1, 2, ... exactly once (an empty push when it has no keys for this server). The server
// holds the pushes of the current step t until all W have arrived, sums the gradients per key
// in worker-index order (w = 0, 1, ..., W-1: bit-identical from run to run), applies each
// key's optimizer once with the sum (one SparseTable::Push, so one table step), and only then
// answers the W requests. Pulls are served at any time. Errors, all naming worker and step:
//   - a push for a step already applied (but a copy as below), or for a later step than the
//     current one: FAILED_PRECONDITION (nothing counted);
//   - a second push of worker w for a step: a copy of the same request (same peer and request
//     id, e.g. duplicated by the network) is not counted again and gets the step's result (it
//     waits for it if the step is still being collected; it gets OK at once if the step was
//     the last one applied); another request is INVALID_ARGUMENT (two workers with one
//     index?);
//   - a worker that never pushes: each waiting push gives up at its caller's deadline, when the
//     caller has already seen DEADLINE_EXCEEDED. The first to give up abandons the step: its
//     gradients are discarded, every push waiting on it is answered DEADLINE_EXCEEDED naming the
//     missing workers, and every later push is FAILED_PRECONDITION. The step is lost and the
//     job must stop (the scheduler stops it; restart from a checkpoint).
// If the summed gradient overflows to infinity the step is rejected (INVALID_ARGUMENT, no row
// changes) and abandoned likewise.
//
// Thread map: ParamServer runs no threads of its own. Its RpcServer's receive thread reads the
// endpoint; its handler threads run Pull/Push on the table, which is thread-safe (a lock per
// table shard). In synchronous mode a push waits in its handler thread until its step is
// applied, so the server runs at least 2W + 1 handler threads (W - 1 waiting pushes, a
// duplicated copy of each, and one more for pulls and the step's last push); the last push's
// thread sums and applies the step under the steps' lock, then wakes the others. Start, AddPeer,
// AwaitSync and Shutdown run on the caller's thread; Shutdown first wakes waiting pushes
// (UNAVAILABLE), then stops the RpcServer.
#ifndef CHOIR_PS_SERVER_H_
#define CHOIR_PS_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/transport.h"
#include "ps/sparse_table.h"

namespace choir {

// The methods a parameter server serves.
inline constexpr char kPsPullMethod[] = "pull";
inline constexpr char kPsLookupMethod[] = "lookup";
inline constexpr char kPsPushMethod[] = "push";
inline constexpr char kPsSaveMethod[] = "save";
inline constexpr char kPsRestoreMethod[] = "restore";
// The fewest handler threads a server runs (ParamServerOptions::rpc).
inline constexpr int kMinPsHandlerThreads = 4;
// The most workers a synchronous server aggregates.
inline constexpr int kMaxSyncWorkers = 4096;

struct ParamServerOptions {
  // The shard's table: the same options (seed, slots) as every other server and as the local
  // store, so that a row's initial values and updates do not depend on where it lives.
  TableOptions table;
  // Handler threads (rpc.worker_threads): raised to at least kMinPsHandlerThreads, so that
  // the pieces of a large pull (RemoteEmbeddingStoreOptions::max_keys_per_request) are looked
  // up in parallel; synchronous mode raises them to at least 2 * sync_workers + 1. Requests
  // are handled concurrently: the table is atomic per row, and a worker's own pushes are
  // ordered because it waits for each before sending the next.
  transport::RpcServerOptions rpc;
  // 0 (default): every push is applied when it arrives (asynchronous: W workers' pushes hit
  // the optimizer separately). W > 0: synchronous aggregation over W workers (see the top of
  // this file): W workers then train like one worker with W times the batch. Must be in
  // [0, kMaxSyncWorkers]; every worker's store must use the same W (RemoteEmbeddingStoreOptions).
  int sync_workers = 0;
  // Where `save` writes (a file system every server and the committing worker share). Default
  // (null): the process's real file system.
  FileSystem* fs = nullptr;
};

// Synchronous-mode counters (ParamServer::sync_stats).
struct SyncStats {
  int64_t step = 0;              // the step being collected: steps applied so far
  int pushes_received = 0;       // distinct workers' pushes of `step` buffered now
  int waiting = 0;               // push requests of `step` waiting now (duplicated copies too)
  uint64_t duplicates = 0;       // copies of a buffered or just applied push, not counted again
  uint64_t rejected = 0;         // pushes answered with an error without being buffered
  bool abandoned = false;        // a step was abandoned: every later push fails
};

class ParamServer {
 public:
  // Creates the table and starts serving on `endpoint`. INVALID_ARGUMENT for invalid table
  // options; the RpcServer's errors otherwise.
  static absl::StatusOr<std::unique_ptr<ParamServer>> Start(
      std::unique_ptr<transport::Endpoint> endpoint, ParamServerOptions options);
  ~ParamServer();  // Shutdown()

  ParamServer(const ParamServer&) = delete;
  ParamServer& operator=(const ParamServer&) = delete;

  // Admits a worker that calls this server: `address` empty for ZeroMQ workers that connect
  // to this server's bound address (the usual case). See Endpoint::AddPeer.
  absl::Status AddPeer(const std::string& peer, const std::string& address = "");

  // Answers pending requests with UNAVAILABLE, closes the endpoint and waits for running
  // handlers. Idempotent.
  void Shutdown();

  const std::string& id() const { return id_; }
  // The address workers pass to their endpoint's AddPeer (ZeroMQ: the bound address).
  std::string address() const { return address_; }
  // The shard's rows (rows created, memory). Thread-safe.
  const SparseTable& table() const { return *table_; }

  // Synchronous mode's state now (zeros in asynchronous mode). Thread-safe.
  SyncStats sync_stats() const;
  // Blocks until `until(sync_stats())` holds (true) or `deadline` passes (false); `until` runs
  // on the caller's thread, without the server's lock, after every change of the state. For
  // tests and diagnostics: lets a caller order its pushes after others are known to wait,
  // without sleeping. Asynchronous mode: `until` is evaluated once, on zeros.
  bool AwaitSync(absl::FunctionRef<bool(const SyncStats&)> until, absl::Time deadline) const;

 private:
  // The synchronous mode's steps: buffered pushes, their waiting handlers, the sum (server.cc).
  class SyncSteps;
  // A push request's contents, checked.
  struct PushRequest {
    int worker = 0;    // synchronous mode
    int64_t step = 0;  // synchronous mode
    std::vector<uint64_t> keys;
    std::vector<float> grads;
  };

  ParamServer(std::unique_ptr<SparseTable> table, std::string id, std::string address,
              int sync_workers, FileSystem* fs);

  // pull, or lookup when `read_only`.
  absl::StatusOr<std::vector<transport::Frame>> HandlePull(transport::RpcRequest& request, bool read_only);
  absl::StatusOr<std::vector<transport::Frame>> HandlePush(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleSave(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandleRestore(transport::RpcRequest& request);
  // The keys in frame 0 of `request`, after checking its element type and that every key's
  // slot is configured; `total_dim` receives the sum of their dims.
  absl::StatusOr<std::vector<uint64_t>> ReadKeys(const transport::RpcRequest& request,
                                                 size_t* total_dim) const;
  // Checks a push request's frames (synchronous mode: the worker and step frame, and finite
  // gradients) and fills `push`; INVALID_ARGUMENT naming the problem.
  absl::Status ReadPush(const transport::RpcRequest& request, PushRequest* push) const;

  const std::unique_ptr<SparseTable> table_;
  const std::string id_;
  const std::string address_;
  const int sync_workers_;
  FileSystem* const fs_;
  const std::unique_ptr<SyncSteps> sync_;      // synchronous mode only
  std::unique_ptr<transport::RpcServer> rpc_;  // set once in Start, before serving
};

}  // namespace choir

#endif  // CHOIR_PS_SERVER_H_
