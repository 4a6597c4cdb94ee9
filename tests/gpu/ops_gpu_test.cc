// The CUDA backend's tensor operations against the host implementations: device tensors
// (copies, fills), ConcatCols, SplitCols, CopyCols, AddToCols, the binary cross-entropy,
// ChoirRec's head (fusion, head loss, fusion backward) and the dense optimizers' updates. Fresh
// random inputs each run; GPU outputs poisoned beforehand.
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "models/cuda/cuda.h"
#include "models/fusion_head.h"
#include "models/layers.h"
#include "models/optimizer.h"
#include "tests/gpu/gpu_test_util.h"

namespace choir::models {
namespace {

using choir::testing::FreshSeed;
using choir::testing::kTolerance;
using choir::testing::PoisonedDeviceTensor;
using choir::testing::RandomTensor;
using choir::testing::RelativeError;

template <typename T>
class GpuOpsTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GpuOpsTest, Types);

TYPED_TEST(GpuOpsTest, TensorRoundTripsAndFills) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const Tensor<T> host = RandomTensor<T>(37, 13, &rng);
  Tensor<T> dev = host.To(Device::kCuda);
  EXPECT_EQ(dev.device(), Device::kCuda);
  Tensor<T> copy = dev;  // device-to-device deep copy
  dev.Fill(T(3));        // must not touch the copy
  EXPECT_EQ(RelativeError(copy, host), 0.0);
  Tensor<T> filled(37, 13, T(3));
  EXPECT_EQ(RelativeError(dev, filled), 0.0);
  // Growing an allocation and resizing with a fill.
  dev.Resize(300, 70, T(-2));
  EXPECT_EQ(RelativeError(dev, Tensor<T>(300, 70, T(-2))), 0.0);
  // Moving keeps the device buffer.
  Tensor<T> moved = std::move(copy);
  EXPECT_EQ(RelativeError(moved, host), 0.0);
}

TYPED_TEST(GpuOpsTest, ColumnBlocksMatchTheHost) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (int rows : {1, 37, 300}) {
    const std::vector<Tensor<T>> parts = {RandomTensor<T>(rows, 5, &rng),
                                          RandomTensor<T>(rows, 1, &rng),
                                          RandomTensor<T>(rows, 64, &rng)};
    std::vector<Tensor<T>> dparts;
    std::vector<const Tensor<T>*> hp, dp;
    for (const Tensor<T>& p : parts) dparts.push_back(p.To(Device::kCuda));
    for (size_t i = 0; i < parts.size(); ++i) {
      hp.push_back(&parts[i]);
      dp.push_back(&dparts[i]);
    }
    Tensor<T> hcat, dcat = PoisonedDeviceTensor<T>(rows, 70);
    ConcatCols(hp, &hcat);
    ConcatCols(dp, &dcat);
    EXPECT_EQ(dcat.device(), Device::kCuda);
    EXPECT_EQ(RelativeError(dcat, hcat), 0.0) << "concat, rows " << rows;

    const std::vector<int> widths = {3, 60, 7};
    Tensor<T> h0, h2, d0 = PoisonedDeviceTensor<T>(rows, 3), d2 = PoisonedDeviceTensor<T>(rows, 7);
    SplitCols<T>(hcat, widths, {&h0, nullptr, &h2});
    SplitCols<T>(dcat, widths, {&d0, nullptr, &d2});
    EXPECT_EQ(RelativeError(d0, h0), 0.0);
    EXPECT_EQ(RelativeError(d2, h2), 0.0);

    Tensor<T> hblock, dblock = PoisonedDeviceTensor<T>(rows, 9);
    CopyCols(hcat, 4, 9, &hblock);
    CopyCols(dcat, 4, 9, &dblock);
    EXPECT_EQ(RelativeError(dblock, hblock), 0.0);

    const Tensor<T> add = RandomTensor<T>(rows, 9, &rng);
    const Tensor<T> dadd = add.To(Device::kCuda);
    AddToCols(add, 61, &hcat);
    AddToCols(dadd, 61, &dcat);
    EXPECT_EQ(RelativeError(dcat, hcat), 0.0) << "add at column 61";
  }
}

