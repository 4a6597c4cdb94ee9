// `choir data inspect DIR`: what a dataset folder holds, per split and per activity bucket.
#ifndef CHOIR_DATA_INSPECT_H_
#define CHOIR_DATA_INSPECT_H_

#include <array>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/activity.h"

namespace choir::data {

struct SplitStats {
  std::string name;
  int64_t rows = 0;
  int64_t files = 0;
  // Filled for splits with a user id (impressions, behaviours); -1 when not applicable.
  int64_t users = -1, items = -1;
  int64_t clicks = -1, conversions = -1, conversions_with_click = -1;
  // Impression splits (train/test/val): users and rows per activity bucket.
  bool has_buckets = false;
  std::array<int64_t, kNumBuckets> bucket_users{}, bucket_rows{};
  // Rows per user: bins [1], [2,3], [4,7], [8,15], ... (bin k holds 2^k .. 2^(k+1)-1).
  std::vector<int64_t> rows_per_user_hist;
};

struct InspectReport {
  std::string dir, source;
  int64_t split_time = 0;
  std::string bucket_source;
  ActivityBuckets buckets;
  std::map<std::string, int64_t> counters;  // from the manifest
  std::vector<SplitStats> splits;
  int64_t bad_inputs = 0;
};

absl::StatusOr<InspectReport> InspectDataset(FileSystem* fs, const std::string& dir,
                                             const ActivityBuckets& buckets,
                                             const ErrorBudget& budget);

// Human-readable tables.
std::string FormatInspectReport(const InspectReport& report);
// The report as a JSON document (the same numbers, machine-readable).
std::string InspectReportToJson(const InspectReport& report);

}  // namespace choir::data

#endif  // CHOIR_DATA_INSPECT_H_
