// Fault-injecting endpoint (core/transport.h): drops, duplicates or delays outgoing messages
// of any endpoint as a FaultInjector decides.
//
// Threads: Send runs on the callers' threads and asks the injector (its own mutex) what to do;
// delayed messages wait in a queue that one timer thread, started on the first delay, sends
// when due (the send happens with no lock held). Receive, AddPeer and Close pass through.
#include <algorithm>
#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>

#include "absl/strings/str_cat.h"
#include "core/transport.h"
#include "glog/logging.h"

namespace choir {
namespace transport {

FaultInjector::FaultInjector(Options options) : options_(options), rng_state_(options.seed) {}

void FaultInjector::DropNext(const std::string& peer, MessageKind kind, int count) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_.push_back(Rule{peer, kind, Action::kDrop, absl::ZeroDuration(), count});
}

void FaultInjector::DuplicateNext(const std::string& peer, MessageKind kind, int count) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_.push_back(Rule{peer, kind, Action::kDuplicate, absl::ZeroDuration(), count});
}

void FaultInjector::DelayNext(const std::string& peer, MessageKind kind, absl::Duration delay,
                              int count) {
  std::lock_guard<std::mutex> lock(mu_);
  rules_.push_back(Rule{peer, kind, Action::kDelay, delay, count});
}

FaultInjector::Stats FaultInjector::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return stats_;
}

FaultInjector::Decision FaultInjector::Decide(const std::string& peer, MessageKind kind) {
  std::lock_guard<std::mutex> lock(mu_);
  Decision decision;
  auto rule = std::find_if(rules_.begin(), rules_.end(), [&](const Rule& r) {
    return r.peer == peer && r.kind == kind && r.remaining > 0;
  });
  if (rule != rules_.end()) {
    decision.action = rule->action;
    decision.delay = rule->delay;
    if (--rule->remaining <= 0) rules_.erase(rule);
  } else if (options_.drop_probability > 0 || options_.duplicate_probability > 0 ||
             options_.delay_probability > 0) {
    // splitmix64: a small, seeded, reproducible generator.
    uint64_t z = (rng_state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u = static_cast<double>(z >> 11) * 0x1.0p-53;
    if (u < options_.drop_probability) {
      decision.action = Action::kDrop;
    } else if (u < options_.drop_probability + options_.duplicate_probability) {
      decision.action = Action::kDuplicate;
    } else if (u < options_.drop_probability + options_.duplicate_probability +
                       options_.delay_probability) {
      decision.action = Action::kDelay;
      decision.delay = options_.delay;
    }
  }
  switch (decision.action) {
    case Action::kDrop:
      ++stats_.dropped;
      break;
    case Action::kDuplicate:
      ++stats_.duplicated;
      break;
    case Action::kDelay:
      ++stats_.delayed;
      break;
    case Action::kDeliver:
      break;
  }
  return decision;
}

namespace {

class FaultInjectingEndpoint : public Endpoint {
 public:
  FaultInjectingEndpoint(std::unique_ptr<Endpoint> base, std::shared_ptr<FaultInjector> faults)
      : base_(std::move(base)), faults_(std::move(faults)) {}
  ~FaultInjectingEndpoint() override { Close(); }

  const std::string& id() const override { return base_->id(); }
  std::string address() const override { return base_->address(); }
  absl::Status AddPeer(const std::string& peer, const std::string& address) override {
    return base_->AddPeer(peer, address);
  }
  absl::StatusOr<Message> Receive(absl::Time deadline) override { return base_->Receive(deadline); }

  absl::Status Send(const std::string& to, Message message) override {
    FaultInjector::Decision decision = faults_->Decide(to, message.header.kind());
    const uint64_t request_id = message.header.request_id();
    switch (decision.action) {
      case FaultInjector::Action::kDeliver:
        return base_->Send(to, std::move(message));
      case FaultInjector::Action::kDrop:
        LOG(INFO) << "fault injection: " << id() << " drops message " << request_id << " to " << to;
        return absl::OkStatus();
      case FaultInjector::Action::kDuplicate: {
        LOG(INFO) << "fault injection: " << id() << " duplicates message " << request_id << " to "
                  << to;
        Message copy = message;  // shares the frames' bytes
        absl::Status first = base_->Send(to, std::move(copy));
        if (!first.ok()) return first;
        absl::Status second = base_->Send(to, std::move(message));
        if (!second.ok()) LOG(WARNING) << "fault injection: duplicate not sent: " << second;
        return absl::OkStatus();
      }
      case FaultInjector::Action::kDelay:
        LOG(INFO) << "fault injection: " << id() << " delays message " << request_id << " to " << to
                  << " by " << decision.delay;
        return Delay(to, std::move(message), decision.delay);
    }
    return absl::InternalError("unreachable");
  }

  void Close() override {
    std::thread timer;
    {
      std::lock_guard<std::mutex> lock(mu_);
      closed_ = true;
      delayed_.clear();
      timer.swap(timer_);
    }
    cv_.notify_all();
    if (timer.joinable()) timer.join();
    base_->Close();
  }

 private:
  struct Delayed {
    std::string to;
    Message message;
  };

  absl::Status Delay(const std::string& to, Message message, absl::Duration delay) {
    auto due = std::chrono::steady_clock::now() + absl::ToChronoNanoseconds(delay);
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (closed_) return absl::UnavailableError(absl::StrCat("endpoint ", id(), " is closed"));
      delayed_.emplace(due, Delayed{to, std::move(message)});
      if (!timer_.joinable()) timer_ = std::thread([this] { TimerLoop(); });
    }
    cv_.notify_all();
    return absl::OkStatus();
  }

  void TimerLoop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!closed_) {
      if (delayed_.empty()) {
        cv_.wait(lock);
        continue;
      }
      auto first = delayed_.begin();
      // A copy: Close() may clear delayed_ while this waits (wait_until reads its deadline
      // again after waking).
      const std::chrono::steady_clock::time_point due = first->first;
      if (std::chrono::steady_clock::now() < due) {
        cv_.wait_until(lock, due);
        continue;
      }
      Delayed item = std::move(first->second);
      delayed_.erase(first);
      lock.unlock();
      absl::Status sent = base_->Send(item.to, std::move(item.message));
      if (!sent.ok()) LOG(WARNING) << "fault injection: delayed message not sent: " << sent;
      lock.lock();
    }
  }

  const std::unique_ptr<Endpoint> base_;
  const std::shared_ptr<FaultInjector> faults_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool closed_ = false;                                                    // guarded by mu_
  std::multimap<std::chrono::steady_clock::time_point, Delayed> delayed_;  // guarded by mu_
  std::thread timer_;                                                      // guarded by mu_
};

}  // namespace

std::unique_ptr<Endpoint> NewFaultInjectingEndpoint(std::unique_ptr<Endpoint> base,
                                                    std::shared_ptr<FaultInjector> faults) {
  return std::make_unique<FaultInjectingEndpoint>(std::move(base), std::move(faults));
}

}  // namespace transport
}  // namespace choir
