#include "worker/group_features.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status.h"
#include "data/groups/groups_tsv.h"
#include "nlohmann/json.hpp"
#include "glog/logging.h"

namespace choir::worker {
namespace {

constexpr char kLevelHeader[] =
    "group\tmembers\tgender\tage_bucket\tcity_tier\timpressions\tclicks\tconversions\tctr\tcvr\t"
    "seq_items\tseq_categories";
constexpr int kLevelColumns = 12;
// Far above any useful code depth; bounds what priors.json may claim.
constexpr int kMaxLevels = 64;
enum LevelColumn {
  kGroup = 0,
  kMembers,
  kGender,
  kAgeBucket,
  kCityTier,
  kImpressions,
  kClicks,
  kConversions,
  kCtr,
  kCvr,
  kSeqItems,
  kSeqCategories,
};

// One level file, parsed. Row r is the group with id r + 1.
struct Level {
  int length = 0;  // codes per prefix (the 1-based level)
  int64_t rows = 0;
  std::vector<int32_t> prefixes;               // [rows, length], strictly increasing
  std::vector<float> stats;                    // [rows, 4]
  std::vector<int64_t> counts;                 // [rows, 3]: impressions, clicks, conversions
  std::vector<int64_t> attributes;             // [rows, 3]; only filled at the attribute level
  std::vector<std::pair<size_t, size_t>> seq;  // (offset, size); only at the sequence level

  // The row of `prefix` (length codes), or -1.
  int64_t Find(const int32_t* prefix) const {
    int64_t lo = 0, hi = rows;  // first row whose prefix is not less than `prefix`
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      const int32_t* p = &prefixes[mid * length];
      if (std::lexicographical_compare(p, p + length, prefix, prefix + length)) {
        lo = mid + 1;
      } else {
        hi = mid;
      }
    }
    if (lo < rows && std::equal(prefix, prefix + length, &prefixes[lo * length])) return lo;
    return -1;
  }
};

std::string PrefixString(const int32_t* codes, int length) {
  std::string s;
  for (int i = 0; i < length; ++i) absl::StrAppend(&s, i ? "-" : "", codes[i]);
  return s;
}

absl::Status Malformed(const std::string& path, int64_t line, absl::string_view what) {
  return absl::DataLossError(absl::StrCat(path, ":", line, ": ", what));
}

bool ParseCount(absl::string_view field, int64_t* out) {
  return absl::SimpleAtoi(field, out) && *out >= 0;
}

// '|'-joined integers; empty for an empty field.
bool ParseList(absl::string_view field, std::vector<int64_t>* out) {
  out->clear();
  if (field.empty()) return true;
  for (absl::string_view v : absl::StrSplit(field, '|')) {
    int64_t x = 0;
    if (!absl::SimpleAtoi(v, &x)) return false;
    out->push_back(x);
  }
  return true;
}

// Reads level-<length>.tsv. Attributes are kept when `keep_attributes`, sequences (appended
// to *items and *categories) when `keep_sequences`.
absl::StatusOr<Level> ReadLevel(FileSystem* fs, const std::string& path, int length,
                                bool keep_attributes, bool keep_sequences,
                                std::vector<int64_t>* items, std::vector<int64_t>* categories) {
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  Level level;
  level.length = length;
  int64_t line_no = 0;
  bool header = false;
  std::vector<int64_t> seq_items, seq_categories;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    if (!header) {
      if (line != kLevelHeader) {
        return Malformed(path, line_no, absl::StrCat("expected the header '", kLevelHeader, "'"));
      }
      header = true;
      continue;
    }
    const std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    if (static_cast<int>(f.size()) != kLevelColumns) {
      return Malformed(path, line_no,
                       absl::StrCat(f.size(), " columns, the header has ", kLevelColumns));
    }
    // The prefix: exactly `length` codes >= 0, after the previous row's.
    const size_t begin = level.prefixes.size();
    for (absl::string_view code : absl::StrSplit(f[kGroup], '-')) {
      int32_t c = 0;
      if (!absl::SimpleAtoi(code, &c) || c < 0) {
        return Malformed(path, line_no, absl::StrCat("bad group '", f[kGroup], "'"));
      }
      level.prefixes.push_back(c);
    }
    if (level.prefixes.size() - begin != static_cast<size_t>(length)) {
      return Malformed(
          path, line_no,
          absl::StrCat("group '", f[kGroup], "' is not a prefix of ", length, " codes"));
    }
    const int32_t* prefix = &level.prefixes[begin];
    if (level.rows > 0) {
      const int32_t* previous = prefix - length;
      if (!std::lexicographical_compare(previous, previous + length, prefix, prefix + length)) {
        return Malformed(path, line_no,
                         absl::StrCat("group '", f[kGroup], "' does not follow '",
                                      PrefixString(previous, length),
                                      "' (rows must be strictly sorted by prefix)"));
      }
    }
    int64_t counts[kConversions + 1];
    for (int c = kMembers; c <= kConversions; ++c) {
      if (!ParseCount(f[c], &counts[c])) {
        return Malformed(path, line_no,
                         absl::StrCat("column ", c + 1, " '", f[c], "' is not an integer >= 0"));
      }
    }
    double rates[2];
    for (int c = kCtr; c <= kCvr; ++c) {
      double& rate = rates[c - kCtr];
      if (!absl::SimpleAtod(f[c], &rate) || !std::isfinite(rate) || rate < 0) {
        return Malformed(path, line_no,
                         absl::StrCat("column ", c + 1, " '", f[c], "' is not a rate >= 0"));
      }
    }
    if (!ParseList(f[kSeqItems], &seq_items) || !ParseList(f[kSeqCategories], &seq_categories)) {
      return Malformed(path, line_no, "seq_items or seq_categories is not a '|'-joined id list");
    }
    if (seq_items.size() != seq_categories.size()) {
      return Malformed(path, line_no,
                       absl::StrCat(seq_items.size(), " seq_items but ", seq_categories.size(),
                                    " seq_categories"));
    }
    level.counts.push_back(counts[kImpressions]);
    level.counts.push_back(counts[kClicks]);
    level.counts.push_back(counts[kConversions]);
    level.stats.push_back(
        static_cast<float>(std::log1p(static_cast<double>(counts[kImpressions]))));
    level.stats.push_back(static_cast<float>(std::log1p(static_cast<double>(counts[kClicks]))));
    level.stats.push_back(static_cast<float>(rates[0]));
    level.stats.push_back(static_cast<float>(rates[1]));
    if (keep_attributes) {
      for (int c = kGender; c <= kCityTier; ++c) level.attributes.push_back(counts[c]);
    }
    if (keep_sequences) {
      level.seq.emplace_back(items->size(), seq_items.size());
      items->insert(items->end(), seq_items.begin(), seq_items.end());
      categories->insert(categories->end(), seq_categories.begin(), seq_categories.end());
    }
    ++level.rows;
  }
  if (!header) return absl::DataLossError(absl::StrCat(path, ": empty file, no header"));
  return level;
}

