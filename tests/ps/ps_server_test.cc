// Parameter servers behind the transport (ps/server.h), key sharding (ps/sharding.h) and the
// worker's remote embedding store (worker/remote_embedding_store.h). The cluster tests run
// every server and the worker as endpoints of one process, swept over server counts and the
// in-process and ZeroMQ transports, and compare every pulled row bit for bit with the local
// in-process store.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/transport.h"
#include "gtest/gtest.h"
#include "tests/ps/ps_test_util.h"
#include "ps/feature_key.h"
#include "ps/server.h"
#include "ps/sharding.h"
#include "worker/local_embedding_store.h"
#include "worker/remote_embedding_store.h"

// Debian's libzmq is not TSan-instrumented; see tests/core/transport_test.cc.
extern "C" const char* __tsan_default_suppressions() {
  return "race:libzmq.so\n"
         "called_from_lib:libzmq.so\n"
         "race:tzset_internal\n";
}

namespace choir {
namespace {

using transport::Frame;

// ---------------------------------------------------------------------------------------------
// Sharding

std::vector<uint64_t> ManyKeys(int n) {
  std::vector<uint64_t> keys;
  keys.reserve(n);
  for (int i = 0; i < n; ++i) keys.push_back(FeatureKey(static_cast<uint32_t>(i % 3), i));
  return keys;
}

TEST(ShardingTest, ConsistentHashIsAPureFunctionInRange) {
  for (uint64_t key : ManyKeys(1000)) {
    for (int servers = 1; servers <= 8; ++servers) {
      const int s = ConsistentServerOf(key, servers);
      ASSERT_GE(s, 0);
      ASSERT_LT(s, servers);
      ASSERT_EQ(s, ConsistentServerOf(key, servers));
      ASSERT_EQ(s, NewConsistentHashSharding(servers)->ServerOf(key));
    }
    ASSERT_EQ(ConsistentServerOf(key, 1), 0);
  }
}

TEST(ShardingTest, KeysAreBalancedAcrossServersWithinThreePercent) {
  const std::vector<uint64_t> keys = ManyKeys(100000);
  for (int servers = 2; servers <= 8; ++servers) {
    std::vector<int> counts(servers, 0);
    for (uint64_t key : keys) ++counts[ConsistentServerOf(key, servers)];
    const double mean = static_cast<double>(keys.size()) / servers;
    for (int s = 0; s < servers; ++s) {
      EXPECT_NEAR(counts[s], mean, 0.03 * mean) << "servers " << servers << ", server " << s;
    }
  }
}

TEST(ShardingTest, AddingAServerMovesAboutOneOverSPlusOneOfTheKeysAllToTheNewServer) {
  const std::vector<uint64_t> keys = ManyKeys(100000);
  for (int servers = 1; servers <= 7; ++servers) {
    int moved = 0;
    for (uint64_t key : keys) {
      const int before = ConsistentServerOf(key, servers);
      const int after = ConsistentServerOf(key, servers + 1);
      if (before != after) {
        ++moved;
        ASSERT_EQ(after, servers) << "a moved key goes to the new server only";
      }
    }
    const double expected = 1.0 / (servers + 1);
    EXPECT_NEAR(static_cast<double>(moved) / keys.size(), expected, 0.03 * expected)
        << "from " << servers << " servers";
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster fixture

using testing::kAdagradSlot;
using testing::kAdamSlot;
using testing::kSgdSlot;
using testing::Kind;
using testing::TestTableOptions;

struct ClusterParam {
  int servers;
  Kind kind;
  int max_keys_per_request = RemoteEmbeddingStoreOptions().max_keys_per_request;
};

std::string ServerId(int s) { return absl::StrCat("ps", s); }

// S parameter servers "ps0".."ps{S-1}" and one worker "worker0" whose RemoteEmbeddingStore
// reaches them, over the in-process or the ZeroMQ transport (127.0.0.1, ephemeral ports).
class Cluster {
 public:
  Cluster(int num_servers, Kind kind, absl::Duration deadline = absl::Seconds(30),
          std::shared_ptr<transport::FaultInjector> worker_faults = nullptr,
          int max_keys_per_request = RemoteEmbeddingStoreOptions().max_keys_per_request,
          std::function<absl::Status()> job_status = nullptr)
      : kind_(kind) {
    RemoteEmbeddingStoreOptions store_options;
    store_options.job_status = std::move(job_status);
    store_options.max_keys_per_request = max_keys_per_request;
    store_options.slots = TestTableOptions().slots;
    store_options.deadline = deadline;
    for (int s = 0; s < num_servers; ++s) {
      transport::EndpointOptions endpoint_options;
      endpoint_options.id = ServerId(s);
      endpoint_options.bind_address = "tcp://127.0.0.1:0";
      ParamServerOptions server_options;
      server_options.table = TestTableOptions();
      absl::StatusOr<std::unique_ptr<ParamServer>> server =
          ParamServer::Start(MakeEndpoint(std::move(endpoint_options)), server_options);
      EXPECT_TRUE(server.ok()) << server.status();
      EXPECT_TRUE((*server)->AddPeer("worker0").ok());
      store_options.servers.push_back({(*server)->id(), (*server)->address()});
      servers_.push_back(*std::move(server));
    }
    transport::EndpointOptions worker_options;
    worker_options.id = "worker0";
    std::unique_ptr<transport::Endpoint> worker = MakeEndpoint(std::move(worker_options));
    if (worker_faults != nullptr) {
      worker = transport::NewFaultInjectingEndpoint(std::move(worker), worker_faults);
    }
    absl::StatusOr<std::unique_ptr<EmbeddingStore>> store =
        NewRemoteEmbeddingStore(std::move(worker), std::move(store_options));
    EXPECT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
  }

  // A bare RPC client "raw" admitted by server 0, for hand-made frames.
  std::unique_ptr<transport::RpcClient> RawClient() {
    transport::EndpointOptions options;
    options.id = "raw";
    std::unique_ptr<transport::Endpoint> endpoint = MakeEndpoint(std::move(options));
    EXPECT_TRUE(endpoint->AddPeer(servers_[0]->id(), servers_[0]->address()).ok());
    EXPECT_TRUE(servers_[0]->AddPeer("raw").ok());
    return std::make_unique<transport::RpcClient>(std::move(endpoint));
  }

  EmbeddingStore& store() { return *store_; }
  ParamServer& server(int s) { return *servers_[s]; }
  size_t TotalRows() const {
    size_t rows = 0;
    for (const auto& server : servers_) rows += server->table().size();
    return rows;
  }

 private:
  std::unique_ptr<transport::Endpoint> MakeEndpoint(transport::EndpointOptions options) {
    return testing::MakeTestEndpoint(kind_, &network_, std::move(options));
  }

  const Kind kind_;
  transport::InProcessNetwork network_;
  std::vector<std::unique_ptr<ParamServer>> servers_;
  std::unique_ptr<EmbeddingStore> store_;
};

size_t Floats(const EmbeddingStore& store, const std::vector<uint64_t>& keys) {
  size_t n = 0;
  for (uint64_t key : keys) n += static_cast<size_t>(store.Dim(key));
  return n;
}

// Unique keys of all three slots for step `step`: overlapping windows of raw ids, in an order
// that interleaves slots (and hence servers).
std::vector<uint64_t> StepKeys(int step) {
  std::vector<uint64_t> keys;
  for (int i = 0; i < 40; ++i) {
    const int64_t raw = step * 17 + i;
    keys.push_back(FeatureKey(kAdagradSlot, raw));
    if (i % 2 == 0) keys.push_back(FeatureKey(kSgdSlot, raw * 3));
    if (i % 3 == 0) keys.push_back(FeatureKey(kAdamSlot, 1000 - raw));
  }
  return keys;
}

// A deterministic gradient with both signs and several magnitudes.
std::vector<float> StepGrads(int step, size_t n) {
  std::vector<float> grads(n);
  for (size_t i = 0; i < n; ++i) {
    grads[i] = static_cast<float>(static_cast<int>((i * 7 + step * 13) % 23) - 11) * 0.03125f;
  }
  return grads;
}

class ClusterTest : public ::testing::TestWithParam<ClusterParam> {};

TEST_P(ClusterTest, PullPushSequenceIsBitIdenticalToTheLocalStore) {
  Cluster cluster(GetParam().servers, GetParam().kind, absl::Seconds(30), nullptr,
                  GetParam().max_keys_per_request);
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok()) << local.status();

  std::set<uint64_t> seen;
  for (int step = 0; step < 12; ++step) {
    const std::vector<uint64_t> keys = StepKeys(step);
    for (uint64_t key : keys) {
      ASSERT_EQ(cluster.store().Dim(key), (*local)->Dim(key));
      seen.insert(key);
    }
    const size_t n = Floats(cluster.store(), keys);
    std::vector<float> remote_rows(n, -1.0f);
    std::vector<float> local_rows(n, -2.0f);
    ASSERT_TRUE(cluster.store().Pull(keys, absl::MakeSpan(remote_rows)).ok());
    ASSERT_TRUE((*local)->Pull(keys, absl::MakeSpan(local_rows)).ok());
    ASSERT_EQ(std::memcmp(remote_rows.data(), local_rows.data(), n * sizeof(float)), 0)
        << "step " << step;

    const std::vector<float> grads = StepGrads(step, n);
    ASSERT_TRUE(cluster.store().Push(keys, grads).ok());
    ASSERT_TRUE((*local)->Push(keys, grads).ok());
  }
  // After the last push: every row touched, compared once more.
  std::vector<uint64_t> all(seen.begin(), seen.end());
  const size_t n = Floats(cluster.store(), all);
  std::vector<float> remote_rows(n), local_rows(n);
  ASSERT_TRUE(cluster.store().Pull(all, absl::MakeSpan(remote_rows)).ok());
  ASSERT_TRUE((*local)->Pull(all, absl::MakeSpan(local_rows)).ok());
  EXPECT_EQ(std::memcmp(remote_rows.data(), local_rows.data(), n * sizeof(float)), 0);

  // Each row lives on exactly the server the policy names.
  EXPECT_EQ(cluster.TotalRows(), seen.size());
  for (int s = 0; s < GetParam().servers; ++s) {
    size_t expected = 0;
    for (uint64_t key : seen) expected += ConsistentServerOf(key, GetParam().servers) == s;
    EXPECT_EQ(cluster.server(s).table().size(), expected) << "server " << s;
    EXPECT_GT(expected, 0u);
  }
}

// Lookups through the servers read what the local store's lookups read (stored rows and the
// initial values of unseen keys, across pieces and servers) and create no row anywhere.
TEST_P(ClusterTest, LookupsReadLikeTheLocalStoreAndCreateNoRows) {
  Cluster cluster(GetParam().servers, GetParam().kind, absl::Seconds(30), nullptr,
                  GetParam().max_keys_per_request);
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local = NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok()) << local.status();
  const std::vector<uint64_t> trained = StepKeys(0);
  const size_t n = Floats(cluster.store(), trained);
  std::vector<float> rows(n);
  ASSERT_TRUE(cluster.store().Pull(trained, absl::MakeSpan(rows)).ok());
  ASSERT_TRUE((*local)->Pull(trained, absl::MakeSpan(rows)).ok());
  ASSERT_TRUE(cluster.store().Push(trained, StepGrads(0, n)).ok());
  ASSERT_TRUE((*local)->Push(trained, StepGrads(0, n)).ok());
  const size_t stored = cluster.TotalRows();

  std::vector<uint64_t> keys = StepKeys(1);  // overlaps step 0's keys, and has unseen ones
  const size_t m = Floats(cluster.store(), keys);
  std::vector<float> remote_rows(m, -1.0f), local_rows(m, -2.0f);
  ASSERT_TRUE(cluster.store().Lookup(keys, absl::MakeSpan(remote_rows)).ok());
  ASSERT_TRUE((*local)->Lookup(keys, absl::MakeSpan(local_rows)).ok());
  EXPECT_EQ(std::memcmp(remote_rows.data(), local_rows.data(), m * sizeof(float)), 0);
  EXPECT_EQ(cluster.TotalRows(), stored);
  // and what a pull of the same keys reads (which creates the unseen rows)
  ASSERT_TRUE(cluster.store().Pull(keys, absl::MakeSpan(local_rows)).ok());
  EXPECT_EQ(std::memcmp(remote_rows.data(), local_rows.data(), m * sizeof(float)), 0);
  EXPECT_GT(cluster.TotalRows(), stored);
}

TEST_P(ClusterTest, EmptyPullAndPushSendNothingAndSucceed) {
  Cluster cluster(GetParam().servers, GetParam().kind);
  EXPECT_TRUE(cluster.store().Pull({}, {}).ok());
  EXPECT_TRUE(cluster.store().Push({}, {}).ok());
  EXPECT_EQ(cluster.TotalRows(), 0u);
}

TEST_P(ClusterTest, BadCallsAreRejectedBeforeAnyServerChanges) {
  Cluster cluster(GetParam().servers, GetParam().kind);
  const std::vector<uint64_t> keys = StepKeys(0);
  const size_t n = Floats(cluster.store(), keys);

  std::vector<float> out(n - 1);
  absl::Status status = cluster.store().Pull(keys, absl::MakeSpan(out));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;

  std::vector<uint64_t> with_unknown = keys;
  with_unknown.push_back(FeatureKey(5, 99));
  std::vector<float> out2(n + 16);
  status = cluster.store().Pull(with_unknown, absl::MakeSpan(out2));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "slot 5")) << status;

