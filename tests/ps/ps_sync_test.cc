// Synchronous push aggregation (ParamServerOptions::sync_workers, RemoteEmbeddingStoreOptions::
// num_workers): W workers, each a thread with its own endpoint and remote store, push their
// slices of a global batch; the servers sum the slices per key in worker order and apply each
// key's optimizer once. The servers' rows must equal one local store pushing the whole batch's
// summed gradients: bit for bit with W = 1, within a stated tolerance with W > 1 (the W
// partial sums round differently from one sum over the batch). Faults: duplicated, stale and
// early pushes, a worker that never pushes, shutdown with pushes waiting.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <memory>
#include <random>
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

using testing::kAdagradSlot;
using testing::kAdamSlot;
using testing::kSgdSlot;
using testing::Kind;
using testing::TestTableOptions;

std::string ServerId(int s) { return absl::StrCat("ps", s); }
std::string WorkerId(int w) { return absl::StrCat("worker", w); }

// S synchronous servers "ps0".."ps{S-1}" and W workers "worker0".."worker{W-1}", each with its
// own endpoint and synchronous RemoteEmbeddingStore, plus a raw RPC client "raw" admitted by
// server 0.
class SyncCluster {
 public:
  SyncCluster(int num_servers, int num_workers, Kind kind = Kind::kInProcess,
              absl::Duration deadline = absl::Seconds(30),
              std::shared_ptr<transport::FaultInjector> worker0_faults = nullptr)
      : kind_(kind) {
    std::vector<RemoteEmbeddingStoreOptions::Server> servers;
    for (int s = 0; s < num_servers; ++s) {
      transport::EndpointOptions endpoint_options;
      endpoint_options.id = ServerId(s);
      endpoint_options.bind_address = "tcp://127.0.0.1:0";
      ParamServerOptions server_options;
      server_options.table = TestTableOptions();
      server_options.sync_workers = num_workers;
      absl::StatusOr<std::unique_ptr<ParamServer>> server =
          ParamServer::Start(MakeEndpoint(std::move(endpoint_options)), server_options);
      EXPECT_TRUE(server.ok()) << server.status();
      for (int w = 0; w < num_workers; ++w) EXPECT_TRUE((*server)->AddPeer(WorkerId(w)).ok());
      EXPECT_TRUE((*server)->AddPeer("raw").ok());
      servers.push_back({(*server)->id(), (*server)->address()});
      servers_.push_back(*std::move(server));
    }
    for (int w = 0; w < num_workers; ++w) {
      RemoteEmbeddingStoreOptions store_options;
      store_options.servers = servers;
      store_options.slots = TestTableOptions().slots;
      store_options.deadline = deadline;
      store_options.worker_index = w;
      store_options.num_workers = num_workers;
      transport::EndpointOptions worker_options;
      worker_options.id = WorkerId(w);
      std::unique_ptr<transport::Endpoint> endpoint = MakeEndpoint(std::move(worker_options));
      if (w == 0 && worker0_faults != nullptr) {
        endpoint = transport::NewFaultInjectingEndpoint(std::move(endpoint), worker0_faults);
      }
      absl::StatusOr<std::unique_ptr<EmbeddingStore>> store =
          NewRemoteEmbeddingStore(std::move(endpoint), std::move(store_options));
      EXPECT_TRUE(store.ok()) << store.status();
      stores_.push_back(*std::move(store));
    }
  }

  EmbeddingStore& store(int w) { return *stores_[w]; }
  ParamServer& server(int s) { return *servers_[s]; }
  int num_servers() const { return static_cast<int>(servers_.size()); }

  // An endpoint "raw" that reaches every server, for hand-made requests.
  std::unique_ptr<transport::Endpoint> RawEndpoint() {
    transport::EndpointOptions options;
    options.id = "raw";
    std::unique_ptr<transport::Endpoint> endpoint = MakeEndpoint(std::move(options));
    for (const auto& server : servers_) {
      EXPECT_TRUE(endpoint->AddPeer(server->id(), server->address()).ok());
    }
    return endpoint;
  }

 private:
  std::unique_ptr<transport::Endpoint> MakeEndpoint(transport::EndpointOptions options) {
    return testing::MakeTestEndpoint(kind_, &network_, std::move(options));
  }

