// The scheduler and its clients (scheduler/scheduler.h, scheduler/scheduler_client.h): every
// peer a thread of this process, swept over in-process queues and ZeroMQ loopback. Heartbeats
// every 20 ms and a 300 ms timeout keep the failure-detection tests fast (the others use a
// long timeout, so that a stall of a loaded machine declares no one dead); waits for a
// condition have deadlines (WaitForStop, call deadlines), never sleeps.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/transport.h"
#include "gtest/gtest.h"
#include "scheduler/proto/scheduler.pb.h"
#include "scheduler/reweighting.h"
#include "scheduler/scheduler.h"
#include "scheduler/scheduler_client.h"

// ThreadSanitizer reads these in a TSan build (elsewhere the function is unused). Debian's
// libzmq is not instrumented: the buffers it hands between its own threads and ours are
// ordered by its lock-free pipes, which TSan cannot see (as in tests/core/transport_test.cc).
// glibc's tzset (glog's time stamps on several threads) is internally locked.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libzmq.so\n"
         "called_from_lib:libzmq.so\n"
         "race:tzset_internal\n";
}

namespace choir {
namespace {

using transport::Frame;
using transport::RpcClient;
namespace wire = scheduler::wire;

constexpr absl::Duration kHeartbeat = absl::Milliseconds(20);
// The peer and scheduler timeout of the tests about failure detection.
constexpr absl::Duration kTimeout = absl::Milliseconds(300);
// The timeout of the other tests: far above any stall of a loaded machine, so that no peer is
// declared dead by accident.
constexpr absl::Duration kQuietTimeout = absl::Seconds(60);
// How much later than kTimeout a failure may be noticed: the monitor's period (30 ms), a
// heartbeat's wait (75 ms), and scheduling under ThreadSanitizer.
constexpr absl::Duration kMargin = absl::Milliseconds(1500);
// Deadline of calls that should succeed.
constexpr absl::Duration kLong = absl::Seconds(10);

enum class Kind { kInProcess, kZmq };

absl::Time In(absl::Duration d) { return absl::Now() + d; }

// Records rejections reported by the scheduler's endpoint.
struct RejectLog {
  void Add(const transport::Rejection& rejection) {
    std::lock_guard<std::mutex> lock(mu);
    peers.push_back(rejection.peer);
  }
  std::vector<std::string> Peers() {
    std::lock_guard<std::mutex> lock(mu);
    return peers;
  }
  std::mutex mu;
  std::vector<std::string> peers;
};

PeerInfo ServerInfo(int i) {
  return PeerInfo{PeerRole::kServer, i, absl::StrCat("ps", i), absl::StrCat("addr-of-ps", i)};
}
PeerInfo WorkerInfo(int i) { return PeerInfo{PeerRole::kWorker, i, absl::StrCat("w", i), ""}; }

// The endpoint id a peer's scheduler client calls from (its data endpoint's id is ServerInfo /
// WorkerInfo's: the two differ, as they must in one InProcessNetwork).
std::string ControlId(const PeerInfo& peer) { return absl::StrCat("ctl-", peer.id); }

Frame Body(const google::protobuf::MessageLite& message) {
  return Frame(message.SerializeAsString());
}

std::vector<Frame> Frames(Frame a) {
  std::vector<Frame> frames;
  frames.push_back(std::move(a));
  return frames;
}

// `count` and `loss_sum` as a report's three frames (round, counts, loss sums).
std::vector<Frame> ReportFrames(int64_t round, std::vector<int64_t> count,
                                std::vector<double> loss_sum,
                                absl::Duration wait = absl::Seconds(5)) {
  wire::ReportRequest body;
  body.set_round(round);
  body.set_wait_micros(absl::ToInt64Microseconds(wait));
  std::vector<Frame> frames = Frames(Body(body));
  frames.push_back(Frame::FromVector(std::move(count)));
  frames.push_back(Frame::FromVector(std::move(loss_sum)));
  return frames;
}

class SchedulerTest : public ::testing::TestWithParam<Kind> {
 protected:
  void TearDown() override { StopJob(); }

  std::unique_ptr<transport::Endpoint> Make(transport::EndpointOptions options) {
    absl::StatusOr<std::unique_ptr<transport::Endpoint>> endpoint =
        GetParam() == Kind::kInProcess ? network_.NewEndpoint(std::move(options))
                                       : transport::NewZmqEndpoint(std::move(options));
    EXPECT_TRUE(endpoint.ok()) << endpoint.status();
    return endpoint.ok() ? *std::move(endpoint) : nullptr;
  }

  // Tests about failure detection call this first: peers and the scheduler time out after
  // kTimeout instead of kQuietTimeout.
  void DetectFailuresQuickly() { timeout_ = kTimeout; }

  SchedulerOptions Options(int servers, int workers) const {
    SchedulerOptions options;
    options.num_servers = servers;
    options.num_workers = workers;
    options.heartbeat_timeout = timeout_;
    return options;
  }

