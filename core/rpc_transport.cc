// RpcClient and RpcServer over an Endpoint (core/transport.h). Thread maps are in the header.
#include <algorithm>
#include <chrono>
#include <random>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "core/transport.h"
#include "glog/logging.h"

namespace choir {
namespace transport {
namespace {

absl::StatusCode CodeFromWire(int32_t code) {
  if (code < 0 || code > static_cast<int32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::StatusCode::kUnknown;
  }
  return static_cast<absl::StatusCode>(code);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// RpcClient

struct RpcClient::PendingCall {
  std::string peer;
  std::string method;
  std::condition_variable cv;
  bool done = false;                                                  // guarded by RpcClient::mu_
  absl::StatusOr<Response> result = absl::UnknownError("no result");  // guarded by mu_
};

RpcClient::RpcClient(std::unique_ptr<Endpoint> endpoint, std::function<absl::Status()> abort_check,
                     absl::Duration abort_poll)
    : endpoint_(std::move(endpoint)),
      abort_check_(std::move(abort_check)),
      abort_poll_(std::max(abort_poll, absl::Milliseconds(1))) {
  // A random first id, so that a restarted client does not reuse the ids of its predecessor
  // while the predecessor's responses may still arrive. 64 bits never wrap in practice.
  std::random_device random;
  next_request_id_ = (static_cast<uint64_t>(random()) << 32) ^ random();
  receive_thread_ = std::thread([this] { ReceiveLoop(); });
}

RpcClient::~RpcClient() { Shutdown(); }

absl::StatusOr<Response> RpcClient::Call(const std::string& peer, const std::string& method,
                                         std::vector<Frame> frames, absl::Time deadline) {
  absl::StatusOr<Started> started = Start(peer, method, std::move(frames), deadline);
  if (!started.ok()) return started.status();
  return Await(*started, deadline);
}

absl::Status RpcClient::CallAll(
    std::vector<Request> requests, absl::Time deadline,
    absl::FunctionRef<absl::Status(size_t, absl::StatusOr<Response>)> on_response) {
  std::vector<Started> started;
  started.reserve(requests.size());
  absl::Status status;
  for (Request& request : requests) {
    absl::StatusOr<Started> call =
        Start(request.peer, request.method, std::move(request.frames), deadline);
    if (!call.ok()) {
      status = on_response(started.size(), call.status());
      if (status.ok()) status = call.status();
      break;
    }
    started.push_back(*std::move(call));
  }
  size_t next = 0;
  for (; status.ok() && next < started.size(); ++next) {
    status = on_response(next, Await(started[next], deadline));
  }
  // After a failure: forget the calls still in flight; their responses are dropped.
  if (next < started.size()) {
    std::lock_guard<std::mutex> lock(mu_);
    for (size_t i = next; i < started.size(); ++i) pending_.erase(started[i].id);
  }
  return status;
}

absl::StatusOr<RpcClient::Started> RpcClient::Start(const std::string& peer,
                                                    const std::string& method,
                                                    std::vector<Frame> frames,
                                                    absl::Time deadline) {
  Started started;
  started.call = std::make_shared<PendingCall>();
  started.call->peer = peer;
  started.call->method = method;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_) {
      return absl::UnavailableError(
          absl::StrCat("call ", method, " to peer ", peer, ": client is shut down"));
    }
    started.id = next_request_id_++;
    if (started.id == 0) started.id = next_request_id_++;
    pending_.emplace(started.id, started.call);
    ++stats_.calls;
  }
  Message request;
  request.header.set_kind(KIND_REQUEST);
  request.header.set_request_id(started.id);
  request.header.set_method(method);
  request.header.set_sender(endpoint_->id());
  if (deadline != absl::InfiniteFuture()) {
    request.header.set_deadline_unix_micros(absl::ToUnixMicros(deadline));
  }
  request.frames = std::move(frames);
  FinishHeader(&request);

