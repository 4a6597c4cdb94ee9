// A dataset folder: shard files per split plus DIR/dataset.pbtxt (the manifest, written
// last; a folder without it is incomplete and refused).
//
//   DIR/dataset.pbtxt          DatasetManifest (splits, files, counters, split time)
//   DIR/<split>/part-NNNNN.shard
//   DIR/rejects.tsv            rows a converter rejected, verbatim, with file:line and reason
//   DIR/truth/                 ground truth of synthetic data; no training step reads it
#ifndef CHOIR_DATA_DATASET_H_
#define CHOIR_DATA_DATASET_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"
#include "data/proto/shard.pb.h"
#include "data/shard.h"

namespace choir::data {

inline constexpr int kDatasetFormatVersion = 1;
inline constexpr char kManifestName[] = "dataset.pbtxt";

absl::StatusOr<DatasetManifest> ReadManifest(FileSystem* fs, const std::string& dir);
// Writes DIR/dataset.pbtxt atomically (sets format_version).
absl::Status WriteManifest(FileSystem* fs, const std::string& dir, DatasetManifest manifest);

// Files a dataset folder holds besides its split folders (they go with the dataset).
inline constexpr char kRejectsName[] = "rejects.tsv";
inline constexpr char kTruthDir[] = "truth";
inline constexpr char kTaxonomyName[] = "taxonomy.pbtxt";

// Makes `dir` ready to receive a new dataset: creates it; or replaces the dataset it holds
// (the manifest goes first, so a crash midway leaves no manifest naming deleted files, then
// its splits, rejects.tsv, truth/ and taxonomy.pbtxt); or clears what an interrupted run of
// the same producer left (entries named in `producer_entries`, plus rejects.tsv, truth/,
// taxonomy.pbtxt and dataset.pbtxt.tmp). Refuses (FAILED_PRECONDITION) a non-empty folder
// holding anything else, so `--out ~/project` never deletes a user's files.
absl::Status PrepareDatasetDir(FileSystem* fs, const std::string& dir,
                               const std::vector<std::string>& producer_entries);

// The split named `name`, or NOT_FOUND listing the splits there are.
absl::StatusOr<SplitInfo> FindSplit(const DatasetManifest& manifest, absl::string_view name);
// Full paths of a split's files.
std::vector<std::string> SplitPaths(const std::string& dir, const SplitInfo& split);

// Writes one split as a sequence of shard files "<dir>/<split>/part-NNNNN.shard", starting a
// new file every `rows_per_file` rows. Blocks are written as given.
class SplitWriter {
 public:
  SplitWriter(FileSystem* fs, std::string dir, std::string split, Schema schema,
              ShardWriterOptions options = {}, int64_t rows_per_file = 1 << 22);
  absl::Status Write(const RowBlock& block);
  // Closes the open file; returns the SplitInfo to put in the manifest.
  // An empty split still gets one file without blocks, which carries the schema.
  absl::StatusOr<SplitInfo> Finish();

 private:
  absl::Status OpenNextFile();
  // Closes the current file and records it in info_.
  absl::Status CloseFile();

  FileSystem* fs_;
  std::string dir_, split_;
  Schema schema_;
  ShardWriterOptions options_;
  int64_t rows_per_file_;
  std::unique_ptr<ShardWriter> writer_;
  SplitInfo info_;
  std::string current_file_;  // relative to dir_
  bool finished_ = false;
};

}  // namespace choir::data

#endif  // CHOIR_DATA_DATASET_H_