TYPED_TEST(GpuOpsTest, BinaryCrossEntropyMatchesTheHost) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  for (int n : {1, 37, 5000}) {
    const Tensor<T> logits = RandomTensor<T>(n, 1, &rng, -30, 30);  // both tails of the sigmoid
    std::vector<T> labels(n), weights(n);
    std::uniform_real_distribution<double> u(0, 1);
    for (int i = 0; i < n; ++i) {
      labels[i] = u(rng) < 0.3 ? T(1) : T(0);
      weights[i] = static_cast<T>(0.2 + 2 * u(rng));
    }
    for (bool weighted : {false, true}) {
      const absl::Span<const T> w = weighted ? absl::Span<const T>(weights) : absl::Span<const T>();
      Tensor<T> hd, dd = PoisonedDeviceTensor<T>(n, 1);
      std::vector<T> hps, dps;
      const T hloss = BinaryCrossEntropy<T>(logits, labels, w, &hd, &hps);
      const T dloss = BinaryCrossEntropy<T>(logits.To(Device::kCuda), labels, w, &dd, &dps);
      EXPECT_NEAR(dloss, hloss, kTolerance<T> * std::abs(hloss)) << n;
      EXPECT_LE(RelativeError(dd, hd), kTolerance<T>) << n;
      Tensor<T> hv(n, 1), dv(n, 1);
      std::copy(hps.begin(), hps.end(), hv.data());
      std::copy(dps.begin(), dps.end(), dv.data());
      EXPECT_LE(RelativeError(dv, hv), kTolerance<T>) << n;
    }
  }
}

// |gpu - cpu| <= tolerance |cpu| for one of the head loss's sums (exactly 0 stays exactly 0).
void ExpectSumClose(double gpu, double cpu, double tolerance, const char* what) {
  EXPECT_LE(std::abs(gpu - cpu), tolerance * std::abs(cpu))
      << what << ": gpu " << gpu << ", cpu " << cpu;
}

// The norm of n elements of sizes size(i): the floor (see RelativeError) for an output whose
// per-sample terms can cancel, size(i) being the sum of its terms' magnitudes. Rounding (fp32
// fused multiply-adds, the device's expf) moves such an element by about 1e-7 of size(i) on
// either backend, so its purely relative error fails at random when it nearly cancels; a formula
// or indexing bug still moves it by about size(i).
template <typename F>
double TermNorm(int n, F size) {
  double sum = 0;
  for (int i = 0; i < n; ++i) sum += size(i) * size(i);
  return std::sqrt(sum);
}