  // Starts the scheduler "sched" (its endpoint's rejections go to rejects_; `faults`, when
  // given, act on its outgoing messages: its answers).
  void StartScheduler(SchedulerOptions options,
                      std::shared_ptr<transport::FaultInjector> faults = nullptr) {
    transport::EndpointOptions endpoint_options;
    endpoint_options.id = "sched";
    endpoint_options.bind_address = "tcp://127.0.0.1:0";
    endpoint_options.on_reject = [this](const transport::Rejection& r) { rejects_.Add(r); };
    std::unique_ptr<transport::Endpoint> endpoint = Make(std::move(endpoint_options));
    ASSERT_NE(endpoint, nullptr);
    if (faults != nullptr)
      endpoint = transport::NewFaultInjectingEndpoint(std::move(endpoint), faults);
    absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
        Scheduler::Start(std::move(endpoint), options);
    ASSERT_TRUE(scheduler.ok()) << scheduler.status();
    scheduler_ = *std::move(scheduler);
  }

  std::unique_ptr<transport::Endpoint> ClientEndpoint(const std::string& id, bool admit) {
    transport::EndpointOptions options;
    options.id = id;
    options.linger = absl::Milliseconds(50);
    std::unique_ptr<transport::Endpoint> endpoint = Make(std::move(options));
    if (endpoint != nullptr && admit) {
      EXPECT_TRUE(scheduler_->AddPeer(id).ok());
    }
    return endpoint;
  }

  // A client calling from endpoint `id`, admitted by the scheduler unless `admit` is false.
  std::unique_ptr<SchedulerClient> Client(const std::string& id, bool admit = true) {
    std::unique_ptr<transport::Endpoint> endpoint = ClientEndpoint(id, admit);
    if (endpoint == nullptr) return nullptr;
    SchedulerClientOptions options;
    options.scheduler_id = scheduler_->id();
    options.scheduler_address = scheduler_->address();
    options.heartbeat_interval = kHeartbeat;
    options.scheduler_timeout = timeout_;
    options.reply_margin = absl::Milliseconds(100);
    absl::StatusOr<std::unique_ptr<SchedulerClient>> client =
        SchedulerClient::Create(std::move(endpoint), options);
    EXPECT_TRUE(client.ok()) << client.status();
    return client.ok() ? *std::move(client) : nullptr;
  }

  // A raw RPC client calling from `id` (admitted), for requests SchedulerClient never sends.
  std::unique_ptr<RpcClient> RawClient(const std::string& id) {
    std::unique_ptr<transport::Endpoint> endpoint = ClientEndpoint(id, /*admit=*/true);
    EXPECT_TRUE(endpoint->AddPeer(scheduler_->id(), scheduler_->address()).ok());
    return std::make_unique<RpcClient>(std::move(endpoint));
  }
  absl::StatusOr<transport::Response> Raw(RpcClient* client, const char* method,
                                          std::vector<Frame> frames) {
    return client->Call(scheduler_->id(), method, std::move(frames), In(kLong));
  }

  // Registers each client with its PeerInfo, all at once from threads.
  static std::vector<absl::StatusOr<Membership>> RegisterAll(
      const std::vector<std::pair<SchedulerClient*, PeerInfo>>& peers, absl::Time deadline) {
    std::vector<absl::StatusOr<Membership>> results(peers.size(), absl::UnknownError("not run"));
    std::vector<std::thread> threads;
    for (size_t i = 0; i < peers.size(); ++i) {
      threads.emplace_back(
          [&, i] { results[i] = peers[i].first->Register(peers[i].second, deadline); });
    }
    for (std::thread& t : threads) t.join();
    return results;
  }

  // A scheduler and `servers` + `workers` registered clients (servers_, workers_).
  void StartJob(SchedulerOptions options) {
    StartScheduler(options);
    std::vector<std::pair<SchedulerClient*, PeerInfo>> peers;
    for (int i = 0; i < options.num_servers; ++i) {
      servers_.push_back(Client(ControlId(ServerInfo(i))));
      ASSERT_NE(servers_.back(), nullptr);
      peers.emplace_back(servers_.back().get(), ServerInfo(i));
    }
    for (int i = 0; i < options.num_workers; ++i) {
      workers_.push_back(Client(ControlId(WorkerInfo(i))));
      ASSERT_NE(workers_.back(), nullptr);
      peers.emplace_back(workers_.back().get(), WorkerInfo(i));
    }
    for (absl::StatusOr<Membership>& result : RegisterAll(peers, In(kLong))) {
      ASSERT_TRUE(result.ok()) << result.status();
      memberships_.push_back(*std::move(result));
    }
  }

  void StopJob() {
    servers_.clear();
    workers_.clear();
    memberships_.clear();
    scheduler_.reset();
  }

  // Every client except `except` (a pointer into servers_ or workers_, or null).
  std::vector<SchedulerClient*> Others(const SchedulerClient* except) {
    std::vector<SchedulerClient*> out;
    for (auto* list : {&servers_, &workers_}) {
      for (auto& c : *list) {
        if (c.get() != except) out.push_back(c.get());
      }
    }
    return out;
  }

