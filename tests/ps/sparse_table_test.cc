#include "ps/sparse_table.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ps/feature_key.h"
#include "ps/internal/sparse_optimizer.h"

namespace choir {
namespace {

std::unique_ptr<SparseTable> MakeTable(TableOptions options) {
  absl::StatusOr<std::unique_ptr<SparseTable>> table = SparseTable::Create(std::move(options));
  EXPECT_TRUE(table.ok()) << table.status();
  return std::move(table).value();
}

TableOptions OneSlot(uint32_t slot, SlotConfig config, int num_shards = 16, uint64_t seed = 7) {
  TableOptions options;
  options.seed = seed;
  options.num_shards = num_shards;
  options.slots[slot] = config;
  return options;
}

std::vector<float> PullAll(SparseTable* table, const std::vector<uint64_t>& keys) {
  size_t n = 0;
  for (uint64_t k : keys) n += table->Dim(k);
  std::vector<float> out(n);
  absl::Status s = table->Pull(keys, absl::MakeSpan(out));
  EXPECT_TRUE(s.ok()) << s;
  return out;
}

TEST(SparseTableTest, PullReturnsInitialisedRowsForUnseenKeys) {
  SlotConfig config;
  config.dim = 8;
  config.init_scale = 0.05f;
  auto table = MakeTable(OneSlot(1, config));
  const std::vector<uint64_t> keys = {FeatureKey(1, 10), FeatureKey(1, 11)};
  const std::vector<float> rows = PullAll(table.get(), keys);
  ASSERT_EQ(rows.size(), 16u);
  EXPECT_EQ(table->size(), 2u);
  const uint64_t seed_mix = ps_internal::InitSeedMix(7);
  for (int r = 0; r < 2; ++r) {
    for (int j = 0; j < 8; ++j) {
      const float v = rows[r * 8 + j];
      EXPECT_EQ(v, ps_internal::InitValue(keys[r], seed_mix, j, 0.05f));
      EXPECT_GE(v, -0.05f);
      EXPECT_LT(v, 0.05f);
    }
  }
  EXPECT_NE(rows[0], rows[1]);
  EXPECT_NE(rows[0], rows[8]);
  // Pulling again changes nothing and creates nothing.
  EXPECT_EQ(PullAll(table.get(), keys), rows);
  EXPECT_EQ(table->size(), 2u);
}

TEST(SparseTableTest, InitDependsOnlyOnKeyAndSeedNotOnOrderOrShards) {
  SlotConfig config;
  config.dim = 4;
  std::vector<uint64_t> keys;
  for (int i = 0; i < 1000; ++i) keys.push_back(FeatureKey(2, i * 7919));

  auto one_shard = MakeTable(OneSlot(2, config, /*num_shards=*/1));
  const std::vector<float> forward = PullAll(one_shard.get(), keys);

  // Sixteen shards, keys pulled in reverse order, one at a time.
  auto sixteen = MakeTable(OneSlot(2, config, /*num_shards=*/16));
  for (auto it = keys.rbegin(); it != keys.rend(); ++it) PullAll(sixteen.get(), {*it});
  EXPECT_EQ(PullAll(sixteen.get(), keys), forward);

  // Another seed gives other rows.
  auto other_seed = MakeTable(OneSlot(2, config, 16, /*seed=*/8));
  const std::vector<float> other = PullAll(other_seed.get(), keys);
  int equal = 0;
  for (size_t i = 0; i < other.size(); ++i) equal += other[i] == forward[i];
  EXPECT_LT(equal, 5);
}

TEST(SparseTableTest, ZeroInitScaleGivesZeroRows) {
  SlotConfig config;
  config.dim = 3;
  config.init_scale = 0;
  auto table = MakeTable(OneSlot(0, config));
  EXPECT_EQ(PullAll(table.get(), {FeatureKey(0, 5)}), std::vector<float>(3, 0.0f));
}

// Three pushes of the gradients below to one key; the reference replays the documented float
// formulas (ps/README.md) operation by operation, so the comparison is exact.
const float kGrads[3][2] = {{0.5f, -1.0f}, {0.25f, 2.0f}, {-0.75f, 0.125f}};

struct Pushed {
  std::vector<float> initial;
  std::vector<float> final;
};

Pushed PushThreeTimes(const SlotConfig& config) {
  auto table = MakeTable(OneSlot(9, config));
  const uint64_t key = FeatureKey(9, 12345);
  Pushed result;
  result.initial = PullAll(table.get(), {key});
  for (const auto& g : kGrads) {
    EXPECT_TRUE(table->Push({key}, absl::MakeConstSpan(g, 2)).ok());
  }
  result.final = PullAll(table.get(), {key});
  return result;
}

TEST(SparseOptimizerTest, SgdMatchesHandComputation) {
  SlotConfig config;
  config.dim = 2;
  config.optimizer = OptimizerKind::kSgd;
  config.learning_rate = 0.1f;
  const Pushed p = PushThreeTimes(config);
  for (int j = 0; j < 2; ++j) {
    float w = p.initial[j];
    for (const auto& g : kGrads) w -= 0.1f * g[j];
    EXPECT_EQ(p.final[j], w) << j;
    // Same in exact arithmetic: w0 - lr * sum(g).
    const double sum = double{kGrads[0][j]} + kGrads[1][j] + kGrads[2][j];
    EXPECT_NEAR(p.final[j], p.initial[j] - 0.1 * sum, 1e-6) << j;
  }
}

TEST(SparseOptimizerTest, AdagradMatchesHandComputation) {
  SlotConfig config;
  config.dim = 2;
  config.learning_rate = 0.05f;
  config.adagrad_initial_accumulator = 0.1f;
  config.adagrad_epsilon = 1e-8f;
  const Pushed p = PushThreeTimes(config);
  for (int j = 0; j < 2; ++j) {
    float w = p.initial[j], a = 0.1f;
    double wd = p.initial[j], ad = 0.1;
    for (const auto& g : kGrads) {
      a += g[j] * g[j];
      w -= 0.05f * g[j] / (std::sqrt(a) + 1e-8f);
      ad += double{g[j]} * g[j];
      wd -= 0.05 * g[j] / (std::sqrt(ad) + 1e-8);
    }
    EXPECT_EQ(p.final[j], w) << j;
    EXPECT_NEAR(p.final[j], wd, 1e-6) << j;
  }
  // By hand for element 0: a = 0.1 + 0.25 = 0.35, 0.4125, 0.975;
  // steps 0.05 * (0.5/sqrt(0.35) - ... ) = 0.05 * (0.845154 + 0.389249 - 0.759555).
  EXPECT_NEAR(p.final[0] - p.initial[0], -0.05 * (0.845154 + 0.389249 - 0.759555), 1e-6);
}

TEST(SparseOptimizerTest, AdamMatchesHandComputationWithBiasCorrection) {
  SlotConfig config;
  config.dim = 2;
  config.optimizer = OptimizerKind::kAdam;
  config.learning_rate = 0.01f;
  const Pushed p = PushThreeTimes(config);
  const float b1 = 0.9f, b2 = 0.999f, eps = 1e-8f;
  for (int j = 0; j < 2; ++j) {
    float w = p.initial[j], m = 0, v = 0;
    double wd = p.initial[j], md = 0, vd = 0;
    for (int t = 1; t <= 3; ++t) {
      const float g = kGrads[t - 1][j];
      const float bc1 = 1.0f - std::pow(b1, static_cast<float>(t));
      const float bc2 = 1.0f - std::pow(b2, static_cast<float>(t));
      m = b1 * m + (1.0f - b1) * g;
      v = b2 * v + (1.0f - b2) * g * g;
      w -= 0.01f * (m / bc1) / (std::sqrt(v / bc2) + eps);
      md = 0.9 * md + 0.1 * g;
      vd = 0.999 * vd + 0.001 * double{g} * g;
      wd -= 0.01 * (md / (1 - std::pow(0.9, t))) / (std::sqrt(vd / (1 - std::pow(0.999, t))) + 1e-8);
    }
    EXPECT_EQ(p.final[j], w) << j;
    EXPECT_NEAR(p.final[j], wd, 1e-6) << j;
  }
  // The first bias-corrected Adam step is lr * sign(g) (up to eps).
  SlotConfig one = config;
  auto table = MakeTable(OneSlot(9, one));
  const uint64_t key = FeatureKey(9, 1);
  const std::vector<float> before = PullAll(table.get(), {key});
  const float g[2] = {3.0f, -0.001f};
  ASSERT_TRUE(table->Push({key}, g).ok());
  const std::vector<float> after = PullAll(table.get(), {key});
  EXPECT_NEAR(after[0] - before[0], -0.01f, 1e-6);
  EXPECT_NEAR(after[1] - before[1], 0.01f, 1e-6);
}

// Each row counts its own pushes: a key first pushed after another key's third push still
// gets Adam's first-step (t = 1) bias correction.
TEST(SparseOptimizerTest, AdamStepCountIsPerRow) {
  SlotConfig config;
  config.dim = 1;
  config.optimizer = OptimizerKind::kAdam;
  config.learning_rate = 0.01f;
  auto table = MakeTable(OneSlot(4, config));
  const uint64_t a = FeatureKey(4, 1), b = FeatureKey(4, 2);
  const float g = 0.3f;
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(table->Push({a}, {&g, 1}).ok());
  const float before = PullAll(table.get(), {b})[0];
  ASSERT_TRUE(table->Push({b}, {&g, 1}).ok());
  EXPECT_NEAR(PullAll(table.get(), {b})[0] - before, -0.01f, 1e-6);
}

// FTRL-Proximal (ps/README.md), the documented float formulas replayed operation by operation.
TEST(SparseOptimizerTest, FtrlMatchesHandComputation) {
  SlotConfig config;
  config.dim = 2;
  config.optimizer = OptimizerKind::kFtrl;
  config.learning_rate = 0.05f;
  config.ftrl_initial_accumulator = 0.1f;
  config.ftrl_beta = 0.5f;
  config.ftrl_l1 = 0.3f;
  config.ftrl_l2 = 0.2f;
  const Pushed p = PushThreeTimes(config);
  // The row starts at the slot's initial values (what any other optimizer's row starts at).
  SlotConfig sgd = config;
  sgd.optimizer = OptimizerKind::kSgd;
  auto plain = MakeTable(OneSlot(9, sgd));
  EXPECT_EQ(p.initial, PullAll(plain.get(), {FeatureKey(9, 12345)}));
  const float lr = 0.05f, l1 = 0.3f;
  auto denominator = [&](float sqrt_n) { return (0.5f + sqrt_n) / lr + 0.2f; };
  for (int j = 0; j < 2; ++j) {
    float w = p.initial[j], n = 0.1f;
    float z = -(w * denominator(std::sqrt(n)) + std::copysign(l1, w));
    for (const auto& grad : kGrads) {
      const float g = grad[j], sqrt_n = std::sqrt(n), n_new = n + g * g, sqrt_new = std::sqrt(n_new);
      z += g - (g * g / (lr * (sqrt_new + sqrt_n))) * w;
      n = n_new;
      w = std::fabs(z) <= l1 ? 0.0f : -(z - std::copysign(l1, z)) / denominator(sqrt_new);
    }
    EXPECT_EQ(p.final[j], w) << j;
  }
}

// FTRL-Proximal's definition (McMahan et al., 2013, with per-element rates): after pushes
// g_1..g_t an element is the minimiser of
//   F_t(w) = z_0 w + sum_s [g_s w + sigma_s / 2 (w - w_{s-1})^2] + q_0 / 2 w^2 + l1 |w|
// with q_0 = (beta + sqrt(n_0)) / lr + l2, sigma_s = (sqrt(n_s) - sqrt(n_{s-1})) / lr,
// n_s = n_0 + sum g^2, and z_0 placing F_0's minimum at the initial value. The reference keeps
// its own iterates w_s in double and minimises F_t by golden-section search (F_t is convex), so
// it shares nothing with the table's incremental z/n recursion but the definition.
TEST(SparseOptimizerTest, FtrlIsTheMinimiserOfItsObjective) {
  SlotConfig config;
  config.dim = 6;
  config.optimizer = OptimizerKind::kFtrl;
  config.learning_rate = 0.1f;
  config.ftrl_initial_accumulator = 0.1f;
  config.ftrl_beta = 0.3f;
  config.ftrl_l1 = 0.4f;
  config.ftrl_l2 = 0.2f;
  config.init_scale = 0.5f;
  auto table = MakeTable(OneSlot(3, config));
  const uint64_t key = FeatureKey(3, 77);
  const std::vector<float> initial = PullAll(table.get(), {key});
  const double lr = config.learning_rate, l1 = config.ftrl_l1;
  const double q0 = (config.ftrl_beta + std::sqrt(double{config.ftrl_initial_accumulator})) / lr + config.ftrl_l2;

  struct History {
    double z0 = 0;                // the linear term placing F_0's minimum at w_0
    double sum_g = 0;
    std::vector<double> sigma;    // sigma_s
    std::vector<double> anchor;   // w_{s-1}
    double n = 0;
    double w = 0;                 // the latest minimiser
  };
  std::vector<History> ref(config.dim);
  for (int j = 0; j < config.dim; ++j) {
    ref[j].w = initial[j];
    ref[j].n = config.ftrl_initial_accumulator;
    ref[j].z0 = initial[j] == 0 ? 0 : -(initial[j] * q0 + std::copysign(l1, initial[j]));
  }
  auto objective = [&](const History& h, double w) {
    double f = (h.z0 + h.sum_g) * w + 0.5 * q0 * w * w + l1 * std::fabs(w);
    for (size_t s = 0; s < h.sigma.size(); ++s) f += 0.5 * h.sigma[s] * (w - h.anchor[s]) * (w - h.anchor[s]);
    return f;
  };
  auto minimise = [&](const History& h) {
    double a = -50, b = 50;
    const double r = (std::sqrt(5.0) - 1) / 2;
    double c = b - r * (b - a), d = a + r * (b - a), fc = objective(h, c), fd = objective(h, d);
    for (int it = 0; it < 160; ++it) {
      if (fc < fd) {
        b = d, d = c, fd = fc, c = b - r * (b - a), fc = objective(h, c);
      } else {
        a = c, c = d, fc = fd, d = a + r * (b - a), fd = objective(h, d);
      }
    }
    return (a + b) / 2;
  };

  std::mt19937 rng(20261129);
  std::normal_distribution<float> normal(0.0f, 0.6f);
  int zeros = 0, nonzeros = 0;
  double worst = 0;
  for (int t = 1; t <= 40; ++t) {
    std::vector<float> g(config.dim);
    for (float& x : g) x = normal(rng);
    ASSERT_TRUE(table->Push({key}, g).ok());
    const std::vector<float> got = PullAll(table.get(), {key});
    for (int j = 0; j < config.dim; ++j) {
      History& h = ref[j];
      const double n_new = h.n + double{g[j]} * g[j];
      h.sigma.push_back((std::sqrt(n_new) - std::sqrt(h.n)) / lr);
      h.anchor.push_back(h.w);
      h.n = n_new;
      h.sum_g += g[j];
      h.w = minimise(h);
      worst = std::max(worst, std::fabs(got[j] - h.w));
      ASSERT_NEAR(got[j], h.w, 2e-5 * (1 + std::fabs(h.w))) << "push " << t << " element " << j;
      if (got[j] == 0.0f) {
        ++zeros;
        EXPECT_LT(std::fabs(h.w), 1e-9) << "push " << t << " element " << j;
      } else {
        ++nonzeros;
      }
    }
  }
  std::printf("FTRL vs the minimiser of its objective: worst difference %.3g; %d exact zeros, %d nonzeros\n",
              worst, zeros, nonzeros);
  EXPECT_GT(zeros, 0) << "l1 never held an element at 0: the test does not reach the L1 path";
  EXPECT_GT(nonzeros, 0);
}

// Without L1, FTRL-Proximal's update is w -= g / q_new (q = (beta + sqrt(n)) / lr + l2), which
// is Adagrad's with epsilon beta + lr * l2: two recursions over different state that agree in
// exact arithmetic, so in float they agree to rounding over many pushes.
TEST(SparseOptimizerTest, FtrlWithoutL1EqualsAdagrad) {
  SlotConfig ftrl;
  ftrl.dim = 8;
  ftrl.optimizer = OptimizerKind::kFtrl;
  ftrl.learning_rate = 0.05f;
  ftrl.ftrl_initial_accumulator = 0.1f;
  ftrl.ftrl_beta = 0.3f;
  ftrl.ftrl_l2 = 0.2f;
  SlotConfig adagrad = ftrl;
  adagrad.optimizer = OptimizerKind::kAdagrad;
  adagrad.adagrad_initial_accumulator = 0.1f;
  adagrad.adagrad_epsilon = 0.3f + 0.05f * 0.2f;
  auto a = MakeTable(OneSlot(2, ftrl));
  auto b = MakeTable(OneSlot(2, adagrad));
  const std::vector<uint64_t> keys = {FeatureKey(2, 1), FeatureKey(2, 2), FeatureKey(2, 3)};
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  double worst = 0;
  for (int t = 0; t < 300; ++t) {
    std::vector<float> g(keys.size() * ftrl.dim);
    for (float& x : g) x = normal(rng) * (t % 3 == 0 ? 0.01f : 1.0f);
    ASSERT_TRUE(a->Push(keys, g).ok());
    ASSERT_TRUE(b->Push(keys, g).ok());
  }
  const std::vector<float> wa = PullAll(a.get(), keys), wb = PullAll(b.get(), keys);
  double scale = 0;
  for (size_t i = 0; i < wa.size(); ++i) {
    worst = std::max(worst, std::fabs(double{wa[i]} - wb[i]));
    scale = std::max(scale, std::fabs(double{wb[i]}));
  }
  std::printf("FTRL (l1 = 0) vs Adagrad after 300 pushes: worst difference %.3g, largest weight %.3g\n", worst,
              scale);
  EXPECT_LT(worst, 1e-5 * scale);
  EXPECT_GT(scale, 0.1);  // the rows moved
}

// L1 keeps an element at exactly 0 while the gradients summed since it was 0 stay within l1,
// and lets it go once they leave.
TEST(SparseOptimizerTest, FtrlL1HoldsElementsAtExactlyZero) {
  SlotConfig config;
  config.dim = 2;
  config.optimizer = OptimizerKind::kFtrl;
  config.learning_rate = 0.1f;
  config.ftrl_l1 = 1.0f;
  config.init_scale = 0;
  auto table = MakeTable(OneSlot(5, config));
  const uint64_t key = FeatureKey(5, 9);
  for (int t = 0; t < 20; ++t) {
    const float g[2] = {t % 2 == 0 ? 0.9f : -0.9f, 0.04f};  // sums stay in [0, 0.9] and [0, 0.8]
    ASSERT_TRUE(table->Push({key}, g).ok());
    const std::vector<float> w = PullAll(table.get(), {key});
    EXPECT_EQ(w[0], 0.0f) << t;
    EXPECT_EQ(w[1], 0.0f) << t;
  }
  for (int t = 0; t < 6; ++t) {
    const float g[2] = {0.0f, 0.04f};  // element 1's sum passes 1.0 by the sixth push
    ASSERT_TRUE(table->Push({key}, g).ok());
  }
  const std::vector<float> w = PullAll(table.get(), {key});
  EXPECT_EQ(w[0], 0.0f);
  EXPECT_LT(w[1], 0.0f);  // against the gradient
}

TEST(SparseTableTest, PushToUnseenKeyCreatesThenUpdates) {
  SlotConfig config;
  config.dim = 2;
  config.optimizer = OptimizerKind::kSgd;
  config.learning_rate = 1.0f;
  auto table = MakeTable(OneSlot(1, config));
  auto reference = MakeTable(OneSlot(1, config));
  const uint64_t key = FeatureKey(1, 77);
  const float g[2] = {0.5f, 0.25f};
  ASSERT_TRUE(table->Push({key}, g).ok());
  const std::vector<float> init = PullAll(reference.get(), {key});
  EXPECT_EQ(PullAll(table.get(), {key}), (std::vector<float>{init[0] - 0.5f, init[1] - 0.25f}));
}

TEST(SparseTableTest, PerSlotDimsAreRespected) {
  TableOptions options;
  options.slots[1].dim = 4;
  options.slots[2].dim = 8;
  options.slots[2].optimizer = OptimizerKind::kAdam;
  auto table = MakeTable(options);
  const uint64_t k1 = FeatureKey(1, 5), k2 = FeatureKey(2, 5);
  EXPECT_EQ(table->Dim(k1), 4);
  EXPECT_EQ(table->Dim(k2), 8);
  EXPECT_EQ(table->Dim(FeatureKey(3, 5)), 0);

  const std::vector<float> mixed = PullAll(table.get(), {k2, k1});
  ASSERT_EQ(mixed.size(), 12u);
  EXPECT_EQ(std::vector<float>(mixed.begin(), mixed.begin() + 8), PullAll(table.get(), {k2}));
  EXPECT_EQ(std::vector<float>(mixed.begin() + 8, mixed.end()), PullAll(table.get(), {k1}));

  std::vector<float> grads(12, 0.1f);
  EXPECT_TRUE(table->Push({k1, k2}, grads).ok());
  EXPECT_NE(PullAll(table.get(), {k2, k1}), mixed);
}

TEST(SparseTableTest, SizeMismatchesAndUnknownSlotsAreRejectedWithoutSideEffects) {
  TableOptions options;
  options.slots[1].dim = 4;
  options.slots[2].dim = 8;
  auto table = MakeTable(options);
  const uint64_t k1 = FeatureKey(1, 5), k2 = FeatureKey(2, 5);
  std::vector<float> buf(11);
  EXPECT_EQ(table->Pull({k1, k2}, absl::MakeSpan(buf)).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table->Push({k1, k2}, buf).code(), absl::StatusCode::kInvalidArgument);
  buf.resize(16);
  absl::Status s = table->Pull({k1, FeatureKey(3, 1), k2}, absl::MakeSpan(buf));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("slot 3"), absl::string_view::npos) << s;
  EXPECT_EQ(table->size(), 0u);