struct PriorsJson {
  int levels = 0;
  double global_ctr = 0, global_cvr = 0;
  double smoothing = 20;  // options.smoothing when present
};

absl::StatusOr<PriorsJson> ReadPriorsJson(FileSystem* fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::DataLossError(absl::StrCat(path, ": not a JSON object"));
  }
  if (!j.contains("levels") || !j["levels"].is_number_integer() || j["levels"].get<int64_t>() < 1 ||
      j["levels"].get<int64_t>() > kMaxLevels) {
    return absl::DataLossError(
        absl::StrCat(path, ": needs an integer 'levels' in [1, ", kMaxLevels, "]"));
  }
  PriorsJson p;
  p.levels = j["levels"].get<int>();
  const nlohmann::json* global = j.contains("global") ? &j["global"] : nullptr;
  if (global == nullptr || !global->is_object() || !global->contains("ctr") ||
      !global->contains("cvr") || !(*global)["ctr"].is_number() || !(*global)["cvr"].is_number()) {
    return absl::DataLossError(absl::StrCat(path, ": needs numbers 'global.ctr' and 'global.cvr'"));
  }
  p.global_ctr = (*global)["ctr"].get<double>();
  p.global_cvr = (*global)["cvr"].get<double>();
  if (!std::isfinite(p.global_ctr) || !std::isfinite(p.global_cvr) || p.global_ctr < 0 ||
      p.global_cvr < 0) {
    return absl::DataLossError(absl::StrCat(path, ": global rates must be finite and >= 0"));
  }
  if (j.contains("options") && j["options"].is_object() && j["options"].contains("smoothing")) {
    const nlohmann::json& s = j["options"]["smoothing"];
    if (!s.is_number() || !std::isfinite(s.get<double>()) || s.get<double>() < 0) {
      return absl::DataLossError(absl::StrCat(path, ": options.smoothing must be a number >= 0"));
    }
    p.smoothing = s.get<double>();
  }
  return p;
}

}  // namespace

