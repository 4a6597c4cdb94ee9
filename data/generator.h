// The synthetic Taobao-like data generator (`choir data gen`); docs/synthetic-data.md tells
// its generative story. Deterministic for a seed (independent of the thread count), streamed
// user chunk by user chunk: memory is the item catalogue plus one chunk per thread.
#ifndef CHOIR_DATA_GENERATOR_H_
#define CHOIR_DATA_GENERATOR_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "data/shard.h"
#include "data/taxonomy.h"

namespace choir::data {

// Item ids and catalogue indices are 32-bit inside the generator.
inline constexpr int64_t kMaxItems = 100000000;

struct GeneratorOptions {
  int64_t users = 20000;
  uint64_t seed = 1;
  // Items in the catalogue; 0 (default) picks users / 4, at least 2000 and at most 2,000,000.
  int64_t items = 0;  // at most kMaxItems
  // Generation threads (one more thread compresses and writes). The output does not depend
  // on it.
  int threads = 2;
  // Users generated together per thread; bounds memory. Default 2048.
  int users_per_chunk = 2048;
  // Longest behaviour sequence stored with an impression (most recent first). Default 30.
  int max_seq_len = 30;
  // Share of users who first appear after the split (only in test: the `new` bucket).
  double new_user_fraction = 0.05;
  // The behaviour log covers history_days before the split and the test period.
  int history_days = 365;
  int train_days = 14;
  int test_days = 7;
  // The split time (seconds since the epoch). Default 2025-06-01 00:00 UTC.
  int64_t split_time = 1748736000;
  ShardWriterOptions shard;
  int64_t rows_per_file = 1 << 22;
};

struct GeneratorReport {
  int64_t users = 0, new_users = 0, items = 0;
  int64_t behavior_rows = 0, train_rows = 0, test_rows = 0;
  int64_t train_clicks = 0, train_conversions = 0;
};

// Writes the dataset folder `out_dir` (replacing a dataset already there): splits users,
// items, behaviors, train, test; taxonomy.pbtxt (category names, ids = file order + 1);
// truth/ (persona per user); dataset.pbtxt last.
absl::StatusOr<GeneratorReport> GenerateDataset(FileSystem* fs, const CompiledTaxonomy& taxonomy,
                                                const GeneratorOptions& options,
                                                const std::string& out_dir);

}  // namespace choir::data

#endif  // CHOIR_DATA_GENERATOR_H_
