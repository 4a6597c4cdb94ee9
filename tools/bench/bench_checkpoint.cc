// Checkpoint benchmark: write and restore throughput of the sparse rows of a table, through
// the local embedding store and the real file system.
//
//   choir_bench_checkpoint --dir DIR [--rows 1000000] [--dim 16] [--repeat 3]
//
// Fills an Adagrad table of --rows rows, then --repeat times: writes a checkpoint of it under
// DIR (the rows file, synced, and the manifest), opens it and restores it into a new store
// (reading and checking the file, then inserting every row). Prints one JSON object per
// operation with MB/s of file bytes (the median run; every run listed), rows/s, the file size,
// peak RSS and the CPU. The page cache is warm for the restore (the file was just written):
// this measures Choir's encoding, checksumming and table inserts, not the disk.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "core/fs.h"
#include "core/sysinfo.h"
#include "gflags/gflags.h"
#include "nlohmann/json.hpp"
#include "ps/feature_key.h"
#include "worker/local_embedding_store.h"

DEFINE_string(dir, "", "where checkpoints are written (deleted afterwards)");
DEFINE_int64(rows, 1000000, "rows in the table");
DEFINE_int32(dim, 16, "embedding width");
DEFINE_int32(repeat, 3, "timed runs; the median is reported");

namespace {

[[noreturn]] void Die(const absl::Status& s) {
  std::fprintf(stderr, "%s\n", s.ToString().c_str());
  std::exit(1);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  if (FLAGS_dir.empty() || FLAGS_repeat < 1 || FLAGS_rows < 1) {
    std::fprintf(stderr, "usage: choir_bench_checkpoint --dir DIR [--rows N] [--dim D] [--repeat R]\n");
    return 2;
  }
  choir::FileSystem* fs = choir::PosixFileSystem();
  choir::TableOptions table;
  choir::SlotConfig slot;
  slot.dim = FLAGS_dim;
  slot.optimizer = choir::OptimizerKind::kAdagrad;
  table.slots[0] = slot;
  auto store = choir::NewLocalEmbeddingStore(table);
  if (!store.ok()) Die(store.status());
  {
    std::vector<uint64_t> keys;
    std::vector<float> out;
    for (int64_t lo = 0; lo < FLAGS_rows; lo += 65536) {
      keys.clear();
      for (int64_t k = lo; k < std::min<int64_t>(FLAGS_rows, lo + 65536); ++k) {
        keys.push_back(choir::FeatureKey(0, k));
      }
      out.resize(keys.size() * FLAGS_dim);
      if (absl::Status s = (*store)->Pull(keys, absl::MakeSpan(out)); !s.ok()) Die(s);
    }
  }
  const std::string root = choir::JoinPath(FLAGS_dir, "bench_checkpoint");
  std::vector<double> write_s, restore_s;
  uint64_t bytes = 0;
  for (int run = 0; run < FLAGS_repeat; ++run) {
    auto start = std::chrono::steady_clock::now();
    auto writer = choir::checkpoint::Writer::Begin(fs, root, run);
    if (!writer.ok()) Die(writer.status());
    auto files = (*store)->SaveRows(fs, writer->dir());
    if (!files.ok()) Die(files.status());
    bytes = 0;
    for (const auto& [name, info] : *files) {
      writer->AddWrittenFile(name, info);
      bytes += info.bytes;
    }
    if (absl::Status s = writer->Commit(nlohmann::json::object()); !s.ok()) Die(s);
    write_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());

    start = std::chrono::steady_clock::now();
    auto reader = choir::checkpoint::Reader::Open(fs, writer->dir());
    if (!reader.ok()) Die(reader.status());
    auto fresh = choir::NewLocalEmbeddingStore(table);
    if (!fresh.ok()) Die(fresh.status());
    if (absl::Status s = (*fresh)->LoadRows(*reader, 0); !s.ok()) Die(s);
    restore_s.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
  }
  if (absl::Status s = fs->DeleteRecursively(root); !s.ok()) Die(s);
  for (const char* op : {"write", "restore"}) {
    const std::vector<double>& runs = std::string(op) == "write" ? write_s : restore_s;
    const double seconds = Median(runs);
    nlohmann::ordered_json j;
    j["bench"] = "checkpoint";
    j["op"] = op;
    j["metric"] = "mb_per_s";
    j["value"] = bytes / seconds / 1e6;
    j["unit"] = "MB/s";
    j["rows"] = FLAGS_rows;
    j["dim"] = FLAGS_dim;
    j["optimizer"] = "adagrad";
    j["file_bytes"] = bytes;
    j["seconds"] = seconds;
    j["seconds_runs"] = runs;
    j["rows_per_s"] = FLAGS_rows / seconds;
    j["peak_rss_mb"] = choir::PeakRssMb();
    j["cpu"] = choir::CpuModel();
    std::printf("%s\n", j.dump().c_str());
  }
  return 0;
}
