#include "data/profile/profile.h"

#include <algorithm>
#include <array>
#include <memory>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/progress.h"
#include "core/status.h"
#include "data/dataset.h"
#include "data/profile/internal/atomic_writer.h"
#include "data/shard.h"
#include "data/taxonomy.h"
#include "glog/logging.h"

namespace choir::data {
namespace {

constexpr int64_t kDay = 86400;
constexpr int kWindows = 3;
constexpr std::array<int, kWindows> kWindowDays = {7, 30, 365};
constexpr int64_t kPurchase = 2;
constexpr int64_t kClick = 1;

// Category names by leaf id (1-based; index 0 unused).
struct Names {
  std::vector<std::string> leaf;
  std::vector<int> leaf_l1;  // index into l1
  std::vector<std::string> l1;

  bool Known(int64_t leaf_id) const { return leaf_id >= 1 && leaf_id < static_cast<int64_t>(leaf.size()); }
  std::string Leaf(int64_t id) const { return Known(id) ? leaf[id] : absl::StrCat("Category ", id); }
  // L1 index for grouping; unknown leaves share the index l1.size() ("Other").
  int L1(int64_t id) const { return Known(id) ? leaf_l1[id] : static_cast<int>(l1.size()); }
  std::string L1Name(int i) const { return i < static_cast<int>(l1.size()) ? l1[i] : "Other"; }
};

// One leaf a user touched: purchases per window (nested: 7 <= 30 <= 365 days), the sums of
// their price percentiles (those with a known percentile, counted in `priced`), and clicks in
// the browse window.
struct LeafAgg {
  int32_t leaf = 0;
  std::array<uint32_t, kWindows> count{};
  std::array<uint32_t, kWindows> priced{};
  std::array<float, kWindows> tier_sum{};
  uint32_t clicks = 0;
};

struct UserRow {
  int64_t id = 0;
  int8_t gender = 0, age = 0, city = 0;
};

absl::StatusOr<int> FindColumn(const RowBlock& b, absl::string_view name, absl::string_view split) {
  const int i = b.FieldIndex(name);
  if (i < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("profile: split '", split, "' has no column '", name, "'"));
  }
  return i;
}

// Calls fn(block) for every block of `split`.
absl::Status ReadSplit(FileSystem* fs, const std::string& dir, const DatasetManifest& manifest,
                       absl::string_view split, ErrorCounter* errors,
                       const std::function<absl::Status(const RowBlock&)>& fn) {
  ASSIGN_OR_RETURN(SplitInfo info, FindSplit(manifest, split));
  return ForEachBlock(fs, SplitPaths(dir, info), errors, fn);
}

absl::StatusOr<Names> LoadNames(FileSystem* fs, const std::string& dir) {
  ASSIGN_OR_RETURN(Taxonomy taxonomy, LoadTaxonomy(fs, JoinPath(dir, kTaxonomyName)));
  Names names;
  names.leaf.emplace_back();
  names.leaf_l1.push_back(0);
  for (const L1Category& l1 : taxonomy.categories()) {
    for (const LeafCategory& leaf : l1.leaves()) {
      names.leaf.push_back(leaf.name());
      names.leaf_l1.push_back(static_cast<int>(names.l1.size()));
    }
    names.l1.push_back(l1.name());
  }
  return names;
}

// Percentile of `price` among the sorted prices of a leaf: 0 cheapest, 1 dearest, ties at
// their mean rank, a price between two catalogue prices halfway; 0.5 with one item; -1 when
// the leaf has no items.
float Percentile(const std::vector<float>& sorted, float price) {
  const size_t n = sorted.size();
  if (n == 0) return -1;
  if (n == 1) return 0.5f;
  const auto lo = std::lower_bound(sorted.begin(), sorted.end(), price);
  const auto hi = std::upper_bound(lo, sorted.end(), price);
  const double less = static_cast<double>(lo - sorted.begin());
  const double equal = static_cast<double>(hi - lo);
  const double pos = equal > 0 ? less + (equal - 1) / 2 : less - 0.5;
  return static_cast<float>(std::clamp(pos / static_cast<double>(n - 1), 0.0, 1.0));
}

std::string Attributes(const UserRow& u) {
  static const char* const kAges[] = {"", "18-24", "25-29", "30-34", "35-39", "40-49", "50+"};
  std::vector<std::string> parts;
  if (u.gender == 1) parts.push_back("male");
  if (u.gender == 2) parts.push_back("female");
  if (u.age >= 1 && u.age <= 6) parts.push_back(absl::StrCat("age ", kAges[u.age]));
  if (u.city >= 1 && u.city <= 5) parts.push_back(absl::StrCat("lives in a tier-", u.city, " city"));
  if (parts.empty()) return "Gender, age and city unknown.";
  std::string s = absl::StrCat(absl::StrJoin(parts, ", "), ".");
  s[0] = absl::ascii_toupper(static_cast<unsigned char>(s[0]));
  return s;
}

// "Mother & Baby (Diapers - 9 - price tier 0.58; Infant Formula - 4 - price tier 0.71), ..."
// or "none".
std::string Window(const std::vector<LeafAgg>& leaves, int w, const Names& names, int max_leaves) {
  std::vector<const LeafAgg*> bought;
  for (const LeafAgg& a : leaves) {
    if (a.count[w] > 0) bought.push_back(&a);
  }
  if (bought.empty()) return "none";
  auto by_count = [w](const LeafAgg* a, const LeafAgg* b) {
    return a->count[w] != b->count[w] ? a->count[w] > b->count[w] : a->leaf < b->leaf;
  };
  std::sort(bought.begin(), bought.end(), by_count);
  size_t more = 0;
  if (max_leaves > 0 && bought.size() > static_cast<size_t>(max_leaves)) {
    more = bought.size() - max_leaves;
    bought.resize(max_leaves);
  }
  // Group by L1, the L1 with the most purchases first; leaves keep their order inside.
  std::vector<std::pair<int, std::vector<const LeafAgg*>>> groups;
  for (const LeafAgg* a : bought) {
    const int l1 = names.L1(a->leaf);
    auto it = std::find_if(groups.begin(), groups.end(), [l1](const auto& g) { return g.first == l1; });
    if (it == groups.end()) {
      groups.push_back({l1, {}});
      it = groups.end() - 1;
    }
    it->second.push_back(a);
  }
  auto total = [w](const std::vector<const LeafAgg*>& v) {
    uint64_t s = 0;
    for (const LeafAgg* a : v) s += a->count[w];
    return s;
  };
  std::stable_sort(groups.begin(), groups.end(), [&](const auto& a, const auto& b) {
    const uint64_t ta = total(a.second), tb = total(b.second);
    return ta != tb ? ta > tb : a.first < b.first;
  });
  std::vector<std::string> parts;
  for (const auto& [l1, group] : groups) {
    std::vector<std::string> items;
    for (const LeafAgg* a : group) {
      std::string item = absl::StrCat(names.Leaf(a->leaf), " - ", a->count[w]);
      if (a->priced[w] > 0) {
        absl::StrAppendFormat(&item, " - price tier %.2f", a->tier_sum[w] / a->priced[w]);
      }
      items.push_back(std::move(item));
    }
    parts.push_back(absl::StrCat(names.L1Name(l1), " (", absl::StrJoin(items, "; "), ")"));
  }
  std::string s = absl::StrJoin(parts, ", ");
  if (more > 0) absl::StrAppend(&s, ", and ", more, more == 1 ? " more category" : " more categories");
  return s;
}

std::string Browsed(const std::vector<LeafAgg>& leaves, const Names& names, int max_browsed) {
  std::vector<const LeafAgg*> clicked;
  for (const LeafAgg& a : leaves) {
    if (a.clicks > 0) clicked.push_back(&a);
  }
  std::sort(clicked.begin(), clicked.end(), [](const LeafAgg* a, const LeafAgg* b) {
    return a->clicks != b->clicks ? a->clicks > b->clicks : a->leaf < b->leaf;
  });
  if (clicked.size() > static_cast<size_t>(max_browsed)) clicked.resize(max_browsed);
  std::vector<std::string> out;
  for (const LeafAgg* a : clicked) out.push_back(names.Leaf(a->leaf));
  return absl::StrJoin(out, ", ");
}

std::string ProfileText(const UserRow& u, const std::vector<LeafAgg>& leaves, const Names& names,
                        const ProfileOptions& options) {
  std::string text = Attributes(u);
  const std::string browsed = options.max_browsed > 0 ? Browsed(leaves, names, options.max_browsed) : "";
  const bool purchased = std::any_of(leaves.begin(), leaves.end(),
                                     [](const LeafAgg& a) { return a.count[kWindows - 1] > 0; });
  if (purchased) {
    absl::StrAppend(&text, " Purchases in the last 7 days: ",
                    Window(leaves, 0, names, options.max_leaves_per_window), ". Last 30 days: ",
                    Window(leaves, 1, names, options.max_leaves_per_window), ". Last 365 days: ",
                    Window(leaves, 2, names, options.max_leaves_per_window), ".");
  } else if (!browsed.empty()) {
    absl::StrAppend(&text, " No purchases in the last 365 days.");
  } else {
    absl::StrAppend(&text, " No purchase or browsing history; interests unknown.");
  }
  if (!browsed.empty()) absl::StrAppend(&text, " Recently browsed: ", browsed, ".");
  return text;
}

}  // namespace

