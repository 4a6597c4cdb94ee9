#include "data/groups/quality.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "core/error_budget.h"
#include "core/status.h"
#include "data/activity.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "glog/logging.h"

namespace choir::groups {
namespace {

// Dense ids 0..m-1 for the distinct values of v, in order of first appearance.
std::vector<int64_t> Densify(const std::vector<int64_t>& v, int64_t* m) {
  absl::flat_hash_map<int64_t, int64_t> ids;
  std::vector<int64_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = ids.try_emplace(v[i], ids.size()).first->second;
  *m = static_cast<int64_t>(ids.size());
  return out;
}

double Entropy(const std::vector<int64_t>& counts, double n) {
  double h = 0;
  for (int64_t c : counts) {
    if (c > 0) h -= c / n * std::log(c / n);
  }
  return h;
}

uint64_t Mix(uint64_t z) {  // splitmix64's finaliser
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

int64_t Percentile(const std::vector<int64_t>& sorted, double q) {
  if (sorted.empty()) return 0;
  const size_t i = static_cast<size_t>(std::ceil(q * sorted.size())) - (q > 0 ? 1 : 0);
  return sorted[std::min(i, sorted.size() - 1)];
}

// Agreement of `clusters` with `labels` over rows `rows`.
Agreement Compare(const std::string& method, const std::string& codes, const std::string& users,
                  const std::vector<int64_t>& clusters, const std::vector<int64_t>& labels,
                  const std::vector<int64_t>& rows) {
  std::vector<int64_t> c, l;
  for (int64_t r : rows) {
    c.push_back(clusters[r]);
    l.push_back(labels[r]);
  }
  Agreement a;
  a.method = method;
  a.codes = codes;
  a.users = users;
  a.count = static_cast<int64_t>(rows.size());
  Densify(c, &a.clusters);
  a.nmi = NormalizedMutualInfo(c, l);
  a.purity = Purity(c, l);
  return a;
}

}  // namespace

double NormalizedMutualInfo(const std::vector<int64_t>& a, const std::vector<int64_t>& b) {
  CHECK_EQ(a.size(), b.size());
  int64_t ka = 0, kb = 0;
  const std::vector<int64_t> da = Densify(a, &ka);
  const std::vector<int64_t> db = Densify(b, &kb);
  if ((ka == 1 && kb == 1) || (ka == 0 && kb == 0)) return 1.0;  // as scikit-learn
  const double n = static_cast<double>(a.size());
  std::vector<int64_t> ca(ka), cb(kb);
  absl::flat_hash_map<int64_t, int64_t> joint;
  for (size_t i = 0; i < a.size(); ++i) {
    ++ca[da[i]];
    ++cb[db[i]];
    ++joint[da[i] * kb + db[i]];
  }
  double mi = 0;
  for (const auto& [key, count] : joint) {
    const double pij = count / n;
    mi += pij * std::log(count * n / (static_cast<double>(ca[key / kb]) * cb[key % kb]));
  }
  if (mi <= 0) return 0.0;
  const double norm = (Entropy(ca, n) + Entropy(cb, n)) / 2;
  return std::min(1.0, mi / std::max(norm, 1e-300));
}

double Purity(const std::vector<int64_t>& clusters, const std::vector<int64_t>& labels) {
  CHECK_EQ(clusters.size(), labels.size());
  if (clusters.empty()) return 0.0;
  absl::flat_hash_map<int64_t, absl::flat_hash_map<int64_t, int64_t>> counts;
  for (size_t i = 0; i < clusters.size(); ++i) ++counts[clusters[i]][labels[i]];
  int64_t majority = 0;
  for (const auto& [cluster, by_label] : counts) {
    int64_t best = 0;
    for (const auto& [label, c] : by_label) best = std::max(best, c);
    majority += best;
  }
  return static_cast<double>(majority) / clusters.size();
}

std::vector<int64_t> CodePrefixIds(const std::vector<int32_t>& codes, int levels, int prefix) {
  const size_t n = levels > 0 ? codes.size() / levels : 0;
  absl::flat_hash_map<std::string, int64_t> ids;
  std::vector<int64_t> out(n);
  for (size_t i = 0; i < n; ++i) {
    std::string key(reinterpret_cast<const char*>(&codes[i * levels]), sizeof(int32_t) * prefix);
    out[i] = ids.try_emplace(std::move(key), ids.size()).first->second;
  }
  return out;
}

std::vector<LevelQuality> CodebookQuality(const Codebooks& codebooks, const float* x, int64_t n,
                                          const std::vector<int32_t>& codes) {
  const int levels = codebooks.levels();
  const std::vector<double> errors = ReconstructionErrors(codebooks, x, n, codes);
  std::vector<LevelQuality> out;
  for (int l = 0; l < levels; ++l) {
    LevelQuality q;
    q.level = l + 1;
    q.k = codebooks.k[l];
    std::vector<int64_t> sizes(q.k, 0);
    for (int64_t i = 0; i < n; ++i) ++sizes[codes[i * levels + l]];
    sizes.erase(std::remove(sizes.begin(), sizes.end(), 0), sizes.end());
    std::sort(sizes.begin(), sizes.end());
    q.used = static_cast<int>(sizes.size());
    q.utilisation = static_cast<double>(q.used) / q.k;
    if (!sizes.empty()) {
      q.size_min = sizes.front();
      q.size_max = sizes.back();
      q.size_p50 = Percentile(sizes, 0.5);
      q.size_p90 = Percentile(sizes, 0.9);
    }
    q.singletons = std::count(sizes.begin(), sizes.end(), 1);
    int64_t groups = 0;
    Densify(CodePrefixIds(codes, levels, l + 1), &groups);
    q.groups = groups;
    q.reconstruction_error = errors[l];
    out.push_back(q);
  }
  return out;
}

absl::StatusOr<absl::flat_hash_map<int64_t, int64_t>> ReadPersonas(FileSystem* fs,
                                                                   const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  absl::flat_hash_map<int64_t, int64_t> out;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++line_no;
    if (line_no == 1) continue;  // header
    std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    int64_t user = 0, persona = 0;
    if (f.size() < 2 || !absl::SimpleAtoi(f[0], &user) || !absl::SimpleAtoi(f[1], &persona)) {
      return absl::DataLossError(absl::StrCat(path, ":", line_no,
                                              ": expected user_id TAB persona_id TAB ..."));
    }
    out[user] = persona;
  }
  return out;
}

absl::StatusOr<std::vector<float>> BehaviourBagVectors(FileSystem* fs, const std::string& dir,
                                                       const std::vector<int64_t>& ids, int dim) {
  if (dim < 1) return absl::InvalidArgumentError(absl::StrCat("bag dimension ", dim, " < 1"));
  ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadManifest(fs, dir));
  ASSIGN_OR_RETURN(data::SplitInfo split, data::FindSplit(manifest, "behaviors"));
  absl::flat_hash_map<int64_t, int64_t> row_of;
  for (size_t i = 0; i < ids.size(); ++i) row_of[ids[i]] = static_cast<int64_t>(i);
  std::vector<float> v(ids.size() * static_cast<size_t>(dim), 0.0f);
  ErrorCounter errors;
  const int64_t split_time = manifest.split_time();
  RETURN_IF_ERROR(data::ForEachBlock(
      fs, data::SplitPaths(dir, split), &errors, [&](const data::RowBlock& b) -> absl::Status {
        const int user_col = b.RoleIndex(data::USER_ID);
        const int item_col = b.RoleIndex(data::ITEM_ID);
        const int ts_col = b.RoleIndex(data::TIMESTAMP);
        if (user_col < 0 || item_col < 0 || ts_col < 0) {
          return absl::FailedPreconditionError(
              absl::StrCat(dir, "/behaviors: schema lacks a user id, item id or timestamp"));
        }
        for (size_t r = 0; r < b.num_rows(); ++r) {
          if (b.Int(ts_col, r) >= split_time) continue;
          auto it = row_of.find(b.Int(user_col, r));
          if (it == row_of.end()) continue;
          const uint64_t h = Mix(static_cast<uint64_t>(b.Int(item_col, r)));
          v[it->second * dim + static_cast<int64_t>(h % dim)] += 1.0f;
        }
        return absl::OkStatus();
      }));
  for (size_t i = 0; i < ids.size(); ++i) {
    float* row = v.data() + i * dim;
    double s = 0;
    for (int j = 0; j < dim; ++j) s += static_cast<double>(row[j]) * row[j];
    if (s > 0) {
      const float inv = static_cast<float>(1.0 / std::sqrt(s));
      for (int j = 0; j < dim; ++j) row[j] *= inv;
    }
  }
  return v;
}

