// Evaluation files and reports (DESIGN.md section 6):
//   - eval.json: {"overall": {...}, "buckets": {"low": {...}, "mid": ..., "high": ..., "new":
//   ...}},
//     each object holding auc, gauc, logloss, calibration (numbers, null when undefined), samples,
//     users, gauc_users, and the extras positives and gauc_samples.
//   - preds.tsv: a header line "user_id\tlabel\tscore\tbucket", then one prediction per line:
//     user id (decimal int64), label (0 or 1), score printed with %.17g so that reading it back
//     gives the identical double, bucket name (low, mid, high, new).
//   - a Markdown table of one report, a Markdown comparison of two (relative lifts per bucket),
//     and PNG plots drawn by tools/eval/plot_eval.py with matplotlib.
#ifndef CHOIR_TOOLS_EVAL_REPORT_H_
#define CHOIR_TOOLS_EVAL_REPORT_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "choir/config.h"
#include "core/fs.h"
#include "tools/eval/metrics.h"

namespace choir::eval {

// ---- eval.json ----

// The report as eval.json text (2-space indented, trailing newline). Doubles are written so that
// ParseEvalJson gives back identical values; NaN is written as null.
std::string EvalReportToJson(const EvalReport& report);

// Parses eval.json text. INVALID_ARGUMENT naming `source_name` and the offending key when the text
// is not JSON, a slice or one of auc, gauc, logloss, calibration, samples, users, gauc_users is
// missing or of the wrong type. positives and gauc_samples are optional (0 when absent); unknown
// keys are ignored; a missing bucket is an error.
absl::StatusOr<EvalReport> ParseEvalJson(absl::string_view text, absl::string_view source_name);

// Writes eval.json atomically (FileSystem::WriteStringToFileAtomic).
absl::Status WriteEvalJson(FileSystem* fs, const std::string& path, const EvalReport& report);
// Reads and parses `path`; NOT_FOUND when absent.
absl::StatusOr<EvalReport> ReadEvalJson(FileSystem* fs, const std::string& path);

// ---- preds.tsv ----

// Writes `predictions` in the preds.tsv format above, streamed to "path.tmp", synced and renamed
// over `path` (never a half-written preds.tsv under its final name).
absl::Status WritePredictionsTsv(FileSystem* fs, const std::string& path,
                                 absl::Span<const Prediction> predictions);

// Reads preds.tsv. INVALID_ARGUMENT with "path:line: what" on a wrong header, a wrong number of
// columns, an unparsable or out-of-range field (label not 0/1, score not in [0, 1], unknown
// bucket). A "\r" before the newline is tolerated; the last line may lack its newline.
absl::StatusOr<std::vector<Prediction>> ReadPredictionsTsv(FileSystem* fs, const std::string& path);

// ---- Markdown ----

// One row per slice (overall, low, mid, high, new); columns slice, samples, users, AUC, GAUC,
// GAUC users, GAUC samples, logloss, calibration. Undefined values print as "n/a".
std::string MarkdownTable(const EvalReport& report);

// Relative lift (run - base) / base; NaN when either is NaN or base is 0.
double RelativeLift(double base, double run);

// A Markdown comparison of `run` over `base`, one row per slice: AUC and GAUC of both with their
// relative lift in percent, logloss of both with the absolute difference (run - base; negative is
// better), and the sample counts of both.
std::string CompareReports(const EvalReport& base, const EvalReport& run,
                           absl::string_view name_base, absl::string_view name_run);

// ---- Plots ----

// File names RenderPlots writes under out_dir.
inline constexpr char kGaucPlotName[] = "gauc_by_bucket.png";
inline constexpr char kCalibrationPlotName[] = "calibration.png";

struct PlotOptions {
  // The interpreter that has matplotlib (Debian's python3-matplotlib loads only under it).
  std::string python = "/usr/bin/python3";
  // The plotting script; the default is the one in this source tree.
  std::string script = CHOIR_SOURCE_DIR "/tools/eval/plot_eval.py";
  // The script is killed after this long (DEADLINE_EXCEEDED). Default 120 s: matplotlib's
  // first import builds a font cache, which takes seconds; two plots take about one.
  absl::Duration timeout = absl::Seconds(120);
};

// Draws kGaucPlotName (per-bucket GAUC, grouped bars, one bar per eval.json) when `eval_jsons` is
// not empty, and kCalibrationPlotName (reliability curve, one line per preds.tsv) when
// `preds_tsvs` is not empty, into `out_dir` (created when missing). Each input is "PATH" or
// "LABEL=PATH"; without a label the name of the file's directory is used (a run's directory
// names the model). Runs the script in a child process; FAILED_PRECONDITION when the
// interpreter, the script or matplotlib is missing, INVALID_ARGUMENT when the script rejects an
// input, INTERNAL otherwise; messages carry the tail of the script's output.
absl::Status RenderPlots(const std::vector<std::string>& eval_jsons,
                         const std::vector<std::string>& preds_tsvs, const std::string& out_dir,
                         const PlotOptions& options = PlotOptions());

}  // namespace choir::eval

#endif  // CHOIR_TOOLS_EVAL_REPORT_H_