  const Kind kind_;
  transport::InProcessNetwork network_;
  std::vector<std::unique_ptr<ParamServer>> servers_;
  std::vector<std::unique_ptr<EmbeddingStore>> stores_;
};

int DimOf(uint64_t key) { return TestTableOptions().slots.at(SlotOf(key)).dim; }

size_t Floats(const std::vector<uint64_t>& keys) {
  size_t n = 0;
  for (uint64_t key : keys) n += static_cast<size_t>(DimOf(key));
  return n;
}

// Unique keys and their summed gradients, in order of first appearance; sums in input order.
struct Sparse {
  std::vector<uint64_t> keys;
  std::vector<float> grads;

  void Add(uint64_t key, const float* g) {
    const size_t dim = static_cast<size_t>(DimOf(key));
    size_t offset = 0;
    for (uint64_t k : keys) {
      if (k == key) {
        for (size_t d = 0; d < dim; ++d) grads[offset + d] += g[d];
        return;
      }
      offset += static_cast<size_t>(DimOf(k));
    }
    keys.push_back(key);
    grads.insert(grads.end(), g, g + dim);
  }
};

// One sample: a few keys of the three slots (overlapping across samples and steps) and a
// gradient per key with arbitrary float values (sums round).
struct Sample {
  std::vector<uint64_t> keys;
  std::vector<std::vector<float>> grads;
};

std::vector<Sample> StepBatch(int step) {
  std::mt19937_64 rng(1000 + step);
  // 1..8 samples: with W = 3 some steps leave workers with no sample at all. Few distinct keys
  // (4 per slot), so that most keys appear in several samples and several workers' slices.
  const int batch = 1 + step % 8;
  std::vector<Sample> samples(batch);
  std::uniform_real_distribution<float> value(-1.0f, 1.0f);
  for (Sample& sample : samples) {
    const uint32_t slots[] = {kAdagradSlot, kAdamSlot, kSgdSlot};
    const int n = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < n; ++i) {
      const uint32_t slot = slots[rng() % 3];
      const uint64_t key = FeatureKey(slot, static_cast<int64_t>(rng() % 4));
      if (std::find(sample.keys.begin(), sample.keys.end(), key) != sample.keys.end()) continue;
      std::vector<float> g(DimOf(key));
      for (float& x : g) x = value(rng);
      sample.keys.push_back(key);
      sample.grads.push_back(std::move(g));
    }
  }
  return samples;
}

// The part of `samples` worker w of W trains on (samples b with b % W == w), summed per key.
Sparse SliceOf(const std::vector<Sample>& samples, int w, int num_workers) {
  Sparse slice;
  for (size_t b = 0; b < samples.size(); ++b) {
    if (static_cast<int>(b % num_workers) != w) continue;
    for (size_t i = 0; i < samples[b].keys.size(); ++i) {
      slice.Add(samples[b].keys[i], samples[b].grads[i].data());
    }
  }
  return slice;
}

std::vector<uint64_t> AllKeys() {
  std::vector<uint64_t> keys;
  for (uint32_t slot : {kAdagradSlot, kAdamSlot, kSgdSlot}) {
    for (int i = 0; i < 6; ++i) keys.push_back(FeatureKey(slot, i));
  }
  return keys;
}

std::vector<float> PullAll(EmbeddingStore& store) {
  const std::vector<uint64_t> keys = AllKeys();
  std::vector<float> rows(Floats(keys));
  absl::Status status = store.Pull(keys, absl::MakeSpan(rows));
  EXPECT_TRUE(status.ok()) << status;
  return rows;
}

// Runs `steps` synchronous steps of W workers (one thread each: pull its keys, push its
// slice) and returns every row afterwards; `reference`, when given, gets the same steps as
// one store pushing the whole batch, and is compared after every step with `tolerance`
// (relative to max(|a|, |b|, 1e-3); 0: bit for bit).
double max_error_seen = 0;  // the largest relative difference TrainSync found, for the log