  const std::vector<float> before = PullAll(table.get(), {k1, k2});
  std::vector<float> grads(12, 1.0f);
  grads[10] = std::nanf("");
  s = table->Push({k1, k2}, grads);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  grads[10] = INFINITY;
  EXPECT_EQ(table->Push({k1, k2}, grads).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PullAll(table.get(), {k1, k2}), before);
}

TEST(SparseTableTest, EmptyCallsSucceed) {
  auto table = MakeTable(OneSlot(1, SlotConfig{}));
  EXPECT_TRUE(table->Pull({}, {}).ok());
  EXPECT_TRUE(table->Push({}, {}).ok());
}

// Four threads pull and push overlapping keys. With SGD, zero initial rows, learning rate 1
// and gradients that are small multiples of 1/8, every sum is exact in float, so the updates
// commute and the final state must equal the same pushes applied serially.
TEST(SparseTableConcurrencyTest, ConcurrentSgdPushesEqualSerialPushes) {
  SlotConfig config;
  config.dim = 4;
  config.optimizer = OptimizerKind::kSgd;
  config.learning_rate = 1.0f;
  config.init_scale = 0;
  constexpr int kThreads = 4, kRounds = 200, kKeys = 64, kBatch = 24;
  std::vector<uint64_t> all_keys;
  for (int i = 0; i < kKeys; ++i) all_keys.push_back(FeatureKey(3, i));
  // Thread t, round r pushes keys (t * 8 + r + i) % kKeys for i < kBatch: overlapping.
  auto batch_keys = [&](int t, int r) {
    std::vector<uint64_t> keys;
    for (int i = 0; i < kBatch; ++i) keys.push_back(all_keys[(t * 8 + r + i) % kKeys]);
    return keys;
  };
  auto batch_grads = [&](int t, int r) {
    std::vector<float> g(kBatch * 4);
    for (size_t i = 0; i < g.size(); ++i) g[i] = static_cast<float>((t + r + i) % 5) / 8.0f;
    return g;
  };

  auto concurrent = MakeTable(OneSlot(3, config, 4));
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<float> rows(kBatch * 4);
      for (int r = 0; r < kRounds; ++r) {
        const std::vector<uint64_t> keys = batch_keys(t, r);
        EXPECT_TRUE(concurrent->Pull(keys, absl::MakeSpan(rows)).ok());
        EXPECT_TRUE(concurrent->Push(keys, batch_grads(t, r)).ok());
      }
    });
  }
  for (auto& th : threads) th.join();

  auto serial = MakeTable(OneSlot(3, config, 1));
  for (int t = 0; t < kThreads; ++t) {
    for (int r = 0; r < kRounds; ++r) ASSERT_TRUE(serial->Push(batch_keys(t, r), batch_grads(t, r)).ok());
  }
  EXPECT_EQ(concurrent->size(), static_cast<size_t>(kKeys));
  EXPECT_EQ(PullAll(concurrent.get(), all_keys), PullAll(serial.get(), all_keys));
}

