// Parameter-server pull and push throughput over ZeroMQ on loopback: one server, W workers
// (each its own endpoint, RemoteEmbeddingStore and thread), distinct keys per request.
//
//   choir_bench_ps [--dim 16] [--keys 16384] [--workers 1] [--requests 200] [--rows 1000000]
//
// The server's table is warmed with --rows keys first (so pulls read existing rows, not lazy
// initialisation); each request then pulls (or pushes) --keys keys drawn from them. Prints one
// JSON object per operation: keys/s and MB/s of row payload (keys * dim * 4 bytes), summed
// over workers, wall time, peak RSS of the process (server and workers together) and the CPU.
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/sysinfo.h"
#include "core/transport.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "ps/feature_key.h"
#include "ps/server.h"
#include "worker/remote_embedding_store.h"

DEFINE_int32(dim, 16, "embedding width");
DEFINE_int32(keys, 16384, "keys per request");
DEFINE_int32(workers, 1, "worker threads, each with its own endpoint");
DEFINE_int32(requests, 200, "requests per worker and operation");
DEFINE_int64(rows, 1000000, "rows in the server's table (keys are drawn from them)");

namespace {

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  std::exit(1);
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  using choir::transport::EndpointOptions;
  choir::TableOptions table;
  choir::SlotConfig slot;
  slot.dim = FLAGS_dim;
  slot.optimizer = choir::OptimizerKind::kAdagrad;
  table.slots[0] = slot;

  EndpointOptions server_endpoint;
  server_endpoint.id = "ps0";
  server_endpoint.bind_address = "tcp://127.0.0.1:0";
  auto endpoint = choir::transport::NewZmqEndpoint(std::move(server_endpoint));
  if (!endpoint.ok()) Die(endpoint.status());
  choir::ParamServerOptions server_options;
  server_options.table = table;
  auto server = choir::ParamServer::Start(*std::move(endpoint), server_options);
  if (!server.ok()) Die(server.status());

  std::vector<std::unique_ptr<choir::EmbeddingStore>> stores;
  for (int w = 0; w < FLAGS_workers; ++w) {
    const std::string id = absl::StrCat("worker", w);
    if (absl::Status s = (*server)->AddPeer(id); !s.ok()) Die(s);
    EndpointOptions worker_endpoint;
    worker_endpoint.id = id;
    auto worker = choir::transport::NewZmqEndpoint(std::move(worker_endpoint));
    if (!worker.ok()) Die(worker.status());
    choir::RemoteEmbeddingStoreOptions options;
    options.servers.push_back({(*server)->id(), (*server)->address()});
    options.slots = table.slots;
    auto store = choir::NewRemoteEmbeddingStore(*std::move(worker), options);
    if (!store.ok()) Die(store.status());
    stores.push_back(*std::move(store));
  }

  // Warm the table: every row exists before timing.
  {
    std::vector<uint64_t> keys;
    std::vector<float> out;
    for (int64_t lo = 0; lo < FLAGS_rows; lo += 65536) {
      keys.clear();
      for (int64_t k = lo; k < std::min<int64_t>(FLAGS_rows, lo + 65536); ++k) keys.push_back(choir::FeatureKey(0, k));
      out.resize(keys.size() * FLAGS_dim);
      if (absl::Status s = stores[0]->Pull(keys, absl::MakeSpan(out)); !s.ok()) Die(s);
    }
  }

  for (const char* op : {"pull", "push"}) {
    const bool pull = std::string(op) == "pull";
    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    std::vector<absl::Status> errors(FLAGS_workers);
    for (int w = 0; w < FLAGS_workers; ++w) {
      threads.emplace_back([&, w] {
        std::mt19937_64 rng(1000 + w);
        std::vector<uint64_t> keys(FLAGS_keys);
        std::vector<float> rows(static_cast<size_t>(FLAGS_keys) * FLAGS_dim, 1e-3f);
        for (int r = 0; r < FLAGS_requests; ++r) {
          // Distinct keys: a random start and a stride coprime to nothing in particular.
          const int64_t base = static_cast<int64_t>(rng() % FLAGS_rows);
          for (int i = 0; i < FLAGS_keys; ++i) keys[i] = choir::FeatureKey(0, (base + 7919LL * i) % FLAGS_rows);
          absl::Status s = pull ? stores[w]->Pull(keys, absl::MakeSpan(rows)) : stores[w]->Push(keys, rows);
          if (!s.ok()) {
            errors[w] = s;
            return;
          }
        }
      });
    }
    for (std::thread& t : threads) t.join();
    for (const absl::Status& s : errors) {
      if (!s.ok()) Die(s);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double keys_total = static_cast<double>(FLAGS_keys) * FLAGS_requests * FLAGS_workers;
    nlohmann::ordered_json j;
    j["bench"] = "ps";
    j["op"] = op;
    j["transport"] = "zmq-loopback";
    j["servers"] = 1;
    j["workers"] = FLAGS_workers;
    j["dim"] = FLAGS_dim;
    j["keys_per_request"] = FLAGS_keys;
    j["requests"] = FLAGS_requests * FLAGS_workers;
    j["seconds"] = seconds;
    j["keys_per_s"] = keys_total / seconds;
    j["mb_per_s"] = keys_total * FLAGS_dim * 4 / seconds / (1 << 20);
    j["peak_rss_mb"] = choir::PeakRssMb();
    j["cpu"] = choir::CpuModel();
    std::printf("%s\n", j.dump().c_str());
  }
  stores.clear();
  (*server)->Shutdown();
  return 0;
}