std::vector<float> TrainSync(SyncCluster& cluster, int num_workers, int steps,
                             EmbeddingStore* reference, double tolerance) {
  for (int step = 0; step < steps; ++step) {
    const std::vector<Sample> samples = StepBatch(step);
    std::vector<absl::Status> statuses(num_workers);
    std::vector<std::thread> threads;
    for (int w = 0; w < num_workers; ++w) {
      threads.emplace_back([&, w] {
        const Sparse slice = SliceOf(samples, w, num_workers);
        std::vector<float> rows(Floats(slice.keys));
        statuses[w] = cluster.store(w).Pull(slice.keys, absl::MakeSpan(rows));
        if (statuses[w].ok()) statuses[w] = cluster.store(w).Push(slice.keys, slice.grads);
      });
    }
    for (std::thread& thread : threads) thread.join();
    for (int w = 0; w < num_workers; ++w) {
      EXPECT_TRUE(statuses[w].ok()) << "step " << step << ", worker " << w << ": " << statuses[w];
    }
    if (reference == nullptr) continue;
    const Sparse whole = SliceOf(samples, 0, 1);
    std::vector<float> rows(Floats(whole.keys));
    EXPECT_TRUE(reference->Pull(whole.keys, absl::MakeSpan(rows)).ok());
    EXPECT_TRUE(reference->Push(whole.keys, whole.grads).ok());
    const std::vector<float> got = PullAll(cluster.store(0));
    const std::vector<float> want = PullAll(*reference);
    EXPECT_EQ(got.size(), want.size());
    if (tolerance == 0) {
      EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0)
          << "step " << step;
    } else {
      double worst = 0;
      size_t worst_i = 0;
      for (size_t i = 0; i < got.size() && i < want.size(); ++i) {
        const double scale = std::max({std::fabs(got[i]), std::fabs(want[i]), 1e-3f});
        const double error = std::fabs(got[i] - want[i]) / scale;
        if (error > worst) {
          worst = error;
          worst_i = i;
        }
      }
      EXPECT_LE(worst, tolerance) << "step " << step << ", float " << worst_i << ": "
                                  << got[worst_i] << " vs " << want[worst_i];
      max_error_seen = std::max(max_error_seen, worst);
    }
  }
  return PullAll(cluster.store(0));
}

struct SyncParam {
  int servers;
  int workers;
  Kind kind;
};

class SyncTrainingTest : public ::testing::TestWithParam<SyncParam> {};

// The point of synchronous mode: W workers train like one worker with the whole batch.
TEST_P(SyncTrainingTest, RowsEqualOneLocalStorePushingTheWholeBatch) {
  const SyncParam p = GetParam();
  SyncCluster cluster(p.servers, p.workers, p.kind);
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok()) << local.status();
  constexpr int kSteps = 24;
  max_error_seen = 0;
  TrainSync(cluster, p.workers, kSteps, local->get(), p.workers == 1 ? 0.0 : 1e-6);
  std::printf("%d servers, %d workers: largest relative difference %.3g\n", p.servers, p.workers,
              max_error_seen);
  for (int s = 0; s < p.servers; ++s) {
    const SyncStats stats = cluster.server(s).sync_stats();
    EXPECT_EQ(stats.step, kSteps) << "server " << s << ": one step per Push, empty ones too";
    EXPECT_EQ(cluster.server(s).table().step(), static_cast<uint64_t>(kSteps));
    EXPECT_EQ(stats.duplicates + stats.rejected, 0u);
    EXPECT_FALSE(stats.abandoned);
  }
}

INSTANTIATE_TEST_SUITE_P(Workers, SyncTrainingTest,
                         ::testing::Values(SyncParam{2, 1, Kind::kInProcess},
                                           SyncParam{2, 2, Kind::kInProcess},
                                           SyncParam{2, 3, Kind::kInProcess},
                                           SyncParam{1, 3, Kind::kInProcess},
                                           SyncParam{3, 3, Kind::kInProcess},
                                           SyncParam{2, 2, Kind::kZmq}),
                         [](const ::testing::TestParamInfo<SyncParam>& info) {
                           return absl::StrCat(
                               info.param.kind == Kind::kInProcess ? "InProcess" : "Zmq",
                               info.param.servers, "Servers", info.param.workers, "Workers");
                         });

