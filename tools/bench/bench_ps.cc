// Parameter-server benchmarks; one JSON object per line.
//
// --mode throughput (default): pull and push throughput over ZeroMQ on loopback: one server,
// W workers (each its own endpoint, RemoteEmbeddingStore and thread), distinct keys per
// request.
//
//   choir_bench_ps [--dim 16] [--keys 16384] [--workers 1] [--requests 200] [--rows 1000000]
//                  [--ops pull,push] [--max_keys_per_request 2048] [--repeat 1]
//                  [--optimizer adagrad|ftrl|adam|sgd]
//
// The server's table is warmed with --rows keys first (so pulls read existing rows, not lazy
// initialisation); each request then pulls (or pushes) --keys keys drawn from them. Prints one
// JSON object per operation: keys/s and MB/s of row payload (keys * dim * 4 bytes), summed
// over workers, of the median of --repeat timed runs (every run's keys/s listed too), wall
// time, peak RSS of the process (server and workers together) and the CPU.
//
// --mode memory: the real heap bytes per row of a SparseTable (16 shards) holding --rows rows,
// for dim 8, 16, 64 with Adagrad and SGD (and dim 16 Adagrad with TTL eviction on, which adds
// a recency list per row, and dim 16 FTRL): glibc's mallinfo2() uordblks + hblkhd (arena chunks and mmapped
// blocks) after creating the rows minus before, divided by the rows, against the theoretical
// size of a row (its dim values, the optimizer state and the 8-byte key), and the table's own
// MemoryBytes() estimate.
//
//   choir_bench_ps --mode memory [--rows 1000000]
#include <malloc.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/sysinfo.h"
#include "core/transport.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "ps/feature_key.h"
#include "ps/server.h"
#include "ps/sparse_table.h"
#include "worker/remote_embedding_store.h"

DEFINE_int32(dim, 16, "embedding width");
DEFINE_int32(keys, 16384, "keys per request");
DEFINE_int32(workers, 1, "worker threads, each with its own endpoint");
DEFINE_int32(requests, 200, "requests per worker and operation");
DEFINE_int64(rows, 1000000, "rows in the server's table (keys are drawn from them)");
DEFINE_string(mode, "throughput", "throughput (pull/push over ZeroMQ) or memory (bytes per row)");
DEFINE_int32(max_keys_per_request, choir::RemoteEmbeddingStoreOptions().max_keys_per_request,
             "the worker store's split of a large pull");
DEFINE_int32(repeat, 1, "timed runs per operation; the median is reported, every run listed");
DEFINE_string(ops, "pull,push", "throughput mode: the operations to time, in order");
DEFINE_string(optimizer, "adagrad", "throughput mode: the table's sparse optimizer (adagrad, ftrl, adam, sgd)");

namespace {

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  std::exit(1);
}

// Heap bytes in use (glibc): the main arena's allocated chunks plus mmapped ones (large
// blocks). The table is built on the main thread, so other arenas do not change.
size_t HeapBytes() {
  const struct mallinfo2 info = mallinfo2();
  return info.uordblks + info.hblkhd;
}

