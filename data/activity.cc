#include "data/activity.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_set.h"

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "data/dataset.h"
#include "data/shard.h"

namespace choir::data {

const char* BucketName(Bucket bucket) {
  switch (bucket) {
    case Bucket::kLow:
      return "low";
    case Bucket::kMid:
      return "mid";
    case Bucket::kHigh:
      return "high";
    case Bucket::kNew:
      return "new";
  }
  return "?";
}

Bucket ActivityIndex::Of(int64_t user) const {
  auto it = users_.find(user);
  if (it == users_.end()) return Bucket::kNew;
  if (it->second.purchases <= config_.low_max_purchases()) return Bucket::kLow;
  if (it->second.purchases >= config_.high_min_purchases()) return Bucket::kHigh;
  return Bucket::kMid;
}

int64_t ActivityIndex::Purchases(int64_t user) const {
  auto it = users_.find(user);
  return it == users_.end() ? -1 : it->second.purchases;
}

int64_t ActivityIndex::Clicks(int64_t user) const {
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second.clicks;
}

int64_t ActivityIndex::ActiveDays(int64_t user) const {
  auto it = users_.find(user);
  return it == users_.end() ? 0 : it->second.active_days;
}

void ActivityIndex::ActivityFeatures(int64_t user, float out[kNumActivityFeatures]) const {
  auto it = users_.find(user);
  const UserActivity none;
  const UserActivity& a = it == users_.end() ? none : it->second;
  const Bucket bucket = Of(user);
  out[0] = static_cast<float>(std::log1p(static_cast<double>(a.purchases)));
  out[1] = static_cast<float>(std::log1p(static_cast<double>(a.clicks)));
  out[2] = static_cast<float>(std::log1p(static_cast<double>(a.active_days)));
  out[3] = (bucket == Bucket::kLow || bucket == Bucket::kNew) ? 1.0f : 0.0f;
}

namespace {

absl::StatusOr<int> RequireRole(const RowBlock& block, const std::string& file, FieldRole role,
                                absl::string_view what) {
  const int i = block.RoleIndex(role);
  if (i < 0) {
    return absl::FailedPreconditionError(absl::StrCat(file, ": schema has no ", what, " field"));
  }
  return i;
}

// Calls fn(file, block) for every block of every file, so errors can name the file.
absl::Status ForEachFileBlock(
    FileSystem* fs, const std::vector<std::string>& files, ErrorCounter* errors,
    const std::function<absl::Status(const std::string&, const RowBlock&)>& fn) {
  for (const std::string& file : files) {
    RETURN_IF_ERROR(ForEachBlock(fs, {file}, errors,
                                 [&](const RowBlock& block) { return fn(file, block); }));
  }
  return absl::OkStatus();
}

constexpr int64_t kDaySeconds = 86400;

int64_t FloorDiv(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// The training-period window [start, split) and its days, numbered from the window's first day.
struct Window {
  Window(int64_t split_time, int32_t days)
      : start(split_time - static_cast<int64_t>(days) * kDaySeconds),
        split(split_time),
        first_day(FloorDiv(start, kDaySeconds)) {}
  bool Contains(int64_t ts) const { return ts >= start && ts < split; }
  // The day of `ts`, which must be in the window: 0 .. days (a split time that is not
  // midnight UTC spreads the window over days + 1 calendar days).
  int32_t Day(int64_t ts) const {
    return static_cast<int32_t>(FloorDiv(ts, kDaySeconds) - first_day);
  }
  int64_t start, split, first_day;
};

}  // namespace

absl::StatusOr<ActivityIndex> BuildActivityIndex(FileSystem* fs, const std::string& dir,
                                                 const DatasetManifest& manifest,
                                                 const ActivityBuckets& config,
                                                 ErrorCounter* errors) {
  absl::StatusOr<SplitInfo> behaviors = FindSplit(manifest, "behaviors");
  ASSIGN_OR_RETURN(SplitInfo train, FindSplit(manifest, "train"));
  const Window window(manifest.split_time(), config.window_days());
  ActivityIndex index(config, behaviors.ok() ? "behaviors" : "train conversions");
  using UserActivity = ActivityIndex::UserActivity;

  // Active days are counted in one pass from each user's latest day, which is exact while
  // every user's rows come in time order (the generator writes the log sorted by user, then
  // time). A row older than its user's latest day sets `unordered`, and the days are then
  // recounted in a second pass with a temporary set of (user, day) pairs.
  bool unordered = false;
  auto note_day = [&](UserActivity* a, int64_t ts) {
    const int32_t day = window.Day(ts);
    if (day > a->last_day) {
      ++a->active_days;
      a->last_day = day;
    } else if (day < a->last_day) {
      unordered = true;
    }
  };

  // Presence in the train split makes a user known; without a log, its conversions, clicks
  // and days in the window count. A converted dataset records no split time (0): there every
  // conversion and click counts, and no day does (the window would be 1969).
  const bool timed = manifest.split_time() != 0;
  const std::vector<std::string> train_files = SplitPaths(dir, train);
  RETURN_IF_ERROR(ForEachFileBlock(fs, train_files, errors, [&](const std::string& where, const RowBlock& b) -> absl::Status {
    ASSIGN_OR_RETURN(int user_col, RequireRole(b, where, USER_ID, "user id"));
    const int conv_col = b.RoleIndex(LABEL_CONVERSION);
    const int click_col = b.RoleIndex(LABEL_CLICK);
    const int ts_col = b.RoleIndex(TIMESTAMP);
    for (size_t r = 0; r < b.num_rows(); ++r) {
      UserActivity& a = index.users_[b.Int(user_col, r)];
      if (behaviors.ok()) continue;
      const bool dated = timed && ts_col >= 0;
      if (dated && !window.Contains(b.Int(ts_col, r))) continue;  // known, but before the window
      // Labels are 0/1 in any dataset Choir wrote; count a positive whatever its value.
      if (conv_col >= 0 && b.Int(conv_col, r) != 0) ++a.purchases;
      if (click_col >= 0 && b.Int(click_col, r) != 0) ++a.clicks;
      if (dated) note_day(&a, b.Int(ts_col, r));
    }
    return absl::OkStatus();
  }));

  auto behavior_columns = [](const std::string& where, const RowBlock& b, int* user_col,
                             int* ts_col, int* type_col) -> absl::Status {
    ASSIGN_OR_RETURN(*user_col, RequireRole(b, where, USER_ID, "user id"));
    ASSIGN_OR_RETURN(*ts_col, RequireRole(b, where, TIMESTAMP, "timestamp"));
    *type_col = b.FieldIndex("type");
    if (*type_col < 0) return absl::FailedPreconditionError(absl::StrCat(where, ": no 'type' field"));
    return absl::OkStatus();
  };
  std::vector<std::string> behavior_files;
  if (behaviors.ok()) {
    behavior_files = SplitPaths(dir, *behaviors);
    RETURN_IF_ERROR(ForEachFileBlock(fs, behavior_files, errors, [&](const std::string& where, const RowBlock& b) -> absl::Status {
      int user_col = 0, ts_col = 0, type_col = 0;
      RETURN_IF_ERROR(behavior_columns(where, b, &user_col, &ts_col, &type_col));
      for (size_t r = 0; r < b.num_rows(); ++r) {
        const int64_t ts = b.Int(ts_col, r);
        if (ts >= window.split) continue;  // after the split: not training-period information
        UserActivity& a = index.users_[b.Int(user_col, r)];
        if (!window.Contains(ts)) continue;  // known, but before the window
        const int64_t type = b.Int(type_col, r);
        if (type == 2) ++a.purchases;
        if (type == 1) ++a.clicks;
        note_day(&a, ts);
      }
      return absl::OkStatus();
    }));
  }

  if (unordered) {
    // The second pass reads the same blocks; the first pass already counted (and, within the
    // budget, skipped) the bad ones, so this one skips them without counting.
    ErrorCounter again(ErrorBudget{std::numeric_limits<int64_t>::max(), 0.0});
    absl::flat_hash_set<std::pair<int64_t, int32_t>> days;
    if (behaviors.ok()) {
      RETURN_IF_ERROR(ForEachFileBlock(fs, behavior_files, &again, [&](const std::string& where, const RowBlock& b) -> absl::Status {
        int user_col = 0, ts_col = 0, type_col = 0;
        RETURN_IF_ERROR(behavior_columns(where, b, &user_col, &ts_col, &type_col));
        for (size_t r = 0; r < b.num_rows(); ++r) {
          const int64_t ts = b.Int(ts_col, r);
          if (window.Contains(ts)) days.emplace(b.Int(user_col, r), window.Day(ts));
        }
        return absl::OkStatus();
      }));
    } else {
      RETURN_IF_ERROR(ForEachFileBlock(fs, train_files, &again, [&](const std::string& where, const RowBlock& b) -> absl::Status {
        ASSIGN_OR_RETURN(int user_col, RequireRole(b, where, USER_ID, "user id"));
        const int ts_col = b.RoleIndex(TIMESTAMP);
        for (size_t r = 0; ts_col >= 0 && r < b.num_rows(); ++r) {
          const int64_t ts = b.Int(ts_col, r);
          if (window.Contains(ts)) days.emplace(b.Int(user_col, r), window.Day(ts));
        }
        return absl::OkStatus();
      }));
    }
    for (auto& [user, a] : index.users_) a.active_days = 0;
    for (const auto& [user, day] : days) ++index.users_[user].active_days;
  }
  return index;
}

std::vector<ActivityIndex::UserCounts> ActivityIndex::KnownUsers() const {
  std::vector<UserCounts> out;
  out.reserve(users_.size());
  for (const auto& [user, a] : users_) out.push_back(UserCounts{user, a.purchases, a.clicks, a.active_days});
  std::sort(out.begin(), out.end(), [](const UserCounts& x, const UserCounts& y) { return x.user < y.user; });
  return out;
}

void ActivityIndex::SetKnownUser(const UserCounts& counts) {
  UserActivity& a = users_[counts.user];
  a.purchases = counts.purchases;
  a.clicks = counts.clicks;
  a.active_days = counts.active_days;
}

}  // namespace choir::data