absl::StatusOr<std::unique_ptr<GroupFeatures>> GroupFeatures::Load(
    FileSystem* fs, const GroupFeatureOptions& options) {
  if (options.groups_tsv.empty() || options.priors_dir.empty()) {
    return absl::InvalidArgumentError("group features: groups_tsv and priors_dir are required");
  }
  ASSIGN_OR_RETURN(groups::GroupsTable table, groups::ReadGroupsTsv(fs, options.groups_tsv));
  const int L = table.levels;
  const size_t n = table.ids.size();
  if (L < 1 || table.codes.size() != n * L) {
    return absl::DataLossError(absl::StrCat(options.groups_tsv, ": codes do not match the ids"));
  }
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max())) {
    return absl::InvalidArgumentError(absl::StrCat(options.groups_tsv, ": ", n, " users, at most ",
                                                   std::numeric_limits<int32_t>::max()));
  }
  const std::string json_path = JoinPath(options.priors_dir, "priors.json");
  ASSIGN_OR_RETURN(PriorsJson priors, ReadPriorsJson(fs, json_path));
  if (priors.levels != L) {
    return absl::InvalidArgumentError(absl::StrCat(options.groups_tsv, " has ", L, " levels but ",
                                                   json_path, " has ", priors.levels));
  }

  std::unique_ptr<GroupFeatures> f(new GroupFeatures());
  f->attribute_level_ = std::clamp(options.attribute_level, 1, L);
  f->sequence_level_ = std::clamp(options.sequence_level, 1, L);
  if (f->attribute_level_ != options.attribute_level || f->sequence_level_ != options.sequence_level) {
    LOG(WARNING) << options.groups_tsv << " has " << L << " level(s): model.groups.attribute_level "
                 << options.attribute_level << " and sequence_level " << options.sequence_level << " become "
                 << f->attribute_level_ << " and " << f->sequence_level_;
  }
  f->global_ctr_ = priors.global_ctr;
  f->global_cvr_ = priors.global_cvr;
  f->smoothing_ = priors.smoothing;
  if (options.own_counts != nullptr) f->own_counts_ = *options.own_counts;
  std::vector<Level> levels;
  for (int l = 1; l <= L; ++l) {
    const std::string path = JoinPath(options.priors_dir, absl::StrCat("level-", l, ".tsv"));
    ASSIGN_OR_RETURN(Level level,
                     ReadLevel(fs, path, l, l == f->attribute_level_, l == f->sequence_level_,
                               &f->seq_items_, &f->seq_categories_));
    f->num_groups_.push_back(level.rows);
    levels.push_back(std::move(level));
  }

  f->no_group_.ids.assign(L, 0);
  for (int l = 0; l < L; ++l) {
    f->no_group_.stats.insert(
        f->no_group_.stats.end(),
        {0.0f, 0.0f, static_cast<float>(priors.global_ctr), static_cast<float>(priors.global_cvr)});
  }

  // Fills level l (0-based) of `row` from row r of that level's file.
  auto set_level = [&](int l, int64_t r, GroupRow* row) {
    const Level& level = levels[l];
    row->ids[l] = r + 1;
    std::copy(&level.stats[r * 4], &level.stats[r * 4 + 4], row->stats.begin() + 4 * l);
    if (l + 1 == f->attribute_level_) {
      for (int a = 0; a < 3; ++a) row->attributes[a] = level.attributes[r * 3 + a];
    }
    if (l + 1 == f->sequence_level_) {
      const auto [offset, size] = level.seq[r];
      row->seq_items = absl::MakeConstSpan(f->seq_items_).subspan(offset, size);
      row->seq_categories = absl::MakeConstSpan(f->seq_categories_).subspan(offset, size);
    }
  };
  // One row per distinct full code tuple, found through its finest-level group.
  std::vector<int32_t> row_of_finest(levels.back().rows, -1);
  f->user_row_.reserve(n);
  for (size_t u = 0; u < n; ++u) {
    const int32_t* codes = &table.codes[u * L];
    const int64_t line = static_cast<int64_t>(u) + 2;  // after the header
    auto missing = [&](int l) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.groups_tsv, ":", line, ": group '", PrefixString(codes, l),
                       "' of user ", table.ids[u], " has no row in ",
                       JoinPath(options.priors_dir, absl::StrCat("level-", l, ".tsv"))));
    };
    const int64_t finest = levels.back().Find(codes);
    if (finest < 0) return missing(L);
    int32_t& row_index = row_of_finest[finest];
    if (row_index < 0) {
      GroupRow row = f->no_group_;
      for (int l = 0; l < L; ++l) {
        const int64_t r = l == L - 1 ? finest : levels[l].Find(codes);
        if (r < 0) return missing(l + 1);
        set_level(l, r, &row);
      }
      row_index = static_cast<int32_t>(f->rows_.size());
      f->rows_.push_back(std::move(row));
    }
    if (!f->user_row_.emplace(table.ids[u], row_index).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(options.groups_tsv, ":", line, ": user ", table.ids[u], " appears twice"));
    }
  }
  if (options.assigned != nullptr) {
    const AssignedUsers& a = *options.assigned;
    if (a.codes.size() != a.ids.size() * static_cast<size_t>(L)) {
      return absl::InvalidArgumentError(absl::StrCat("group features: ", a.ids.size(), " assigned users with ",
                                                     a.codes.size(), " codes, want ", L, " per user"));
    }
    for (size_t u = 0; u < a.ids.size(); ++u) {
      if (f->user_row_.contains(a.ids[u])) continue;
      const int32_t* codes = &a.codes[u * L];
      const int64_t finest = levels.back().Find(codes);
      if (finest >= 0 && row_of_finest[finest] >= 0) {  // the full tuple of some training user
        f->user_row_.emplace(a.ids[u], row_of_finest[finest]);
        continue;
      }
      // A tuple no user of groups.tsv has: the levels down to the first prefix without a group.
      GroupRow row = f->no_group_;
      for (int l = 0; l < L; ++l) {
        const int64_t r = levels[l].Find(codes);
        if (r < 0) break;
        set_level(l, r, &row);
      }
      const int32_t row_index = static_cast<int32_t>(f->rows_.size());
      f->rows_.push_back(std::move(row));
      if (finest >= 0) row_of_finest[finest] = row_index;
      f->user_row_.emplace(a.ids[u], row_index);
    }
  }
  f->level_counts_.reserve(L);
  for (Level& level : levels) f->level_counts_.push_back(std::move(level.counts));
  // Standardisation of UserStats over the users of groups.tsv (z-scores): log-counts near 10
  // next to rates near 0.1 would otherwise dominate the first layer that reads them.
  const size_t columns = static_cast<size_t>(f->num_stats());
  f->stats_mean_.assign(columns, 0.0f);
  f->stats_scale_.assign(columns, 1.0f);
  std::vector<double> sum(columns, 0.0), sum_sq(columns, 0.0);
  std::vector<float> raw(columns);
  for (const int64_t user : table.ids) {
    f->RawUserStats(user, raw.data());
    for (size_t c = 0; c < columns; ++c) {
      sum[c] += raw[c];
      sum_sq[c] += static_cast<double>(raw[c]) * raw[c];
    }
  }
  const double users = std::max<double>(1.0, static_cast<double>(n));
  for (size_t c = 0; c < columns; ++c) {
    const double mean = sum[c] / users;
    const double var = std::max(0.0, sum_sq[c] / users - mean * mean);
    f->stats_mean_[c] = static_cast<float>(mean);
    f->stats_scale_[c] = static_cast<float>(var > 1e-12 ? 1.0 / std::sqrt(var) : 1.0);
  }
  return f;
}