TEST(SyncTest, RunsAreBitIdentical) {
  SyncCluster first(2, 3);
  SyncCluster second(2, 3);
  const std::vector<float> a = TrainSync(first, 3, 12, nullptr, 0);
  const std::vector<float> b = TrainSync(second, 3, 12, nullptr, 0);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(std::memcmp(a.data(), b.data(), a.size() * sizeof(float)), 0);
}

// Keys that the default policy sends to server `s` of `servers`.
std::vector<uint64_t> KeysOnServer(int s, int servers, int n) {
  std::vector<uint64_t> keys;
  for (int64_t raw = 0; static_cast<int>(keys.size()) < n; ++raw) {
    const uint64_t key = FeatureKey(kAdagradSlot, raw);
    if (ConsistentServerOf(key, servers) == s) keys.push_back(key);
  }
  return keys;
}

// Without the empty pushes, server 1 would wait for worker 0 (and server 0 for worker 1)
// until the deadline.
TEST(SyncTest, AWorkerWithNoKeysForAServerStillCompletesThatServersStep) {
  SyncCluster cluster(2, 2, Kind::kInProcess, absl::Seconds(20));
  const std::vector<uint64_t> on0 = KeysOnServer(0, 2, 3);
  const std::vector<uint64_t> on1 = KeysOnServer(1, 2, 3);
  struct Step {
    std::vector<uint64_t> keys[2];  // per worker
  };
  const Step steps[] = {{{on0, on1}}, {{on1, on0}}, {{on0, {}}}, {{{}, {}}}};
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok());
  for (const Step& step : steps) {
    std::vector<absl::Status> statuses(2);
    std::vector<std::thread> threads;
    Sparse whole;
    for (int w = 0; w < 2; ++w) {
      const std::vector<float> grads(Floats(step.keys[w]), 0.25f * (w + 1));
      for (size_t i = 0; i < step.keys[w].size(); ++i) whole.Add(step.keys[w][i], &grads[i * 8]);
      threads.emplace_back(
          [&, w, grads] { statuses[w] = cluster.store(w).Push(step.keys[w], grads); });
    }
    for (std::thread& thread : threads) thread.join();
    for (int w = 0; w < 2; ++w) ASSERT_TRUE(statuses[w].ok()) << statuses[w];
    ASSERT_TRUE((*local)->Push(whole.keys, whole.grads).ok());
  }
  for (int s = 0; s < 2; ++s) EXPECT_EQ(cluster.server(s).sync_stats().step, 4);
  std::vector<uint64_t> keys = on0;
  keys.insert(keys.end(), on1.begin(), on1.end());
  std::vector<float> got(Floats(keys)), want(Floats(keys));
  ASSERT_TRUE(cluster.store(1).Pull(keys, absl::MakeSpan(got)).ok());
  ASSERT_TRUE((*local)->Pull(keys, absl::MakeSpan(want)).ok());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), got.size() * sizeof(float)), 0);
}

// ---------------------------------------------------------------------------------------------
// Hand-made requests

// A push request with an explicit request id, sent over a raw endpoint.
transport::Message PushMessage(uint64_t request_id, const std::vector<uint64_t>& keys,
                               const std::vector<float>& grads, int64_t worker, int64_t step,
                               absl::Time deadline = absl::Now() + absl::Seconds(30)) {
  transport::Message message;
  message.header.set_kind(transport::KIND_REQUEST);
  message.header.set_request_id(request_id);
  message.header.set_method(kPsPushMethod);
  message.header.set_sender("raw");
  message.header.set_deadline_unix_micros(absl::ToUnixMicros(deadline));
  message.frames.push_back(Frame::FromVector(keys));
  message.frames.push_back(Frame::FromVector(grads));
  message.frames.push_back(Frame::FromVector(std::vector<int64_t>{worker, step}));
  transport::FinishHeader(&message);
  return message;
}

// The next response on `endpoint`: its request id and status.
std::pair<uint64_t, absl::Status> NextResponse(transport::Endpoint& endpoint) {
  absl::StatusOr<transport::Message> message = endpoint.Receive(absl::Now() + absl::Seconds(20));
  EXPECT_TRUE(message.ok()) << message.status();
  if (!message.ok()) return {0, message.status()};
  const transport::Header& h = message->header;
  return {h.request_id(), absl::Status(static_cast<absl::StatusCode>(h.status_code()),
                                       h.status_message())};
}

