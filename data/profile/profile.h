// Template user profiles (DESIGN.md 1.1, step 1): one readable English paragraph per user of a
// dataset folder, from the user's attributes, purchases in the last 7/30/365 days before the
// split (`L1 (leaf - count - price tier)`) and recently browsed categories. The optional
// language-model rewrite (llm_rewrite.h) reads the TSV this writes. docs/profiles.md has the
// format and the memory model.
#ifndef CHOIR_DATA_PROFILE_PROFILE_H_
#define CHOIR_DATA_PROFILE_PROFILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/error_budget.h"
#include "core/fs.h"

namespace choir::data {

struct ProfileOptions {
  // Seconds since the epoch; only behaviour strictly before it is described. 0 (default):
  // the manifest's split_time (INVALID_ARGUMENT when the manifest has none either).
  int64_t split_time = 0;
  // Most leaves listed per purchase window, the most purchased first; the rest are summed up
  // as "and N more". 0: no limit. Default 12 keeps heavy users' profiles short.
  int max_leaves_per_window = 12;
  // Clicks in the last `browse_days` days before the split are "recently browsed"; at most
  // `max_browsed` leaves (most clicked first) are named. max_browsed 0 leaves clicks out.
  int browse_days = 30;
  int max_browsed = 3;
  // Bad blocks of the input splits tolerated (see core/error_budget.h). Default: none.
  ErrorBudget error_budget;
  // Show a progress line while reading behaviours. Default true.
  bool progress = true;
};

struct ProfileReport {
  int64_t users = 0;                 // lines written (= rows of the users split)
  int64_t users_with_purchases = 0;  // with a purchase in the last 365 days
  int64_t users_with_browsing = 0;   // with a click in the browse window
  int64_t behavior_rows = 0;         // rows read from the behaviors split
  int64_t purchases_used = 0;        // purchases in the 365-day window of known users
  int64_t clicks_used = 0;           // clicks in the browse window of known users
  int64_t unknown_user_rows = 0;     // behaviour rows of users not in the users split
  int64_t bad_rows = 0;              // rows lost to corrupt blocks (within the budget)
};

// Reads DIR's users, items and behaviors splits and DIR/taxonomy.pbtxt and writes `out_tsv`
// atomically (tmp + rename): one line `user_id TAB text` per row of the users split, in that
// order. Text never holds a tab or newline. Price tier of a purchase = the percentile of its
// price among the catalogue's item prices of the same leaf (0 cheapest, 0.5 median,
// 1 dearest); a window's tier for a leaf is the mean over its purchases there.
// Memory: the catalogue's prices (4 bytes per item) plus a small per-user table of the leaves
// each user touched; behaviours are streamed once.
// Errors: NOT_FOUND for a missing split or taxonomy, INVALID_ARGUMENT for a split lacking a
// needed column or no split time, DATA_LOSS beyond the error budget.
absl::StatusOr<ProfileReport> WriteTemplateProfiles(FileSystem* fs, const std::string& data_dir,
                                                    const std::string& out_tsv,
                                                    const ProfileOptions& options = {});

// Replaces tabs, carriage returns and newlines by spaces and collapses runs of spaces, so that
// `text` fits one TSV field; trims both ends.
std::string SanitizeProfileText(absl::string_view text);

}  // namespace choir::data

#endif  // CHOIR_DATA_PROFILE_PROFILE_H_
