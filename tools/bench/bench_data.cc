// Data benchmarks: generator and shard-reader throughput and peak memory.
//
//   choir_bench_data --mode gen --users N --out DIR [--threads T]
//   choir_bench_data --mode read --dir DIR [--threads T] [--split train]
// Prints one JSON object per line: bench, metric, value, unit, and the context (users,
// threads, rows, peak RSS, CPU). Run each case in its own process (tools/bench/run.sh) so
// that peak memory belongs to that case alone.
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "core/crc32c.h"
#include "core/status.h"
#include "core/sysinfo.h"
#include "core/fs.h"
#include "data/dataset.h"
#include "data/generator.h"
#include "data/taxonomy.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

DEFINE_string(mode, "gen", "gen or read");
DEFINE_int64(users, 100000, "gen: users");
DEFINE_string(out, "", "gen: output folder");
DEFINE_string(dir, "", "read: dataset folder");
DEFINE_string(split, "train", "read: split to read");
DEFINE_int32(threads, 1, "threads");

namespace {

void Emit(const std::string& bench, const std::string& metric, double value, const std::string& unit,
          nlohmann::json context) {
  context["bench"] = bench;
  context["metric"] = metric;
  context["value"] = value;
  context["unit"] = unit;
  context["peak_rss_mb"] = choir::PeakRssMb();
  context["cpu"] = choir::CpuModel();
  context["cores"] = std::thread::hardware_concurrency();
  std::printf("%s\n", context.dump().c_str());
  std::fflush(stdout);
}

absl::Status Gen() {
  choir::FileSystem* fs = choir::PosixFileSystem();
  ASSIGN_OR_RETURN(choir::data::Taxonomy taxonomy, choir::data::LoadTaxonomy(fs, ""));
  ASSIGN_OR_RETURN(choir::data::CompiledTaxonomy compiled, choir::data::CompileTaxonomy(taxonomy));
  choir::data::GeneratorOptions options;
  options.users = FLAGS_users;
  options.threads = FLAGS_threads;
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(const choir::data::GeneratorReport report,
                   choir::data::GenerateDataset(fs, compiled, options, FLAGS_out));
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const int64_t rows = report.behavior_rows + report.train_rows + report.test_rows + report.users + report.items;
  nlohmann::json ctx = {{"users", FLAGS_users}, {"threads", FLAGS_threads}, {"rows", rows},
                        {"train_rows", report.train_rows}, {"seconds", s}};
  Emit("data_gen", "rows_per_s", rows / s, "rows/s", ctx);
  Emit("data_gen", "users_per_s", FLAGS_users / s, "users/s", ctx);
  return absl::OkStatus();
}

absl::Status Read() {
  choir::FileSystem* fs = choir::PosixFileSystem();
  ASSIGN_OR_RETURN(const choir::data::DatasetManifest manifest, choir::data::ReadManifest(fs, FLAGS_dir));
  ASSIGN_OR_RETURN(const choir::data::SplitInfo split, choir::data::FindSplit(manifest, FLAGS_split));
  std::vector<std::unique_ptr<choir::data::ShardReader>> readers;
  std::vector<std::pair<size_t, size_t>> work;  // (reader, block)
  int64_t bytes = 0;
  for (const std::string& path : choir::data::SplitPaths(FLAGS_dir, split)) {
    ASSIGN_OR_RETURN(std::unique_ptr<choir::data::ShardReader> r, choir::data::ShardReader::Open(fs, path));
    for (size_t b = 0; b < r->num_blocks(); ++b) work.push_back({readers.size(), b});
    ASSIGN_OR_RETURN(const uint64_t size, fs->FileSize(path));
    bytes += size;
    readers.push_back(std::move(r));
  }
  absl::Mutex mu;
  absl::Status first_error;
  std::atomic<size_t> next{0};
  std::atomic<int64_t> rows{0}, values{0};
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (int t = 0; t < FLAGS_threads; ++t) {
    threads.emplace_back([&] {
      choir::data::RowBlock block;
      int64_t my_rows = 0, my_values = 0;
      for (size_t i = next++; i < work.size(); i = next++) {
        const absl::Status s = readers[work[i].first]->ReadBlock(work[i].second, &block);
        if (!s.ok()) {
          absl::MutexLock lock(&mu);
          first_error.Update(s);
          return;
        }
        my_rows += block.num_rows();
        for (size_t c = 0; c < block.num_columns(); ++c) {
          my_values += block.column(c).ints.size() + block.column(c).floats.size();
        }
      }
      rows += my_rows;
      values += my_values;
    });
  }
  for (auto& t : threads) t.join();
  RETURN_IF_ERROR(first_error);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  nlohmann::json ctx = {{"split", FLAGS_split}, {"threads", FLAGS_threads}, {"rows", rows.load()},
                        {"values", values.load()}, {"file_mb", bytes / 1e6}, {"seconds", s},
                        {"crc32c_hardware", choir::crc32c::UsesHardware()}};
  Emit("shard_read", "rows_per_s", rows / s, "rows/s", ctx);
  Emit("shard_read", "file_mb_per_s", bytes / 1e6 / s, "MB/s", ctx);
  return absl::OkStatus();
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = 1;
  absl::Status status = absl::InvalidArgumentError("usage");
  if (FLAGS_mode == "gen" && !FLAGS_out.empty()) {
    status = Gen();
  } else if (FLAGS_mode == "read" && !FLAGS_dir.empty()) {
    status = Read();
  } else {
    std::fprintf(stderr, "usage: choir_bench_data --mode gen --users N --out DIR | --mode read --dir DIR\n");
    return 2;
  }
  if (!status.ok()) {
    std::fprintf(stderr, "choir_bench_data: %s\n", status.ToString().c_str());
    return 1;
  }
  return 0;
}
