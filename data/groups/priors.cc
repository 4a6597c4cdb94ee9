#include "data/groups/priors.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/error_budget.h"
#include "core/status.h"
#include "data/dataset.h"
#include "data/groups/groups_tsv.h"
#include "data/shard.h"
#include "nlohmann/json.hpp"

namespace choir::groups {
namespace {

using data::RowBlock;

// Calls fn(file, block) for every block of every file, so errors can name the file.
absl::Status ForEachFileBlock(
    FileSystem* fs, const std::vector<std::string>& files, ErrorCounter* errors,
    const std::function<absl::Status(const std::string&, const RowBlock&)>& fn) {
  for (const std::string& file : files) {
    RETURN_IF_ERROR(data::ForEachBlock(fs, {file}, errors,
                                       [&](const RowBlock& block) { return fn(file, block); }));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> RequireRole(const RowBlock& b, const std::string& file, data::FieldRole role,
                                absl::string_view what) {
  const int i = b.RoleIndex(role);
  if (i < 0) {
    return absl::FailedPreconditionError(absl::StrCat(file, ": schema has no ", what, " field"));
  }
  return i;
}

absl::StatusOr<int> RequireField(const RowBlock& b, const std::string& file,
                                 absl::string_view name) {
  const int i = b.FieldIndex(name);
  if (i < 0 || !b.column(i).is_int() || b.column(i).is_list()) {
    return absl::FailedPreconditionError(
        absl::StrCat(file, ": schema has no INT64 field '", name, "'"));
  }
  return i;
}

// Majority vote ignoring 0; ties to the smallest value; 0 when all are missing.
int64_t Vote(const std::map<int64_t, int64_t>& counts) {
  int64_t best = 0, best_count = 0;
  for (const auto& [value, count] : counts) {
    if (count > best_count) best = value, best_count = count;
  }
  return best;
}

double Smoothed(int64_t events, int64_t trials, double global, double smoothing) {
  const double denom = static_cast<double>(trials) + smoothing;
  if (denom <= 0) return global;
  return (static_cast<double>(events) + smoothing * global) / denom;
}

struct ItemAgg {
  int64_t count = 0;
  double ts_sum = 0;
};

struct GroupAgg {
  int64_t members = 0;
  std::map<int64_t, int64_t> votes[3];  // gender, age_bucket, city_tier
  int64_t impressions = 0, clicks = 0, conversions = 0;
  // (category, item) -> purchases and purchase-time sum.
  absl::flat_hash_map<std::pair<int64_t, int64_t>, ItemAgg> items;
};

struct UserData {
  bool present = false;
  int64_t attrs[3] = {0, 0, 0};
  int64_t impressions = 0, clicks = 0, conversions = 0;
};

std::string GroupKey(const int32_t* codes, int level) {
  std::string key;
  for (int i = 0; i < level; ++i) absl::StrAppend(&key, i ? "-" : "", codes[i]);
  return key;
}

}  // namespace

absl::StatusOr<PriorsReport> WriteGroupPriors(FileSystem* fs, const std::string& data_dir,
                                              const std::string& groups_tsv,
                                              const std::string& out_dir,
                                              const PriorsOptions& options) {
  if (options.top_categories < 0 || options.items_per_category < 0 ||
      !(options.smoothing >= 0) || !std::isfinite(options.smoothing)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "priors: top_categories and items_per_category must be >= 0 and smoothing a finite "
        "number >= 0 (got ",
        options.top_categories, ", ", options.items_per_category, ", ", options.smoothing, ")"));
  }
  ASSIGN_OR_RETURN(GroupsTable table, ReadGroupsTsv(fs, groups_tsv));
  if (table.levels <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(groups_tsv, ": no code levels"));
  }
  const int L = table.levels;
  const size_t n = table.ids.size();
  if (table.codes.size() != n * L) {
    return absl::DataLossError(absl::StrCat(groups_tsv, ": codes do not match the ids"));
  }
  absl::flat_hash_map<int64_t, int32_t> user_index;
  user_index.reserve(n);
  for (size_t u = 0; u < n; ++u) {
    if (!user_index.emplace(table.ids[u], static_cast<int32_t>(u)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(groups_tsv, ": user ", table.ids[u], " appears twice"));
    }
  }
  // Group index of every user at every level; groups ordered by code prefix.
  std::vector<std::vector<GroupAgg>> groups(L);
  std::vector<std::vector<std::string>> group_keys(L);
  std::vector<std::vector<int32_t>> user_group(L, std::vector<int32_t>(n));
  for (int l = 0; l < L; ++l) {
    std::map<std::vector<int32_t>, int32_t> order;
    for (size_t u = 0; u < n; ++u) {
      const int32_t* c = &table.codes[u * L];
      order.emplace(std::vector<int32_t>(c, c + l + 1), 0);
    }
    int32_t next = 0;
    for (auto& [prefix, index] : order) {
      index = next++;
      group_keys[l].push_back(GroupKey(prefix.data(), l + 1));
    }
    groups[l].resize(next);
    for (size_t u = 0; u < n; ++u) {
      const int32_t* c = &table.codes[u * L];
      user_group[l][u] = order.at(std::vector<int32_t>(c, c + l + 1));
    }
  }

  ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadManifest(fs, data_dir));
  const int64_t split_time = manifest.split_time();
  ErrorCounter errors;
  std::vector<UserData> users(n);
  PriorsReport report;
  report.levels = L;
  report.users = static_cast<int64_t>(n);

  // Users: attributes.
  // The users' attributes and the purchase times come from a dataset with a users split and a
  // behaviour log (`choir data gen`); a converted dataset has neither.
  absl::StatusOr<data::SplitInfo> users_found = data::FindSplit(manifest, "users");
  if (!users_found.ok()) {
    return absl::FailedPreconditionError(absl::StrCat(
        data_dir, ": ", users_found.status().message(),
        "; group priors need the users' attributes (a dataset from `choir data gen`)"));
  }
  const data::SplitInfo& users_split = *users_found;
  static const char* const kAttrs[3] = {"gender", "age_bucket", "city_tier"};
  RETURN_IF_ERROR(ForEachFileBlock(
      fs, data::SplitPaths(data_dir, users_split), &errors,
      [&](const std::string& file, const RowBlock& b) -> absl::Status {
        ASSIGN_OR_RETURN(int user_col, RequireRole(b, file, data::USER_ID, "user id"));
        int cols[3];
        for (int a = 0; a < 3; ++a) {
          ASSIGN_OR_RETURN(cols[a], RequireField(b, file, kAttrs[a]));
        }
        for (size_t r = 0; r < b.num_rows(); ++r) {
          auto it = user_index.find(b.Int(user_col, r));
          if (it == user_index.end()) continue;
          UserData& d = users[it->second];
          d.present = true;
          for (int a = 0; a < 3; ++a) d.attrs[a] = b.Int(cols[a], r);
        }
        return absl::OkStatus();
      }));

  // Train: impressions, clicks, conversions (the train split precedes the split time).
  ASSIGN_OR_RETURN(data::SplitInfo train_split, data::FindSplit(manifest, "train"));
  std::vector<bool> in_train(n, false);
  RETURN_IF_ERROR(ForEachFileBlock(
      fs, data::SplitPaths(data_dir, train_split), &errors,
      [&](const std::string& file, const RowBlock& b) -> absl::Status {
        ASSIGN_OR_RETURN(int user_col, RequireRole(b, file, data::USER_ID, "user id"));
        ASSIGN_OR_RETURN(int click_col, RequireRole(b, file, data::LABEL_CLICK, "click label"));
        ASSIGN_OR_RETURN(int conv_col,
                         RequireRole(b, file, data::LABEL_CONVERSION, "conversion label"));
        for (size_t r = 0; r < b.num_rows(); ++r) {
          const int64_t click = b.Int(click_col, r) != 0 ? 1 : 0;
          const int64_t conv = b.Int(conv_col, r) != 0 ? 1 : 0;
          ++report.train_rows;
          report.train_clicks += click;
          report.train_conversions += conv;
          auto it = user_index.find(b.Int(user_col, r));
          if (it == user_index.end()) continue;
          UserData& d = users[it->second];
          in_train[it->second] = true;
          ++d.impressions;
          d.clicks += click;
          d.conversions += conv;
        }
        return absl::OkStatus();
      }));
  report.global_ctr = report.train_rows > 0
                          ? static_cast<double>(report.train_clicks) / report.train_rows
                          : 0.0;
  report.global_cvr = report.train_clicks > 0 ? static_cast<double>(report.train_conversions) /
                                                    report.train_clicks
                                              : 0.0;

  // Behaviours: purchases before the split time.
  absl::StatusOr<data::SplitInfo> behaviors = data::FindSplit(manifest, "behaviors");
  report.has_behaviors = behaviors.ok();
  if (behaviors.ok()) {
    RETURN_IF_ERROR(ForEachFileBlock(
        fs, data::SplitPaths(data_dir, *behaviors), &errors,
        [&](const std::string& file, const RowBlock& b) -> absl::Status {
          ASSIGN_OR_RETURN(int user_col, RequireRole(b, file, data::USER_ID, "user id"));
          ASSIGN_OR_RETURN(int item_col, RequireRole(b, file, data::ITEM_ID, "item id"));
          ASSIGN_OR_RETURN(int ts_col, RequireRole(b, file, data::TIMESTAMP, "timestamp"));
          ASSIGN_OR_RETURN(int cat_col, RequireField(b, file, "item_category"));
          ASSIGN_OR_RETURN(int type_col, RequireField(b, file, "type"));
          for (size_t r = 0; r < b.num_rows(); ++r) {
            if (b.Int(type_col, r) != 2) continue;
            const int64_t ts = b.Int(ts_col, r);
            if (ts >= split_time) continue;  // after the split: not training-period information
            auto it = user_index.find(b.Int(user_col, r));
            if (it == user_index.end()) continue;
            ++report.purchases;
            const std::pair<int64_t, int64_t> key(b.Int(cat_col, r), b.Int(item_col, r));
            for (int l = 0; l < L; ++l) {
              ItemAgg& agg = groups[l][user_group[l][it->second]].items[key];
              ++agg.count;
              agg.ts_sum += static_cast<double>(ts);
            }
          }
          return absl::OkStatus();
        }));
  }

  // Per-user data into the groups.
  for (size_t u = 0; u < n; ++u) {
    const UserData& d = users[u];
    if (!d.present) ++report.users_absent;
    if (!in_train[u]) ++report.users_without_train;
    for (int l = 0; l < L; ++l) {
      GroupAgg& g = groups[l][user_group[l][u]];
      ++g.members;
      for (int a = 0; a < 3; ++a) {
        if (d.attrs[a] != 0) ++g.votes[a][d.attrs[a]];
      }
      g.impressions += d.impressions;
      g.clicks += d.clicks;
      g.conversions += d.conversions;
    }
  }

  RETURN_IF_ERROR(fs->CreateDirs(out_dir));
  for (int l = 0; l < L; ++l) {
    std::string out =
        "group\tmembers\tgender\tage_bucket\tcity_tier\timpressions\tclicks\tconversions\tctr\t"
        "cvr\tseq_items\tseq_categories\n";
    int64_t rows = 0;
    for (size_t gi = 0; gi < groups[l].size(); ++gi) {
      const GroupAgg& g = groups[l][gi];
      if (g.members == 0) continue;
      ++rows;
      // Sequence: top categories, head items, by mean purchase time.
      std::map<int64_t, int64_t> cat_counts;
      std::map<int64_t, std::vector<std::pair<int64_t, const ItemAgg*>>> cat_items;
      for (const auto& [key, agg] : g.items) {
        cat_counts[key.first] += agg.count;
        cat_items[key.first].emplace_back(key.second, &agg);
      }
      std::vector<std::pair<int64_t, int64_t>> cats(cat_counts.begin(), cat_counts.end());
      std::sort(cats.begin(), cats.end(), [](const auto& a, const auto& b) {
        return a.second != b.second ? a.second > b.second : a.first < b.first;
      });
      if (cats.size() > static_cast<size_t>(options.top_categories)) {
        cats.resize(options.top_categories);
      }
      struct Pick {
        int64_t item, category;
        double mean_ts;
      };
      std::vector<Pick> picks;
      for (const auto& [cat, count] : cats) {
        auto& items = cat_items[cat];
        std::sort(items.begin(), items.end(), [](const auto& a, const auto& b) {
          return a.second->count != b.second->count ? a.second->count > b.second->count
                                                     : a.first < b.first;
        });
        for (size_t i = 0; i < items.size() && i < static_cast<size_t>(options.items_per_category);
             ++i) {
          picks.push_back({items[i].first, cat,
                           items[i].second->ts_sum / static_cast<double>(items[i].second->count)});
        }
      }
      std::sort(picks.begin(), picks.end(), [](const Pick& a, const Pick& b) {
        if (a.mean_ts != b.mean_ts) return a.mean_ts < b.mean_ts;
        return a.item != b.item ? a.item < b.item : a.category < b.category;
      });
      std::vector<int64_t> seq_items, seq_cats;
      for (const Pick& p : picks) {
        seq_items.push_back(p.item);
        seq_cats.push_back(p.category);
      }
      absl::StrAppend(&out, group_keys[l][gi], "\t", g.members, "\t", Vote(g.votes[0]), "\t",
                      Vote(g.votes[1]), "\t", Vote(g.votes[2]), "\t", g.impressions, "\t",
                      g.clicks, "\t", g.conversions, "\t",
                      absl::StrFormat("%.10g", Smoothed(g.clicks, g.impressions, report.global_ctr,
                                                        options.smoothing)),
                      "\t",
                      absl::StrFormat("%.10g", Smoothed(g.conversions, g.clicks, report.global_cvr,
                                                        options.smoothing)),
                      "\t", absl::StrJoin(seq_items, "|"), "\t", absl::StrJoin(seq_cats, "|"),
                      "\n");
    }
    const std::string path = JoinPath(out_dir, absl::StrCat("level-", l + 1, ".tsv"));
    RETURN_IF_ERROR(fs->WriteStringToFileAtomic(path, out));
    report.groups_per_level.push_back(rows);
    report.files.push_back(path);
  }

  nlohmann::json j;
  j["levels"] = L;
  j["data"] = data_dir;
  j["groups"] = groups_tsv;
  j["split_time"] = split_time;
  j["options"] = {{"top_categories", options.top_categories},
                  {"items_per_category", options.items_per_category},
                  {"smoothing", options.smoothing}};
  j["global"] = {{"impressions", report.train_rows},
                 {"clicks", report.train_clicks},
                 {"conversions", report.train_conversions},
                 {"ctr", report.global_ctr},
                 {"cvr", report.global_cvr}};
  j["counts"] = {{"users", report.users},
                 {"users_absent", report.users_absent},
                 {"users_without_train", report.users_without_train},
                 {"purchases", report.purchases},
                 {"has_behaviors", report.has_behaviors},
                 {"groups_per_level", report.groups_per_level}};
  j["files"] = nlohmann::json::array();
  for (int l = 0; l < L; ++l) j["files"].push_back(absl::StrCat("level-", l + 1, ".tsv"));
  const std::string json_path = JoinPath(out_dir, "priors.json");
  RETURN_IF_ERROR(fs->WriteStringToFileAtomic(json_path, j.dump(2) + "\n"));
  report.files.push_back(json_path);
  return report;
}

}  // namespace choir::groups
