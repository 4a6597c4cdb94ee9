// ParamServer: one shard of the sparse tables behind the transport (docs/ps.md).
//
// A parameter server owns a SparseTable (ps/sparse_table.h) holding the rows of the keys that
// the sharding policy (ps/sharding.h) assigns to it, and serves two RPC methods over an
// RpcServer (core/transport.h):
//
//   pull  request:  frame 0 uint64 keys
//         response: frame 0 float32 rows, the concatenation of each key's Dim(key) floats
//   push  request:  frame 0 uint64 keys, frame 1 float32 gradients laid out as pull's rows
//         response: no frames; the slots' optimizers have been applied
//
// Every request is checked before the table is touched (frame count, element types, gradient
// count equal to the sum of the keys' dims, every key's slot configured, finite gradients);
// a bad one is answered with INVALID_ARGUMENT naming the problem (the first key of an unknown
// slot) and changes nothing. Nothing from a peer is CHECKed.
//
// Thread map: ParamServer runs no threads of its own. Its RpcServer's receive thread reads the
// endpoint; its `rpc.worker_threads` handler threads run Pull/Push on the table, which is
// thread-safe (a lock per table shard). Start, AddPeer and Shutdown run on the caller's
// thread. The server holds no lock of its own.
#ifndef CHOIR_PS_SERVER_H_
#define CHOIR_PS_SERVER_H_

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "core/transport.h"
#include "ps/sparse_table.h"

namespace choir {

// The methods a parameter server serves.
inline constexpr char kPsPullMethod[] = "pull";
inline constexpr char kPsPushMethod[] = "push";

struct ParamServerOptions {
  // The shard's table: the same options (seed, slots) as every other server and as the local
  // store, so that a row's initial values and updates do not depend on where it lives.
  TableOptions table;
  // Handler threads. Default 1: one peer's requests are applied in the order they arrive.
  transport::RpcServerOptions rpc;
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

 private:
  ParamServer(std::unique_ptr<SparseTable> table, std::string id, std::string address);

  absl::StatusOr<std::vector<transport::Frame>> HandlePull(transport::RpcRequest& request);
  absl::StatusOr<std::vector<transport::Frame>> HandlePush(transport::RpcRequest& request);
  // The keys in frame 0 of `request`, after checking its element type and that every key's
  // slot is configured; `total_dim` receives the sum of their dims.
  absl::StatusOr<std::vector<uint64_t>> ReadKeys(const transport::RpcRequest& request,
                                                 size_t* total_dim) const;

  const std::unique_ptr<SparseTable> table_;
  const std::string id_;
  const std::string address_;
  std::unique_ptr<transport::RpcServer> rpc_;  // set once in Start, before serving
};

}  // namespace choir

#endif  // CHOIR_PS_SERVER_H_
