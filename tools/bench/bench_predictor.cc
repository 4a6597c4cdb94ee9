// Predictor benchmark: latency and throughput of scoring from a serving bundle (worker/predictor.h).
//
//   choir_bench_predictor --bundle BUNDLE --data DIR [--split test] [--calls 2000] [--batches 1,256,4096]
//
// Loads the bundle (timed), reads the samples of DIR's split into memory as batches of each
// size, then calls Predict on them round-robin, --calls times per size after 20 warm-up calls
// (batches of 4096: a tenth as many calls), timing each call. Prints one JSON object per batch
// size: p50/p99 latency, samples/s, and the process's peak RSS; and one for the load.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "core/sysinfo.h"
#include "data/dataset.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "worker/batch_reader.h"
#include "worker/predictor.h"

DEFINE_string(bundle, "", "the bundle of `choir export`");
DEFINE_string(data, "", "a dataset folder whose --split is scored");
DEFINE_string(split, "test", "the split of --data");
DEFINE_int32(calls, 2000, "timed Predict calls per batch size (a tenth for batches above 1024)");
DEFINE_string(batches, "1,256,4096", "batch sizes, comma-separated");

namespace {

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  std::exit(1);
}

double Seconds(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - since).count();
}

double Quantile(std::vector<double> v, double q) {
  std::sort(v.begin(), v.end());
  return v[std::min(v.size() - 1, static_cast<size_t>(q * v.size()))];
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_bundle.empty() || FLAGS_data.empty() || FLAGS_calls < 10) {
    std::fprintf(stderr, "usage: choir_bench_predictor --bundle BUNDLE --data DIR [--split test] [--calls N]\n");
    return 2;
  }
  choir::FileSystem* fs = choir::PosixFileSystem();
  auto start = std::chrono::steady_clock::now();
  auto predictor = choir::worker::Predictor::Load(fs, FLAGS_bundle);
  if (!predictor.ok()) Die(predictor.status());
  const double load_s = Seconds(start);
  const std::string model = (*predictor)->job().model().type();
  {
    nlohmann::ordered_json j;
    j["bench"] = "predictor";
    j["op"] = "load";
    j["metric"] = "seconds";
    j["value"] = load_s;
    j["unit"] = "s";
    j["model"] = model;
    j["sparse_rows"] = (*predictor)->sparse_rows();
    j["peak_rss_mb"] = choir::PeakRssMb();
    std::printf("%s\n", j.dump().c_str());
  }
  auto manifest = choir::data::ReadManifest(fs, FLAGS_data);
  if (!manifest.ok()) Die(manifest.status());
  auto split = choir::data::FindSplit(*manifest, FLAGS_split);
  if (!split.ok()) Die(split.status());
  const std::vector<std::string> files = choir::data::SplitPaths(FLAGS_data, *split);

  for (absl::string_view size_text : absl::StrSplit(FLAGS_batches, ',', absl::SkipEmpty())) {
    int batch_size = 0;
    if (!absl::SimpleAtoi(size_text, &batch_size) || batch_size < 1) {
      Die(absl::InvalidArgumentError("--batches: sizes >= 1"));
    }
    choir::worker::BatchReaderOptions options;
    options.batch_size = batch_size;
    options.shuffle_buffer = 0;
    auto reader = choir::worker::BatchReader::Open(fs, files, (*predictor)->layout(), options);
    if (!reader.ok()) Die(reader.status());
    std::vector<choir::worker::Batch> batches;
    const int calls = batch_size > 1024 ? std::max(10, FLAGS_calls / 10) : FLAGS_calls;
    choir::worker::Batch batch;
    while (static_cast<int>(batches.size()) < std::min(calls, 512)) {
      auto more = (*reader)->Next(&batch);
      if (!more.ok()) Die(more.status());
      if (!*more) break;
      if (batch.size == batch_size) batches.push_back(batch);
    }
    if (batches.empty()) Die(absl::FailedPreconditionError("the split has fewer samples than one batch"));
    std::vector<double> scores, latency;
    for (int i = 0; i < 20; ++i) {
      if (absl::Status s = (*predictor)->Predict(batches[i % batches.size()], &scores); !s.ok()) Die(s);
    }
    const auto all = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) {
      const auto t = std::chrono::steady_clock::now();
      if (absl::Status s = (*predictor)->Predict(batches[i % batches.size()], &scores); !s.ok()) Die(s);
      latency.push_back(Seconds(t) * 1e3);
    }
    const double total = Seconds(all);
    nlohmann::ordered_json j;
    j["bench"] = "predictor";
    j["op"] = "predict";
    j["metric"] = "samples_per_s";
    j["value"] = static_cast<double>(calls) * batch_size / total;
    j["unit"] = "samples/s";
    j["model"] = model;
    j["batch"] = batch_size;
    j["calls"] = calls;
    j["p50_ms"] = Quantile(latency, 0.50);
    j["p99_ms"] = Quantile(latency, 0.99);
    j["peak_rss_mb"] = choir::PeakRssMb();
    j["cpu"] = choir::CpuModel();
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}