  std::vector<float> grads = StepGrads(0, n);
  grads[n - 1] = std::numeric_limits<float>::quiet_NaN();
  status = cluster.store().Push(keys, grads);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(cluster.TotalRows(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Clusters, ClusterTest,
                         ::testing::Values(ClusterParam{1, Kind::kInProcess},
                                           ClusterParam{2, Kind::kInProcess},
                                           ClusterParam{3, Kind::kInProcess},
                                           ClusterParam{4, Kind::kInProcess},
                                           ClusterParam{3, Kind::kZmq},
                                           // Pulls split into many pieces per server.
                                           ClusterParam{3, Kind::kInProcess, 5},
                                           ClusterParam{2, Kind::kZmq, 3}),
                         [](const ::testing::TestParamInfo<ClusterParam>& info) {
                           return absl::StrCat(
                               info.param.kind == Kind::kInProcess ? "InProcess" : "Zmq",
                               info.param.servers, "Servers",
                               info.param.max_keys_per_request < 100
                                   ? absl::StrCat("Pieces", info.param.max_keys_per_request)
                                   : "");
                         });

// ---------------------------------------------------------------------------------------------
// Server-side checks of peer bytes

class ServerFramesTest : public ::testing::Test {
 protected:
  absl::Status Call(const std::string& method, std::vector<Frame> frames) {
    return client_->Call("ps0", method, std::move(frames), absl::Now() + absl::Seconds(10))
        .status();
  }
  Cluster cluster_{1, Kind::kInProcess};
  std::unique_ptr<transport::RpcClient> client_ = cluster_.RawClient();
  const uint64_t key_ = FeatureKey(kAdagradSlot, 1);  // dim 8
};

TEST_F(ServerFramesTest, MalformedPullsAreInvalidArgument) {
  EXPECT_EQ(Call(kPsPullMethod, {}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Call(kPsPullMethod, {Frame::FromVector(std::vector<uint64_t>{key_}),
                                 Frame::FromVector(std::vector<uint64_t>{key_})})
                .code(),
            absl::StatusCode::kInvalidArgument);
  absl::Status status = Call(kPsPullMethod, {Frame::FromVector(std::vector<float>{1.0f, 2.0f})});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "uint64")) << status;
  status = Call(kPsPullMethod, {Frame::CopyOf("abc")});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  status = Call(kPsLookupMethod, {});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "lookup: expected 1 frame")) << status;
  status = Call(kPsLookupMethod, {Frame::FromVector(std::vector<uint64_t>{key_, FeatureKey(9, 1)})});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "slot 9")) << status;
  EXPECT_EQ(cluster_.TotalRows(), 0u);
}

