// ZeroMQ transport (core/transport.h): a DEALER per peer this endpoint calls (routing id = our
// id, connected to the peer's address) and, when bound, one ROUTER for the peers that call us.
// Frames on the wire: [routing id (ROUTER only)] [serialized Header] [payload frame]...
// Payload frames are sent without copying (ZeroMQ holds a reference to the Frame's owner) and
// received without copying (the Frame keeps the zmq_msg_t alive).
//
// Threads: ZeroMQ sockets are not thread-safe, so one I/O thread owns all of them. Send and
// AddPeer queue a command, wake the I/O thread through an eventfd and wait for its result, so
// errors raised on the I/O thread are returned to the caller. The I/O thread also reads every
// socket, checks each incoming message and queues it for Receive (the consumer thread). Close
// runs on any thread and joins the I/O thread.
#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>
#include <zmq.h>

#include <condition_variable>
#include <deque>
#include <future>
#include <mutex>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "core/internal/transport_internal.h"
#include "core/status.h"
#include "core/transport.h"
#include "glog/logging.h"

namespace choir {
namespace transport_internal {

absl::Status ZmqErrorToStatus(int err, absl::string_view expr, absl::string_view where) {
  std::string message = absl::StrCat(expr, " at ", where, ": ", zmq_strerror(err));
  switch (err) {
    case EHOSTUNREACH:
    case EAGAIN:
    case ETERM:
      return absl::UnavailableError(message);
    case EINVAL:
      return absl::InvalidArgumentError(message);
    case EADDRINUSE:
      return absl::AlreadyExistsError(message);
    default:
      return absl::InternalError(message);
  }
}

}  // namespace transport_internal

namespace transport {
namespace {

// Owns one zmq_msg_t.
struct ZmqMsg {
  ZmqMsg() { zmq_msg_init(&msg); }
  ~ZmqMsg() { zmq_msg_close(&msg); }
  ZmqMsg(const ZmqMsg&) = delete;
  ZmqMsg& operator=(const ZmqMsg&) = delete;
  zmq_msg_t msg;
};

void FreeFrameOwner(void* /*data*/, void* hint) {
  delete static_cast<std::shared_ptr<const void>*>(hint);
}

absl::Status SetIntOption(void* socket, int option, int value) {
  CHOIR_ZMQ_CALL(zmq_setsockopt(socket, option, &value, sizeof(value)));
  return absl::OkStatus();
}

class ZmqEndpoint : public Endpoint {
 public:
  explicit ZmqEndpoint(EndpointOptions options) : options_(std::move(options)) {}

  ~ZmqEndpoint() override {
    Close();
    // Without a running I/O thread (Init failed) the sockets are still ours to close.
    for (auto& [peer, socket] : dealers_) zmq_close(socket);
    if (router_ != nullptr) zmq_close(router_);
    if (ctx_ != nullptr) zmq_ctx_term(ctx_);  // waits up to the linger for queued messages
    if (event_fd_ >= 0) close(event_fd_);
  }

  absl::Status Init() {
    if (options_.id.empty()) return absl::InvalidArgumentError("endpoint id is empty");
    if (options_.id.size() > 255) return absl::InvalidArgumentError("endpoint id over 255 bytes");
    ctx_ = zmq_ctx_new();
    if (ctx_ == nullptr) return absl::InternalError("zmq_ctx_new failed");
    event_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (event_fd_ < 0) return ErrnoToStatus(errno, "eventfd", options_.id);
    if (!options_.bind_address.empty()) {
      router_ = zmq_socket(ctx_, ZMQ_ROUTER);
      if (router_ == nullptr) return absl::InternalError("zmq_socket(ROUTER) failed");
      RETURN_IF_ERROR(ConfigureSocket(router_));
      RETURN_IF_ERROR(SetIntOption(router_, ZMQ_ROUTER_MANDATORY, 1));
      RETURN_IF_ERROR(SetIntOption(router_, ZMQ_ROUTER_HANDOVER, 1));
      CHOIR_ZMQ_CALL(zmq_bind(router_, options_.bind_address.c_str()));
      char bound[512];
      size_t size = sizeof(bound);
      CHOIR_ZMQ_CALL(zmq_getsockopt(router_, ZMQ_LAST_ENDPOINT, bound, &size));
      address_ = std::string(bound, strnlen(bound, size));
    }
    io_thread_ = std::thread([this] { IoLoop(); });
    return absl::OkStatus();
  }

