// The trainer's input pipeline: dataset shards -> feature keys -> shuffled batches.
//
// Features come from the schema (FeatureLayout): categorical INT64 fields become 64-bit feature
// keys FeatureKey(slot, value), dense FLOAT fields log1p(max(0, x)), behaviour sequences keys
// in the slot of their target field (so "hist_item" and "item_id" share one embedding table).
// A background thread converts blocks in file order (decode_threads threads read and decode them
// ahead of it); the caller's thread shuffles through a seeded buffer and assembles batches, so
// the order of samples is a function of the seed.
#ifndef CHOIR_WORKER_BATCH_READER_H_
#define CHOIR_WORKER_BATCH_READER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/proto/shard.pb.h"

namespace choir::worker {

struct FeatureLayout {
  struct Categorical {
    std::string field;
    int column = -1;
    uint32_t slot = 0;
  };
  struct Dense {
    std::string field;
    int column = -1;
  };
  struct Sequence {
    std::string field;
    int column = -1;
    int target = -1;  // index into `categorical`; keys use its slot
  };
  std::vector<Categorical> categorical;
  std::vector<Dense> dense;
  std::vector<Sequence> sequences;
  int user_column = -1;
  int click_column = -1;
  int conversion_column = -1;  // -1 when the dataset has no conversion label
  Task task = TASK_CVR;
  int max_seq_len = 30;
  data::Schema schema;  // the schema the layout was built from; every block must match it

  int num_slots() const { return static_cast<int>(categorical.size()); }
};

// Builds the layout of `schema` for `model` and `task`; INVALID_ARGUMENT / FAILED_PRECONDITION
// naming the field when the schema cannot serve (no user id, no label for the task, a sequence
// whose target is missing, an excluded field that does not exist).
absl::StatusOr<FeatureLayout> BuildFeatureLayout(const data::Schema& schema,
                                                 const ModelConfig& model, Task task);

// One batch, row-major.
struct Batch {
  int size = 0;
  std::vector<float> labels;           // [size]
  std::vector<int64_t> user_ids;       // [size]
  std::vector<uint64_t> cat_keys;      // [size * num_categorical]
  std::vector<float> dense;            // [size * num_dense]
  // Per sequence: the keys of all rows back to back, most recent first, and each row's length.
  std::vector<std::vector<uint64_t>> seq_keys;
  std::vector<std::vector<uint32_t>> seq_lengths;

  void Clear(const FeatureLayout& layout);
};

struct BatchReaderOptions {
  int batch_size = 1024;
  // Samples held for shuffling; 0 keeps file order. Default 65536.
  int shuffle_buffer = 65536;
  uint64_t seed = 1;
  // Passes over the files. Default 1.
  int epochs = 1;
  // Corrupt blocks tolerated (counted in rows) before failing.
  ErrorBudget budget;
  // Blocks converted ahead by the background thread. Default 4.
  int prefetch_blocks = 4;
  // Threads reading and decoding blocks for the background thread (data::ForEachBlock's
  // `threads`); the samples' order does not depend on it. Default 1.
  int decode_threads = 1;
  // TASK_CVR: also deliver unclicked rows (label: conversion, 0 for them) instead of skipping
  // them: serving scores every impression's conversion probability. Training never does.
  bool keep_unclicked = false;
};

class BatchReader {
 public:
  static absl::StatusOr<std::unique_ptr<BatchReader>> Open(FileSystem* fs,
                                                           std::vector<std::string> files,
                                                           FeatureLayout layout,
                                                           const BatchReaderOptions& options);
  virtual ~BatchReader() = default;

  // Fills `batch` with the next samples (the last batch may be smaller). Returns false at the
  // end of the last epoch.
  virtual absl::StatusOr<bool> Next(Batch* batch) = 0;
  // Samples delivered so far and rows skipped (filtered by the task, e.g. unclicked for CVR).
  virtual int64_t samples() const = 0;
  virtual int64_t filtered() const = 0;
};

}  // namespace choir::worker

#endif  // CHOIR_WORKER_BATCH_READER_H_