TEST_F(ServerFramesTest, UnknownSlotIsInvalidArgumentNamingTheKey) {
  const uint64_t unknown = FeatureKey(9, 123);
  absl::Status status =
      Call(kPsPullMethod, {Frame::FromVector(std::vector<uint64_t>{key_, unknown})});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  char hex[32];
  std::snprintf(hex, sizeof(hex), "%#llx", static_cast<unsigned long long>(unknown));
  EXPECT_TRUE(absl::StrContains(status.message(), hex)) << status << " lacks " << hex;
  EXPECT_TRUE(absl::StrContains(status.message(), "slot 9")) << status;
  EXPECT_EQ(cluster_.TotalRows(), 0u) << "no row is created by a rejected pull";
}

TEST_F(ServerFramesTest, MalformedPushesAreInvalidArgumentAndChangeNothing) {
  const std::vector<uint64_t> keys = {key_};
  // One frame only.
  EXPECT_EQ(Call(kPsPushMethod, {Frame::FromVector(keys)}).code(),
            absl::StatusCode::kInvalidArgument);
  // Too few gradient floats.
  absl::Status status = Call(kPsPushMethod, {Frame::FromVector(keys),
                                             Frame::FromVector(std::vector<float>(7, 1.0f))});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "need 8")) << status;
  // Gradients of the wrong element type.
  status = Call(kPsPushMethod,
                {Frame::FromVector(keys), Frame::FromVector(std::vector<double>(8, 1.0))});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  // A non-finite gradient.
  std::vector<float> grads(8, 1.0f);
  grads[3] = std::numeric_limits<float>::infinity();
  status = Call(kPsPushMethod, {Frame::FromVector(keys), Frame::FromVector(grads)});
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_EQ(cluster_.TotalRows(), 0u);

  // A well-formed push then works, and the pulled row reflects it.
  EXPECT_TRUE(
      Call(kPsPushMethod, {Frame::FromVector(keys), Frame::FromVector(std::vector<float>(8, 1.0f))})
          .ok());
  EXPECT_EQ(cluster_.TotalRows(), 1u);
}

