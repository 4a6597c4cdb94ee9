#include "core/error_budget.h"

#include <limits>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace choir {
namespace {

// Inputs needed before the fractional budget applies.
constexpr int64_t kMinInputsForFraction = 1000;

// a + b for non-negative counts, saturating: a count read from a corrupt file may be huge, and
// the budget is spent either way.
int64_t AddCounts(int64_t a, int64_t b) {
  constexpr int64_t kMax = std::numeric_limits<int64_t>::max();
  return b > kMax - a ? kMax : a + b;
}

}  // namespace

absl::Status ErrorCounter::CountBad(const absl::Status& error, int64_t n) {
  CHECK(!error.ok()) << "CountBad called with an OK status";
  CHECK_GE(n, 1) << "CountBad counts at least one bad input";
  errors_ = AddCounts(errors_, n);
  if (messages_.size() < static_cast<size_t>(kKeptMessages)) {
    messages_.emplace_back(error.message());
  }
  if (errors_ <= budget_.max_errors) return absl::OkStatus();
  const int64_t total = AddCounts(seen_, errors_);
  if (budget_.max_fraction > 0 && total >= kMinInputsForFraction &&
      static_cast<double>(errors_) / static_cast<double>(total) <= budget_.max_fraction) {
    return absl::OkStatus();
  }
  std::string budget = absl::StrCat(budget_.max_errors);
  if (budget_.max_fraction > 0)
    absl::StrAppend(&budget, " or ", budget_.max_fraction, " of inputs");
  return absl::Status(error.code(), absl::StrCat(messages_.front(), " (", errors_,
                                                 " bad inputs, budget ", budget, " exceeded)"));
}

void ErrorCounter::Merge(const ErrorCounter& other) {
  seen_ = AddCounts(seen_, other.seen_);
  errors_ = AddCounts(errors_, other.errors_);
  for (const std::string& message : other.messages_) {
    if (messages_.size() >= static_cast<size_t>(kKeptMessages)) break;
    messages_.push_back(message);
  }
}

}  // namespace choir