  const std::string& id() const override { return options_.id; }
  std::string address() const override { return address_; }

  absl::Status AddPeer(const std::string& peer, const std::string& address) override {
    if (peer.empty()) return absl::InvalidArgumentError("empty peer id");
    Command command;
    command.type = Command::kAddPeer;
    command.peer = peer;
    command.address = address;
    return Run(&command);
  }

  absl::Status Send(const std::string& to, Message message) override {
    Command command;
    command.type = Command::kSend;
    command.peer = to;
    command.message = std::move(message);
    return Run(&command);
  }

  absl::StatusOr<Message> Receive(absl::Time deadline) override {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [this] { return closed_ || !inbox_.empty(); };
    if (deadline == absl::InfiniteFuture()) {
      inbox_cv_.wait(lock, ready);
    } else {
      auto until =
          std::chrono::steady_clock::now() +
          absl::ToChronoNanoseconds(std::max(deadline - absl::Now(), absl::ZeroDuration()));
      inbox_cv_.wait_until(lock, until, ready);
    }
    if (closed_) return absl::UnavailableError(absl::StrCat("endpoint ", id(), " is closed"));
    if (inbox_.empty()) {
      return absl::DeadlineExceededError(
          absl::StrCat("endpoint ", id(), ": no message before the deadline"));
    }
    Message message = std::move(inbox_.front());
    inbox_.pop_front();
    return message;
  }

  void Close() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      inbox_.clear();
    }
    inbox_cv_.notify_all();
    Wake();
    std::call_once(join_once_, [this] {
      if (io_thread_.joinable()) io_thread_.join();
    });
  }

 private:
  struct Command {
    enum Type { kSend, kAddPeer } type;
    std::string peer;
    std::string address;
    Message message;
    std::promise<absl::Status> done;
  };

  absl::Status ConfigureSocket(void* socket) {
    RETURN_IF_ERROR(SetIntOption(socket, ZMQ_LINGER,
                                 static_cast<int>(absl::ToInt64Milliseconds(options_.linger))));
    RETURN_IF_ERROR(SetIntOption(socket, ZMQ_SNDHWM, options_.high_water_mark));
    RETURN_IF_ERROR(SetIntOption(socket, ZMQ_RCVHWM, options_.high_water_mark));
    return absl::OkStatus();
  }

  void Wake() {
    if (event_fd_ < 0) return;
    uint64_t one = 1;
    if (write(event_fd_, &one, sizeof(one)) < 0 && errno != EAGAIN) {
      PLOG(ERROR) << "endpoint " << id() << ": eventfd write";
    }
  }

  // Queues `command` for the I/O thread and waits for its result.
  absl::Status Run(Command* command) {
    std::future<absl::Status> result = command->done.get_future();
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return absl::UnavailableError(absl::StrCat("endpoint ", id(), " is closed"));
      commands_.push_back(command);
    }
    Wake();
    return result.get();
  }

  // ---- I/O thread only below this line.