// ---------------------------------------------------------------------------------------------
// Faults

// Keys that the default policy spreads over every one of `servers` servers.
std::vector<uint64_t> KeysOnEveryServer(int servers) {
  std::vector<uint64_t> keys;
  std::vector<bool> covered(servers, false);
  for (int64_t raw = 0; keys.size() < 64 || !std::all_of(covered.begin(), covered.end(),
                                                          [](bool c) { return c; });
       ++raw) {
    const uint64_t key = FeatureKey(kAdagradSlot, raw);
    covered[ConsistentServerOf(key, servers)] = true;
    keys.push_back(key);
  }
  return keys;
}

TEST(ClusterFaultTest, DroppedRequestIsDeadlineExceededNamingTheServerAndTheNextCallWorks) {
  auto faults = std::make_shared<transport::FaultInjector>();
  Cluster cluster(3, Kind::kInProcess, absl::Milliseconds(200), faults);
  faults->DropNext("ps1", transport::KIND_REQUEST);
  const std::vector<uint64_t> keys = KeysOnEveryServer(3);
  std::vector<float> rows(Floats(cluster.store(), keys));
  absl::Status status = cluster.store().Pull(keys, absl::MakeSpan(rows));
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "parameter server 1 (ps1)")) << status;
  EXPECT_EQ(faults->stats().dropped, 1u);

  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok());
  std::vector<float> expected(rows.size());
  ASSERT_TRUE((*local)->Pull(keys, absl::MakeSpan(expected)).ok());
  ASSERT_TRUE(cluster.store().Pull(keys, absl::MakeSpan(rows)).ok());
  EXPECT_EQ(std::memcmp(rows.data(), expected.data(), rows.size() * sizeof(float)), 0);
}