// AwaitSync's condition: at least n pushes of step 0 wait.
auto Waiting(int n) {
  return [n](const SyncStats& stats) { return stats.step == 0 && stats.waiting >= n; };
}

std::vector<float> PullRow(EmbeddingStore& store, uint64_t key) {
  std::vector<float> row(DimOf(key));
  EXPECT_TRUE(store.Pull({key}, absl::MakeSpan(row)).ok());
  return row;
}

// Worker 0's push arrives twice (same request id) while the step waits for worker 1: the copy
// waits too, both copies are answered OK once the step is applied, and the gradient counts
// once. A copy arriving after the step was applied gets the same answer (OK: it may overtake
// the original's answer) and changes nothing; a copy of an older step is FAILED_PRECONDITION.
TEST(SyncDuplicateTest, ACopyOfAPushIsNotCountedTwice) {
  SyncCluster cluster(1, 2);
  std::unique_ptr<transport::Endpoint> raw = cluster.RawEndpoint();
  const uint64_t key = FeatureKey(kAdagradSlot, 5);
  const std::vector<float> g0(8, 0.5f), g1(8, -0.125f);
  ASSERT_TRUE(raw->Send("ps0", PushMessage(77, {key}, g0, /*worker=*/0, /*step=*/0)).ok());
  ASSERT_TRUE(raw->Send("ps0", PushMessage(77, {key}, g0, 0, 0)).ok());
  ASSERT_TRUE(cluster.server(0).AwaitSync(Waiting(2), absl::Now() + absl::Seconds(20)));
  EXPECT_EQ(cluster.server(0).sync_stats().pushes_received, 1) << "the copy is not a second push";
  ASSERT_TRUE(cluster.store(1).Push({key}, g1).ok());
  for (int i = 0; i < 2; ++i) {
    auto [id, status] = NextResponse(*raw);
    EXPECT_EQ(id, 77u);
    EXPECT_TRUE(status.ok()) << status;
  }
  EXPECT_EQ(cluster.server(0).sync_stats().duplicates, 1u);

  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok());
  std::vector<float> sum(8);
  for (int d = 0; d < 8; ++d) sum[d] = g0[d] + g1[d];
  ASSERT_TRUE((*local)->Push({key}, sum).ok());
  const std::vector<float> want = PullRow(**local, key);
  EXPECT_EQ(PullRow(cluster.store(1), key), want);

  // A late copy of the applied push.
  ASSERT_TRUE(raw->Send("ps0", PushMessage(77, {key}, g0, 0, 0)).ok());
  auto [late_id, late] = NextResponse(*raw);
  EXPECT_EQ(late_id, 77u);
  EXPECT_TRUE(late.ok()) << late;
  EXPECT_EQ(PullRow(cluster.store(1), key), want);
  EXPECT_EQ(cluster.server(0).sync_stats().duplicates, 2u);
  EXPECT_EQ(cluster.server(0).sync_stats().step, 1);

  // Step 1 (worker 0 again from the raw endpoint); then a copy of step 0's push is too old.
  ASSERT_TRUE(raw->Send("ps0", PushMessage(78, {key}, g0, 0, 1)).ok());
  ASSERT_TRUE(cluster.store(1).Push({key}, g1).ok());
  auto [id1, status1] = NextResponse(*raw);
  EXPECT_EQ(id1, 78u);
  EXPECT_TRUE(status1.ok()) << status1;
  ASSERT_TRUE((*local)->Push({key}, sum).ok());
  const std::vector<float> want2 = PullRow(**local, key);
  ASSERT_EQ(PullRow(cluster.store(1), key), want2);
  ASSERT_TRUE(raw->Send("ps0", PushMessage(77, {key}, g0, 0, 0)).ok());
  auto [id, status] = NextResponse(*raw);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "step 0 from worker 0")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "already applied")) << status;
  EXPECT_EQ(PullRow(cluster.store(1), key), want2);
  EXPECT_EQ(cluster.server(0).sync_stats().step, 2);
}