  transport::InProcessNetwork network_;
  absl::Duration timeout_ = kQuietTimeout;
  RejectLog rejects_;
  std::unique_ptr<Scheduler> scheduler_;
  std::vector<std::unique_ptr<SchedulerClient>> servers_;
  std::vector<std::unique_ptr<SchedulerClient>> workers_;
  std::vector<Membership> memberships_;
};

// ---------------------------------------------------------------------------------------------
// Rendezvous

TEST_P(SchedulerTest, RendezvousGivesEveryPeerTheCompleteMembershipInIndexOrder) {
  SchedulerOptions options = Options(2, 3);
  options.reweighting.policy = scheduler::ReweightingPolicy::kAdaptive;
  options.reweighting.every_steps = 7;
  StartJob(options);
  ASSERT_EQ(memberships_.size(), 5u);
  for (const Membership& m : memberships_) {
    ASSERT_EQ(m.servers.size(), 2u);
    ASSERT_EQ(m.workers.size(), 3u);
    for (int i = 0; i < 2; ++i) {
      EXPECT_EQ(m.servers[i].role, PeerRole::kServer);
      EXPECT_EQ(m.servers[i].index, i);
      EXPECT_EQ(m.servers[i].id, absl::StrCat("ps", i));
      EXPECT_EQ(m.servers[i].address, absl::StrCat("addr-of-ps", i));
    }
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(m.workers[i].role, PeerRole::kWorker);
      EXPECT_EQ(m.workers[i].index, i);
      EXPECT_EQ(m.workers[i].id, absl::StrCat("w", i));
      EXPECT_EQ(m.workers[i].address, "");
    }
    EXPECT_EQ(m.reweight_every_steps, 7);
    EXPECT_EQ(m.reweighting_policy, "adaptive");
  }
  for (SchedulerClient* client : Others(nullptr)) EXPECT_TRUE(client->JobStatus().ok());
  EXPECT_EQ(scheduler_->state(), JobState::kRunning);
}

TEST_P(SchedulerTest, RegisterDeadlineNamesTheMissingPeersAndALaterRetrySucceeds) {
  StartScheduler(Options(1, 2));
  auto ps0 = Client("ctl-ps0");
  auto w0 = Client("ctl-w0");
  auto w1 = Client("ctl-w1");
  const absl::Duration wait = absl::Milliseconds(500);
  const absl::Time deadline = In(wait);
  std::vector<absl::StatusOr<Membership>> results =
      RegisterAll({{ps0.get(), ServerInfo(0)}, {w0.get(), WorkerInfo(0)}}, deadline);
  for (const absl::StatusOr<Membership>& r : results) {
    ASSERT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
    // The scheduler's answer (not the call's own deadline): it names who is missing.
    EXPECT_TRUE(
        absl::StrContains(r.status().message(), "still waiting for worker 1 (not registered)"))
        << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), "2 of 3 peers registered")) << r.status();
  }
  EXPECT_LE(absl::Now(), deadline + absl::Milliseconds(50));  // answered by the deadline

  // Registering again (a retry) with the same id is answered like the first registration.
  results = RegisterAll(
      {{ps0.get(), ServerInfo(0)}, {w0.get(), WorkerInfo(0)}, {w1.get(), WorkerInfo(1)}},
      In(kLong));
  for (const absl::StatusOr<Membership>& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->servers.size(), 1u);
    EXPECT_EQ(r->workers.size(), 2u);
  }
}