TEST(ClusterFaultTest, ShutDownServerIsUnavailableNamingItWithoutWaitingForTheDeadline) {
  Cluster cluster(2, Kind::kInProcess, absl::Seconds(30));
  cluster.server(1).Shutdown();
  const std::vector<uint64_t> keys = KeysOnEveryServer(2);
  std::vector<float> rows(Floats(cluster.store(), keys));
  const absl::Time start = absl::Now();
  absl::Status status = cluster.store().Pull(keys, absl::MakeSpan(rows));
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "parameter server 1 (ps1)")) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(10)) << "must fail fast, not at the deadline";

  std::vector<float> grads(rows.size(), 0.5f);
  status = cluster.store().Push(keys, grads);
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "ps1")) << status;
}

// A server that never answers, and the job fails meanwhile (the scheduler's verdict, which the
// cluster passes as job_status): the waiting call ends with the job's status, not at its
// deadline.
TEST(ClusterFaultTest, AFailedJobEndsACallWaitingOnASilentServerAtOnce) {
  auto faults = std::make_shared<transport::FaultInjector>();
  std::atomic<bool> failed{false};
  Cluster cluster(2, Kind::kInProcess, absl::Seconds(30), faults,
                  RemoteEmbeddingStoreOptions().max_keys_per_request, [&failed]() {
                    return failed ? absl::AbortedError("job stopped: worker 1 (w1) failed")
                                  : absl::OkStatus();
                  });
  faults->DropNext("ps1", transport::KIND_REQUEST);
  const std::vector<uint64_t> keys = KeysOnEveryServer(2);
  std::vector<float> rows(Floats(cluster.store(), keys));
  const absl::Time start = absl::Now();
  std::thread fail_the_job([&failed] {
    absl::SleepFor(absl::Milliseconds(300));
    failed = true;
  });
  const absl::Status status = cluster.store().Pull(keys, absl::MakeSpan(rows));
  const absl::Duration took = absl::Now() - start;
  fail_the_job.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kAborted) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "parameter server 1 (ps1)")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "job stopped: worker 1 (w1) failed")) << status;
  EXPECT_GE(took, absl::Milliseconds(300));
  EXPECT_LT(took, absl::Seconds(10)) << "must end when the job fails, not at the deadline";
  EXPECT_EQ(faults->stats().dropped, 1u);
}

