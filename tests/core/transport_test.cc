// Transport and RPC behaviour (core/transport.h), shared behaviour swept over the in-process
// and the ZeroMQ endpoint.
#include "core/transport.h"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

// ThreadSanitizer reads these in a TSan build (elsewhere the function is unused). Debian's
// libzmq is not instrumented: the buffers it hands between its own threads and ours (received
// frames, zero-copy sent frames freed by ZeroMQ) are ordered by its lock-free pipes, which
// TSan cannot see. Races whose stacks both lie in Choir's code are still reported. glibc's
// tzset (glog's time stamps on several threads) is internally locked.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libzmq.so\n"
         "called_from_lib:libzmq.so\n"
         "race:tzset_internal\n";
}

namespace choir {
namespace transport {
namespace {

// A counter that threads wait on, with a deadline (no sleeping).
class Counter {
 public:
  void Add(int n = 1) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      value_ += n;
    }
    cv_.notify_all();
  }
  // True when the value reached `target` within `timeout`.
  bool WaitFor(int target, absl::Duration timeout = absl::Seconds(10)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, absl::ToChronoNanoseconds(timeout), [&] { return value_ >= target; });
  }
  int value() {
    std::lock_guard<std::mutex> lock(mu_);
    return value_;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  int value_ = 0;
};

// Records rejections reported by an endpoint.
struct RejectLog {
  void Add(const Rejection& rejection) {
    {
      std::lock_guard<std::mutex> lock(mu);
      reasons.push_back(absl::StrCat(rejection.peer, ": ", rejection.reason.ToString()));
    }
    count.Add();
  }
  std::vector<std::string> Reasons() {
    std::lock_guard<std::mutex> lock(mu);
    return reasons;
  }
  std::mutex mu;
  std::vector<std::string> reasons;
  Counter count;
};

enum class Kind { kInProcess, kZmq };

absl::Time In(absl::Duration d) { return absl::Now() + d; }

class TransportTest : public ::testing::TestWithParam<Kind> {
 protected:
  // A server endpoint: ZeroMQ binds an ephemeral loopback port.
  std::unique_ptr<Endpoint> ServerEndpoint(const std::string& id, RejectLog* rejects = nullptr) {
    EndpointOptions options;
    options.id = id;
    options.bind_address = "tcp://127.0.0.1:0";
    if (rejects != nullptr) {
      options.on_reject = [rejects](const Rejection& r) { rejects->Add(r); };
    }
    return Make(std::move(options));
  }
  std::unique_ptr<Endpoint> ClientEndpoint(const std::string& id) {
    EndpointOptions options;
    options.id = id;
    return Make(std::move(options));
  }
  std::unique_ptr<Endpoint> Make(EndpointOptions options) {
    absl::StatusOr<std::unique_ptr<Endpoint>> endpoint =
        GetParam() == Kind::kInProcess ? network_.NewEndpoint(std::move(options))
                                       : NewZmqEndpoint(std::move(options));
    EXPECT_TRUE(endpoint.ok()) << endpoint.status();
    return endpoint.ok() ? *std::move(endpoint) : nullptr;
  }
  // `client` calls `server`; the server answers over its ROUTER.
  static void Connect(Endpoint* client, Endpoint* server) {
    ASSERT_TRUE(client->AddPeer(server->id(), server->address()).ok());
    ASSERT_TRUE(server->AddPeer(client->id(), "").ok());
  }