  absl::Status sent = endpoint_->Send(peer, std::move(request));
  if (!sent.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.erase(started.id);
    return Annotate(sent, absl::StrCat("call ", method, " to peer ", peer));
  }
  return started;
}

absl::StatusOr<Response> RpcClient::Await(const Started& started, absl::Time deadline) {
  PendingCall& call = *started.call;
  std::unique_lock<std::mutex> lock(mu_);
  auto done = [&call] { return call.done; };
  if (abort_check_) {
    // Wait in slices of abort_poll_, asking the check between them.
    while (!done()) {
      const absl::Duration left = deadline - absl::Now();
      if (left <= absl::ZeroDuration()) break;
      call.cv.wait_for(lock, absl::ToChronoNanoseconds(std::min(left, abort_poll_)), done);
      if (done()) break;
      lock.unlock();
      const absl::Status abort = abort_check_();
      lock.lock();
      if (!abort.ok() && !done()) {
        pending_.erase(started.id);
        ++stats_.abandoned;
        return absl::Status(abort.code(), absl::StrCat("call ", call.method, " to peer ", call.peer,
                                                       " (request ", started.id,
                                                       ") abandoned: ", abort.message()));
      }
    }
  } else if (deadline == absl::InfiniteFuture()) {
    call.cv.wait(lock, done);
  } else {
    auto until = std::chrono::steady_clock::now() +
                 absl::ToChronoNanoseconds(std::max(deadline - absl::Now(), absl::ZeroDuration()));
    call.cv.wait_until(lock, until, done);
  }
  if (!call.done) {
    pending_.erase(started.id);
    ++stats_.deadline_exceeded;
    return absl::DeadlineExceededError(absl::StrCat("call ", call.method, " to peer ", call.peer,
                                                    " (request ", started.id,
                                                    ") passed its deadline"));
  }
  return std::move(call.result);
}

void RpcClient::ReceiveLoop() {
  while (true) {
    absl::StatusOr<Message> message = endpoint_->Receive(absl::InfiniteFuture());
    if (!message.ok()) {
      if (!absl::IsDeadlineExceeded(message.status())) {
        FailAllPending(Annotate(message.status(), "client endpoint stopped"));
        return;
      }
      continue;
    }
    Deliver(*std::move(message));
  }
}

void RpcClient::Deliver(Message message) {
  const Header& header = message.header;
  const uint64_t id = header.request_id();
  if (header.kind() != KIND_RESPONSE) {
    LOG(WARNING) << "rpc client " << endpoint_->id() << ": dropping a non-response (kind "
                 << header.kind() << ") from " << header.sender();
    return;
  }
  std::shared_ptr<PendingCall> call;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = pending_.find(id);
    if (it != pending_.end() && it->second->peer == header.sender()) {
      call = std::move(it->second);
      pending_.erase(it);
    } else {
      ++stats_.dropped_responses;
    }
  }
  if (call == nullptr) {
    LOG(WARNING) << "rpc client " << endpoint_->id() << ": dropping response " << id << " from "
                 << header.sender() << " (" << header.method()
                 << "): no call waits for it (late after its deadline, or a duplicate)";
    return;
  }
  absl::StatusOr<Response> result;
  absl::Status valid = ValidateMessage(message);
  std::string context = absl::StrCat("peer ", call->peer, ", method ", call->method);
  if (!valid.ok()) {
    result = absl::DataLossError(absl::StrCat(context, ": malformed response: ", valid.message()));
  } else if (header.status_code() != 0) {
    result = absl::Status(CodeFromWire(header.status_code()),
                          absl::StrCat(context, ": ", header.status_message()));
  } else {
    result = std::move(message);
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    call->result = std::move(result);
    call->done = true;
  }
  call->cv.notify_one();
}

void RpcClient::FailAllPending(const absl::Status& status) {
  absl::flat_hash_map<uint64_t, std::shared_ptr<PendingCall>> pending;
  {
    std::lock_guard<std::mutex> lock(mu_);
    shut_down_ = true;
    pending.swap(pending_);
    for (auto& [id, call] : pending) {
      call->result = absl::UnavailableError(
          absl::StrCat("call ", call->method, " to peer ", call->peer, ": ", status.message()));
      call->done = true;
    }
  }
  for (auto& [id, call] : pending) call->cv.notify_one();
}

void RpcClient::Shutdown() {
  FailAllPending(absl::UnavailableError("client shut down"));
  endpoint_->Close();
  if (receive_thread_.joinable() && receive_thread_.get_id() != std::this_thread::get_id()) {
    receive_thread_.join();
  }
}

RpcClientStats RpcClient::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  RpcClientStats stats = stats_;
  stats.pending = pending_.size();
  return stats;
}

// ---------------------------------------------------------------------------------------------
// RpcServer

RpcServer::RpcServer(std::unique_ptr<Endpoint> endpoint, RpcServerOptions options)
    : endpoint_(std::move(endpoint)), options_(options) {}

RpcServer::~RpcServer() { Shutdown(); }

absl::Status RpcServer::Register(const std::string& method, RpcHandler handler) {
  if (method.empty()) return absl::InvalidArgumentError("empty method name");
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stopping_) {
    return absl::FailedPreconditionError("Register after Start: " + method);
  }
  if (!handlers_.emplace(method, std::move(handler)).second) {
    return absl::AlreadyExistsError("a handler for " + method + " is registered");
  }
  return absl::OkStatus();
}

absl::Status RpcServer::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_ || stopping_) return absl::FailedPreconditionError("server started or stopped");
  started_ = true;
  receive_thread_ = std::thread([this] { ReceiveLoop(); });
  for (int i = 0; i < std::max(1, options_.worker_threads); ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
  return absl::OkStatus();
}