TEST(ClusterFaultTest, ZmqServerShutDownGivesAnErrorNamingItNotAHang) {
  Cluster cluster(2, Kind::kZmq, absl::Milliseconds(500));
  cluster.server(1).Shutdown();
  const std::vector<uint64_t> keys = KeysOnEveryServer(2);
  std::vector<float> rows(Floats(cluster.store(), keys));
  absl::Status status = cluster.store().Pull(keys, absl::MakeSpan(rows));
  EXPECT_TRUE(status.code() == absl::StatusCode::kDeadlineExceeded ||
              status.code() == absl::StatusCode::kUnavailable)
      << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "parameter server 1 (ps1)")) << status;
}

TEST(RemoteStoreOptionsTest, InvalidOptionsAreRejected) {
  transport::InProcessNetwork network;
  auto make = [&](RemoteEmbeddingStoreOptions options) {
    transport::EndpointOptions endpoint_options;
    endpoint_options.id = "w";
    auto endpoint = network.NewEndpoint(endpoint_options);
    EXPECT_TRUE(endpoint.ok());
    return NewRemoteEmbeddingStore(*std::move(endpoint), std::move(options)).status();
  };
  RemoteEmbeddingStoreOptions good;
  good.slots = TestTableOptions().slots;
  good.servers = {{"ps0", ""}, {"ps1", ""}};
  EXPECT_TRUE(make(good).ok());

  RemoteEmbeddingStoreOptions no_servers = good;
  no_servers.servers.clear();
  EXPECT_EQ(make(no_servers).code(), absl::StatusCode::kInvalidArgument);
  RemoteEmbeddingStoreOptions duplicate = good;
  duplicate.servers = {{"ps0", ""}, {"ps0", ""}};
  EXPECT_EQ(make(duplicate).code(), absl::StatusCode::kInvalidArgument);
  RemoteEmbeddingStoreOptions wrong_policy = good;
  wrong_policy.sharding = NewConsistentHashSharding(3);
  EXPECT_EQ(make(wrong_policy).code(), absl::StatusCode::kInvalidArgument);
  RemoteEmbeddingStoreOptions no_deadline = good;
  no_deadline.deadline = absl::ZeroDuration();
  EXPECT_EQ(make(no_deadline).code(), absl::StatusCode::kInvalidArgument);
  RemoteEmbeddingStoreOptions no_pieces = good;
  no_pieces.max_keys_per_request = 0;
  absl::Status status = make(no_pieces);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(status.message(), "max_keys_per_request")) << status;
}

}  // namespace
}  // namespace choir