void RunMemory() {
  struct Case {
    int dim;
    choir::OptimizerKind optimizer;
    bool ttl;
  };
  using choir::OptimizerKind;
  const Case cases[] = {{8, OptimizerKind::kAdagrad, false},  {8, OptimizerKind::kSgd, false},
                        {16, OptimizerKind::kAdagrad, false}, {16, OptimizerKind::kSgd, false},
                        {64, OptimizerKind::kAdagrad, false}, {64, OptimizerKind::kSgd, false},
                        {16, OptimizerKind::kAdagrad, true}, {16, OptimizerKind::kFtrl, false}};
  constexpr int64_t kChunk = 65536;
  for (const Case& c : cases) {
    choir::TableOptions options;
    choir::SlotConfig slot;
    slot.dim = c.dim;
    slot.optimizer = c.optimizer;
    if (c.ttl) slot.ttl_steps = 1000000;
    options.slots[0] = slot;
    std::vector<uint64_t> keys(kChunk);
    std::vector<float> out(static_cast<size_t>(kChunk) * c.dim);
    malloc_trim(0);
    const size_t before = HeapBytes();
    auto table = choir::SparseTable::Create(options);
    if (!table.ok()) Die(table.status());
    for (int64_t lo = 0; lo < FLAGS_rows; lo += kChunk) {
      const int64_t n = std::min<int64_t>(kChunk, FLAGS_rows - lo);
      for (int64_t k = 0; k < n; ++k) keys[k] = choir::FeatureKey(0, lo + k);
      absl::Status s = (*table)->Pull(absl::MakeConstSpan(keys.data(), n),
                                      absl::MakeSpan(out.data(), static_cast<size_t>(n) * c.dim));
      if (!s.ok()) Die(s);
    }
    const size_t after = HeapBytes();
    const double rows = static_cast<double>((*table)->size());
    const double theoretical =
        c.dim * 4.0 * (1 + choir::StateFloatsPerDim(c.optimizer)) + sizeof(uint64_t);
    const double real = static_cast<double>(after - before) / rows;
    nlohmann::ordered_json j;
    j["bench"] = "ps";
    j["mode"] = "memory";
    j["dim"] = c.dim;
    j["optimizer"] = choir::OptimizerKindName(c.optimizer);
    j["eviction"] = c.ttl ? "ttl" : "none";
    j["rows"] = rows;
    j["shards"] = options.num_shards;
    j["theoretical_bytes_per_row"] = theoretical;
    j["heap_bytes_per_row"] = real;
    j["table_estimate_bytes_per_row"] = static_cast<double>((*table)->MemoryBytes()) / rows;
    j["ratio"] = real / theoretical;
    j["cpu"] = choir::CpuModel();
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_mode == "memory") {
    RunMemory();
    return 0;
  }
  if (FLAGS_mode != "throughput") {
    std::fprintf(stderr, "--mode must be throughput or memory, got %s\n", FLAGS_mode.c_str());
    return 2;
  }
  using choir::transport::EndpointOptions;
  choir::TableOptions table;
  choir::SlotConfig slot;
  slot.dim = FLAGS_dim;
  absl::StatusOr<choir::OptimizerKind> optimizer = choir::ParseOptimizerKind(FLAGS_optimizer);
  if (!optimizer.ok()) Die(optimizer.status());
  slot.optimizer = *optimizer;
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
    options.max_keys_per_request = FLAGS_max_keys_per_request;
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

  const std::vector<std::string> ops = absl::StrSplit(FLAGS_ops, ',', absl::SkipEmpty());
  for (const std::string& op : ops) {
    if (op != "pull" && op != "push") {
      std::fprintf(stderr, "--ops takes pull and push, got %s\n", op.c_str());
      return 2;
    }
  }
  if (FLAGS_repeat < 1) {
    std::fprintf(stderr, "--repeat must be at least 1\n");
    return 2;
  }
  for (const std::string& op : ops) {
    const bool pull = op == "pull";
    std::vector<double> seconds_runs;
    for (int run = 0; run < FLAGS_repeat; ++run) {
      const auto start = std::chrono::steady_clock::now();
      std::vector<std::thread> threads;
      std::vector<absl::Status> errors(FLAGS_workers);
      for (int w = 0; w < FLAGS_workers; ++w) {
        threads.emplace_back([&, w] {
          std::mt19937_64 rng(1000 + 100 * run + w);
          std::vector<uint64_t> keys(FLAGS_keys);
          std::vector<float> rows(static_cast<size_t>(FLAGS_keys) * FLAGS_dim, 1e-3f);
          for (int r = 0; r < FLAGS_requests; ++r) {
            // Distinct keys: a random start and a stride coprime to nothing in particular.
            const int64_t base = static_cast<int64_t>(rng() % FLAGS_rows);
            for (int i = 0; i < FLAGS_keys; ++i) {
              keys[i] = choir::FeatureKey(0, (base + 7919LL * i) % FLAGS_rows);
            }
            absl::Status s = pull ? stores[w]->Pull(keys, absl::MakeSpan(rows))
                                  : stores[w]->Push(keys, rows);
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
      seconds_runs.push_back(
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    // The median run: the machine is shared, and single runs vary by tens of percent.
    std::vector<double> sorted = seconds_runs;
    std::sort(sorted.begin(), sorted.end());
    const double seconds = sorted[sorted.size() / 2];
    const double keys_total = static_cast<double>(FLAGS_keys) * FLAGS_requests * FLAGS_workers;
    std::vector<double> keys_per_s_runs;
    for (double s : seconds_runs) keys_per_s_runs.push_back(keys_total / s);
    nlohmann::ordered_json j;
    j["bench"] = "ps";
    j["op"] = op;
    j["transport"] = "zmq-loopback";
    j["servers"] = 1;
    j["workers"] = FLAGS_workers;
    j["dim"] = FLAGS_dim;
    j["optimizer"] = choir::OptimizerKindName(slot.optimizer);
    j["keys_per_request"] = FLAGS_keys;
    j["max_keys_per_request"] = FLAGS_max_keys_per_request;
    j["rows"] = FLAGS_rows;
    j["requests"] = FLAGS_requests * FLAGS_workers;
    j["runs"] = FLAGS_repeat;
    j["seconds"] = seconds;
    j["keys_per_s"] = keys_total / seconds;
    j["keys_per_s_runs"] = keys_per_s_runs;
    j["mb_per_s"] = keys_total * FLAGS_dim * 4 / seconds / (1 << 20);
    j["peak_rss_mb"] = choir::PeakRssMb();
    j["cpu"] = choir::CpuModel();
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  }
  stores.clear();
  (*server)->Shutdown();
  return 0;
}