void RpcServer::Respond(const std::string& peer, uint64_t request_id, const std::string& method,
                        const absl::Status& status, std::vector<Frame> frames) {
  Message response;
  response.header.set_kind(KIND_RESPONSE);
  response.header.set_request_id(request_id);
  response.header.set_method(method);
  response.header.set_sender(endpoint_->id());
  if (!status.ok()) {
    response.header.set_status_code(static_cast<int32_t>(status.code()));
    response.header.set_status_message(std::string(status.message()));
    frames.clear();
  }
  response.frames = std::move(frames);
  FinishHeader(&response);
  absl::Status sent = endpoint_->Send(peer, std::move(response));
  if (!sent.ok()) {
    LOG(WARNING) << "rpc server " << endpoint_->id() << ": response " << request_id << " ("
                 << method << ") to " << peer << " not sent: " << sent;
  }
}

void RpcServer::ReceiveLoop() {
  while (true) {
    absl::StatusOr<Message> received = endpoint_->Receive(absl::InfiniteFuture());
    if (!received.ok()) {
      if (absl::IsDeadlineExceeded(received.status())) continue;
      return;  // closed
    }
    Message& message = *received;
    const Header& header = message.header;
    const std::string& peer = header.sender();
    if (header.kind() != KIND_REQUEST) {
      LOG(WARNING) << "rpc server " << endpoint_->id() << ": dropping a non-request (kind "
                   << header.kind() << ") from " << peer;
      continue;
    }
    absl::Status valid = ValidateMessage(message);
    if (!valid.ok()) {
      LOG(WARNING) << "rpc server " << endpoint_->id() << ": malformed request "
                   << header.request_id() << " from " << peer << ": " << valid;
      if (header.request_id() != 0) {
        Respond(peer, header.request_id(), header.method(),
                absl::InvalidArgumentError(absl::StrCat("malformed request: ", valid.message())),
                {});
      }
      continue;
    }
    auto handler = handlers_.find(header.method());
    if (handler == handlers_.end()) {
      Respond(peer, header.request_id(), header.method(),
              absl::UnimplementedError(
                  absl::StrCat("no method ", header.method(), " on ", endpoint_->id())),
              {});
      continue;
    }
    Work work;
    work.handler = &handler->second;
    work.request.peer = peer;
    work.request.method = header.method();
    work.request.request_id = header.request_id();
    if (header.deadline_unix_micros() != 0) {
      work.request.deadline = absl::FromUnixMicros(header.deadline_unix_micros());
    }
    work.request.frames = std::move(message.frames);
    bool refused = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) {
        refused = true;
      } else {
        work.seq = next_seq_++;
        queue_.push_back(std::move(work));
      }
    }
    if (refused) {
      Respond(peer, header.request_id(), header.method(),
              absl::UnavailableError(absl::StrCat("server ", endpoint_->id(), " is shutting down")),
              {});
      continue;
    }
    work_cv_.notify_one();
  }
}

void RpcServer::WorkerLoop() {
  while (true) {
    Work work;
    {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      work = std::move(queue_.front());
      queue_.pop_front();
      in_flight_.emplace(work.seq,
                         InFlight{work.request.peer, work.request.request_id, work.request.method});
    }
    absl::StatusOr<std::vector<Frame>> result = (*work.handler)(work.request);
    bool answer;
    {
      std::lock_guard<std::mutex> lock(mu_);
      answer = in_flight_.erase(work.seq) > 0;  // Shutdown may have answered already
      if (answer) ++answering_;
    }
    if (!answer) {
      LOG(INFO) << "rpc server " << endpoint_->id() << ": result of request "
                << work.request.request_id << " from " << work.request.peer
                << " dropped: answered UNAVAILABLE at shutdown";
      continue;
    }
    if (result.ok()) {
      Respond(work.request.peer, work.request.request_id, work.request.method, absl::OkStatus(),
              *std::move(result));
    } else {
      Respond(work.request.peer, work.request.request_id, work.request.method, result.status(), {});
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      --answering_;
    }
    answered_cv_.notify_all();
  }
}

void RpcServer::Shutdown() {
  std::deque<Work> queued;
  absl::flat_hash_map<uint64_t, InFlight> in_flight;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
    queued.swap(queue_);
  }
  work_cv_.notify_all();
  const absl::Status unavailable =
      absl::UnavailableError(absl::StrCat("server ", endpoint_->id(), " shut down"));
  for (const Work& work : queued) {
    Respond(work.request.peer, work.request.request_id, work.request.method, unavailable, {});
  }
  {
    // Running handlers answer for themselves if they return within the grace.
    std::unique_lock<std::mutex> lock(mu_);
    answered_cv_.wait_for(lock, absl::ToChronoMilliseconds(kShutdownGrace),
                          [this] { return in_flight_.empty() && answering_ == 0; });
    in_flight.swap(in_flight_);
  }
  for (const auto& [seq, call] : in_flight) {
    Respond(call.peer, call.request_id, call.method, unavailable, {});
  }
  endpoint_->Close();
  if (receive_thread_.joinable()) receive_thread_.join();
  for (std::thread& worker : workers_) worker.join();
  workers_.clear();
}

}  // namespace transport
}  // namespace choir