  void IoLoop() {
    std::vector<zmq_pollitem_t> items;
    std::vector<std::string> item_peer;  // per item: the DEALER's peer; "" for the ROUTER
    while (true) {
      items.clear();
      item_peer.clear();
      items.push_back(zmq_pollitem_t{nullptr, event_fd_, ZMQ_POLLIN, 0});
      item_peer.emplace_back();
      if (router_ != nullptr) {
        items.push_back(zmq_pollitem_t{router_, 0, ZMQ_POLLIN, 0});
        item_peer.emplace_back();
      }
      for (const auto& [peer, socket] : dealers_) {
        items.push_back(zmq_pollitem_t{socket, 0, ZMQ_POLLIN, 0});
        item_peer.push_back(peer);
      }
      if (zmq_poll(items.data(), static_cast<int>(items.size()), -1) < 0) {
        if (zmq_errno() == EINTR) continue;
        LOG(ERROR) << "endpoint " << id() << ": zmq_poll: " << zmq_strerror(zmq_errno());
        break;
      }
      if (items[0].revents & ZMQ_POLLIN) {
        uint64_t count;
        if (read(event_fd_, &count, sizeof(count)) < 0 && errno != EAGAIN) {
          PLOG(ERROR) << "endpoint " << id() << ": eventfd read";
        }
      }
      std::deque<Command*> commands;
      bool closing;
      {
        std::lock_guard<std::mutex> lock(mu_);
        commands.swap(commands_);
        closing = closed_;
      }
      for (Command* command : commands) {
        absl::Status status = command->type == Command::kSend
                                  ? DoSend(command->peer, &command->message)
                                  : DoAddPeer(command->peer, command->address);
        command->done.set_value(std::move(status));
      }
      if (closing) break;
      for (size_t i = 1; i < items.size(); ++i) {
        if (items[i].revents & ZMQ_POLLIN) {
          DrainSocket(items[i].socket, items[i].socket == router_ ? nullptr : &item_peer[i]);
        }
      }
    }
    // Commands queued after the loop's last look are failed (Run refuses new ones once closed).
    std::deque<Command*> rest;
    {
      std::lock_guard<std::mutex> lock(mu_);
      rest.swap(commands_);
      closed_ = true;
    }
    for (Command* command : rest) {
      command->done.set_value(absl::UnavailableError(absl::StrCat("endpoint ", id(), " closed")));
    }
    inbox_cv_.notify_all();
    for (auto& [peer, socket] : dealers_) zmq_close(socket);
    dealers_.clear();
    if (router_ != nullptr) zmq_close(router_);
    router_ = nullptr;
  }

  absl::Status DoAddPeer(const std::string& peer, const std::string& address) {
    auto it = dealers_.find(peer);
    if (it != dealers_.end()) {
      zmq_close(it->second);
      dealers_.erase(it);
    }
    peers_[peer] = address;
    if (address.empty()) return absl::OkStatus();
    void* dealer = zmq_socket(ctx_, ZMQ_DEALER);
    if (dealer == nullptr) return absl::InternalError("zmq_socket(DEALER) failed");
    absl::Status status = ConfigureSocket(dealer);
    if (status.ok()) {
      status = [&]() -> absl::Status {
        CHOIR_ZMQ_CALL(zmq_setsockopt(dealer, ZMQ_ROUTING_ID, id().data(), id().size()));
        CHOIR_ZMQ_CALL(zmq_connect(dealer, address.c_str()));
        return absl::OkStatus();
      }();
    }
    if (!status.ok()) {
      zmq_close(dealer);
      peers_.erase(peer);
      return Annotate(status, absl::StrCat("connect to peer '", peer, "' at ", address));
    }
    dealers_[peer] = dealer;
    return absl::OkStatus();
  }