TEST_P(SchedulerTest, ConflictingRegistrationsAreFailedPreconditions) {
  StartScheduler(Options(1, 2));
  auto w0 = Client("ctl-w0");
  auto impostor = Client("ctl-impostor");
  auto w1 = Client("ctl-w1");
  auto ps0 = Client("ctl-ps0");
  // w0 registers (the rendezvous is incomplete: its call ends at its deadline).
  EXPECT_EQ(w0->Register(WorkerInfo(0), In(absl::Milliseconds(300))).status().code(),
            absl::StatusCode::kDeadlineExceeded);

  auto expect_conflict = [](const absl::StatusOr<Membership>& r, const std::string& text) {
    EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), text)) << r.status();
  };
  PeerInfo same_slot = WorkerInfo(0);
  same_slot.id = "impostor";
  expect_conflict(impostor->Register(same_slot, In(kLong)),
                  "worker 0 (w0) is already registered by ctl-w0; ctl-impostor cannot");
  expect_conflict(w0->Register(WorkerInfo(1), In(kLong)), "ctl-w0 already registered as worker 0");
  PeerInfo moved = WorkerInfo(0);
  moved.address = "elsewhere";
  expect_conflict(w0->Register(moved, In(kLong)), "now asks for id w0 at 'elsewhere'");
  PeerInfo taken_id = WorkerInfo(1);
  taken_id.id = "w0";
  expect_conflict(w1->Register(taken_id, In(kLong)), "id w0 is already taken by worker 0 (w0)");

  // None of them changed the registration: the job still forms with the right peers.
  std::vector<absl::StatusOr<Membership>> results = RegisterAll(
      {{ps0.get(), ServerInfo(0)}, {w0.get(), WorkerInfo(0)}, {w1.get(), WorkerInfo(1)}},
      In(kLong));
  for (const absl::StatusOr<Membership>& r : results) {
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->workers[0].id, "w0");
    EXPECT_EQ(r->workers[1].id, "w1");
  }
  // A client registers once.
  EXPECT_EQ(w0->Register(WorkerInfo(0), In(kLong)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_P(SchedulerTest, LostRegisterAnswerIsRetriedAndAnsweredAgain) {
  auto faults = std::make_shared<transport::FaultInjector>();
  StartScheduler(Options(0, 1), faults);
  auto w0 = Client("ctl-w0");
  faults->DropNext("ctl-w0", transport::KIND_RESPONSE);
  EXPECT_EQ(w0->Register(WorkerInfo(0), In(absl::Milliseconds(300))).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(faults->stats().dropped, 1u);
  absl::StatusOr<Membership> again = w0->Register(WorkerInfo(0), In(kLong));
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->workers.size(), 1u);
}

TEST_P(SchedulerTest, MalformedRegistrationsAreInvalidArguments) {
  StartScheduler(Options(1, 2));
  auto raw = RawClient("raw");
  auto register_as = [&](const std::string& role, int index, const std::string& id,
                         const std::string& address) {
    wire::RegisterRequest body;
    body.mutable_peer()->set_role(role);
    body.mutable_peer()->set_index(index);
    body.mutable_peer()->set_id(id);
    body.mutable_peer()->set_address(address);
    body.set_wait_micros(1000);
    return Raw(raw.get(), kSchedulerRegisterMethod, Frames(Body(body))).status();
  };
  struct Case {
    absl::Status status;
    std::string text;
  };
  const Case cases[] = {
      {register_as("client", 0, "x", ""), "role must be \"server\" or \"worker\""},
      {register_as("worker", 2, "x", ""), "worker index 2 is outside [0, 2)"},
      {register_as("worker", -1, "x", ""), "worker index -1 is outside [0, 2)"},
      {register_as("server", 1, "x", "a"), "server index 1 is outside [0, 1)"},
      {register_as("worker", 0, "", ""), "id must have 1 to"},
      {register_as("server", 0, "ps0", ""), "server 0 (ps0) gave no address"},
      {Raw(raw.get(), kSchedulerRegisterMethod, Frames(Frame::CopyOf("\xff\xff garbage"))).status(),
       "is not a valid choir.scheduler.wire.RegisterRequest"},
      {Raw(raw.get(), kSchedulerRegisterMethod, {}).status(), "expected 1 frame(s), got 0"},
      {Raw(raw.get(), kSchedulerRegisterMethod, Frames(Frame::FromVector(std::vector<int64_t>{1})))
           .status(),
       "frame 0 must hold bytes"},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(c.status.code(), absl::StatusCode::kInvalidArgument) << c.status;
    EXPECT_TRUE(absl::StrContains(c.status.message(), c.text)) << c.status << " / " << c.text;
  }
}

// ---------------------------------------------------------------------------------------------
// Heartbeats and failure detection

TEST_P(SchedulerTest, SilentWorkerIsNamedInEveryOtherPeersJobStatus) {
  DetectFailuresQuickly();
  StartJob(Options(1, 3));
  SchedulerClient* w2 = workers_[2].get();
  const absl::Time stopped = absl::Now();
  w2->Shutdown();  // its heartbeats stop, as when the process dies
  for (SchedulerClient* client : Others(w2)) {
    absl::Status status = client->WaitForStop(kTimeout + kMargin);
    EXPECT_LT(absl::Now() - stopped, kTimeout + kMargin);
    EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
    EXPECT_TRUE(
        absl::StartsWith(status.message(), "job stopped: worker 2 (w2) sent no heartbeat for "))
        << status;
    EXPECT_EQ(client->JobStatus(), status);
    EXPECT_EQ(client->state(), JobState::kFailed);
  }
  EXPECT_EQ(scheduler_->state(), JobState::kFailed);
  EXPECT_TRUE(
      absl::StrContains(scheduler_->JobStatus().message(), "worker 2 (w2) sent no heartbeat"));
  // The scheduler's end: every live peer has been told.
  EXPECT_EQ(scheduler_->WaitForEnd(In(kLong)).code(), absl::StatusCode::kAborted);
}

TEST_P(SchedulerTest, SilentServerIsNamedToo) {
  DetectFailuresQuickly();
  StartJob(Options(2, 1));
  servers_[1]->Shutdown();
  absl::Status status = workers_[0]->WaitForStop(kTimeout + kMargin);
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "server 1 (ps1) sent no heartbeat")) << status;
}

TEST_P(SchedulerTest, SchedulerDeathIsSeenAsUnavailableNamingIt) {
  DetectFailuresQuickly();
  StartJob(Options(1, 2));
  const absl::Time stopped = absl::Now();
  scheduler_->Shutdown();
  for (SchedulerClient* client : Others(nullptr)) {
    absl::Status status = client->WaitForStop(kTimeout + kMargin);
    EXPECT_LT(absl::Now() - stopped, kTimeout + kMargin);
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
    EXPECT_TRUE(absl::StartsWith(status.message(), "scheduler sched")) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "answered no heartbeat")) << status;
    EXPECT_EQ(client->JobStatus(), status);
  }
  // Calls fail too, naming the scheduler.
  absl::Status barrier = workers_[0]->Barrier("b", In(absl::Milliseconds(300)));
  EXPECT_FALSE(barrier.ok());
  EXPECT_TRUE(absl::StrContains(barrier.message(), "sched")) << barrier;
}

