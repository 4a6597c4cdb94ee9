// Message transport and RPC for Choir's roles (docs/transport.md, DESIGN.md 2).
//
// A Message is one Protobuf header (core/proto/transport.proto) plus raw payload frames. An
// Endpoint is one peer's mailbox: it sends a message to another peer named by a string id and
// receives messages addressed to it, with a deadline. Three implementations share the
// interface: in-process (every peer in one process; the cluster tests), ZeroMQ (DEALER to the
// peers it calls, ROUTER for the peers that call it) and a fault-injecting wrapper around any
// endpoint. RpcClient and RpcServer build request/response calls with 64-bit request ids and
// deadlines on top of an endpoint.
//
// Error policy: everything a peer sends is checked; bad input is logged and dropped or answered
// with an error status, never CHECKed. Failures name the peer.
#ifndef CHOIR_CORE_TRANSPORT_H_
#define CHOIR_CORE_TRANSPORT_H_

#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/proto/transport.pb.h"

namespace choir {
namespace transport {

// The protocol version this build speaks; messages with another version are rejected.
inline constexpr uint32_t kProtocolVersion = 1;

// Bytes per element of `type`; 0 for a value this build does not know.
size_t ElementSize(ElementType type);

template <typename T>
constexpr ElementType ElementTypeOf() {
  if constexpr (std::is_same_v<T, uint64_t>)
    return ELEMENT_UINT64;
  else if constexpr (std::is_same_v<T, int64_t>)
    return ELEMENT_INT64;
  else if constexpr (std::is_same_v<T, float>)
    return ELEMENT_FLOAT32;
  else if constexpr (std::is_same_v<T, double>)
    return ELEMENT_FLOAT64;
  else if constexpr (std::is_same_v<T, int32_t>)
    return ELEMENT_INT32;
  else if constexpr (std::is_same_v<T, uint32_t>)
    return ELEMENT_UINT32;
  else if constexpr (std::is_same_v<T, uint8_t> || std::is_same_v<T, char>)
    return ELEMENT_BYTES;
  else
    static_assert(sizeof(T) == 0, "no transport ElementType for this type");
}

// One raw payload frame: immutable bytes with a shared owner, so copies and sends do not copy
// the bytes (a received ZeroMQ frame stays in ZeroMQ's buffer). data() is not guaranteed to be
// aligned for the element type; ToVector copies into aligned storage.
class Frame {
 public:
  Frame() = default;  // empty ELEMENT_BYTES frame
  // Takes ownership of `bytes` without copying them.
  explicit Frame(std::string bytes);
  // Wraps `size` bytes at `data` that `owner` keeps alive and unchanged (zero copy).
  Frame(std::shared_ptr<const void> owner, const void* data, size_t size, ElementType type);

  // Takes ownership of `values` without copying them; the type follows T.
  template <typename T>
  static Frame FromVector(std::vector<T> values) {
    auto owner = std::make_shared<std::vector<T>>(std::move(values));
    const void* data = owner->data();
    size_t size = owner->size() * sizeof(T);
    return Frame(std::move(owner), data, size, ElementTypeOf<T>());
  }
  // Copies `bytes`, labelled as elements of `type`.
  static Frame CopyOf(absl::string_view bytes, ElementType type = ELEMENT_BYTES);

  const char* data() const { return data_; }
  size_t size() const { return size_; }
  absl::string_view bytes() const { return absl::string_view(data_, size_); }
  ElementType type() const { return type_; }
  // Elements of type(): size() / ElementSize(type()).
  size_t count() const;
  const std::shared_ptr<const void>& owner() const { return owner_; }

  // Copies the elements out. INVALID_ARGUMENT when T does not match type() or the byte size is
  // not a multiple of sizeof(T).
  template <typename T>
  absl::StatusOr<std::vector<T>> ToVector() const {
    if (ElementTypeOf<T>() != type_ || size_ % sizeof(T) != 0) {
      return absl::InvalidArgumentError("frame type or size does not match the requested type");
    }
    std::vector<T> out(size_ / sizeof(T));
    if (size_ > 0) std::memcpy(out.data(), data_, size_);
    return out;
  }