void GroupFeatures::RawUserStats(int64_t user_id, float* out) const {
  const GroupRow& row = Of(user_id);
  OwnCounts own;
  if (auto it = own_counts_.find(user_id); it != own_counts_.end()) own = it->second;
  for (int l = 0; l < levels(); ++l) {
    float* o = out + 4 * l;
    if (row.ids[l] == 0) {  // no group: nothing known about peers
      o[0] = o[1] = 0;
      o[2] = static_cast<float>(global_ctr_);
      o[3] = static_cast<float>(global_cvr_);
      continue;
    }
    const int64_t* c = &level_counts_[l][(row.ids[l] - 1) * 3];
    // The peers: the group without the user's own rows (never below 0 for inconsistent inputs).
    const double impressions = std::max<int64_t>(0, c[0] - own.impressions);
    const double clicks = std::max<int64_t>(0, c[1] - own.clicks);
    const double conversions = std::max<int64_t>(0, c[2] - own.conversions);
    o[0] = static_cast<float>(std::log1p(impressions));
    o[1] = static_cast<float>(std::log1p(clicks));
    o[2] = static_cast<float>((clicks + smoothing_ * global_ctr_) / (impressions + smoothing_));
    o[3] = static_cast<float>((conversions + smoothing_ * global_cvr_) / (clicks + smoothing_));
  }
}

void GroupFeatures::UserStats(int64_t user_id, float* out) const {
  RawUserStats(user_id, out);
  for (int c = 0; c < num_stats(); ++c) out[c] = (out[c] - stats_mean_[c]) * stats_scale_[c];
}

const GroupRow& GroupFeatures::Of(int64_t user_id) const {
  auto it = user_row_.find(user_id);
  return it == user_row_.end() ? no_group_ : rows_[it->second];
}

}  // namespace choir::worker