TEST_P(SchedulerTest, UnregisteredPeersAreRejectedNamingThem) {
  StartJob(Options(0, 1));
  // Admitted to the address book but never registered: every method but register is refused.
  auto stranger = Client("stranger");
  auto expect_refused = [](const absl::Status& status) {
    EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "from stranger, which has not registered"))
        << status;
  };
  expect_refused(stranger->Barrier("b", In(kLong)));
  expect_refused(stranger->Report(scheduler::BucketStats(), In(kLong)).status());
  expect_refused(stranger->Finish(1, 0.5, In(kLong)));
  auto raw = RawClient("raw");
  absl::Status heartbeat =
      Raw(raw.get(), kSchedulerHeartbeatMethod, Frames(Body(wire::HeartbeatRequest()))).status();
  EXPECT_EQ(heartbeat.code(), absl::StatusCode::kFailedPrecondition) << heartbeat;
  EXPECT_TRUE(
      absl::StrContains(heartbeat.message(), "heartbeat from raw, which has not registered"))
      << heartbeat;

  // Not even in the address book: the endpoint drops its messages and names it.
  auto intruder = Client("intruder", /*admit=*/false);
  EXPECT_EQ(intruder->Register(WorkerInfo(0), In(absl::Milliseconds(300))).status().code(),
            absl::StatusCode::kDeadlineExceeded);
  std::vector<std::string> rejected = rejects_.Peers();
  EXPECT_NE(std::find(rejected.begin(), rejected.end(), "intruder"), rejected.end());
  // None of this disturbed the job.
  EXPECT_TRUE(workers_[0]->JobStatus().ok());
  EXPECT_EQ(scheduler_->state(), JobState::kRunning);
}

// ---------------------------------------------------------------------------------------------
// Barriers

TEST_P(SchedulerTest, BarrierPassesWhenEveryWorkerArrivesGenerationAfterGeneration) {
  StartJob(Options(1, 3));
  std::vector<absl::Status> results(3 * 3);
  std::vector<std::thread> threads;
  for (int w = 0; w < 3; ++w) {
    threads.emplace_back([&, w] {
      for (int g = 0; g < 3; ++g) results[w * 3 + g] = workers_[w]->Barrier("epoch", In(kLong));
    });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
  // Barriers are among workers.
  absl::Status server = servers_[0]->Barrier("epoch", In(kLong));
  EXPECT_EQ(server.code(), absl::StatusCode::kInvalidArgument) << server;
  EXPECT_TRUE(absl::StrContains(server.message(), "server 0 (ps0) called it")) << server;
}

TEST_P(SchedulerTest, BarrierDeadlineNamesTheWorkersStillMissing) {
  StartJob(Options(0, 3));
  absl::Status status = workers_[0]->Barrier("start", In(absl::Milliseconds(400)));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "still waiting for worker 1 (w1), worker 2 (w2)"))
      << status;
  // The arrival counts: once the others arrive, a retry passes.
  std::vector<absl::Status> results(3);
  std::vector<std::thread> threads;
  for (int w = 0; w < 3; ++w) {
    threads.emplace_back([&, w] { results[w] = workers_[w]->Barrier("start", In(kLong)); });
  }
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : results) EXPECT_TRUE(s.ok()) << s;
}

TEST_P(SchedulerTest, BarrierWithADeadWorkerFailsInsteadOfHanging) {
  DetectFailuresQuickly();
  StartJob(Options(1, 2));
  absl::Status status;
  std::thread waiter([&] { status = workers_[0]->Barrier("sync", In(absl::Seconds(60))); });
  const absl::Time stopped = absl::Now();
  workers_[1]->Shutdown();
  waiter.join();
  EXPECT_LT(absl::Now() - stopped, kTimeout + kMargin);
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "job stopped: worker 1 (w1) sent no heartbeat"))
      << status;
  // After the failure, barriers fail at once.
  EXPECT_EQ(workers_[0]->Barrier("sync", In(kLong)).code(), absl::StatusCode::kAborted);
}

TEST_P(SchedulerTest, BarrierWaitingForAFinishedWorkerFailsAtOnce) {
  StartJob(Options(0, 2));
  ASSERT_TRUE(workers_[1]->Finish(10, 0.5, In(kLong)).ok());
  absl::Status status = workers_[0]->Barrier("sync", In(absl::Seconds(60)));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "worker 1 (w1) has already finished")) << status;
}

// ---------------------------------------------------------------------------------------------
// Reweighting rounds

// Worker w's statistics in round r: distinct, with losses that are not exact binary fractions
// (so the order of summation would show).
scheduler::BucketStats RoundStats(int w, int r) {
  scheduler::BucketStats s;
  for (int b = 0; b < data::kNumBuckets; ++b) {
    s.count[b] = (b == 3 && w == 0) ? 0 : 10 * (w + 1) + 7 * b + 3 * r + (b == 2 ? 100 : 0);
    s.loss_sum[b] = s.count[b] * (0.1 + 0.07 * b + 0.013 * w + 0.031 * r);
  }
  return s;
}