  // A started server "server" with methods echo (returns the request frames), fail (returns
  // NOT_FOUND) and block (waits for `release_`), and a client "client" connected to it.
  void StartServerAndClient(int worker_threads = 1,
                            std::shared_ptr<FaultInjector> client_faults = nullptr) {
    auto server_endpoint = ServerEndpoint("server", &rejects_);
    auto client_endpoint = ClientEndpoint("client");
    ASSERT_NE(server_endpoint, nullptr);
    ASSERT_NE(client_endpoint, nullptr);
    Connect(client_endpoint.get(), server_endpoint.get());
    if (client_faults != nullptr) {
      client_endpoint = NewFaultInjectingEndpoint(std::move(client_endpoint), client_faults);
    }
    server_ =
        std::make_unique<RpcServer>(std::move(server_endpoint), RpcServerOptions{worker_threads});
    ASSERT_TRUE(server_
                    ->Register("echo",
                               [this](RpcRequest& request) -> absl::StatusOr<std::vector<Frame>> {
                                 handled_.Add();
                                 return request.frames;
                               })
                    .ok());
    ASSERT_TRUE(server_
                    ->Register("fail",
                               [](RpcRequest& request) -> absl::StatusOr<std::vector<Frame>> {
                                 return absl::NotFoundError("no row for key 7");
                               })
                    .ok());
    ASSERT_TRUE(server_
                    ->Register("block",
                               [this](RpcRequest& request) -> absl::StatusOr<std::vector<Frame>> {
                                 entered_.Add();
                                 release_.WaitFor(1, absl::Seconds(30));
                                 return std::vector<Frame>{Frame("late")};
                               })
                    .ok());
    ASSERT_TRUE(server_->Start().ok());
    client_ = std::make_unique<RpcClient>(std::move(client_endpoint), abort_check_,
                                          absl::Milliseconds(20));
  }

  void TearDown() override {
    release_.Add(1000);
    if (client_ != nullptr) client_->Shutdown();
    if (server_ != nullptr) server_->Shutdown();
  }

  std::function<absl::Status()> abort_check_;  // the client's, set before StartServerAndClient
  InProcessNetwork network_;
  RejectLog rejects_;
  Counter handled_;
  Counter entered_;
  Counter release_;
  std::unique_ptr<RpcServer> server_;
  std::unique_ptr<RpcClient> client_;
};

TEST_P(TransportTest, RoundTripKeepsSeveralRawFramesByteExact) {
  StartServerAndClient();
  std::vector<uint64_t> keys(4096);
  for (size_t i = 0; i < keys.size(); ++i) keys[i] = (i * 0x9e3779b97f4a7c15ull) ^ (i << 7);
  std::vector<float> values(4096 * 16);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i) * 0.25f - 3.5f;
  std::string bytes;
  for (int i = 0; i < 512; ++i) bytes.push_back(static_cast<char>(i % 256));  // NULs included

  std::vector<Frame> frames = {Frame::FromVector(keys), Frame::FromVector(values), Frame(bytes),
                               Frame()};
  absl::StatusOr<Response> response =
      client_->Call("server", "echo", frames, In(absl::Seconds(10)));
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->frames.size(), 4u);
  EXPECT_EQ(response->header.kind(), KIND_RESPONSE);
  EXPECT_EQ(response->header.sender(), "server");
  EXPECT_EQ(response->header.method(), "echo");
  EXPECT_EQ(response->frames[0].type(), ELEMENT_UINT64);
  EXPECT_EQ(response->frames[0].count(), keys.size());
  EXPECT_EQ(*response->frames[0].ToVector<uint64_t>(), keys);
  EXPECT_EQ(response->frames[1].type(), ELEMENT_FLOAT32);
  EXPECT_EQ(response->frames[1].bytes(), frames[1].bytes());
  EXPECT_EQ(*response->frames[1].ToVector<float>(), values);
  EXPECT_EQ(response->frames[2].bytes(), bytes);
  EXPECT_EQ(response->frames[3].size(), 0u);
  EXPECT_EQ(client_->stats().pending, 0u);
}

TEST_P(TransportTest, ThousandConcurrentCallsFromThreeThreadsGetTheirOwnResponses) {
  StartServerAndClient(/*worker_threads=*/2);
  constexpr int kThreads = 3;
  constexpr int kCallsPerThread = 334;
  std::atomic<int> wrong{0}, failed{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread; ++i) {
        uint64_t tag = static_cast<uint64_t>(t) * 1000000 + i;
        absl::StatusOr<Response> response =
            client_->Call("server", "echo", {Frame::FromVector(std::vector<uint64_t>{tag, ~tag})},
                          In(absl::Seconds(20)));
        if (!response.ok()) {
          ++failed;
          continue;
        }
        auto echoed = response->frames.empty() ? absl::StatusOr<std::vector<uint64_t>>()
                                               : response->frames[0].ToVector<uint64_t>();
        if (!echoed.ok() || *echoed != std::vector<uint64_t>{tag, ~tag}) ++wrong;
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failed.load(), 0);
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(handled_.value(), kThreads * kCallsPerThread);
  RpcClientStats stats = client_->stats();
  EXPECT_EQ(stats.calls, static_cast<uint64_t>(kThreads * kCallsPerThread));
  EXPECT_EQ(stats.pending, 0u);
  EXPECT_EQ(stats.dropped_responses, 0u);
}

