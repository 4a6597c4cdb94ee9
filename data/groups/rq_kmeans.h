// RQ-KMeans: residual k-means that gives every user a short code of semantic-group ids.
//
// Level 1 clusters the vectors x; level s clusters the residuals left by the levels before:
//   c_s = argmin_j ||r_{s-1} - C_s[j]||^2,   r_0 = x,   r_s = r_{s-1} - C_s[c_s].
// A code (c_1, ..., c_L) names a group and its prefixes name coarser groups. Each level is
// k-means++ seeding followed by Lloyd iterations; squared distances come from one BLAS GEMM
// per block of rows (||r||^2 - 2 r.C^T + ||C||^2). Clusters left empty are re-seeded from the
// points farthest from their centroids. Training is deterministic for a seed.
#ifndef CHOIR_DATA_GROUPS_RQ_KMEANS_H_
#define CHOIR_DATA_GROUPS_RQ_KMEANS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "core/fs.h"

namespace choir::groups {

struct RqKMeansOptions {
  // Code length (levels of residual quantisation). Default 3.
  int levels = 3;
  // Centroids per level. Default 256. Scaled down (with a warning) to
  // n / min_points_per_centroid when there are too few points to fill it.
  int k = 256;
  // Lloyd iterations per level (fewer when the assignment stops changing). Default 20.
  int iterations = 20;
  // Seeds the training sample and k-means++. Same seed, same data: same codebooks.
  uint64_t seed = 1;
  // The least points per centroid; k is capped at n / this (at least 1). Default 8.
  int min_points_per_centroid = 8;
  // Training uses a seeded sample of at most k * max_points_per_centroid points (as FAISS
  // does); more points cost time and rarely move centroids. 0 uses all. Default 256.
  int max_points_per_centroid = 256;
};

// The trained centroids, level by level. Level l holds k[l] centroids of `dim` floats,
// row-major in centroids[l] (size k[l] * dim).
struct Codebooks {
  int dim = 0;
  std::vector<int> k;
  std::vector<std::vector<float>> centroids;

  int levels() const { return static_cast<int>(k.size()); }
};

// OK when every value of x ([n, d], row-major) is finite; else INVALID_ARGUMENT naming the
// first bad value's row, column and value, and the row's user when `ids` (one per row) are given.
absl::Status CheckFinite(const float* x, int64_t n, int d, absl::Span<const int64_t> ids = {});

// Trains codebooks on x ([n, d], row-major). INVALID_ARGUMENT for n < 1, d < 1, levels < 1,
// k < 1, iterations < 0, or non-finite values in x (naming the first bad row).
absl::StatusOr<Codebooks> TrainRqKMeans(const float* x, int64_t n, int d,
                                        const RqKMeansOptions& options);

// Codes of x ([n, d]) under `codebooks`: [n, levels] row-major, code l of row i at
// codes[i * levels + l]. Ties go to the lower centroid index. INVALID_ARGUMENT when d is not
// the codebooks' dimension or x holds a non-finite value.
absl::StatusOr<std::vector<int32_t>> AssignRqCodes(const Codebooks& codebooks, const float* x,
                                                   int64_t n, int d);

// Mean squared reconstruction error after each level: entry l is the mean over rows of
// ||x - sum_{s<=l} C_s[c_s]||^2. `codes` as returned by AssignRqCodes.
std::vector<double> ReconstructionErrors(const Codebooks& codebooks, const float* x, int64_t n,
                                         const std::vector<int32_t>& codes);

// Codebooks on disk, in directory `dir` (created when missing):
//   dir/codebooks.json   {"format": "choir-rq-codebooks", "version": 1, "dim": d,
//                         "levels": L, "k": [k_1, ...], "files": ["level-1.npy", ...]}
//   dir/level-<l>.npy    float32 [k_l, d], the centroids of level l
// The manifest is written last, so a directory without it is incomplete.
absl::Status SaveCodebooks(FileSystem* fs, const std::string& dir, const Codebooks& codebooks);
// Loads what SaveCodebooks wrote; errors name the file that is missing, inconsistent or holds a
// non-finite centroid.
absl::StatusOr<Codebooks> LoadCodebooks(FileSystem* fs, const std::string& dir);

}  // namespace choir::groups

#endif  // CHOIR_DATA_GROUPS_RQ_KMEANS_H_
