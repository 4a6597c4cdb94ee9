// How many bad inputs (malformed rows, corrupt blocks) a job tolerates before it fails.
//
// Every reader and converter counts what it rejected and reports it; none drops input
// silently. With the default budget (0) the first bad input fails the job with an error that
// names the file and the line or byte offset. With a budget, bad inputs are skipped and
// counted until the budget is spent, and then the job fails.
#ifndef CHOIR_CORE_ERROR_BUDGET_H_
#define CHOIR_CORE_ERROR_BUDGET_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"

namespace choir {

struct ErrorBudget {
  // Bad inputs tolerated in absolute number. 0 (default): fail on the first one.
  int64_t max_errors = 0;
  // Or as a fraction of the inputs seen so far (checked when inputs seen >= 1000, so that a
  // bad first row of a big file still fails with max_errors = 0). 0 disables.
  double max_fraction = 0.0;
};

// Counts inputs and errors against a budget. Not thread-safe: one per reader thread, merged.
class ErrorCounter {
 public:
  explicit ErrorCounter(ErrorBudget budget = {}) : budget_(budget) {}

  // Records `n` good inputs.
  void CountGood(int64_t n = 1) { seen_ += n; }
  // Records `n` >= 1 bad inputs lost to one error `error` (which names file and line/offset;
  // its message is kept once): a corrupt block of n rows counts as n bad inputs, so that
  // errors and good inputs are in the same unit. Returns OK when the errors are within
  // budget (the caller skips the input), else an error that carries the first error's
  // message and the counts.
  absl::Status CountBad(const absl::Status& error, int64_t n = 1);

  int64_t seen() const { return seen_; }
  int64_t errors() const { return errors_; }
  // The first few error messages (at most kKeptMessages), for the report.
  const std::vector<std::string>& messages() const { return messages_; }
  static constexpr int kKeptMessages = 20;

  void Merge(const ErrorCounter& other);

 private:
  ErrorBudget budget_;
  int64_t seen_ = 0;
  int64_t errors_ = 0;
  std::vector<std::string> messages_;
};

}  // namespace choir

#endif  // CHOIR_CORE_ERROR_BUDGET_H_