TEST_P(SchedulerTest, ReportRoundGivesEveryWorkerTheWeightsOfTheSummedStatistics) {
  for (scheduler::ReweightingPolicy policy :
       {scheduler::ReweightingPolicy::kInverseFrequency, scheduler::ReweightingPolicy::kAdaptive}) {
    SCOPED_TRACE(scheduler::ReweightingPolicyName(policy));
    SchedulerOptions options = Options(1, 3);
    options.reweighting.policy = policy;
    options.reweighting.eta = 0.5;
    StartJob(options);
    absl::StatusOr<scheduler::SampleReweighter> reference =
        scheduler::SampleReweighter::Create(options.reweighting);
    ASSERT_TRUE(reference.ok());
    for (int r = 1; r <= 3; ++r) {
      std::vector<absl::StatusOr<scheduler::BucketWeights>> got(3, absl::UnknownError("not run"));
      std::vector<std::thread> threads;
      for (int w = 2; w >= 0; --w) {
        threads.emplace_back([&, w] { got[w] = workers_[w]->Report(RoundStats(w, r), In(kLong)); });
      }
      for (std::thread& t : threads) t.join();
      scheduler::BucketStats sum;
      for (int w = 0; w < 3; ++w) {
        for (int b = 0; b < data::kNumBuckets; ++b) {
          sum.count[b] += RoundStats(w, r).count[b];
          sum.loss_sum[b] += RoundStats(w, r).loss_sum[b];
        }
      }
      absl::StatusOr<scheduler::BucketWeights> want = reference->Update(sum);
      ASSERT_TRUE(want.ok()) << want.status();
      for (int w = 0; w < 3; ++w) {
        ASSERT_TRUE(got[w].ok()) << got[w].status();
        EXPECT_EQ(*got[w], *want) << "worker " << w << " round " << r;  // bit-identical
      }
      EXPECT_NE((*want)[0], 1.0);  // the policy did something
    }
    StopJob();
  }
}

TEST_P(SchedulerTest, ReweighterStateSurvivesARestartOfTheJob) {
  // Two rounds in one job; a second job restored from the first's state after round 1 gives
  // round 2 the same weights, bit for bit.
  SchedulerOptions options = Options(0, 2);
  options.reweighting.policy = scheduler::ReweightingPolicy::kAdaptive;
  options.reweighting.eta = 0.5;
  auto round = [&](int r) {
    std::vector<absl::StatusOr<scheduler::BucketWeights>> got(2, absl::UnknownError("not run"));
    std::thread other([&] { got[1] = workers_[1]->Report(RoundStats(1, r), In(kLong)); });
    got[0] = workers_[0]->Report(RoundStats(0, r), In(kLong));
    other.join();
    EXPECT_TRUE(got[0].ok() && got[1].ok()) << got[0].status() << got[1].status();
    return got[0].ok() ? *got[0] : scheduler::BucketWeights{};
  };
  StartJob(options);
  const scheduler::BucketWeights first = round(1);
  absl::StatusOr<scheduler::SampleReweighter::State> saved = workers_[0]->ReweighterState(In(kLong));
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->updates, 1);
  const scheduler::BucketWeights second = round(2);
  EXPECT_NE(first, second);
  StopJob();

  StartJob(options);
  for (auto& w : workers_) w->ResumeRounds(1);
  ASSERT_TRUE(workers_[0]->RestoreReweighter(*saved, 1, first, In(kLong)).ok());
  EXPECT_EQ(round(2), second);
  // A state that is not one (a weight of 0) is refused and changes nothing.
  scheduler::SampleReweighter::State bad = *saved;
  bad.weights[2] = 0;
  absl::Status refused = workers_[0]->RestoreReweighter(bad, 2, first, In(kLong));
  EXPECT_EQ(refused.code(), absl::StatusCode::kInvalidArgument) << refused;
  absl::StatusOr<scheduler::SampleReweighter::State> now = workers_[0]->ReweighterState(In(kLong));
  ASSERT_TRUE(now.ok());
  EXPECT_EQ(now->updates, 2);
  StopJob();
}

TEST_P(SchedulerTest, ReportWithADeadWorkerFailsInsteadOfHanging) {
  DetectFailuresQuickly();
  StartJob(Options(0, 2));
  absl::StatusOr<scheduler::BucketWeights> got;
  std::thread waiter([&] { got = workers_[0]->Report(RoundStats(0, 1), In(absl::Seconds(60))); });
  workers_[1]->Shutdown();
  waiter.join();
  EXPECT_EQ(got.status().code(), absl::StatusCode::kAborted) << got.status();
  EXPECT_TRUE(absl::StrContains(got.status().message(), "worker 1 (w1) sent no heartbeat"))
      << got.status();
}

