// Converters from public CVR data formats to Choir's dataset folders (docs/data-formats.md
// documents each input format and the generic CSV/TSV schema).
#ifndef CHOIR_DATA_CONVERT_H_
#define CHOIR_DATA_CONVERT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  // Input files, converted in this order. Each goes to one split: `split` when set, else the
  // one its base name names (SplitFromFileName).
  std::vector<std::string> inputs;
  // "train", "val" or "test": every input goes to this split. Empty (default): by file name.
  std::string split;
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
  int64_t rows_read = 0;  // data lines seen (header excluded)
  int64_t rows_written = 0;
  int64_t rows_rejected = 0;  // malformed, skipped within budget
  int64_t rows_dropped = 0;   // well-formed but dropped by the task (conversion w/o click)
  // The first few (ErrorCounter::kKeptMessages) rejections, "file:line: reason"; filled from
  // the conversion's ErrorCounter.
  std::vector<std::string> reject_messages;
};

// The split a file goes to by its name: the base name (case-insensitive) is cut into tokens at
// '_', '-', '.' and ' '; a token "test" picks "test", else a token "val", "valid" or
// "validation" picks "val", else "train". Whole tokens only: "latest.csv" and "trainval.csv"
// are "train"; "ali_ccp_test_sample.csv" and "ctr_cvr.test" are "test".
std::string SplitFromFileName(absl::string_view path);

// Converts the inputs into a dataset folder at out_dir (manifest written last).
absl::StatusOr<ConvertReport> Convert(FileSystem* fs, const ConvertOptions& options);

}  // namespace choir::data

#endif  // CHOIR_DATA_CONVERT_H_