TEST_P(TransportTest, DeadlineExpiresPromptlyAndTheLateResponseIsDropped) {
  StartServerAndClient(/*worker_threads=*/1);
  absl::Time start = absl::Now();
  absl::StatusOr<Response> response =
      client_->Call("server", "block", {}, In(absl::Milliseconds(100)));
  absl::Duration took = absl::Now() - start;
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded) << response.status();
  EXPECT_TRUE(absl::StrContains(response.status().message(), "server"));
  EXPECT_GE(took, absl::Milliseconds(99));
  EXPECT_LT(took, absl::Seconds(2));
  EXPECT_EQ(client_->stats().pending, 0u);  // the entry went with the deadline

  release_.Add();
  // One worker answers in order: the late response reaches the client before this one's.
  ASSERT_TRUE(client_->Call("server", "echo", {}, In(absl::Seconds(10))).ok());
  RpcClientStats stats = client_->stats();
  EXPECT_EQ(stats.dropped_responses, 1u);
  EXPECT_EQ(stats.deadline_exceeded, 1u);
  EXPECT_EQ(stats.pending, 0u);
}

TEST_P(TransportTest, DroppedRequestTimesOut) {
  auto faults = std::make_shared<FaultInjector>();
  faults->DropNext("server", KIND_REQUEST);
  StartServerAndClient(1, faults);
  absl::StatusOr<Response> response =
      client_->Call("server", "echo", {Frame("x")}, In(absl::Milliseconds(100)));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(faults->stats().dropped, 1u);
  // Only the next request was dropped.
  ASSERT_TRUE(client_->Call("server", "echo", {Frame("y")}, In(absl::Seconds(10))).ok());
  EXPECT_EQ(handled_.value(), 1);
}

TEST_P(TransportTest, DuplicatedRequestGivesTheCallerOneResponse) {
  auto faults = std::make_shared<FaultInjector>();
  faults->DuplicateNext("server", KIND_REQUEST);
  StartServerAndClient(1, faults);
  absl::StatusOr<Response> first =
      client_->Call("server", "echo", {Frame("one")}, In(absl::Seconds(10)));
  ASSERT_TRUE(first.ok()) << first.status();
  EXPECT_EQ(first->frames[0].bytes(), "one");
  // In-order single worker: the duplicate's response arrives before this call's.
  absl::StatusOr<Response> second =
      client_->Call("server", "echo", {Frame("two")}, In(absl::Seconds(10)));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->frames[0].bytes(), "two");
  EXPECT_EQ(handled_.value(), 3);  // the server saw the duplicate
  EXPECT_EQ(client_->stats().dropped_responses, 1u);
  EXPECT_EQ(faults->stats().duplicated, 1u);
}

TEST_P(TransportTest, DelayedRequestStillArrivesWithinItsDeadline) {
  auto faults = std::make_shared<FaultInjector>();
  faults->DelayNext("server", KIND_REQUEST, absl::Milliseconds(50));
  StartServerAndClient(1, faults);
  absl::Time start = absl::Now();
  ASSERT_TRUE(client_->Call("server", "echo", {Frame("x")}, In(absl::Seconds(10))).ok());
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(49));
  EXPECT_EQ(faults->stats().delayed, 1u);
}

TEST_P(TransportTest, CallAllHandsResponsesOverInRequestOrder) {
  StartServerAndClient(/*worker_threads=*/3);
  std::vector<RpcClient::Request> requests;
  for (uint64_t i = 0; i < 40; ++i) {
    requests.push_back({"server", "echo", {Frame::FromVector(std::vector<uint64_t>{i, ~i})}});
  }
  std::vector<size_t> seen;
  absl::Status status = client_->CallAll(
      std::move(requests), In(absl::Seconds(20)),
      [&](size_t i, absl::StatusOr<Response> response) -> absl::Status {
        if (!response.ok()) return response.status();
        auto echoed = response->frames[0].ToVector<uint64_t>();
        EXPECT_TRUE(echoed.ok() && *echoed == (std::vector<uint64_t>{i, ~i})) << "call " << i;
        seen.push_back(i);
        return absl::OkStatus();
      });
  ASSERT_TRUE(status.ok()) << status;
  std::vector<size_t> expected(40);
  for (size_t i = 0; i < expected.size(); ++i) expected[i] = i;
  EXPECT_EQ(seen, expected);
  EXPECT_EQ(handled_.value(), 40);
  EXPECT_EQ(client_->stats().pending, 0u);
}

