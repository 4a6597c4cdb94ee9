// The quality report of semantic groups (docs/groups.md tells how to read it):
//   - per level: codebook utilisation, cluster-size distribution, reconstruction error;
//   - on synthetic data (a dataset folder with truth/users.tsv): agreement (NMI, purity) of
//     code prefixes with the hidden personas, for all users and for low-activity users,
//     against a baseline that clusters users by the item ids of their behaviour log alone
//     (hashed bag of items, the same k-means as level 1, the same k).
#ifndef CHOIR_DATA_GROUPS_QUALITY_H_
#define CHOIR_DATA_GROUPS_QUALITY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "core/fs.h"
#include "core/proto/job.pb.h"
#include "data/groups/rq_kmeans.h"
#include "nlohmann/json.hpp"

namespace choir::groups {

// Normalised mutual information of two labelings of the same items, with the arithmetic
// mean of the entropies as normaliser (scikit-learn's default): I(a; b) / ((H(a) + H(b)) / 2).
// 1 when both labelings are a single cluster (identical), 0 when only one is. Sizes must match.
double NormalizedMutualInfo(const std::vector<int64_t>& a, const std::vector<int64_t>& b);
// Purity of `clusters` against `labels`: the share of items whose label is the majority label
// of their cluster. 0 for no items. Sizes must match.
double Purity(const std::vector<int64_t>& clusters, const std::vector<int64_t>& labels);

// One id per row for the first `prefix` levels of `codes` ([n, levels]): rows share an id
// iff they share the code prefix.
std::vector<int64_t> CodePrefixIds(const std::vector<int32_t>& codes, int levels, int prefix);

struct LevelQuality {
  int level = 0;            // 1-based
  int k = 0;                // centroids at this level
  int used = 0;             // centroids with at least one user
  double utilisation = 0;   // used / k
  // Users per used centroid: min, median, 90th percentile, max; singletons = clusters of 1.
  int64_t size_min = 0, size_p50 = 0, size_p90 = 0, size_max = 0, singletons = 0;
  // Distinct code prefixes of length `level` (groups at this depth).
  int64_t groups = 0;
  // Mean ||x - sum of the chosen centroids up to this level||^2.
  double reconstruction_error = 0;
};
std::vector<LevelQuality> CodebookQuality(const Codebooks& codebooks, const float* x, int64_t n,
                                          const std::vector<int32_t>& codes);

// Agreement of one clustering with the personas over one set of users.
struct Agreement {
  std::string method;  // "rq-kmeans" or "behaviour-ids"
  std::string codes;   // "c1", "c1-c2", "c1-c3"
  std::string users;   // "all" or "low"
  int64_t count = 0;   // users compared
  int64_t clusters = 0;
  double nmi = 0, purity = 0;
};

// persona_id per user from a truth/users.tsv ("user_id TAB persona_id TAB ..." with a header).
absl::StatusOr<absl::flat_hash_map<int64_t, int64_t>> ReadPersonas(FileSystem* fs,
                                                                   const std::string& path);

// [ids.size(), dim] hashed bag-of-items vectors from the behaviour log of dataset `dir` before
// its split time: each (user, item) event adds 1 to column hash(item) % dim, rows are
// L2-normalised; users without behaviour get zero rows.
absl::StatusOr<std::vector<float>> BehaviourBagVectors(FileSystem* fs, const std::string& dir,
                                                       const std::vector<int64_t>& ids, int dim);

struct QualityOptions {
  // Dataset folder with truth/users.tsv and a behaviour log; empty skips the agreement part.
  std::string dataset_dir;
  // Activity buckets deciding who is `low` (defaults as in the job file).
  ActivityBuckets buckets;
  // Columns of the baseline's hashed bag of items. Default 256.
  int baseline_dim = 256;
  // Options of the baseline's k-means (levels is set to 1; k to level 1's k).
  RqKMeansOptions baseline_kmeans;
};

struct GroupsReport {
  int64_t users = 0;
  int dim = 0;
  std::vector<LevelQuality> levels;
  // Empty without a dataset; else rq-kmeans then behaviour-ids rows.
  std::vector<Agreement> agreement;
  int64_t users_with_persona = 0, low_users = 0;

  nlohmann::json ToJson() const;
  std::string ToMarkdown() const;
};

// The report for users `ids` with embeddings x ([ids.size(), codebooks.dim]) and their codes
// ([ids.size(), levels]).
absl::StatusOr<GroupsReport> BuildGroupsReport(FileSystem* fs, const Codebooks& codebooks,
                                               const float* x, const std::vector<int64_t>& ids,
                                               const std::vector<int32_t>& codes,
                                               const QualityOptions& options);

// Writes report.json and report.md (atomically) as `<prefix>.json` and `<prefix>.md`.
absl::Status WriteGroupsReport(FileSystem* fs, const std::string& prefix,
                               const GroupsReport& report);

}  // namespace choir::groups

#endif  // CHOIR_DATA_GROUPS_QUALITY_H_