// The transport duplicates worker 0's next push request (the fault-injecting endpoint): however
// the copy is ordered against worker 1's push, the step counts worker 0's gradient once.
TEST(SyncDuplicateTest, ANetworkDuplicatedStorePushIsNotCountedTwice) {
  auto faults = std::make_shared<transport::FaultInjector>();
  SyncCluster cluster(1, 2, Kind::kInProcess, absl::Seconds(20), faults);
  faults->DuplicateNext("ps0", transport::KIND_REQUEST);
  const uint64_t key = FeatureKey(kSgdSlot, 3);
  const std::vector<float> g0 = {1.0f, 2.0f, 4.0f}, g1 = {0.5f, 0.5f, 0.5f};
  std::vector<absl::Status> statuses(2);
  std::thread worker0([&] { statuses[0] = cluster.store(0).Push({key}, g0); });
  std::thread worker1([&] { statuses[1] = cluster.store(1).Push({key}, g1); });
  worker0.join();
  worker1.join();
  ASSERT_TRUE(statuses[0].ok()) << statuses[0];
  ASSERT_TRUE(statuses[1].ok()) << statuses[1];
  EXPECT_EQ(faults->stats().duplicated, 1u);
  // SGD, lr 0.1: w = init - 0.1 * (g0 + g1), sums exact.
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok());
  ASSERT_TRUE((*local)->Push({key}, {1.5f, 2.5f, 4.5f}).ok());
  EXPECT_EQ(PullRow(cluster.store(1), key), PullRow(**local, key));
  // A second step still works (the copy did not leave a stale part behind).
  std::thread again0([&] { statuses[0] = cluster.store(0).Push({key}, g0); });
  statuses[1] = cluster.store(1).Push({key}, g1);
  again0.join();
  EXPECT_TRUE(statuses[0].ok()) << statuses[0];
  EXPECT_TRUE(statuses[1].ok()) << statuses[1];
  ASSERT_TRUE((*local)->Push({key}, {1.5f, 2.5f, 4.5f}).ok());
  EXPECT_EQ(PullRow(cluster.store(1), key), PullRow(**local, key));
}

// The sum is taken in worker-index order, whatever order the pushes arrive in: with
// g = (1e8, 1, -1e8), (g0 + g1) + g2 = 0 in float, while the arrival order 2, 0, 1 would give
// (g2 + g0) + g1 = 1.
TEST(SyncOrderTest, GradientsAreSummedInWorkerIndexOrderNotArrivalOrder) {
  SyncCluster cluster(1, 3);
  const uint64_t key = FeatureKey(kSgdSlot, 1);
  const float g[3] = {1e8f, 1.0f, -1e8f};
  std::vector<absl::Status> statuses(3);
  std::vector<std::thread> threads;
  int arrived = 0;
  for (int w : {2, 0, 1}) {
    threads.emplace_back(
        [&, w] { statuses[w] = cluster.store(w).Push({key}, std::vector<float>(3, g[w])); });
    if (++arrived < 3) {
      EXPECT_TRUE(
          cluster.server(0).AwaitSync(Waiting(arrived), absl::Now() + absl::Seconds(20)));
    }
  }
  for (std::thread& thread : threads) thread.join();
  for (const absl::Status& status : statuses) ASSERT_TRUE(status.ok()) << status;
  const float sum = (g[0] + g[1]) + g[2];
  ASSERT_EQ(sum, 0.0f);
  ASSERT_NE((g[2] + g[0]) + g[1], sum) << "the test needs an order-dependent sum";
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok());
  ASSERT_TRUE((*local)->Push({key}, std::vector<float>(3, sum)).ok());
  EXPECT_EQ(PullRow(cluster.store(0), key), PullRow(**local, key));
}