std::string SanitizeProfileText(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') c = ' ';
    if (c == ' ' && (out.empty() || out.back() == ' ')) continue;
    out.push_back(c);
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

absl::StatusOr<ProfileReport> WriteTemplateProfiles(FileSystem* fs, const std::string& data_dir,
                                                    const std::string& out_tsv,
                                                    const ProfileOptions& options) {
  ASSIGN_OR_RETURN(DatasetManifest manifest, ReadManifest(fs, data_dir));
  const int64_t split = options.split_time != 0 ? options.split_time : manifest.split_time();
  if (split == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "profile: ", data_dir,
        " has no train/test split time (a converted dataset without timestamps): profiles describe purchases in "
        "the 7/30/365 days before it, from a dataset with a behaviour log and a split time (`choir data gen`)"));
  }
  if (options.browse_days < 0 || options.max_browsed < 0 || options.max_leaves_per_window < 0) {
    return absl::InvalidArgumentError("profile: negative browse_days, max_browsed or max_leaves_per_window");
  }
  ASSIGN_OR_RETURN(Names names, LoadNames(fs, data_dir));
  ErrorCounter errors(options.error_budget);
  ProfileReport report;

  // Catalogue prices per leaf, sorted.
  std::vector<std::vector<float>> prices(names.leaf.size());
  RETURN_IF_ERROR(ReadSplit(fs, data_dir, manifest, "items", &errors, [&](const RowBlock& b) -> absl::Status {
    ASSIGN_OR_RETURN(const int cat, FindColumn(b, "item_category", "items"));
    ASSIGN_OR_RETURN(const int price, FindColumn(b, "item_price", "items"));
    for (size_t r = 0; r < b.num_rows(); ++r) {
      const int64_t leaf = b.Int(cat, r);
      if (leaf < 0 || leaf > (int64_t{1} << 20)) continue;  // not a leaf id; no tier
      if (leaf >= static_cast<int64_t>(prices.size())) prices.resize(leaf + 1);
      prices[leaf].push_back(b.Float(price, r));
    }
    return absl::OkStatus();
  }));
  for (auto& p : prices) std::sort(p.begin(), p.end());

  // Users in split order.
  std::vector<UserRow> users;
  absl::flat_hash_map<int64_t, uint32_t> index;
  RETURN_IF_ERROR(ReadSplit(fs, data_dir, manifest, "users", &errors, [&](const RowBlock& b) -> absl::Status {
    ASSIGN_OR_RETURN(const int id, FindColumn(b, "user_id", "users"));
    ASSIGN_OR_RETURN(const int gender, FindColumn(b, "gender", "users"));
    ASSIGN_OR_RETURN(const int age, FindColumn(b, "age_bucket", "users"));
    ASSIGN_OR_RETURN(const int city, FindColumn(b, "city_tier", "users"));
    auto small = [](int64_t v) { return static_cast<int8_t>(v >= 0 && v < 100 ? v : 0); };
    for (size_t r = 0; r < b.num_rows(); ++r) {
      UserRow u{b.Int(id, r), small(b.Int(gender, r)), small(b.Int(age, r)), small(b.Int(city, r))};
      index.try_emplace(u.id, static_cast<uint32_t>(users.size()));
      users.push_back(u);
    }
    return absl::OkStatus();
  }));

  // One streaming pass over the behaviours.
  std::vector<std::vector<LeafAgg>> history(users.size());
  ASSIGN_OR_RETURN(SplitInfo behaviors, FindSplit(manifest, "behaviors"));
  {
    std::unique_ptr<Progress> progress;
    if (options.progress) progress = std::make_unique<Progress>("behaviour rows profiled", behaviors.rows());
    const int64_t browse_from = split - options.browse_days * kDay;
    RETURN_IF_ERROR(ForEachBlock(fs, SplitPaths(data_dir, behaviors), &errors, [&](const RowBlock& b) -> absl::Status {
      ASSIGN_OR_RETURN(const int uid, FindColumn(b, "user_id", "behaviors"));
      ASSIGN_OR_RETURN(const int cat, FindColumn(b, "item_category", "behaviors"));
      ASSIGN_OR_RETURN(const int price, FindColumn(b, "item_price", "behaviors"));
      ASSIGN_OR_RETURN(const int ts, FindColumn(b, "timestamp", "behaviors"));
      ASSIGN_OR_RETURN(const int type, FindColumn(b, "type", "behaviors"));
      for (size_t r = 0; r < b.num_rows(); ++r) {
        const int64_t t = b.Int(ts, r);
        const int64_t kind = b.Int(type, r);
        if (t >= split) continue;
        const bool purchase = kind == kPurchase && split - t <= kWindowDays[kWindows - 1] * kDay;
        const bool click = kind == kClick && t >= browse_from;
        if (!purchase && !click) continue;
        const auto it = index.find(b.Int(uid, r));
        if (it == index.end()) {
          ++report.unknown_user_rows;
          continue;
        }
        const int64_t leaf = b.Int(cat, r);
        if (leaf < INT32_MIN || leaf > INT32_MAX) continue;
        std::vector<LeafAgg>& leaves = history[it->second];
        auto agg = std::find_if(leaves.begin(), leaves.end(), [leaf](const LeafAgg& a) { return a.leaf == leaf; });
        if (agg == leaves.end()) {
          leaves.emplace_back();
          agg = leaves.end() - 1;
          agg->leaf = static_cast<int32_t>(leaf);
        }
        if (click) {
          ++agg->clicks;
          ++report.clicks_used;
          continue;
        }
        ++report.purchases_used;
        const float pct = leaf >= 0 && leaf < static_cast<int64_t>(prices.size())
                              ? Percentile(prices[leaf], b.Float(price, r))
                              : -1.0f;
        for (int w = 0; w < kWindows; ++w) {
          if (split - t > kWindowDays[w] * kDay) continue;
          ++agg->count[w];
          if (pct >= 0) {
            ++agg->priced[w];
            agg->tier_sum[w] += pct;
          }
        }
      }
      report.behavior_rows += b.num_rows();
      if (progress) progress->Add(b.num_rows());
      return absl::OkStatus();
    }));
  }

  profile_internal::AtomicTextWriter out(fs, out_tsv);
  RETURN_IF_ERROR(out.Open());
  for (size_t i = 0; i < users.size(); ++i) {
    const std::vector<LeafAgg>& leaves = history[i];
    if (std::any_of(leaves.begin(), leaves.end(), [](const LeafAgg& a) { return a.count[kWindows - 1] > 0; })) {
      ++report.users_with_purchases;
    }
    if (std::any_of(leaves.begin(), leaves.end(), [](const LeafAgg& a) { return a.clicks > 0; })) {
      ++report.users_with_browsing;
    }
    RETURN_IF_ERROR(out.Append(absl::StrCat(
        users[i].id, "\t", SanitizeProfileText(ProfileText(users[i], leaves, names, options)), "\n")));
    std::vector<LeafAgg>().swap(history[i]);  // free as we go
  }
  RETURN_IF_ERROR(out.Commit());
  report.users = static_cast<int64_t>(users.size());
  report.bad_rows = errors.errors();
  LOG(INFO) << "profile: wrote " << report.users << " profiles to " << out_tsv << " ("
            << report.users_with_purchases << " with purchases in 365 days, "
            << report.unknown_user_rows << " behaviour rows of unknown users skipped)";
  return report;
}

}  // namespace choir::data