TEST_P(TransportTest, CallAllStopsAtTheFirstFailureAndForgetsTheRest) {
  StartServerAndClient(/*worker_threads=*/1);
  std::vector<RpcClient::Request> requests = {{"server", "echo", {Frame("a")}},
                                              {"server", "fail", {}},
                                              {"server", "echo", {Frame("c")}},
                                              {"server", "echo", {Frame("d")}}};
  std::vector<size_t> seen;
  absl::Status status = client_->CallAll(
      std::move(requests), In(absl::Seconds(20)),
      [&](size_t i, absl::StatusOr<Response> response) -> absl::Status {
        seen.push_back(i);
        if (!response.ok()) {
          return absl::Status(response.status().code(),
                              absl::StrCat("piece ", i, ": ", response.status().message()));
        }
        return absl::OkStatus();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "piece 1")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "no row for key 7")) << status;
  EXPECT_EQ(seen, (std::vector<size_t>{0, 1}));
  EXPECT_EQ(client_->stats().pending, 0u);  // c and d are forgotten
  // They were sent and are answered (dropped if they arrive after CallAll returned); the
  // client goes on working.
  ASSERT_TRUE(client_->Call("server", "echo", {Frame("e")}, In(absl::Seconds(10))).ok());
  EXPECT_EQ(handled_.value(), 4);  // a, c, d, e
  EXPECT_LE(client_->stats().dropped_responses, 2u);
  EXPECT_EQ(client_->stats().pending, 0u);
}

TEST_P(TransportTest, CallAllSharesOneDeadline) {
  StartServerAndClient(/*worker_threads=*/2);
  std::vector<RpcClient::Request> requests = {{"server", "echo", {Frame("a")}},
                                              {"server", "block", {}}};
  absl::Time start = absl::Now();
  int calls = 0;
  absl::Status status = client_->CallAll(
      std::move(requests), In(absl::Milliseconds(150)),
      [&](size_t i, absl::StatusOr<Response> response) {
        ++calls;
        return response.status();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "block")) << status;
  EXPECT_EQ(calls, 2);
  EXPECT_LT(absl::Now() - start, absl::Seconds(2));
  EXPECT_EQ(client_->stats().pending, 0u);
}

TEST_P(TransportTest, CallAllToAnUnknownPeerFailsWithoutSendingTheRest) {
  StartServerAndClient();
  std::vector<RpcClient::Request> requests = {{"server", "echo", {Frame("a")}},
                                              {"nobody", "echo", {}},
                                              {"server", "echo", {Frame("c")}}};
  std::vector<size_t> seen;
  absl::Status status = client_->CallAll(
      std::move(requests), In(absl::Seconds(10)),
      [&](size_t i, absl::StatusOr<Response> response) {
        seen.push_back(i);
        return response.status();
      });
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "nobody")) << status;
  EXPECT_EQ(seen, (std::vector<size_t>{1}));  // the failed send; "a" was then forgotten
  EXPECT_EQ(client_->stats().pending, 0u);
  // Only "a" was sent.
  ASSERT_TRUE(client_->Call("server", "echo", {Frame("x")}, In(absl::Seconds(10))).ok());
  EXPECT_EQ(handled_.value(), 2);
}

// A raw request from `from`, as RpcClient would build it.
Message RawRequest(const std::string& from, uint64_t id) {
  Message message;
  message.header.set_kind(KIND_REQUEST);
  message.header.set_request_id(id);
  message.header.set_method("echo");
  message.header.set_sender(from);
  message.frames.push_back(Frame("payload"));
  FinishHeader(&message);
  return message;
}

