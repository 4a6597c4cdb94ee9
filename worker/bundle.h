// The serving bundle (DESIGN.md 7, docs/serving.md): what `choir export` writes from a
// checkpoint, and all the Predictor (worker/predictor.h) reads. A directory with the layout of a
// checkpoint (checkpoint/checkpoint.h: data files, then MANIFEST.json with every file's size and
// CRC32C as the commit point), manifest format "choir-bundle":
//
//   job.pbtxt              the training job (model config, task, buckets, seed)
//   schema.pbtxt           the data schema the model reads (data::Schema, text format)
//   dense.bin              CHDENSE1: every dense parameter, then every buffer (no optimizer state)
//   sparse.bin             CHBROWS1: the stored (admitted) sparse rows' values, fp32 or fp16
//   activity.bin           CHI64TB1: user, purchases, clicks, active days (the activity index)
//   own_counts.bin         CHI64TB1: user, impressions, clicks, conversions (choirrec only)
//   groups/groups.tsv, groups/priors/priors.json, groups/priors/level-<l>.tsv,
//   groups/codebooks/codebooks.json, groups/codebooks/level-<l>.npy   (models with groups)
#ifndef CHOIR_WORKER_BUNDLE_H_
#define CHOIR_WORKER_BUNDLE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"

namespace choir::worker {

inline constexpr char kBundleFormat[] = "choir-bundle";

struct ExportOptions {
  // Sparse rows as IEEE half floats (round to nearest even): half the bytes, values within
  // 2^-11 relative (values below 6.1e-5 lose relative precision; beyond 65504 is an error).
  bool fp16 = false;
  // The dataset whose train split gives the activity index and the users' own rows (empty: the
  // checkpoint job's data.dir). Must be the one the checkpoint was trained on.
  std::string data_dir;
  // Replace a committed bundle at the output path (otherwise FAILED_PRECONDITION).
  bool overwrite = false;
};

struct ExportSummary {
  int64_t step = 0;
  int64_t sparse_rows = 0;
  // Checkpoint rows left out because they equal their initial values (InitialValues in
  // ps/sparse_table.h), which is what the Predictor reads for a key the bundle does not hold.
  int64_t rows_at_initial_values = 0;
  int64_t known_users = 0;        // of the activity index
  uint64_t bundle_bytes = 0;      // every data file
  uint64_t sparse_bytes = 0;      // sparse.bin
  uint64_t checkpoint_bytes = 0;  // the checkpoint's data files
  bool codebooks = false;         // new users can be placed in groups
};

// Writes the bundle of the committed checkpoint `checkpoint_dir` (local or cluster, any number of
// servers) into `out`. Reads the checkpoint (every file checked), the dataset (see
// ExportOptions::data_dir) and, for models with groups, the job's group table (its CRC32C must be
// the checkpoint's), priors and the codebooks beside the table (groups.tsv.codebooks; without
// them a warning, and the Predictor cannot place new users). DATA_LOSS for a damaged checkpoint.
absl::StatusOr<ExportSummary> ExportBundle(FileSystem* fs, const std::string& checkpoint_dir,
                                           const std::string& out, const ExportOptions& options);

}  // namespace choir::worker

#endif  // CHOIR_WORKER_BUNDLE_H_