absl::StatusOr<GroupsReport> BuildGroupsReport(FileSystem* fs, const Codebooks& codebooks,
                                               const float* x, const std::vector<int64_t>& ids,
                                               const std::vector<int32_t>& codes,
                                               const QualityOptions& options) {
  const int64_t n = static_cast<int64_t>(ids.size());
  const int levels = codebooks.levels();
  if (codes.size() != static_cast<size_t>(n) * levels) {
    return absl::InvalidArgumentError(absl::StrCat(n, " users but ", codes.size(),
                                                   " codes for ", levels, " levels"));
  }
  GroupsReport report;
  report.users = n;
  report.dim = codebooks.dim;
  report.levels = CodebookQuality(codebooks, x, n, codes);
  if (options.dataset_dir.empty()) return report;

  const std::string truth_path = JoinPath(options.dataset_dir, "truth/users.tsv");
  ASSIGN_OR_RETURN(auto personas, ReadPersonas(fs, truth_path));
  ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadManifest(fs, options.dataset_dir));
  ErrorCounter errors;
  ASSIGN_OR_RETURN(data::ActivityIndex activity,
                   data::BuildActivityIndex(fs, options.dataset_dir, manifest, options.buckets,
                                            &errors));
  std::vector<int64_t> labels(n, -1), all_rows, low_rows;
  for (int64_t i = 0; i < n; ++i) {
    auto it = personas.find(ids[i]);
    if (it == personas.end()) continue;
    labels[i] = it->second;
    all_rows.push_back(i);
    if (activity.Of(ids[i]) == data::Bucket::kLow) low_rows.push_back(i);
  }
  report.users_with_persona = static_cast<int64_t>(all_rows.size());
  report.low_users = static_cast<int64_t>(low_rows.size());
  if (all_rows.empty()) {
    LOG(WARNING) << truth_path << " names none of the " << n << " users; no agreement report";
    return report;
  }
  for (int p = 1; p <= levels; ++p) {
    const std::string name = p == 1 ? "c1" : absl::StrCat("c1-c", p);
    const std::vector<int64_t> clusters = CodePrefixIds(codes, levels, p);
    report.agreement.push_back(Compare("rq-kmeans", name, "all", clusters, labels, all_rows));
    report.agreement.push_back(Compare("rq-kmeans", name, "low", clusters, labels, low_rows));
  }

  // The baseline: the same level-1 k-means on hashed bags of behaviour item ids.
  ASSIGN_OR_RETURN(std::vector<float> bags, BehaviourBagVectors(fs, options.dataset_dir, ids,
                                                                options.baseline_dim));
  RqKMeansOptions kopt = options.baseline_kmeans;
  kopt.levels = 1;
  kopt.k = codebooks.k[0];
  ASSIGN_OR_RETURN(Codebooks base, TrainRqKMeans(bags.data(), n, options.baseline_dim, kopt));
  ASSIGN_OR_RETURN(std::vector<int32_t> base_codes,
                   AssignRqCodes(base, bags.data(), n, options.baseline_dim));
  const std::vector<int64_t> base_clusters(base_codes.begin(), base_codes.end());
  report.agreement.push_back(Compare("behaviour-ids", "c1", "all", base_clusters, labels, all_rows));
  report.agreement.push_back(Compare("behaviour-ids", "c1", "low", base_clusters, labels, low_rows));
  return report;
}