 private:
  std::shared_ptr<const void> owner_;
  const char* data_ = nullptr;
  size_t size_ = 0;
  ElementType type_ = ELEMENT_BYTES;
};

// A header and its payload frames. Movable; copies share the frames' bytes.
struct Message {
  Header header;
  std::vector<Frame> frames;
};

// Sets header.version to kProtocolVersion and frame_count/frames from `message->frames`.
// RpcClient and RpcServer call it; code that sends raw messages calls it before Send.
void FinishHeader(Message* message);

// Checks that a message's frames agree with its header: frame_count, one FrameInfo per frame,
// known element types, byte sizes equal to count * element size; requests need a nonzero id
// and a method. INVALID_ARGUMENT naming the first problem.
absl::Status ValidateMessage(const Message& message);

// Why an incoming message was rejected, passed to EndpointOptions::on_reject.
struct Rejection {
  std::string endpoint;  // the receiving endpoint's id
  std::string peer;      // the transport-level sender, as far as known
  absl::Status reason;
};

struct EndpointOptions {
  // This peer's id, unique among the peers it talks to. Required.
  std::string id;
  // ZeroMQ: the address the ROUTER binds for peers that call this one, e.g.
  // "tcp://127.0.0.1:0" (0: an ephemeral port; address() reports the bound one). Empty
  // (default): no ROUTER; the endpoint only calls peers. Ignored in-process.
  std::string bind_address;
  // ZeroMQ: messages queued per socket before Send fails with UNAVAILABLE. Default 100000.
  int high_water_mark = 100000;
  // ZeroMQ: how long Close keeps trying to deliver queued messages. Default 500 ms.
  absl::Duration linger = absl::Milliseconds(500);
  // Called once per rejected incoming message (unknown protocol version, unknown or
  // mismatched sender, unparsable header), after the log line, with no lock held, on the
  // thread that checked the message (ZeroMQ: the I/O thread; in-process: the sender's thread
  // inside Send). Default: none. Must be quick and must not call back into the endpoint.
  std::function<void(const Rejection&)> on_reject;
};

// One peer's mailbox. Thread-safe: Send, AddPeer and Close from any thread; Receive from one
// consumer (RpcClient/RpcServer take that role).
class Endpoint {
 public:
  virtual ~Endpoint() = default;

  virtual const std::string& id() const = 0;
  // The address other peers pass to AddPeer to reach this endpoint.
  virtual std::string address() const = 0;

  // Adds `peer` to the address book. Messages from peers not in it are rejected, and Send to
  // them fails. `address` non-empty: this endpoint connects to the peer (ZeroMQ DEALER);
  // empty: the peer connects to this one and is answered over the ROUTER. In-process
  // endpoints ignore the address. Re-adding a peer replaces its address.
  virtual absl::Status AddPeer(const std::string& peer, const std::string& address) = 0;

  // Hands `message` to the transport for `to` and returns without waiting for the peer; OK
  // does not mean delivered. NOT_FOUND when `to` is not in the address book; UNAVAILABLE when
  // the peer is unreachable now (in-process: gone; ZeroMQ: not connected to our ROUTER, or its
  // queue is full) or this endpoint is closed. The message is sent as it is (see
  // FinishHeader); its header's sender must be id().
  virtual absl::Status Send(const std::string& to, Message message) = 0;

  // Returns the next accepted message addressed to this endpoint. Messages are accepted only
  // with version kProtocolVersion, a parsable header and a sender in the address book that
  // matches the transport-level sender. DEADLINE_EXCEEDED when `deadline` passes first;
  // UNAVAILABLE once the endpoint is closed.
  virtual absl::StatusOr<Message> Receive(absl::Time deadline) = 0;

  // Stops the endpoint: Receive returns UNAVAILABLE, Send fails. Idempotent.
  virtual void Close() = 0;
};

// All peers of one process. Endpoints it creates may outlive it.
class InProcessNetwork {
 public:
  InProcessNetwork();
  ~InProcessNetwork();
  // ALREADY_EXISTS when an open endpoint already has options.id; INVALID_ARGUMENT when empty.
  absl::StatusOr<std::unique_ptr<Endpoint>> NewEndpoint(EndpointOptions options);

  class Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// A ZeroMQ endpoint with its own context and I/O thread. Fails (with the ZeroMQ error) when
// the bind address cannot be bound.
absl::StatusOr<std::unique_ptr<Endpoint>> NewZmqEndpoint(EndpointOptions options);

// Faults applied by a fault-injecting endpoint to its outgoing messages. Thread-safe. Rules
// by count ("drop the next request to peer X") are used before the seeded random ones.
class FaultInjector {
 public:
  struct Options {
    uint64_t seed = 1;            // seeds the random faults
    double drop_probability = 0;  // per message; default no random faults
    double duplicate_probability = 0;
    double delay_probability = 0;
    absl::Duration delay = absl::Milliseconds(10);  // for random delays
  };
  struct Stats {
    uint64_t dropped = 0;
    uint64_t duplicated = 0;
    uint64_t delayed = 0;
  };
  enum class Action { kDeliver, kDrop, kDuplicate, kDelay };
  struct Decision {
    Action action = Action::kDeliver;
    absl::Duration delay;
  };