// The head's three steps on random heads, with and without gates, weights, the auxiliary losses
// and KD (whose gate opens for many but not all samples here; in both directions, with both
// margin forms), against the host; an empty batch too.
TYPED_TEST(GpuOpsTest, FusionHeadMatchesTheHost) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  FusionLossOptions plain, full;
  full.aux_weight = 0.7;
  full.kd_lambda = 0.9;
  full.kd_margin = 0.05;
  full.kd_confidence = 0.1;
  full.kd_min_purchases = 2;
  FusionLossOptions hinge = full;  // the plain hinge
  hinge.kd_margin_form = MarginForm::kHinge;
  FusionLossOptions reverse = hinge;  // the group channel teaches, through the plain hinge
  reverse.kd_direction = KdDirection::kGroupToIndividual;
  const double tol = kTolerance<T>;
  constexpr double kMaxWeight = 2.2;
  for (int n : {0, 1, 37, 5000}) {
    for (bool gated : {false, true}) {
      for (bool weighted : {false, true}) {
        for (const FusionLossOptions* options : {&plain, &full, &hinge, &reverse}) {
          SCOPED_TRACE(::testing::Message()
                       << "n " << n << (gated ? " gated" : "") << (weighted ? " weighted" : "")
                       << (options == &full      ? " full"
                           : options == &hinge   ? " hinge"
                           : options == &reverse ? " reverse hinge"
                                                 : ""));
          Tensor<T> z_ind = RandomTensor<T>(n, 1, &rng, -4, 4);
          Tensor<T> z_grp = RandomTensor<T>(n, 1, &rng, -4, 4);
          // The KD gate is a step in the teacher's sigmoid, and the hinge's slope one in
          // |p_grp - p_ind| - margin: keep the samples 1e-4 away from every step, where one ulp
          // of the device's expf cannot move them across on one backend and not the other.
          auto near_a_step = [&](int i) {
            const double p_ind = Sigmoid<double>(z_ind.at(i, 0)), p_grp = Sigmoid<double>(z_grp.at(i, 0));
            return std::abs(std::abs(p_ind - 0.5) - full.kd_confidence) < 1e-4 ||
                   std::abs(std::abs(p_grp - 0.5) - full.kd_confidence) < 1e-4 ||
                   std::abs(std::abs(p_grp - p_ind) - full.kd_margin) < 1e-4;
          };
          for (int i = 0; i < n; ++i) {
            while (near_a_step(i)) {
              z_ind.at(i, 0) = static_cast<T>(std::uniform_real_distribution<double>(-4, 4)(rng));
              z_grp.at(i, 0) = static_cast<T>(std::uniform_real_distribution<double>(-4, 4)(rng));
            }
          }
          const Tensor<T> gates = gated ? RandomTensor<T>(n, 2, &rng, 0.01, 0.99) : Tensor<T>();
          const Tensor<T> d_ind = z_ind.To(Device::kCuda), d_grp = z_grp.To(Device::kCuda);
          const Tensor<T> d_gates = gated ? gates.To(Device::kCuda) : Tensor<T>();
          const FusionHeads<T> host{&z_ind, &z_grp, &gates}, dev{&d_ind, &d_grp, &d_gates};
          std::vector<T> labels(n), weights(n), purchases(n);
          std::uniform_real_distribution<double> u(0, 1);
          for (int i = 0; i < n; ++i) {
            labels[i] = u(rng) < 0.3 ? T(1) : T(0);
            weights[i] = static_cast<T>(0.2 + (kMaxWeight - 0.2) * u(rng));
            purchases[i] = static_cast<T>(static_cast<int>(6 * u(rng)));
          }
          const absl::Span<const T> w =
              weighted ? absl::Span<const T>(weights) : absl::Span<const T>();

          Tensor<T> hz, dz = PoisonedDeviceTensor<T>(n, 1);
          FuseLogits(host, &hz);
          FuseLogits(dev, &dz);
          const double z_floor = TermNorm(
              n, [&](int i) { return std::abs(z_ind.at(i, 0)) + std::abs(z_grp.at(i, 0)); });
          EXPECT_LE(RelativeError(dz, hz, z_floor), tol) << "fused logit";

          HeadGrads<T> hg, dg;
          for (Tensor<T>* t : {&dg.dz, &dg.dz_ind, &dg.dz_grp, &dg.da_kd})
            *t = PoisonedDeviceTensor<T>(n, 1);
          std::vector<T> hps, dps;
          const FusionLoss hl =
              FusionHeadLoss<T>(host, hz, labels, w, purchases, *options, &hg, &hps);
          const FusionLoss dl =
              FusionHeadLoss<T>(dev, dz, labels, w, purchases, *options, &dg, &dps);
          ExpectSumClose(dl.bce, hl.bce, tol, "bce");
          ExpectSumClose(dl.aux_ind, hl.aux_ind, tol, "aux_ind");
          ExpectSumClose(dl.aux_grp, hl.aux_grp, tol, "aux_grp");
          // The KD term of a sample, w a_kd (|p_grp - p_ind| - margin)^2 (or its plain hinge),
          // cancels at the margin; its terms are at most w a_kd (1 + margin)^2 (probabilities
          // lie in [0, 1]).
          const double w_max = weighted ? kMaxWeight : 1.0;
          const double kd_scale = w_max * hl.mean_a_kd * (1 + full.kd_margin) * (1 + full.kd_margin);
          EXPECT_LE(std::abs(dl.kd - hl.kd), tol * std::max(std::abs(hl.kd), kd_scale))
              << "kd: gpu " << dl.kd << ", cpu " << hl.kd;
          ExpectSumClose(dl.mean_a_fuse, hl.mean_a_fuse, tol, "mean_a_fuse");
          ExpectSumClose(dl.mean_a_kd, hl.mean_a_kd, tol, "mean_a_kd");
          ExpectSumClose(dl.total, hl.total, tol, "total");
          EXPECT_EQ(dl.kd_active, hl.kd_active);
          if (options != &plain && n == 5000) {
            EXPECT_GT(hl.kd_active, n / 8) << "the KD gate should open for many samples";
            EXPECT_LT(hl.kd_active, n) << "the KD gate should stay shut for some samples";
          }
          EXPECT_LE(RelativeError(dg.dz, hg.dz), tol) << "dz";
          // The student's logit adds the auxiliary BCE's gradient (at most aux w / n) and the KD
          // term's (at most lambda w a_kd 2 (1 + margin) / 4 / n), which can cancel; the
          // teacher's gets the auxiliary term alone.
          const double inv_n = n == 0 ? 0 : 1.0 / n;
          const double kd_grad = options->kd_lambda * w_max * (1 + full.kd_margin) / 2 * inv_n;
          const bool ind_teaches = options->kd_direction == KdDirection::kIndividualToGroup;
          const double student_term = options->aux_weight * kMaxWeight * inv_n + kd_grad;
          const double ind_term = ind_teaches ? 0 : student_term;
          const double grp_term = ind_teaches ? student_term : 0;
          EXPECT_LE(RelativeError(dg.dz_ind, hg.dz_ind, TermNorm(n, [&](int) { return ind_term; })),
                    tol)
              << "dz_ind";
          EXPECT_LE(RelativeError(dg.dz_grp, hg.dz_grp, TermNorm(n, [&](int) { return grp_term; })),
                    tol)
              << "dz_grp";
          const double kd_term =
              options->kd_lambda * w_max * (1 + full.kd_margin) * (1 + full.kd_margin) * inv_n;
          EXPECT_LE(RelativeError(dg.da_kd, hg.da_kd, TermNorm(n, [&](int) { return kd_term; })),
                    tol)
              << "da_kd";
          EXPECT_TRUE(dg.da_fuse.empty());
          Tensor<T> hv(n, 1), dv(n, 1);
          std::copy(hps.begin(), hps.end(), hv.data());
          std::copy(dps.begin(), dps.end(), dv.data());
          EXPECT_LE(RelativeError(dv, hv), tol) << "per-sample bce";
          // Without a per-sample vector the sums are the same.
          HeadGrads<T> again;
          const FusionLoss nl =
              FusionHeadLoss<T>(dev, dz, labels, w, purchases, *options, &again, nullptr);
          ExpectSumClose(nl.total, hl.total, tol, "total without per-sample losses");

          // Backward with every head term present (a direct da_fuse too), from device and from
          // host head gradients; then from dz alone (empty terms count as zeros).
          hg.da_fuse = RandomTensor<T>(n, 1, &rng);
          dg.da_fuse = hg.da_fuse.To(Device::kCuda);
          HeadGrads<T> only_dz;
          only_dz.dz = hg.dz;
          for (const HeadGrads<T>* from : {&dg, &hg, &only_dz}) {
            const char* which = from == &dg   ? "device head grads"
                                : from == &hg ? "host head grads"
                                              : "dz alone";
            const HeadGrads<T>& h = from == &only_dz ? only_dz : hg;  // the host copy of `from`
            auto at = [](const Tensor<T>& t, int i) {
              return t.empty() ? 0.0 : std::abs(static_cast<double>(t.at(i, 0)));
            };
            Tensor<T> h_ind, h_grp, h_gates;
            FusionBackward(host, h, &h_ind, &h_grp, &h_gates);
            HeadGrads<T> on_device;
            if (from == &only_dz) on_device.dz = hg.dz.To(Device::kCuda);
            Tensor<T> o_ind = PoisonedDeviceTensor<T>(n, 1), o_grp = PoisonedDeviceTensor<T>(n, 1);
            Tensor<T> o_gates = PoisonedDeviceTensor<T>(n, 2);
            FusionBackward(dev, from == &only_dz ? on_device : *from, &o_ind, &o_grp, &o_gates);
            const double ind_floor =
                TermNorm(n, [&](int i) { return at(h.dz, i) + at(h.dz_ind, i); });
            const double grp_floor =
                TermNorm(n, [&](int i) { return at(h.dz, i) + at(h.dz_grp, i); });
            EXPECT_LE(RelativeError(o_ind, h_ind, ind_floor), tol) << "dz_ind total, " << which;
            EXPECT_LE(RelativeError(o_grp, h_grp, grp_floor), tol) << "dz_grp total, " << which;
            if (gated) {
              const double gates_floor = TermNorm(n, [&](int i) {
                const double fuse = at(h.dz, i) * (at(z_ind, i) + at(z_grp, i)) + at(h.da_fuse, i);
                return std::sqrt(fuse * fuse + at(h.da_kd, i) * at(h.da_kd, i));
              });
              EXPECT_LE(RelativeError(o_gates, h_gates, gates_floor), tol) << "dgates, " << which;
            } else {
              // Left as it was: still [n, 2] of the poison.
              const Tensor<T> untouched = o_gates.To(Device::kCpu);
              ASSERT_TRUE(untouched.rows() == n && untouched.cols() == 2) << which;
              for (int64_t i = 0; i < untouched.size(); ++i) {
                ASSERT_TRUE(std::isnan(untouched.data()[i]))
                    << "dgates written without gates, " << which;
              }
            }
          }
        }
      }
    }
  }
}