TEST_P(TransportTest, WrongProtocolVersionIsRejectedAndTheServerKeepsServing) {
  StartServerAndClient();
  Message bad = RawRequest("client", 42);
  bad.header.set_version(kProtocolVersion + 1);
  ASSERT_TRUE(client_->endpoint()->Send("server", std::move(bad)).ok());
  // Same connection, so the server has judged the bad message before this call.
  ASSERT_TRUE(client_->Call("server", "echo", {}, In(absl::Seconds(10))).ok());
  std::vector<std::string> reasons = rejects_.Reasons();
  ASSERT_EQ(reasons.size(), 1u);
  EXPECT_TRUE(absl::StrContains(reasons[0], "protocol version 2")) << reasons[0];
  EXPECT_EQ(handled_.value(), 1);
}

TEST_P(TransportTest, UnknownAndSpoofedSendersAreRejectedAndTheServerKeepsServing) {
  StartServerAndClient();
  // "mallory" knows the server, the server does not know mallory.
  std::unique_ptr<Endpoint> mallory = ClientEndpoint("mallory");
  ASSERT_TRUE(mallory->AddPeer("server", server_->endpoint()->address()).ok());
  ASSERT_TRUE(mallory->Send("server", RawRequest("mallory", 7)).ok());
  ASSERT_TRUE(rejects_.count.WaitFor(1));
  // A known peer claiming to be someone else.
  ASSERT_TRUE(client_->endpoint()->Send("server", RawRequest("mallory", 8)).ok());
  ASSERT_TRUE(client_->Call("server", "echo", {}, In(absl::Seconds(10))).ok());
  std::vector<std::string> reasons = rejects_.Reasons();
  ASSERT_EQ(reasons.size(), 2u);
  EXPECT_TRUE(absl::StrContains(reasons[0], "mallory: PERMISSION_DENIED: sender is not a known"))
      << reasons[0];
  EXPECT_TRUE(absl::StrContains(reasons[1], "client: PERMISSION_DENIED: header names sender"))
      << reasons[1];
  EXPECT_EQ(handled_.value(), 1);
  // Nothing came back to mallory.
  EXPECT_EQ(mallory->Receive(In(absl::Milliseconds(20))).status().code(),
            absl::StatusCode::kDeadlineExceeded);
}