  FaultInjector() : FaultInjector(Options()) {}
  explicit FaultInjector(Options options);

  // The next `count` messages of `kind` to `peer` are dropped / sent twice / held back by
  // `delay`.
  void DropNext(const std::string& peer, MessageKind kind, int count = 1);
  void DuplicateNext(const std::string& peer, MessageKind kind, int count = 1);
  void DelayNext(const std::string& peer, MessageKind kind, absl::Duration delay, int count = 1);

  Stats stats() const;
  // Decides the fate of one message and counts it; used by the fault-injecting endpoint.
  Decision Decide(const std::string& peer, MessageKind kind);

 private:
  struct Rule {
    std::string peer;
    MessageKind kind;
    Action action;
    absl::Duration delay;
    int remaining;
  };
  mutable std::mutex mu_;
  const Options options_;
  uint64_t rng_state_;       // guarded by mu_
  std::vector<Rule> rules_;  // guarded by mu_
  Stats stats_;              // guarded by mu_
};

// Wraps `base`; outgoing messages pass through `faults`. Delayed messages are sent by the
// wrapper's timer thread; their send errors are logged (the original Send already returned).
std::unique_ptr<Endpoint> NewFaultInjectingEndpoint(std::unique_ptr<Endpoint> base,
                                                    std::shared_ptr<FaultInjector> faults);

// ---------------------------------------------------------------------------------------------
// RPC

// A response: the header (status OK) and its frames.
using Response = Message;

struct RpcClientStats {
  uint64_t calls = 0;
  uint64_t deadline_exceeded = 0;
  // Responses with no waiting call (late after the deadline, or duplicates), dropped.
  uint64_t dropped_responses = 0;
  uint64_t abandoned = 0;  // calls ended by the abort check
  size_t pending = 0;  // calls waiting now
};

// Issues calls over an endpoint it owns and receives exclusively.
//
// Threads: Call runs on any number of caller threads, each blocking until its response, its
// deadline or shutdown. One receive thread reads the endpoint and hands each response to its
// call by request id. The pending map holds exactly the calls that are waiting.
class RpcClient {
 public:
  // `abort_check`, when set, is polled while a call waits longer than abort_poll: a non-OK
  // status fails the waiting call at once with that status (its code kept, the peer and method
  // named), e.g. the job has failed and no answer is worth waiting for. It runs on the calling
  // thread without this client's lock; it must not call this client.
  explicit RpcClient(std::unique_ptr<Endpoint> endpoint,
                     std::function<absl::Status()> abort_check = nullptr,
                     absl::Duration abort_poll = absl::Milliseconds(100));
  ~RpcClient();  // Shutdown()
  RpcClient(const RpcClient&) = delete;
  RpcClient& operator=(const RpcClient&) = delete;

  // Sends `method` with `frames` to `peer` and waits for the response until `deadline`.
  // Returns the response, or: the handler's error status (code kept, message prefixed with the
  // peer and method); DEADLINE_EXCEEDED when the deadline passes first (a later response is
  // dropped with a log line); UNAVAILABLE when the peer is unreachable, the server shuts down
  // with the call pending, or this client shuts down; DATA_LOSS for a malformed response; the
  // abort check's status when it fails first.
  absl::StatusOr<Response> Call(const std::string& peer, const std::string& method,
                                std::vector<Frame> frames, absl::Time deadline);

  // One request of CallAll.
  struct Request {
    std::string peer;
    std::string method;
    std::vector<Frame> frames;
  };
  // Sends every request before waiting for any, then hands each outcome (what Call would
  // return) to on_response(i, outcome) in request order, on this thread, as soon as it has
  // arrived: the caller works on response i while later ones are still in flight. One
  // deadline covers the batch. Stops at the first non-OK status on_response returns (it sees
  // failed outcomes too, and may annotate them) and returns it; calls still in flight are
  // then forgotten and their responses dropped. A request that cannot be sent is passed to
  // on_response as its failed outcome, and nothing after it is sent.
  absl::Status CallAll(
      std::vector<Request> requests, absl::Time deadline,
      absl::FunctionRef<absl::Status(size_t, absl::StatusOr<Response>)> on_response);

  // Fails pending calls with UNAVAILABLE, closes the endpoint and joins the receive thread.
  // Idempotent; later calls fail with UNAVAILABLE.
  void Shutdown();