// Errors name worker and step, and nothing rejected is counted.
TEST(SyncErrorTest, BadStepsAndWorkersAreRejectedNamingThem) {
  SyncCluster cluster(1, 2);
  std::unique_ptr<transport::Endpoint> raw = cluster.RawEndpoint();
  const uint64_t key = FeatureKey(kSgdSlot, 9);
  const std::vector<float> g = {1.0f, 1.0f, 1.0f};
  auto call = [&](transport::Message message) {
    const uint64_t id = message.header.request_id();
    EXPECT_TRUE(raw->Send("ps0", std::move(message)).ok());
    auto [got_id, status] = NextResponse(*raw);
    EXPECT_EQ(got_id, id);
    return status;
  };

  // A step ahead of the server's.
  absl::Status status = call(PushMessage(1, {key}, g, 0, 1));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "step 1 from worker 0")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "collects step 0")) << status;
  // A worker index out of range.
  status = call(PushMessage(2, {key}, g, 2, 0));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "worker 2")) << status;
  // No worker and step frame.
  transport::Message two_frames = PushMessage(3, {key}, g, 0, 0);
  two_frames.frames.pop_back();
  transport::FinishHeader(&two_frames);
  status = call(std::move(two_frames));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "frame 2")) << status;
  // A non-finite gradient.
  status = call(PushMessage(4, {key}, {1.0f, NAN, 1.0f}, 0, 0));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "worker 0")) << status;
  EXPECT_EQ(cluster.server(0).sync_stats().pushes_received, 0);

  // Worker 0 pushes step 0 and waits; a second, different request as worker 0 is refused at
  // once and not counted.
  ASSERT_TRUE(raw->Send("ps0", PushMessage(10, {key}, g, 0, 0)).ok());
  ASSERT_TRUE(cluster.server(0).AwaitSync(Waiting(1), absl::Now() + absl::Seconds(20)));
  status = call(PushMessage(11, {key}, {9.0f, 9.0f, 9.0f}, 0, 0));
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "already pushed step 0")) << status;
  ASSERT_TRUE(cluster.store(1).Push({key}, g).ok());
  auto [id, first] = NextResponse(*raw);
  EXPECT_EQ(id, 10u);
  EXPECT_TRUE(first.ok()) << first;
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> local =
      NewLocalEmbeddingStore(TestTableOptions());
  ASSERT_TRUE(local.ok());
  ASSERT_TRUE((*local)->Push({key}, {2.0f, 2.0f, 2.0f}).ok());
  EXPECT_EQ(PullRow(cluster.store(0), key), PullRow(**local, key));

  // An old step.
  status = call(PushMessage(12, {key}, g, 1, 0));
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "step 0 from worker 1")) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "already applied")) << status;
  EXPECT_EQ(cluster.server(0).sync_stats().rejected, 6u);
}

