// Converters from public CVR data formats to Choir's dataset folders (docs/data-formats.md
// documents each input format and the generic CSV/TSV schema).
#ifndef CHOIR_DATA_CONVERT_H_
#define CHOIR_DATA_CONVERT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/proto/shard.pb.h"

namespace choir::data {

enum class InputFormat {
  kAliccpAitm,    // AITM/PaddleRec "ctr_cvr" CSV: click,purchase,101,...,301 (header optional)
  kAliccpRechub,  // torch-rechub CSV with header: click,purchase, 23 sparse, 8 dense (D...)
  kTaobaoAd,      // DMR "alimama_sampled" CSV, 267 columns, no header, click label only
  kCsv,           // generic CSV/TSV with a typed header (docs/data-formats.md)
};

// "aliccp-aitm", "aliccp-rechub", "taobao-ad", "csv".
absl::StatusOr<InputFormat> ParseInputFormat(absl::string_view name);

struct ConvertOptions {
  InputFormat format = InputFormat::kCsv;
  // Input files; each becomes rows of `split` unless the name says train/val/test (a file
  // whose name contains "test" goes to split "test", "val" to "val", else "train").
  std::vector<std::string> inputs;
  std::string out_dir;
  // The task decides which rows are kept: TASK_CVR drops rows with a conversion but no click
  // (counted as "dropped_conversion_without_click" in the manifest and the log); the others
  // keep them.
  Task task = TASK_CVR;
  // Malformed rows: skip-and-count (written verbatim to OUT/rejects.tsv with file:line and
  // reason) within the budget, fail beyond it. Default: fail on the first.
  ErrorBudget budget;
  // Generic CSV only: the field delimiter; 0 picks ',' or '\t' from the file extension
  // (.tsv -> tab).
  char delimiter = 0;
  // Rows per block. Default 8192.
  int rows_per_block = 8192;
};

struct ConvertReport {
  int64_t rows_read = 0;       // data lines seen (header excluded)
  int64_t rows_written = 0;
  int64_t rows_rejected = 0;   // malformed, skipped within budget
  int64_t rows_dropped = 0;    // well-formed but dropped by the task (conversion w/o click)
  std::vector<std::string> reject_messages;  // first few, "file:line: reason"
};

// Converts the inputs into a dataset folder at out_dir (manifest written last).
absl::StatusOr<ConvertReport> Convert(FileSystem* fs, const ConvertOptions& options);

}  // namespace choir::data

#endif  // CHOIR_DATA_CONVERT_H_