// Requests a SchedulerClient never sends, from a worker registered by hand ("raw" is worker 1;
// it sends no heartbeats: the default, long timeout keeps it alive).
TEST_P(SchedulerTest, BadReportsBarriersAndFinishesAreRejectedWithoutHarm) {
  SchedulerOptions options = Options(0, 2);
  options.reweighting.policy = scheduler::ReweightingPolicy::kInverseFrequency;
  StartScheduler(options);
  auto w0 = Client("ctl-w0");
  auto raw = RawClient("raw");
  absl::StatusOr<Membership> membership;
  std::thread registering([&] { membership = w0->Register(WorkerInfo(0), In(kLong)); });
  wire::RegisterRequest reg;
  reg.mutable_peer()->set_role("worker");
  reg.mutable_peer()->set_index(1);
  reg.mutable_peer()->set_id("w1");
  reg.set_wait_micros(absl::ToInt64Microseconds(kLong));
  ASSERT_TRUE(Raw(raw.get(), kSchedulerRegisterMethod, Frames(Body(reg))).ok());
  registering.join();
  ASSERT_TRUE(membership.ok()) << membership.status();

  const std::vector<int64_t> counts = {5, 6, 7, 8};
  const std::vector<double> losses = {1.0, 2.0, 3.0, 4.0};
  struct Case {
    std::vector<Frame> frames;
    absl::StatusCode code;
    std::string text;
  };
  std::vector<Case> cases;
  cases.push_back({Frames(Body(wire::ReportRequest())), absl::StatusCode::kInvalidArgument,
                   "expected 3 frame(s), got 1"});
  cases.push_back(
      {ReportFrames(0, counts, losses), absl::StatusCode::kInvalidArgument, "round must be >= 1"});
  cases.push_back({ReportFrames(1, {5, 6, 7}, losses), absl::StatusCode::kInvalidArgument,
                   "frame 1 must hold 4 int64 sample counts, has 3"});
  {
    std::vector<Frame> f = ReportFrames(1, counts, losses);
    f[2] = Frame::FromVector(std::vector<float>{1, 2, 3, 4});
    cases.push_back({std::move(f), absl::StatusCode::kInvalidArgument,
                     "frame 2 must hold 4 float64 loss sums"});
  }
  cases.push_back({ReportFrames(1, {5, -6, 7, 8}, losses), absl::StatusCode::kInvalidArgument,
                   "sample count of bucket mid must be in [0, 2^40], got -6"});
  cases.push_back({ReportFrames(1, counts, {1, std::nan(""), 3, 4}),
                   absl::StatusCode::kInvalidArgument, "loss sum of bucket mid must be finite"});
  cases.push_back({ReportFrames(1, counts, {1, 2, -3, 4}), absl::StatusCode::kInvalidArgument,
                   "loss sum of bucket high must be finite and >= 0, got -3"});
  cases.push_back({ReportFrames(2, counts, losses), absl::StatusCode::kFailedPrecondition,
                   "the scheduler has completed round 0, so the next is 1"});
  for (Case& c : cases) {
    absl::Status status = Raw(raw.get(), kSchedulerReportMethod, std::move(c.frames)).status();
    EXPECT_EQ(status.code(), c.code) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), c.text)) << status << " / " << c.text;
  }

  auto barrier = [&](const std::string& name, int64_t generation) {
    wire::BarrierRequest body;
    body.set_name(name);
    body.set_generation(generation);
    body.set_wait_micros(1000);
    return Raw(raw.get(), kSchedulerBarrierMethod, Frames(Body(body))).status();
  };
  EXPECT_EQ(barrier("", 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(barrier(std::string(300, 'x'), 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(barrier("b", 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(barrier("b", 3).code(), absl::StatusCode::kFailedPrecondition);
  wire::FinishRequest finish;
  finish.set_step(-1);
  EXPECT_EQ(Raw(raw.get(), kSchedulerFinishMethod, Frames(Body(finish))).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Raw(raw.get(), kSchedulerHeartbeatMethod, {}).status().code(),
            absl::StatusCode::kInvalidArgument);

  // One held call per peer: a second barrier while the first waits is refused.
  absl::Status first, second;
  {
    auto hold = [&](absl::Status* out) {
      wire::BarrierRequest body;
      body.set_name("held");
      body.set_generation(1);
      body.set_wait_micros(absl::ToInt64Microseconds(absl::Milliseconds(500)));
      *out = Raw(raw.get(), kSchedulerBarrierMethod, Frames(Body(body))).status();
    };
    std::thread a([&] { hold(&first); });
    std::thread b([&] { hold(&second); });
    a.join();
    b.join();
  }
  std::vector<absl::StatusCode> codes = {first.code(), second.code()};
  std::sort(codes.begin(), codes.end());
  EXPECT_EQ(codes, (std::vector<absl::StatusCode>{absl::StatusCode::kDeadlineExceeded,
                                                  absl::StatusCode::kFailedPrecondition}))
      << first << " / " << second;

  // After all that, a good round still works, and a repeat of it gets the same weights.
  absl::StatusOr<scheduler::BucketWeights> from_client;
  std::thread reporting([&] { from_client = w0->Report(RoundStats(0, 1), In(kLong)); });
  absl::StatusOr<transport::Response> from_raw =
      Raw(raw.get(), kSchedulerReportMethod, ReportFrames(1, counts, losses));
  reporting.join();
  ASSERT_TRUE(from_client.ok()) << from_client.status();
  ASSERT_TRUE(from_raw.ok()) << from_raw.status();
  absl::StatusOr<std::vector<double>> raw_weights = from_raw->frames.at(0).ToVector<double>();
  ASSERT_TRUE(raw_weights.ok());
  EXPECT_EQ(*raw_weights, std::vector<double>(from_client->begin(), from_client->end()));
  absl::StatusOr<transport::Response> repeat =
      Raw(raw.get(), kSchedulerReportMethod, ReportFrames(1, counts, losses));
  ASSERT_TRUE(repeat.ok()) << repeat.status();
  EXPECT_EQ(*repeat->frames.at(0).ToVector<double>(), *raw_weights);
  EXPECT_EQ(scheduler_->state(), JobState::kRunning);
}

// ---------------------------------------------------------------------------------------------
// The end of the job

TEST_P(SchedulerTest, FinishOfEveryWorkerStopsTheJobAndServersWaitForStopReturns) {
  StartJob(Options(2, 2));
  std::vector<absl::Status> stops(2, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int s = 0; s < 2; ++s) {
    threads.emplace_back([&, s] { stops[s] = servers_[s]->WaitForStop(kLong); });
  }
  ASSERT_TRUE(workers_[0]->Finish(100, 0.25, In(kLong)).ok());
  ASSERT_TRUE(workers_[0]->Finish(100, 0.25, In(kLong)).ok());  // idempotent
  EXPECT_EQ(scheduler_->state(), JobState::kRunning);
  // Finished workers may go quiet without being declared dead.
  workers_[0]->Shutdown();
  ASSERT_TRUE(workers_[1]->Finish(100, 0.5, In(kLong)).ok());
  EXPECT_EQ(workers_[1]->state(), JobState::kStopping);
  for (std::thread& t : threads) t.join();
  for (const absl::Status& s : stops) EXPECT_TRUE(s.ok()) << s;
  for (auto& server : servers_) {
    EXPECT_TRUE(server->JobStatus().ok());
    EXPECT_EQ(server->state(), JobState::kStopping);
  }
  EXPECT_EQ(scheduler_->state(), JobState::kStopping);
  // Every server has been told (through a heartbeat), so the scheduler may go.
  EXPECT_TRUE(scheduler_->WaitForEnd(In(kLong)).ok());
}

TEST_P(SchedulerTest, AFailedWorkerStopsTheJobAtOnceNamingItsError) {
  // Heartbeat timeouts of 60 s: only the worker's own report can stop the job within kLong.
  StartJob(Options(1, 2));
  EXPECT_EQ(workers_[1]->Fail(absl::OkStatus(), In(kLong)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(scheduler_->state(), JobState::kRunning);
  ASSERT_TRUE(workers_[1]->Fail(absl::DataLossError("shard 3: bad row 17"), In(kLong)).ok());
  EXPECT_EQ(workers_[1]->state(), JobState::kFailed);  // told in the answer
  for (SchedulerClient* client : Others(workers_[1].get())) {
    absl::Status status = client->WaitForStop(kLong);
    EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
    EXPECT_TRUE(absl::StrContains(status.message(), "worker 1 (w1) failed: DATA_LOSS: shard 3: bad row 17"))
        << status;
  }
  EXPECT_EQ(scheduler_->state(), JobState::kFailed);
  // A finish after the failure changes nothing: the job stays failed, with the first reason.
  ASSERT_TRUE(workers_[0]->Finish(10, 0.5, In(kLong)).ok());
  EXPECT_EQ(scheduler_->state(), JobState::kFailed);
  EXPECT_TRUE(absl::StrContains(scheduler_->JobStatus().message(), "worker 1 (w1) failed")) << scheduler_->JobStatus();
}

TEST_P(SchedulerTest, AFinishedWorkerThatGoesQuietIsNotDeclaredDead) {
  DetectFailuresQuickly();
  StartJob(Options(0, 2));
  ASSERT_TRUE(workers_[0]->Finish(5, 0.1, In(kLong)).ok());
  workers_[0]->Shutdown();
  // Three timeouts without a heartbeat from worker 0: the job keeps running.
  EXPECT_EQ(workers_[1]->WaitForStop(3 * kTimeout).code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_TRUE(workers_[1]->JobStatus().ok());
  EXPECT_EQ(scheduler_->WaitForEnd(In(absl::Milliseconds(50))).code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_P(SchedulerTest, OptionsAreValidated) {
  SchedulerOptions bad = Options(1, 0);
  transport::EndpointOptions endpoint_options;
  endpoint_options.id = "sched";
  endpoint_options.bind_address = "tcp://127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Scheduler>> scheduler =
      Scheduler::Start(Make(endpoint_options), bad);
  EXPECT_EQ(scheduler.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(scheduler.status().message(), "num_workers must be >= 1"));
  bad = Options(1, 1);
  bad.reweighting.w_min = 2;
  EXPECT_TRUE(absl::StrContains(ValidateSchedulerOptions(bad).message(), "w_min"));
  bad = Options(1, 1);
  bad.heartbeat_timeout = absl::ZeroDuration();
  EXPECT_FALSE(ValidateSchedulerOptions(bad).ok());

  SchedulerClientOptions client;
  client.scheduler_id = "sched";
  EXPECT_TRUE(ValidateSchedulerClientOptions(client).ok());
  client.scheduler_timeout = client.heartbeat_interval;
  EXPECT_FALSE(ValidateSchedulerClientOptions(client).ok());
  client = SchedulerClientOptions();
  EXPECT_FALSE(ValidateSchedulerClientOptions(client).ok());  // no scheduler id
}

INSTANTIATE_TEST_SUITE_P(Transports, SchedulerTest, ::testing::Values(Kind::kInProcess, Kind::kZmq),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return info.param == Kind::kInProcess ? "InProcess" : "Zmq";
                         });

}  // namespace
}  // namespace choir
