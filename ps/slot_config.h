// Per-slot configuration of a sparse table: embedding width, initialisation and the sparse
// optimizer applied on push. The update formulas are in ps/README.md ("Sparse optimizers").
#ifndef CHOIR_PS_SLOT_CONFIG_H_
#define CHOIR_PS_SLOT_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace choir {

enum class OptimizerKind {
  kAdagrad,  // per-element accumulator; the paper's optimiser (default)
  kAdam,     // per-element first/second moments and a per-row step count
  kSgd,      // plain gradient step, no state
  kFtrl,     // FTRL-Proximal (McMahan et al., 2013): per-element z and n, L1 and L2
};

// "adagrad", "adam", "sgd", "ftrl".
std::string OptimizerKindName(OptimizerKind kind);
// Parses the names above (case-insensitive); INVALID_ARGUMENT otherwise.
absl::StatusOr<OptimizerKind> ParseOptimizerKind(absl::string_view name);

// Optimizer state floats stored per embedding element: Adagrad 1, Adam 2, SGD 0, FTRL 2.
int StateFloatsPerDim(OptimizerKind kind);

struct SlotConfig {
  // Embedding width of every row in the slot. Must be in [1, 4096]. Default 16.
  int dim = 16;
  // Sparse optimizer applied on Push. Default Adagrad (the paper's).
  OptimizerKind optimizer = OptimizerKind::kAdagrad;
  // Step size of every optimizer (FTRL's alpha). Default 0.01 (the paper's initial rate); the
  // job file's sparse_learning_rate usually overrides it. Must be finite and >= 0 (> 0 for
  // FTRL, which divides by it).
  float learning_rate = 0.01f;
  // New rows are uniform in [-init_scale, init_scale), a deterministic function of
  // (key, table seed, element index). 0 gives all-zero rows. Default 0.05: small enough that
  // initial dot products are near 0, large enough to break symmetry. Must be >= 0.
  float init_scale = 0.05f;
  // Adagrad: every accumulator element starts at this value (TensorFlow's default 0.1), which
  // bounds the first steps to lr * |g| / sqrt(0.1 + g^2). Must be >= 0.
  float adagrad_initial_accumulator = 0.1f;
  // Adagrad: added to sqrt(accumulator) in the denominator. Default 1e-8. Must be >= 0, and
  // adagrad_initial_accumulator + adagrad_epsilon must be > 0.
  float adagrad_epsilon = 1e-8f;
  // Adam: moment decay rates in [0, 1) and denominator epsilon (> 0). Defaults as in the paper
  // by Kingma & Ba: 0.9, 0.999, 1e-8.
  float adam_beta1 = 0.9f;
  float adam_beta2 = 0.999f;
  float adam_epsilon = 1e-8f;
  // FTRL-Proximal (ps/README.md): the accumulator n starts at ftrl_initial_accumulator (>= 0;
  // TensorFlow's default 0.1) and z where the closed form gives back the row's initial values.
  // The per-element rate is learning_rate / (ftrl_beta + sqrt(n)); ftrl_l1 > 0 holds an element
  // at exactly 0 while |z| <= ftrl_l1 (sparse rows); ftrl_l2 is the paper's L2 strength. Each
  // >= 0, and ftrl_beta + sqrt(ftrl_initial_accumulator) + learning_rate * ftrl_l2 must be > 0.
  // With ftrl_l1 = 0 the updates equal, in exact arithmetic, Adagrad's with adagrad_epsilon =
  // ftrl_beta + learning_rate * ftrl_l2 (so the defaults train like Adagrad; L1 is the point).
  float ftrl_initial_accumulator = 0.1f;
  float ftrl_beta = 0.0f;
  float ftrl_l1 = 0.0f;
  float ftrl_l2 = 0.0f;

  // Feature admission and eviction (ps/README.md, "Admission and eviction").
  //
  // A key of this slot gets a row only once it has been pushed in this many Push calls; until
  // then the table keeps a 16-byte counter for it (not a row), pulls of it return zeros and
  // its gradients are dropped, including those of the admitting push (the worker computed
  // them against the zeros it pulled). The row is then created with its deterministic initial
  // values. 0 (default): admit at once, a row is created on the first Pull or Push. Must be
  // in [0, 65535]. Raising it saves the memory of rare keys at the cost of their first pushes.
  int admit_min_count = 0;
  // A row not touched (pulled or pushed) during this many table steps is evicted; a table
  // step is one Push call on the SparseTable (one synchronous step on a parameter server in
  // sync mode; ps/sparse_table.h). Counters of unadmitted keys expire alike. 0 (default):
  // never. Must be >= 0. Evicted rows are gone: a later pull recreates them with their
  // initial values (or, with admit_min_count, counts them again).
  int64_t ttl_steps = 0;
  // At most this many rows of the slot in one table, split evenly over its shards (a shard
  // holds capacity / num_shards rows, the first capacity % num_shards shards one more); a new
  // row in a full shard first evicts that shard's least recently touched row of the slot.
  // 0 (default): unlimited. Must be 0 or >= the table's num_shards.
  int64_t capacity = 0;
};

// OK when every field is in its documented range; INVALID_ARGUMENT naming the field otherwise.
absl::Status ValidateSlotConfig(const SlotConfig& config);

}  // namespace choir

#endif  // CHOIR_PS_SLOT_CONFIG_H_