// Threads that race to create the same rows all see the same initial values, and each row is
// created once; Adagrad pushes run alongside (checked for races under ThreadSanitizer).
TEST(SparseTableConcurrencyTest, RacingFirstPullsCreateEachRowOnce) {
  SlotConfig config;
  config.dim = 8;
  auto table = MakeTable(OneSlot(6, config, 8));
  auto reference = MakeTable(OneSlot(6, config, 1));
  std::vector<uint64_t> keys;
  for (int i = 0; i < 2000; ++i) keys.push_back(FeatureKey(6, i));
  const std::vector<float> expected = PullAll(reference.get(), keys);
  std::vector<std::vector<float>> seen(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint64_t> mine = keys;
      std::rotate(mine.begin(), mine.begin() + t * 500, mine.end());
      std::vector<float> rows(mine.size() * 8);
      EXPECT_TRUE(table->Pull(mine, absl::MakeSpan(rows)).ok());
      std::rotate(rows.begin(), rows.end() - t * 500 * 8, rows.end());
      seen[t] = rows;
      // Pushes race on other keys of the slot, which nobody pulls.
      std::vector<uint64_t> pushed;
      for (int i = 0; i < 100; ++i) pushed.push_back(FeatureKey(6, 10000 + (t * 50 + i) % 200));
      std::vector<float> grads(100 * 8, 0.01f * (t + 1));
      EXPECT_TRUE(table->Push(pushed, grads).ok());
      EXPECT_GT(table->MemoryBytes(), 0u);
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 4; ++t) EXPECT_EQ(seen[t], expected) << t;
  EXPECT_EQ(table->size(), keys.size() + 200);
}

