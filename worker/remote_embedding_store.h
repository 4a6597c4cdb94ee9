// The EmbeddingStore of a worker in a cluster: a client of the parameter servers (ps/server.h,
// docs/ps.md).
//
// Pull and Push split the caller's keys by server with the sharding policy (ps/sharding.h) and
// reassemble pulled rows in the caller's key order. A Push sends one RPC per server that holds
// any of its keys; a Pull sends each server's keys in RPCs of at most max_keys_per_request
// keys. All of a call's RPCs are in flight at once, and pulled rows are copied out as each
// response arrives, so the servers look up later pieces while earlier ones travel and are
// copied. With the same TableOptions on every server
// the results are bit-identical to NewLocalEmbeddingStore's: each row lives on exactly one
// server, which applies the same initialisation and optimizer to it.
//
// Synchronous mode (num_workers = W > 0, matching the servers' ParamServerOptions::
// sync_workers): every Push is one step of this worker, numbered by the store from 0; it goes
// to every server, with an empty push to the servers that hold none of its keys, so that each
// server gets exactly one push per step from every worker and can sum the W workers' gradients
// before applying them once. A Push returns when every server has applied the step. Pushes that
// fail the checks below are not sent and take no step number. Push calls must not overlap on
// one store (one step at a time); Pull may run at any time.
//
// Errors name the server: "pull from parameter server 2 (ps2): ...". DEADLINE_EXCEEDED and
// UNAVAILABLE from the transport, and the server's own codes (INVALID_ARGUMENT), keep their
// code; a response with the wrong frames is DATA_LOSS. Keys of unconfigured slots, wrong
// buffer sizes and non-finite gradients are rejected before anything is sent, so a Push that
// fails that way changes no row on any server. A Push that fails on one server (deadline,
// server down) may have been applied on the others, and on the failing one too when only its
// response was lost: the caller treats it as a failed step.
//
// Thread map: Pull and Push run on any number of caller threads (synchronous Push: one at a
// time), each sending its RPCs and handling their responses on its own thread
// (RpcClient::CallAll). The RpcClient's receive thread hands responses to the waiting calls. The store holds no lock of its own: its state is immutable after
// construction but for the atomic step counter of synchronous mode.
#ifndef CHOIR_WORKER_REMOTE_EMBEDDING_STORE_H_
#define CHOIR_WORKER_REMOTE_EMBEDDING_STORE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "core/transport.h"
#include "ps/sharding.h"
#include "ps/slot_config.h"
#include "worker/embedding_store.h"

namespace choir {

struct RemoteEmbeddingStoreOptions {
  struct Server {
    std::string id;       // the server endpoint's id
    std::string address;  // what the server's address() reports (ignored in-process)
  };
  // The parameter servers, in server-index order: servers[i] holds the keys the sharding
  // policy maps to i. Must not be empty; ids must be unique.
  std::vector<Server> servers;
  // The slots the servers hold (the servers' TableOptions::slots): Dim() and the checks done
  // before sending. Must not be empty.
  std::map<uint32_t, SlotConfig> slots;
  // How long each Pull or Push waits for all its servers. Default 30 s: far above a healthy
  // round trip, short enough that a dead server stops training with a clear error.
  absl::Duration deadline = absl::Seconds(30);
  // Key-to-server policy; its num_servers() must equal servers.size(). Default (null):
  // NewConsistentHashSharding(servers.size()).
  std::shared_ptr<const ShardingPolicy> sharding;
  // Synchronous mode: this worker's index in [0, num_workers) and the number of workers, the
  // same on every worker and equal to the servers' sync_workers. num_workers 0 (default):
  // asynchronous, each push is applied on arrival (the servers must have sync_workers 0).
  int worker_index = 0;
  int num_workers = 0;
  // Largest number of keys in one pull RPC; a server's share of a larger Pull is split. Must
  // be positive. Default 2048: the best of 1024-16384 for pulls of 4k-64k keys over loopback
  // (choir_bench_ps, docs/ps.md): a server looks up later pieces on its other handler
  // threads while earlier ones travel and are copied out.
  int max_keys_per_request = 2048;
  // How long a checkpoint's save (every server writing its rows) or one restore request may
  // take (cluster.checkpoint_deadline_ms). Default 30 min.
  absl::Duration checkpoint_deadline = absl::Minutes(30);
  // Optional: the job's state (SchedulerClient::JobStatus). Polled while a call waits (every
  // 100 ms); once it is not OK (the job failed: a peer died) the waiting call fails at once with
  // it, instead of waiting out its deadline for a server that may be gone.
  std::function<absl::Status()> job_status;
};

// A store that reaches the servers through `endpoint` (this worker's own endpoint; the store
// adds each server to its address book and owns it). The servers must admit the worker
// (ParamServer::AddPeer). INVALID_ARGUMENT for invalid options.
absl::StatusOr<std::unique_ptr<EmbeddingStore>> NewRemoteEmbeddingStore(
    std::unique_ptr<transport::Endpoint> endpoint, RemoteEmbeddingStoreOptions options);

}  // namespace choir

#endif  // CHOIR_WORKER_REMOTE_EMBEDDING_STORE_H_
