// In-process transport: every endpoint is a mailbox in one process (core/transport.h).
//
// Threads: Send runs on the sender's thread and checks and enqueues the message into the
// receiver's mailbox (rejections are logged there, with no lock held); Receive runs on the
// receiver's consumer thread. The network's directory and each mailbox have their own mutex;
// the directory lock is never held while a mailbox lock is taken.
#include <condition_variable>
#include <deque>
#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "core/internal/transport_internal.h"
#include "core/transport.h"

namespace choir {
namespace transport {
namespace {

class Mailbox {
 public:
  explicit Mailbox(EndpointOptions options) : options_(std::move(options)) {}

  const EndpointOptions& options() const { return options_; }

  void AddPeer(const std::string& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    peers_.insert(peer);
  }
  bool Knows(const std::string& peer) {
    std::lock_guard<std::mutex> lock(mu_);
    return peers_.contains(peer);
  }

  // UNAVAILABLE when closed. A rejected message is dropped after the log line and OK is
  // returned, as a network would.
  absl::Status Deliver(const std::string& from, Message message) {
    absl::Status reject;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return absl::UnavailableError(absl::StrCat("peer ", options_.id, " is closed"));
      reject = transport_internal::CheckEnvelope(message.header, from, peers_.contains(from));
      if (reject.ok()) inbox_.push_back(std::move(message));
    }
    if (!reject.ok()) {
      transport_internal::Reject(options_, from, reject);
      return absl::OkStatus();
    }
    cv_.notify_one();
    return absl::OkStatus();
  }

  absl::StatusOr<Message> Receive(absl::Time deadline) {
    std::unique_lock<std::mutex> lock(mu_);
    auto ready = [this] { return closed_ || !inbox_.empty(); };
    if (deadline == absl::InfiniteFuture()) {
      cv_.wait(lock, ready);
    } else {
      // Measured on the steady clock; the absl::Time deadline only sets the remaining time.
      auto until =
          std::chrono::steady_clock::now() +
          absl::ToChronoNanoseconds(std::max(deadline - absl::Now(), absl::ZeroDuration()));
      cv_.wait_until(lock, until, ready);
    }
    if (closed_) {
      return absl::UnavailableError(absl::StrCat("endpoint ", options_.id, " is closed"));
    }
    if (inbox_.empty()) {
      return absl::DeadlineExceededError(
          absl::StrCat("endpoint ", options_.id, ": no message before the deadline"));
    }
    Message message = std::move(inbox_.front());
    inbox_.pop_front();
    return message;
  }

  void Close() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      inbox_.clear();
    }
    cv_.notify_all();
  }

 private:
  const EndpointOptions options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;                     // guarded by mu_
  absl::flat_hash_set<std::string> peers_;  // guarded by mu_
  std::deque<Message> inbox_;               // guarded by mu_
};

}  // namespace

class InProcessNetwork::Impl {
 public:
  absl::Status Register(const std::string& id, std::shared_ptr<Mailbox> mailbox) {
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = mailboxes_.emplace(id, mailbox);
    if (!inserted) {
      return absl::AlreadyExistsError(absl::StrCat("an endpoint '", id, "' already exists"));
    }
    return absl::OkStatus();
  }
  void Unregister(const std::string& id, const Mailbox* mailbox) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = mailboxes_.find(id);
    if (it != mailboxes_.end() && it->second.get() == mailbox) mailboxes_.erase(it);
  }
  std::shared_ptr<Mailbox> Find(const std::string& id) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = mailboxes_.find(id);
    return it == mailboxes_.end() ? nullptr : it->second;
  }

 private:
  std::mutex mu_;
  absl::flat_hash_map<std::string, std::shared_ptr<Mailbox>> mailboxes_;  // guarded by mu_
};

namespace {

class InProcessEndpoint : public Endpoint {
 public:
  InProcessEndpoint(std::shared_ptr<InProcessNetwork::Impl> network,
                    std::shared_ptr<Mailbox> mailbox)
      : network_(std::move(network)), mailbox_(std::move(mailbox)) {}
  ~InProcessEndpoint() override { Close(); }

  const std::string& id() const override { return mailbox_->options().id; }
  std::string address() const override { return absl::StrCat("inproc:", id()); }

  absl::Status AddPeer(const std::string& peer, const std::string& address) override {
    if (peer.empty()) return absl::InvalidArgumentError("empty peer id");
    mailbox_->AddPeer(peer);
    return absl::OkStatus();
  }

  absl::Status Send(const std::string& to, Message message) override {
    if (!mailbox_->Knows(to)) {
      return absl::NotFoundError(
          absl::StrCat("peer '", to, "' is not in the address book of '", id(), "'"));
    }
    std::shared_ptr<Mailbox> target = network_->Find(to);
    if (target == nullptr) {
      return absl::UnavailableError(absl::StrCat("peer '", to, "' is not reachable"));
    }
    return target->Deliver(id(), std::move(message));
  }

  absl::StatusOr<Message> Receive(absl::Time deadline) override {
    return mailbox_->Receive(deadline);
  }

  void Close() override {
    mailbox_->Close();
    network_->Unregister(id(), mailbox_.get());
  }

 private:
  const std::shared_ptr<InProcessNetwork::Impl> network_;
  const std::shared_ptr<Mailbox> mailbox_;
};

}  // namespace

InProcessNetwork::InProcessNetwork() : impl_(std::make_shared<Impl>()) {}
InProcessNetwork::~InProcessNetwork() = default;

absl::StatusOr<std::unique_ptr<Endpoint>> InProcessNetwork::NewEndpoint(EndpointOptions options) {
  if (options.id.empty()) return absl::InvalidArgumentError("endpoint id is empty");
  std::string id = options.id;
  auto mailbox = std::make_shared<Mailbox>(std::move(options));
  absl::Status registered = impl_->Register(id, mailbox);
  if (!registered.ok()) return registered;
  return std::unique_ptr<Endpoint>(new InProcessEndpoint(impl_, std::move(mailbox)));
}

}  // namespace transport
}  // namespace choir