TYPED_TEST(GpuOpsTest, OptimizersMatchTheHost) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  Param<T> host_a{"a", RandomTensor<T>(37, 13, &rng), {}},
      host_b{"b", RandomTensor<T>(1, 300, &rng), {}};
  Param<T> dev_a{"a", host_a.value.To(Device::kCuda), {}},
      dev_b{"b", host_b.value.To(Device::kCuda), {}};
  LrSchedule schedule;
  schedule.lr0 = 0.05;
  schedule.lr_end = 0.01;
  schedule.decay_steps = 4;
  AdagradOptions options;
  options.schedule = schedule;
  Adagrad<T> host_adagrad(options), dev_adagrad(options);
  Sgd<T> host_sgd(schedule), dev_sgd(schedule);
  for (int step = 0; step < 4; ++step) {
    for (auto* pair : {&host_a, &host_b})
      pair->grad = RandomTensor<T>(pair->value.rows(), pair->value.cols(), &rng);
    dev_a.grad = host_a.grad.To(Device::kCuda);
    dev_b.grad = host_b.grad.To(Device::kCuda);
    host_adagrad.Step({&host_a, &host_b});
    dev_adagrad.Step({&dev_a, &dev_b});
    host_sgd.Step({&host_a});
    dev_sgd.Step({&dev_a});
  }
  EXPECT_LE(RelativeError(dev_a.value, host_a.value), kTolerance<T>);
  EXPECT_LE(RelativeError(dev_b.value, host_b.value), kTolerance<T>);
  EXPECT_LE(RelativeError(dev_adagrad.accumulators()[1], host_adagrad.accumulators()[1]),
            kTolerance<T>);
  // Flattening device parameters (for allreduce and checkpoints) reads them back.
  std::vector<T> flat(ParamCount<T>({&dev_a, &dev_b}));
  CopyValuesTo<T>({&dev_a, &dev_b}, flat.data());
  std::vector<T> expect(flat.size());
  CopyValuesTo<T>({&host_a, &host_b}, expect.data());
  for (size_t i = 0; i < flat.size(); ++i) {
    ASSERT_NEAR(flat[i], expect[i], 1e-4 * (1 + std::abs(expect[i]))) << i;
  }
}

}  // namespace
}  // namespace choir::models
