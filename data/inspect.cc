#include "data/inspect.h"

#include <algorithm>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/status.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "nlohmann/json.hpp"

namespace choir::data {
namespace {

bool IsImpressionSplit(const std::string& name) {
  return name == "train" || name == "test" || name == "val";
}

int HistBin(int64_t n) {
  int bin = 0;
  while (n > 1) {
    n >>= 1;
    ++bin;
  }
  return bin;
}

}  // namespace

absl::StatusOr<InspectReport> InspectDataset(FileSystem* fs, const std::string& dir,
                                             const ActivityBuckets& buckets,
                                             const ErrorBudget& budget) {
  ASSIGN_OR_RETURN(DatasetManifest manifest, ReadManifest(fs, dir));
  InspectReport report;
  report.dir = dir;
  report.source = manifest.source();
  report.split_time = manifest.split_time();
  report.buckets = buckets;
  for (const auto& [k, v] : manifest.counters()) report.counters[k] = v;
  ErrorCounter errors(budget);

  absl::StatusOr<ActivityIndex> activity = absl::NotFoundError("no train split");
  if (FindSplit(manifest, "train").ok()) {
    // Its own counter: the split loop below reads (and counts) every block once.
    ErrorCounter activity_errors(budget);
    activity = BuildActivityIndex(fs, dir, manifest, buckets, &activity_errors);
    RETURN_IF_ERROR(activity.status());
    report.bucket_source = activity->source();
  }

  for (const SplitInfo& split : manifest.splits()) {
    SplitStats st;
    st.name = split.name();
    st.files = split.files_size();
    absl::flat_hash_map<int64_t, int64_t> rows_per_user;
    absl::flat_hash_set<int64_t> items;
    int64_t clicks = 0, conversions = 0, conv_with_click = 0;
    bool has_user = false, has_item = false, has_click = false, has_conv = false;
    const std::vector<std::string> files = SplitPaths(dir, split);
    RETURN_IF_ERROR(ForEachBlock(fs, files, &errors, [&](const RowBlock& b) -> absl::Status {
      st.rows += b.num_rows();
      const int u = b.RoleIndex(USER_ID), i = b.RoleIndex(ITEM_ID);
      const int c = b.RoleIndex(LABEL_CLICK), v = b.RoleIndex(LABEL_CONVERSION);
      has_user |= u >= 0;
      has_item |= i >= 0;
      has_click |= c >= 0;
      has_conv |= v >= 0;
      for (size_t r = 0; r < b.num_rows(); ++r) {
        if (u >= 0) ++rows_per_user[b.Int(u, r)];
        if (i >= 0) items.insert(b.Int(i, r));
        const int64_t click = c >= 0 ? b.Int(c, r) : 0;
        const int64_t conv = v >= 0 ? b.Int(v, r) : 0;
        clicks += click;
        conversions += conv;
        conv_with_click += click && conv;
      }
      return absl::OkStatus();
    }));
    if (has_user) st.users = rows_per_user.size();
    if (has_user && has_item) {  // interactions (not the users table)
      for (const auto& [user, n] : rows_per_user) {
        const int bin = HistBin(n);
        if (static_cast<int>(st.rows_per_user_hist.size()) <= bin) st.rows_per_user_hist.resize(bin + 1);
        ++st.rows_per_user_hist[bin];
      }
    }
    if (has_item) st.items = items.size();
    if (has_click) st.clicks = clicks;
    if (has_conv) st.conversions = conversions;
    if (has_click && has_conv) st.conversions_with_click = conv_with_click;
    if (has_user && activity.ok() && IsImpressionSplit(st.name)) {
      st.has_buckets = true;
      for (const auto& [user, n] : rows_per_user) {
        const int b = static_cast<int>(activity->Of(user));
        ++st.bucket_users[b];
        st.bucket_rows[b] += n;
      }
    }
    report.splits.push_back(std::move(st));
  }
  report.bad_inputs = errors.errors();
  return report;
}

namespace {

std::string Rate(int64_t num, int64_t den) {
  if (num < 0 || den <= 0) return "-";
  return absl::StrFormat("%.4f", static_cast<double>(num) / den);
}

std::string Count(int64_t n) { return n < 0 ? "-" : absl::StrCat(n); }

std::string HistLabel(size_t bin) {
  const int64_t lo = int64_t{1} << bin, hi = (int64_t{1} << (bin + 1)) - 1;
  return lo == hi ? absl::StrCat(lo) : absl::StrCat(lo, "-", hi);
}

}  // namespace

std::string FormatInspectReport(const InspectReport& r) {
  std::string out = absl::StrFormat("dataset %s (source %s, split time %d)\n\n", r.dir, r.source, r.split_time);
  absl::StrAppendFormat(&out, "%-10s %12s %6s %10s %10s %8s %8s %9s\n", "split", "rows", "files", "users",
                        "items", "ctr", "ctcvr", "cvr|click");
  for (const SplitStats& s : r.splits) {
    absl::StrAppendFormat(&out, "%-10s %12d %6d %10s %10s %8s %8s %9s\n", s.name, s.rows, s.files, Count(s.users),
                          Count(s.items), Rate(s.clicks, s.rows), Rate(s.conversions, s.rows),
                          Rate(s.conversions_with_click, s.clicks));
  }
  if (!r.bucket_source.empty()) {
    absl::StrAppendFormat(&out,
                          "\nactivity buckets (purchases in the %d days before the split, from %s): "
                          "low <= %d, high >= %d, new = absent from training\n",
                          r.buckets.window_days(), r.bucket_source, r.buckets.low_max_purchases(),
                          r.buckets.high_min_purchases());
    absl::StrAppendFormat(&out, "%-10s %-6s %10s %8s %12s %8s\n", "split", "bucket", "users", "users%", "samples",
                          "samples%");
    for (const SplitStats& s : r.splits) {
      if (!s.has_buckets) continue;
      for (Bucket b : kAllBuckets) {
        const int i = static_cast<int>(b);
        absl::StrAppendFormat(&out, "%-10s %-6s %10d %7.2f%% %12d %7.2f%%\n", s.name, BucketName(b), s.bucket_users[i],
                              s.users > 0 ? 100.0 * s.bucket_users[i] / s.users : 0.0, s.bucket_rows[i],
                              s.rows > 0 ? 100.0 * s.bucket_rows[i] / s.rows : 0.0);
      }
    }
  }
  for (const SplitStats& s : r.splits) {
    if (s.rows_per_user_hist.empty()) continue;
    absl::StrAppendFormat(&out, "\nrows per user, split %s:\n", s.name);
    for (size_t bin = 0; bin < s.rows_per_user_hist.size(); ++bin) {
      absl::StrAppendFormat(&out, "  %-12s %10d\n", HistLabel(bin), s.rows_per_user_hist[bin]);
    }
  }
  if (!r.counters.empty()) {
    out += "\nmanifest counters:\n";
    for (const auto& [k, v] : r.counters) absl::StrAppendFormat(&out, "  %-36s %d\n", k, v);
  }
  if (r.bad_inputs > 0) absl::StrAppendFormat(&out, "\nbad inputs skipped: %d\n", r.bad_inputs);
  return out;
}

std::string InspectReportToJson(const InspectReport& r) {
  nlohmann::json j;
  j["dir"] = r.dir;
  j["source"] = r.source;
  j["split_time"] = r.split_time;
  j["bucket_source"] = r.bucket_source;
  j["bad_inputs"] = r.bad_inputs;
  j["counters"] = r.counters;
  for (const SplitStats& s : r.splits) {
    nlohmann::json js;
    js["rows"] = s.rows;
    js["files"] = s.files;
    js["users"] = s.users;
    js["items"] = s.items;
    js["clicks"] = s.clicks;
    js["conversions"] = s.conversions;
    js["conversions_with_click"] = s.conversions_with_click;
    if (s.has_buckets) {
      for (Bucket b : kAllBuckets) {
        const int i = static_cast<int>(b);
        js["buckets"][BucketName(b)] = {{"users", s.bucket_users[i]}, {"samples", s.bucket_rows[i]}};
      }
    }
    nlohmann::json hist = nlohmann::json::object();
    for (size_t bin = 0; bin < s.rows_per_user_hist.size(); ++bin) hist[HistLabel(bin)] = s.rows_per_user_hist[bin];
    js["rows_per_user"] = hist;
    j["splits"][s.name] = js;
  }
  return j.dump(2) + "\n";
}

}  // namespace choir::data