  absl::Status DoSend(const std::string& to, Message* message) {
    if (!peers_.contains(to)) {
      return absl::NotFoundError(
          absl::StrCat("peer '", to, "' is not in the address book of '", id(), "'"));
    }
    auto dealer = dealers_.find(to);
    void* socket = dealer != dealers_.end() ? dealer->second : router_;
    if (socket == nullptr) {
      return absl::UnavailableError(absl::StrCat(
          "no route to peer '", to, "': it has no address and '", id(), "' has no ROUTER"));
    }
    const size_t frames = message->frames.size();
    if (socket == router_) {
      if (zmq_send(socket, to.data(), to.size(), ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) {
        int err = zmq_errno();
        return Annotate(
            transport_internal::ZmqErrorToStatus(err, "zmq_send(routing id)", ""),
            absl::StrCat("send to peer '", to, "'", err == EHOSTUNREACH ? " (not connected)" : ""));
      }
    }
    std::string header = message->header.SerializeAsString();
    // After the first part ZeroMQ accepts the rest of a multipart message atomically.
    if (zmq_send(socket, header.data(), header.size(),
                 (frames > 0 ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
      return Annotate(transport_internal::ZmqErrorToStatus(zmq_errno(), "zmq_send(header)", ""),
                      absl::StrCat("send to peer '", to, "'"));
    }
    for (size_t i = 0; i < frames; ++i) {
      const Frame& frame = message->frames[i];
      zmq_msg_t part;
      if (frame.size() == 0) {
        zmq_msg_init(&part);
      } else {
        auto* hint = new std::shared_ptr<const void>(frame.owner());
        zmq_msg_init_data(&part, const_cast<char*>(frame.data()), frame.size(), &FreeFrameOwner,
                          hint);
      }
      if (zmq_msg_send(&part, socket, (i + 1 < frames ? ZMQ_SNDMORE : 0) | ZMQ_DONTWAIT) < 0) {
        int err = zmq_errno();
        zmq_msg_close(&part);
        return Annotate(transport_internal::ZmqErrorToStatus(err, "zmq_msg_send(frame)", ""),
                        absl::StrCat("send to peer '", to, "'"));
      }
    }
    return absl::OkStatus();
  }

  // Reads up to a batch of messages from a readable socket. `dealer_peer` names the peer of a
  // DEALER; nullptr for the ROUTER, whose first part names the sender.
  void DrainSocket(void* socket, const std::string* dealer_peer) {
    for (int batch = 0; batch < 256; ++batch) {
      std::vector<std::shared_ptr<ZmqMsg>> parts;
      auto first = std::make_shared<ZmqMsg>();
      if (zmq_msg_recv(&first->msg, socket, ZMQ_DONTWAIT) < 0) {
        if (zmq_errno() != EAGAIN) {
          LOG(ERROR) << "endpoint " << id() << ": zmq_msg_recv: " << zmq_strerror(zmq_errno());
        }
        return;
      }
      bool more = zmq_msg_more(&first->msg);
      parts.push_back(std::move(first));
      while (more) {
        auto part = std::make_shared<ZmqMsg>();
        if (zmq_msg_recv(&part->msg, socket, 0) < 0) {
          LOG(ERROR) << "endpoint " << id() << ": zmq_msg_recv: " << zmq_strerror(zmq_errno());
          return;
        }
        more = zmq_msg_more(&part->msg);
        parts.push_back(std::move(part));
      }
      HandleIncoming(std::move(parts), dealer_peer);
    }
  }

  void HandleIncoming(std::vector<std::shared_ptr<ZmqMsg>> parts, const std::string* dealer_peer) {
    size_t next = 0;
    std::string from;
    if (dealer_peer != nullptr) {
      from = *dealer_peer;
    } else {
      from.assign(static_cast<const char*>(zmq_msg_data(&parts[0]->msg)),
                  zmq_msg_size(&parts[0]->msg));
      next = 1;
    }
    if (next >= parts.size()) {
      transport_internal::Reject(options_, from, absl::InvalidArgumentError("no header frame"));
      return;
    }
    Message message;
    zmq_msg_t& header = parts[next]->msg;
    if (!message.header.ParseFromArray(zmq_msg_data(&header),
                                       static_cast<int>(zmq_msg_size(&header)))) {
      transport_internal::Reject(options_, from,
                                 absl::InvalidArgumentError("header frame does not parse"));
      return;
    }
    absl::Status envelope =
        transport_internal::CheckEnvelope(message.header, from, peers_.contains(from));
    if (!envelope.ok()) {
      transport_internal::Reject(options_, from, envelope);
      return;
    }
    for (size_t i = next + 1; i < parts.size(); ++i) {
      int index = static_cast<int>(i - next - 1);
      ElementType type = index < message.header.frames_size() ? message.header.frames(index).type()
                                                              : ELEMENT_BYTES;
      zmq_msg_t* msg = &parts[i]->msg;
      message.frames.emplace_back(std::shared_ptr<const void>(parts[i], msg), zmq_msg_data(msg),
                                  zmq_msg_size(msg), type);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return;
      inbox_.push_back(std::move(message));
    }
    inbox_cv_.notify_one();
  }

  const EndpointOptions options_;
  void* ctx_ = nullptr;
  int event_fd_ = -1;
  std::string address_;  // set before the I/O thread starts

  // Owned by the I/O thread once it runs.
  void* router_ = nullptr;
  absl::flat_hash_map<std::string, void*> dealers_;      // peer -> DEALER
  absl::flat_hash_map<std::string, std::string> peers_;  // address book: peer -> address

  std::mutex mu_;
  std::condition_variable inbox_cv_;
  bool closed_ = false;            // guarded by mu_
  std::deque<Command*> commands_;  // guarded by mu_
  std::deque<Message> inbox_;      // guarded by mu_
  std::thread io_thread_;
  std::once_flag join_once_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Endpoint>> NewZmqEndpoint(EndpointOptions options) {
  auto endpoint = std::make_unique<ZmqEndpoint>(std::move(options));
  RETURN_IF_ERROR(endpoint->Init());
  return std::unique_ptr<Endpoint>(std::move(endpoint));
}

}  // namespace transport
}  // namespace choir