// Memory per row stays close to the bytes of values and optimizer state:
// (dim * (1 + state floats per dim)) * 4, plus the row's key and push count (12 bytes), the
// hash map (16-byte slot + 1 control byte at load factor >= 7/16) and block slack.
TEST(SparseTableMemoryTest, BytesPerRowCloseToValuesPlusState) {
  struct Case {
    int dim;
    OptimizerKind optimizer;
  };
  for (const Case& c : {Case{16, OptimizerKind::kAdagrad}, Case{8, OptimizerKind::kSgd},
                        Case{32, OptimizerKind::kAdam}, Case{16, OptimizerKind::kFtrl}}) {
    SlotConfig config;
    config.dim = c.dim;
    config.optimizer = c.optimizer;
    auto table = MakeTable(OneSlot(1, config));
    constexpr int kRows = 200000;
    std::vector<uint64_t> keys;
    for (int i = 0; i < kRows; ++i) keys.push_back(FeatureKey(1, i));
    std::vector<float> out(static_cast<size_t>(kRows) * c.dim);
    ASSERT_TRUE(table->Pull(keys, absl::MakeSpan(out)).ok());
    const double payload = c.dim * (1 + StateFloatsPerDim(c.optimizer)) * 4.0;
    const double per_row = static_cast<double>(table->MemoryBytes()) / kRows;
    std::printf("dim %d %s: payload %.0f B/row, measured %.1f B/row\n", c.dim,
                OptimizerKindName(c.optimizer).c_str(), payload, per_row);
    EXPECT_GE(per_row, payload + 12);
    // Bound: 12 B key + count, <= 39 B hash map, block slack < 10% at this size.
    EXPECT_LE(per_row, 1.1 * (payload + 12) + 40) << "payload " << payload;
  }
}

}  // namespace
}  // namespace choir