  Endpoint* endpoint() { return endpoint_.get(); }
  RpcClientStats stats() const;

 private:
  struct PendingCall;
  // A sent call waiting for its response.
  struct Started {
    uint64_t id = 0;
    std::shared_ptr<PendingCall> call;
  };
  absl::StatusOr<Started> Start(const std::string& peer, const std::string& method,
                                std::vector<Frame> frames, absl::Time deadline);
  absl::StatusOr<Response> Await(const Started& started, absl::Time deadline);
  void ReceiveLoop();
  void Deliver(Message message);
  void FailAllPending(const absl::Status& status);

  const std::unique_ptr<Endpoint> endpoint_;
  const std::function<absl::Status()> abort_check_;  // may be empty
  const absl::Duration abort_poll_;
  mutable std::mutex mu_;
  bool shut_down_ = false;                                               // guarded by mu_
  uint64_t next_request_id_;                                             // guarded by mu_
  absl::flat_hash_map<uint64_t, std::shared_ptr<PendingCall>> pending_;  // guarded by mu_
  RpcClientStats stats_;                                                 // guarded by mu_
  std::thread receive_thread_;
};

// What a handler sees of a request.
struct RpcRequest {
  std::string peer;
  std::string method;
  uint64_t request_id = 0;
  absl::Time deadline = absl::InfiniteFuture();  // the caller's, when it sent one
  std::vector<Frame> frames;
};

// Returns the response frames or an error status that the caller receives with its code and
// message.
using RpcHandler = std::function<absl::StatusOr<std::vector<Frame>>(RpcRequest& request)>;

struct RpcServerOptions {
  // Threads running handlers. Default 1: requests from one peer are answered in order.
  int worker_threads = 1;
};

// Serves registered methods over an endpoint it owns and receives exclusively.
//
// Threads: one receive thread reads the endpoint, answers malformed requests and unknown
// methods with INVALID_ARGUMENT / UNIMPLEMENTED, and queues the rest; `worker_threads`
// threads run handlers (no lock held) and send the responses. Shutdown runs on the caller.
class RpcServer {
 public:
  RpcServer(std::unique_ptr<Endpoint> endpoint, RpcServerOptions options);
  ~RpcServer();  // Shutdown()
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // Before Start only. INVALID_ARGUMENT for an empty name, ALREADY_EXISTS for a second
  // handler, FAILED_PRECONDITION after Start.
  absl::Status Register(const std::string& method, RpcHandler handler);
  // Starts the threads. FAILED_PRECONDITION when called twice or after Shutdown.
  absl::Status Start();
  // Stops taking requests and answers the queued ones with UNAVAILABLE. Handlers already
  // running get up to kShutdownGrace to return and send their own answers (a scheduler's
  // last heartbeat answer, "the job is stopping", must reach the server it tells); those
  // still running then are answered UNAVAILABLE and their results dropped. Closes the
  // endpoint and joins the threads. Idempotent.
  void Shutdown();
  static constexpr absl::Duration kShutdownGrace = absl::Seconds(1);

  Endpoint* endpoint() { return endpoint_.get(); }

 private:
  struct Work {
    uint64_t seq;
    RpcRequest request;
    const RpcHandler* handler;
  };
  void ReceiveLoop();
  void WorkerLoop();
  void Respond(const std::string& peer, uint64_t request_id, const std::string& method,
               const absl::Status& status, std::vector<Frame> frames);

  const std::unique_ptr<Endpoint> endpoint_;
  const RpcServerOptions options_;
  absl::flat_hash_map<std::string, RpcHandler> handlers_;  // written before Start only

  std::mutex mu_;
  std::condition_variable work_cv_;
  std::condition_variable answered_cv_;  // a handler's answer was sent
  int answering_ = 0;       // guarded by mu_; results claimed from in_flight_ being sent
  bool started_ = false;    // guarded by mu_
  bool stopping_ = false;   // guarded by mu_
  uint64_t next_seq_ = 0;   // guarded by mu_
  std::deque<Work> queue_;  // guarded by mu_
  // Requests handed to a handler and not answered yet: seq -> (peer, request id, method).
  struct InFlight {
    std::string peer;
    uint64_t request_id;
    std::string method;
  };
  absl::flat_hash_map<uint64_t, InFlight> in_flight_;  // guarded by mu_
  std::thread receive_thread_;
  std::vector<std::thread> workers_;
};

}  // namespace transport
}  // namespace choir

#endif  // CHOIR_CORE_TRANSPORT_H_