TEST(SyncErrorTest, AnAsynchronousServerRejectsAStepAndASynchronousOneNeedsIt) {
  transport::InProcessNetwork network;
  transport::EndpointOptions server_endpoint;
  server_endpoint.id = "ps0";
  ParamServerOptions options;
  options.table = TestTableOptions();
  auto server = ParamServer::Start(*network.NewEndpoint(server_endpoint), options);
  ASSERT_TRUE(server.ok());
  ASSERT_TRUE((*server)->AddPeer("raw").ok());
  transport::EndpointOptions raw_options;
  raw_options.id = "raw";
  std::unique_ptr<transport::Endpoint> raw = *network.NewEndpoint(raw_options);
  ASSERT_TRUE(raw->AddPeer("ps0", "").ok());
  ASSERT_TRUE(
      raw->Send("ps0", PushMessage(1, {FeatureKey(kSgdSlot, 1)}, {1, 1, 1}, 0, 0)).ok());
  auto [id, status] = NextResponse(*raw);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_TRUE(absl::StrContains(status.message(), "not synchronous")) << status;
  EXPECT_EQ((*server)->table().size(), 0u);

  options.sync_workers = -1;
  transport::EndpointOptions other;
  other.id = "ps1";
  EXPECT_EQ(ParamServer::Start(*network.NewEndpoint(other), options).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// A missing worker, shutdown

// Workers 0 and 1 push step 0; worker 2 never does. Their pushes end at the deadline with
// DEADLINE_EXCEEDED naming a server; meanwhile pulls are served; the step is lost (nothing
// applied) and later pushes are FAILED_PRECONDITION. Nothing hangs.
TEST(SyncMissingWorkerTest, OthersGetDeadlineExceededNamingTheServerAndTheStepIsLost) {
  SyncCluster cluster(2, 3, Kind::kInProcess, absl::Milliseconds(400));
  const std::vector<uint64_t> keys = {KeysOnServer(0, 2, 2)[0], KeysOnServer(0, 2, 2)[1],
                                      KeysOnServer(1, 2, 1)[0]};
  const std::vector<float> grads(Floats(keys), 0.5f);
  std::vector<float> before(Floats(keys));
  ASSERT_TRUE(cluster.store(2).Pull(keys, absl::MakeSpan(before)).ok());

  std::vector<absl::Status> statuses(2);
  std::vector<std::thread> threads;
  for (int w = 0; w < 2; ++w) {
    threads.emplace_back([&, w] { statuses[w] = cluster.store(w).Push(keys, grads); });
  }
  // While they wait, worker 2 can still pull (and sees the rows unchanged).
  for (int s = 0; s < 2; ++s) {
    EXPECT_TRUE(cluster.server(s).AwaitSync(Waiting(2), absl::Now() + absl::Seconds(20)));
  }
  std::vector<float> during(Floats(keys));
  ASSERT_TRUE(cluster.store(2).Pull(keys, absl::MakeSpan(during)).ok());
  EXPECT_EQ(during, before);
  for (std::thread& thread : threads) thread.join();
  for (int w = 0; w < 2; ++w) {
    EXPECT_EQ(statuses[w].code(), absl::StatusCode::kDeadlineExceeded) << statuses[w];
    EXPECT_TRUE(absl::StrContains(statuses[w].message(), "parameter server")) << statuses[w];
    EXPECT_TRUE(absl::StrContains(statuses[w].message(), "(ps")) << statuses[w];
  }
  // The servers gave up too (each waiting push ends at its caller's deadline).
  for (int s = 0; s < 2; ++s) {
    EXPECT_TRUE(cluster.server(s).AwaitSync(
        [](const SyncStats& stats) { return stats.abandoned && stats.waiting == 0; },
        absl::Now() + absl::Seconds(20)))
        << "server " << s;
  }
  std::vector<float> after(Floats(keys));
  ASSERT_TRUE(cluster.store(2).Pull(keys, absl::MakeSpan(after)).ok());
  EXPECT_EQ(after, before) << "the lost step changed rows";

  // The late worker's push: the step was abandoned.
  absl::Status late = cluster.store(2).Push(keys, grads);
  EXPECT_EQ(late.code(), absl::StatusCode::kFailedPrecondition) << late;
  EXPECT_TRUE(absl::StrContains(late.message(), "abandoned")) << late;
  EXPECT_TRUE(absl::StrContains(late.message(), "worker(s) 2")) << late;
}

TEST(SyncShutdownTest, ShutdownAnswersWaitingPushesAtOnce) {
  SyncCluster cluster(1, 2, Kind::kInProcess, absl::Seconds(60));
  const uint64_t key = FeatureKey(kAdagradSlot, 1);
  absl::Status status;
  const absl::Time start = absl::Now();
  std::thread worker0([&] { status = cluster.store(0).Push({key}, std::vector<float>(8, 1.0f)); });
  ASSERT_TRUE(cluster.server(0).AwaitSync(Waiting(1), absl::Now() + absl::Seconds(20)));
  cluster.server(0).Shutdown();
  worker0.join();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_LT(absl::Now() - start, absl::Seconds(30)) << "must not wait for the deadline";
}

TEST(SyncOptionsTest, WorkerIndexMustBeBelowNumWorkers) {
  transport::InProcessNetwork network;
  auto make = [&](int index, int workers) {
    transport::EndpointOptions endpoint_options;
    endpoint_options.id = "w";
    RemoteEmbeddingStoreOptions options;
    options.slots = TestTableOptions().slots;
    options.servers = {{"ps0", ""}};
    options.worker_index = index;
    options.num_workers = workers;
    return NewRemoteEmbeddingStore(*network.NewEndpoint(endpoint_options), options)
        .status()
        .code();
  };
  EXPECT_EQ(make(0, 0), absl::StatusCode::kOk);
  EXPECT_EQ(make(2, 3), absl::StatusCode::kOk);
  EXPECT_EQ(make(3, 3), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(make(-1, 3), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(make(0, -1), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace choir