nlohmann::json GroupsReport::ToJson() const {
  nlohmann::json j;
  j["users"] = users;
  j["dim"] = dim;
  j["levels"] = nlohmann::json::array();
  for (const LevelQuality& q : levels) {
    j["levels"].push_back({{"level", q.level},
                           {"k", q.k},
                           {"used", q.used},
                           {"utilisation", q.utilisation},
                           {"groups", q.groups},
                           {"size_min", q.size_min},
                           {"size_p50", q.size_p50},
                           {"size_p90", q.size_p90},
                           {"size_max", q.size_max},
                           {"singletons", q.singletons},
                           {"reconstruction_error", q.reconstruction_error}});
  }
  if (!agreement.empty()) {
    j["users_with_persona"] = users_with_persona;
    j["low_users"] = low_users;
    j["agreement"] = nlohmann::json::array();
    for (const Agreement& a : agreement) {
      j["agreement"].push_back({{"method", a.method},
                                {"codes", a.codes},
                                {"users", a.users},
                                {"count", a.count},
                                {"clusters", a.clusters},
                                {"nmi", a.nmi},
                                {"purity", a.purity}});
    }
  }
  return j;
}

std::string GroupsReport::ToMarkdown() const {
  std::string md = absl::StrFormat("# Semantic groups\n\n%d users, embeddings of dimension %d.\n\n",
                                   users, dim);
  md += "## Codebooks\n\n| level | k | used | utilisation | groups | size min | p50 | p90 | max | "
        "singletons | reconstruction error |\n|---|---|---|---|---|---|---|---|---|---|---|\n";
  for (const LevelQuality& q : levels) {
    absl::StrAppendFormat(&md, "| %d | %d | %d | %.3f | %d | %d | %d | %d | %d | %d | %.5g |\n",
                          q.level, q.k, q.used, q.utilisation, q.groups, q.size_min, q.size_p50,
                          q.size_p90, q.size_max, q.singletons, q.reconstruction_error);
  }
  if (!agreement.empty()) {
    absl::StrAppendFormat(&md,
                          "\n## Agreement with the hidden personas\n\n%d users have a persona, %d "
                          "of them low-activity. behaviour-ids is the baseline.\n\n"
                          "| method | codes | users | count | clusters | NMI | purity |\n"
                          "|---|---|---|---|---|---|---|\n",
                          users_with_persona, low_users);
    for (const Agreement& a : agreement) {
      absl::StrAppendFormat(&md, "| %s | %s | %s | %d | %d | %.4f | %.4f |\n", a.method, a.codes,
                            a.users, a.count, a.clusters, a.nmi, a.purity);
    }
  }
  return md;
}

absl::Status WriteGroupsReport(FileSystem* fs, const std::string& prefix,
                               const GroupsReport& report) {
  RETURN_IF_ERROR(fs->WriteStringToFileAtomic(prefix + ".json", report.ToJson().dump(2) + "\n"));
  return fs->WriteStringToFileAtomic(prefix + ".md", report.ToMarkdown());
}

}  // namespace choir::groups