TEST_P(TransportTest, MalformedRequestFromAKnownPeerGetsInvalidArgument) {
  StartServerAndClient();
  std::unique_ptr<Endpoint> raw = ClientEndpoint("raw");
  Connect(raw.get(), server_->endpoint());
  Message bad = RawRequest("raw", 99);
  bad.header.set_frame_count(3);  // announces frames that are not there
  ASSERT_TRUE(raw->Send("server", std::move(bad)).ok());
  absl::StatusOr<Message> response = raw->Receive(In(absl::Seconds(10)));
  ASSERT_TRUE(response.ok()) << response.status();
  EXPECT_EQ(response->header.kind(), KIND_RESPONSE);
  EXPECT_EQ(response->header.request_id(), 99u);
  EXPECT_EQ(response->header.status_code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  EXPECT_TRUE(absl::StrContains(response->header.status_message(), "announces 3 frames"));
  EXPECT_EQ(handled_.value(), 0);
  ASSERT_TRUE(client_->Call("server", "echo", {}, In(absl::Seconds(10))).ok());
}

TEST_P(TransportTest, HandlerErrorsArriveWithTheirCodeAndMessage) {
  StartServerAndClient();
  absl::StatusOr<Response> response = client_->Call("server", "fail", {}, In(absl::Seconds(10)));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(response.status().message(), "no row for key 7"));
  EXPECT_TRUE(absl::StrContains(response.status().message(), "peer server"));

  response = client_->Call("server", "nope", {}, In(absl::Seconds(10)));
  EXPECT_EQ(response.status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(client_->stats().pending, 0u);
}

TEST_P(TransportTest, ServerShutdownGivesPendingCallersUnavailable) {
  constexpr int kCalls = 3;
  StartServerAndClient(/*worker_threads=*/kCalls);
  std::vector<absl::Status> results(kCalls);
  std::vector<std::thread> callers;
  for (int i = 0; i < kCalls; ++i) {
    callers.emplace_back([&, i] {
      results[i] = client_->Call("server", "block", {}, In(absl::Seconds(30))).status();
    });
  }
  ASSERT_TRUE(entered_.WaitFor(kCalls));
  // Shutdown waits for the blocked handlers; the callers must be answered before that.
  std::thread stopper([&] { server_->Shutdown(); });
  for (std::thread& caller : callers) caller.join();
  release_.Add();
  stopper.join();
  for (const absl::Status& status : results) {
    EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  }
  EXPECT_EQ(client_->stats().pending, 0u);
}

// A handler that returns while Shutdown waits (within RpcServer::kShutdownGrace) sends its own
// answer: a scheduler's last heartbeat answer ("the job is stopping") must not turn into
// UNAVAILABLE because the scheduler shut down right after deciding it.
TEST_P(TransportTest, ServerShutdownLetsARunningHandlerAnswerWithinTheGrace) {
  StartServerAndClient();
  absl::StatusOr<Response> response = absl::UnknownError("not called");
  std::thread caller(
      [&] { response = client_->Call("server", "block", {}, In(absl::Seconds(30))); });
  ASSERT_TRUE(entered_.WaitFor(1));
  std::thread stopper([&] { server_->Shutdown(); });
  absl::SleepFor(absl::Milliseconds(100));  // Shutdown is now waiting for the handler
  release_.Add();
  caller.join();
  stopper.join();
  ASSERT_TRUE(response.ok()) << response.status();
  ASSERT_EQ(response->frames.size(), 1u);
  EXPECT_EQ(response->frames[0].bytes(), "late");
}

TEST_P(TransportTest, ClientShutdownGivesPendingCallersUnavailable) {
  StartServerAndClient();
  absl::Status result;
  std::thread caller(
      [&] { result = client_->Call("server", "block", {}, In(absl::Seconds(30))).status(); });
  ASSERT_TRUE(entered_.WaitFor(1));
  client_->Shutdown();
  caller.join();
  EXPECT_EQ(result.code(), absl::StatusCode::kUnavailable) << result;
  EXPECT_EQ(client_->Call("server", "echo", {}, In(absl::Seconds(1))).status().code(),
            absl::StatusCode::kUnavailable);
}

TEST_P(TransportTest, AFailingAbortCheckEndsAWaitingCallAtOnceAndAPassingOneChangesNothing) {
  std::atomic<bool> failed{false};
  std::atomic<int> checks{0};
  abort_check_ = [&]() -> absl::Status {
    ++checks;
    return failed ? absl::AbortedError("job stopped: ps1 died") : absl::OkStatus();
  };
  StartServerAndClient(/*worker_threads=*/2);
  // The check fails while a call with a 30 s deadline waits for an answer that is not coming.
  std::thread failer([&] {
    ASSERT_TRUE(entered_.WaitFor(1));
    absl::SleepFor(absl::Milliseconds(100));
    failed = true;
  });
  const absl::Time start = absl::Now();
  absl::StatusOr<Response> abandoned = client_->Call("server", "block", {}, In(absl::Seconds(30)));
  const absl::Duration took = absl::Now() - start;
  failer.join();
  EXPECT_EQ(abandoned.status().code(), absl::StatusCode::kAborted) << abandoned.status();
  EXPECT_TRUE(absl::StrContains(abandoned.status().message(), "job stopped: ps1 died"));
  EXPECT_TRUE(absl::StrContains(abandoned.status().message(), "call block to peer server"));
  EXPECT_LT(took, absl::Seconds(10));
  EXPECT_EQ(client_->stats().pending, 0u);
  EXPECT_EQ(client_->stats().abandoned, 1u);

  // While the check passes, a slow answer within the deadline arrives as usual.
  failed = false;
  checks = 0;
  std::thread releaser([&] {
    ASSERT_TRUE(entered_.WaitFor(2));
    absl::SleepFor(absl::Milliseconds(200));
    release_.Add();
  });
  absl::StatusOr<Response> slow = client_->Call("server", "block", {}, In(absl::Seconds(30)));
  releaser.join();
  ASSERT_TRUE(slow.ok()) << slow.status();
  EXPECT_GT(checks.load(), 0) << "the check runs while a call waits";
}

TEST_P(TransportTest, SendToAPeerOutsideTheAddressBookIsNotFound) {
  std::unique_ptr<Endpoint> endpoint = ClientEndpoint("lonely");
  EXPECT_EQ(endpoint->Send("nobody", RawRequest("lonely", 1)).code(), absl::StatusCode::kNotFound);
  endpoint->Close();
  EXPECT_EQ(endpoint->Receive(In(absl::Seconds(1))).status().code(),
            absl::StatusCode::kUnavailable);
}

INSTANTIATE_TEST_SUITE_P(Transports, TransportTest, ::testing::Values(Kind::kInProcess, Kind::kZmq),
                         [](const ::testing::TestParamInfo<Kind>& info) {
                           return info.param == Kind::kInProcess ? "InProcess" : "Zmq";
                         });

TEST(ZmqTransportTest, BindsAnEphemeralPortAndReportsIt) {
  EndpointOptions options;
  options.id = "ps0";
  options.bind_address = "tcp://127.0.0.1:0";
  absl::StatusOr<std::unique_ptr<Endpoint>> endpoint = NewZmqEndpoint(options);
  ASSERT_TRUE(endpoint.ok()) << endpoint.status();
  std::string address = (*endpoint)->address();
  EXPECT_TRUE(absl::StartsWith(address, "tcp://127.0.0.1:")) << address;
  EXPECT_FALSE(absl::EndsWith(address, ":0")) << address;
}

TEST(ZmqTransportTest, UnbindableAddressIsAnError) {
  EndpointOptions options;
  options.id = "ps0";
  options.bind_address = "tcp://not-an-address";
  EXPECT_FALSE(NewZmqEndpoint(options).ok());
}

TEST(ZmqTransportTest, ReplyToAPeerThatNeverConnectedIsUnavailable) {
  EndpointOptions options;
  options.id = "ps0";
  options.bind_address = "tcp://127.0.0.1:0";
  auto endpoint = NewZmqEndpoint(options);
  ASSERT_TRUE(endpoint.ok());
  ASSERT_TRUE((*endpoint)->AddPeer("worker0", "").ok());
  absl::Status sent = (*endpoint)->Send("worker0", RawRequest("ps0", 1));
  EXPECT_EQ(sent.code(), absl::StatusCode::kUnavailable) << sent;
}

TEST(InProcessTransportTest, DuplicateEndpointIdIsRejected) {
  InProcessNetwork network;
  EndpointOptions options;
  options.id = "a";
  auto first = network.NewEndpoint(options);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(network.NewEndpoint(options).status().code(), absl::StatusCode::kAlreadyExists);
  first->reset();
  EXPECT_TRUE(network.NewEndpoint(options).ok());
}

TEST(FaultInjectorTest, SeededProbabilitiesAreReproducible) {
  FaultInjector::Options options;
  options.seed = 7;
  options.drop_probability = 0.2;
  options.duplicate_probability = 0.1;
  FaultInjector a(options), b(options);
  int drops = 0;
  for (int i = 0; i < 1000; ++i) {
    FaultInjector::Action action = a.Decide("p", KIND_REQUEST).action;
    EXPECT_EQ(action, b.Decide("p", KIND_REQUEST).action);
    drops += action == FaultInjector::Action::kDrop;
  }
  EXPECT_GT(drops, 150);
  EXPECT_LT(drops, 250);
  EXPECT_EQ(a.stats().dropped, static_cast<uint64_t>(drops));
}

TEST(FaultInjectorTest, CountedRulesApplyToTheirPeerAndKindOnly) {
  FaultInjector faults;
  faults.DropNext("x", KIND_REQUEST, 2);
  EXPECT_EQ(faults.Decide("y", KIND_REQUEST).action, FaultInjector::Action::kDeliver);
  EXPECT_EQ(faults.Decide("x", KIND_RESPONSE).action, FaultInjector::Action::kDeliver);
  EXPECT_EQ(faults.Decide("x", KIND_REQUEST).action, FaultInjector::Action::kDrop);
  EXPECT_EQ(faults.Decide("x", KIND_REQUEST).action, FaultInjector::Action::kDrop);
  EXPECT_EQ(faults.Decide("x", KIND_REQUEST).action, FaultInjector::Action::kDeliver);
}

}  // namespace
}  // namespace transport
}  // namespace choir
