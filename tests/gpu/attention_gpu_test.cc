// CUDA embedding-bag pooling and DIN target attention against the CPU implementations
// (CpuLayerFactory): sum and mean pooling, packed and padded, with empty, single-row and full
// bags; attention with raw scores and softmax, sigmoid and Dice (training mode) attention MLPs
// and lengths from 0 to L, comparing outputs, weights, input gradients, parameter gradients
// accumulated over several Backward calls, and Dice's running statistics. Fresh random inputs
// each run (the seed is printed on failure); GPU outputs are poisoned with NaN beforehand.
// Attention is judged against the CPU attention in double and the rounding of the CPU attention
// in T on the same problem (see MatchesTheCpu); pooling against the CPU pool in the same type.
// Tolerances: gpu_test_util.h.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "models/cuda/cuda.h"
#include "models/layers.h"
#include "models/tensor.h"
#include "tests/gpu/gpu_test_util.h"

namespace choir::models {
namespace {

using choir::testing::FreshSeed;
using choir::testing::HostCast;
using choir::testing::kTolerance;
using choir::testing::PoisonedDeviceTensor;
using choir::testing::RandomTensor;
using choir::testing::RelativeError;

template <typename T>
class GpuPoolTest : public ::testing::Test {};
template <typename T>
class GpuAttentionTest : public ::testing::Test {};
using Types = ::testing::Types<float, double>;
TYPED_TEST_SUITE(GpuPoolTest, Types);
TYPED_TEST_SUITE(GpuAttentionTest, Types);

// b_size lengths uniform in [0, max_len], except that the first three samples (where the batch
// has them) have lengths max_len, 0 and 1.
std::vector<int> RandomLengths(int b_size, int max_len, std::mt19937_64* rng) {
  std::uniform_int_distribution<int> u(0, max_len);
  std::vector<int> lengths(b_size);
  for (int& l : lengths) l = u(*rng);
  const int fixed[] = {max_len, 0, 1};
  for (int b = 0; b < std::min(b_size, 3); ++b) lengths[b] = fixed[b];
  return lengths;
}

// Rows [first, first + count) of `t` (any device) are exactly 0.
template <typename T>
void ExpectZeroRows(const Tensor<T>& t, int first, int count, const std::string& what) {
  const Tensor<T> h = t.To(Device::kCpu);
  for (int r = first; r < first + count; ++r) {
    for (int c = 0; c < h.cols(); ++c) {
      ASSERT_EQ(h.at(r, c), T(0)) << what << ": row " << r << ", column " << c;
    }
  }
}

// ||dL/dscore|| over the valid positions, computed here from the attention weights: dL/dweight is
// <dout_b, key_bj>, and through a softmax dL/dscore = w * (dL/dweight - sum_j w_j dL/dweight_j).
// The score layer's bias gradient is the sum of these (exactly 0 under a softmax, whose output
// ignores a constant added to every score), so this is the scale its error is judged against.
template <typename T>
double ScoreGradNorm(const Tensor<T>& weights, const Tensor<T>& keys, const Tensor<T>& dout,
                     const std::vector<int>& lengths, bool softmax) {
  const int max_len = weights.cols();
  double sum = 0;
  for (int b = 0; b < dout.rows(); ++b) {
    std::vector<double> dw(lengths[b]);
    double inner = 0;
    for (int j = 0; j < lengths[b]; ++j) {
      for (int c = 0; c < dout.cols(); ++c) dw[j] += double{dout.at(b, c)} * keys.at(b * max_len + j, c);
      inner += weights.at(b, j) * dw[j];
    }
    for (int j = 0; j < lengths[b]; ++j) {
      const double ds = softmax ? weights.at(b, j) * (dw[j] - inner) : dw[j];
      sum += ds * ds;
    }
  }
  return std::sqrt(sum);
}

// One Forward and Backward of both pools on random rows and dout: the GPU's outputs equal the
// CPU's; empty bags pool to zero rows and padded rows get zero gradients.
template <typename T>
void ExpectPoolStepMatchesCpu(EmbeddingBagPool<T>* cpu, EmbeddingBagPool<T>* gpu, const std::vector<int>& lengths,
                              int max_len, bool padded, int d, std::mt19937_64* rng) {
  const int b_size = static_cast<int>(lengths.size());
  int total = 0;
  for (int l : lengths) total += l;
  const int n_rows = padded ? b_size * max_len : total;
  const int len_arg = padded ? max_len : 0;
  const Tensor<T> rows = RandomTensor<T>(n_rows, d, rng);

  Tensor<T> cpu_out;
  Tensor<T> gpu_out = PoisonedDeviceTensor<T>(b_size, d);
  cpu->Forward(rows, lengths, len_arg, &cpu_out);
  gpu->Forward(rows.To(Device::kCuda), lengths, len_arg, &gpu_out);
  EXPECT_EQ(gpu_out.device(), Device::kCuda);
  EXPECT_LE(RelativeError(gpu_out, cpu_out), kTolerance<T>) << "out";
  for (int b = 0; b < b_size; ++b) {
    if (lengths[b] == 0) ExpectZeroRows(gpu_out, b, 1, "empty bag");
  }

  const Tensor<T> dout = RandomTensor<T>(b_size, d, rng);
  Tensor<T> cpu_drows;
  Tensor<T> gpu_drows = PoisonedDeviceTensor<T>(n_rows, d);
  cpu->Backward(dout, &cpu_drows);
  gpu->Backward(dout.To(Device::kCuda), &gpu_drows);
  EXPECT_EQ(gpu_drows.device(), Device::kCuda);
  EXPECT_LE(RelativeError(gpu_drows, cpu_drows), kTolerance<T>) << "drows";
  if (padded) {
    for (int b = 0; b < b_size; ++b) {
      ExpectZeroRows(gpu_drows, b * max_len + lengths[b], max_len - lengths[b], "padded drows");
    }
  }
}

TYPED_TEST(GpuPoolTest, SumAndMeanMatchTheCpuPackedAndPadded) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const int d = 13;
  const int max_len = 6;
  CpuLayerFactory<T> cpu_factory;
  cuda::CudaLayerFactory<T> gpu_factory;
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean}) {
    for (bool padded : {false, true}) {
      // One pool per variant, reused across batch sizes, so its buffers grow and shrink.
      std::unique_ptr<EmbeddingBagPool<T>> cpu = cpu_factory.MakePool(mode);
      std::unique_ptr<EmbeddingBagPool<T>> gpu = gpu_factory.MakePool(mode);
      for (int b_size : {1, 37, 300, 37}) {
        const std::string what = std::string(mode == PoolMode::kSum ? "sum" : "mean") +
                                 (padded ? ", padded" : ", packed") + ", B " +
                                 std::to_string(b_size);
        SCOPED_TRACE(what);
        ExpectPoolStepMatchesCpu<T>(cpu.get(), gpu.get(), RandomLengths(b_size, max_len, &rng), max_len, padded, d,
                                    &rng);
      }
    }
  }
}

// Leading, consecutive and trailing empty bags: in packed mode they share their start with the
// next bag, which is where finding a row's bag on the GPU could go wrong.
TYPED_TEST(GpuPoolTest, EmptyBagsAtTheEndsAndInARowMatchTheCpu) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const int d = 5;
  const int max_len = 3;
  const std::vector<int> lengths = {0, 0, 3, 0, 2, 0, 0};
  CpuLayerFactory<T> cpu_factory;
  cuda::CudaLayerFactory<T> gpu_factory;
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean}) {
    for (bool padded : {false, true}) {
      SCOPED_TRACE(std::string(mode == PoolMode::kSum ? "sum" : "mean") + (padded ? ", padded" : ", packed"));
      std::unique_ptr<EmbeddingBagPool<T>> cpu = cpu_factory.MakePool(mode);
      std::unique_ptr<EmbeddingBagPool<T>> gpu = gpu_factory.MakePool(mode);
      ExpectPoolStepMatchesCpu<T>(cpu.get(), gpu.get(), lengths, max_len, padded, d, &rng);
    }
  }
}

TYPED_TEST(GpuPoolTest, AllEmptyBagsPoolToZeros) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  cuda::CudaLayerFactory<T> factory;
  for (PoolMode mode : {PoolMode::kSum, PoolMode::kMean}) {
    std::unique_ptr<EmbeddingBagPool<T>> pool = factory.MakePool(mode);
    Tensor<T> rows(Device::kCuda);
    rows.ResizeUninitialized(0, 5);
    Tensor<T> out = PoisonedDeviceTensor<T>(3, 5);
    pool->Forward(rows, {0, 0, 0}, 0, &out);
    ASSERT_EQ(out.rows(), 3);
    ASSERT_EQ(out.cols(), 5);
    ExpectZeroRows(out, 0, 3, "out");
    Tensor<T> drows = PoisonedDeviceTensor<T>(2, 2);
    pool->Backward(Tensor<T>(3, 5, T(1.5)).To(Device::kCuda), &drows);
    EXPECT_EQ(drows.rows(), 0);
    EXPECT_EQ(drows.cols(), 5);
  }
}

// What the test feeds one attention: its parameter values, the inputs and the upstream gradient,
// as doubles (each implementation converts them to its own type: values drawn in T, so exactly).
struct AttentionCase {
  int d = 0;
  AttentionOptions options;
  uint64_t init_seed = 0;
  std::vector<int> lengths;
  std::vector<Tensor<double>> params;
  Tensor<double> query, keys, dout;
};

// Everything one attention computes in the test's sequence, copied to the host as doubles: a
// training Forward; three Backward calls (both input gradients, dkeys only, none) whose parameter
// gradients accumulate; with Dice, an evaluation Forward (on the running statistics).
struct AttentionRun {
  std::vector<std::string> names;
  std::vector<Tensor<double>> initial;  // the parameters as the factory made them
  Tensor<double> out, weights, dquery, dkeys, dkeys2, eval_out;
  std::vector<Tensor<double>> buffers, grads;
};

template <typename U>
AttentionRun RunAttention(LayerFactory<U>* factory, const AttentionCase& c) {
  const Device device = factory->device();
  const int b_size = static_cast<int>(c.lengths.size());
  const int max_len = c.keys.rows() / std::max(b_size, 1);
  // On the GPU every output starts as NaN: an element the kernels leave unwritten fails.
  auto output = [&](int rows, int cols) {
    return device == Device::kCuda ? PoisonedDeviceTensor<U>(rows, cols) : Tensor<U>();
  };
  std::unique_ptr<TargetAttention<U>> a = factory->MakeAttention(c.d, c.options, c.init_seed);
  a->SetTraining(true);
  AttentionRun run;
  const std::vector<Param<U>*> params = a->Params();
  EXPECT_EQ(params.size(), c.params.size()) << "parameters of the attention on " << DeviceName(device);
  for (size_t i = 0; i < params.size(); ++i) {
    run.names.push_back(params[i]->name);
    run.initial.push_back(HostCast<double>(params[i]->value));
    if (i < c.params.size()) params[i]->value.CopyFrom(HostCast<U>(c.params[i]).To(device));
  }
  a->ZeroGrad();
  const Tensor<U> query = HostCast<U>(c.query).To(device);
  const Tensor<U> keys = HostCast<U>(c.keys).To(device);
  const Tensor<U> dout = HostCast<U>(c.dout).To(device);
  Tensor<U> out = output(b_size, c.d);
  a->Forward(query, keys, c.lengths, &out);
  EXPECT_EQ(out.device(), device);
  run.out = HostCast<double>(out);
  run.weights = HostCast<double>(a->weights());
  for (Tensor<U>* buffer : a->Buffers()) run.buffers.push_back(HostCast<double>(*buffer));
  Tensor<U> dquery = output(b_size, c.d), dkeys = output(b_size * max_len, c.d),
            dkeys2 = output(b_size * max_len, c.d);
  a->Backward(dout, &dquery, &dkeys);
  a->Backward(dout, nullptr, &dkeys2);
  a->Backward(dout, nullptr, nullptr);
  run.dquery = HostCast<double>(dquery);
  run.dkeys = HostCast<double>(dkeys);
  run.dkeys2 = HostCast<double>(dkeys2);
  for (Param<U>* p : params) run.grads.push_back(HostCast<double>(p->grad));
  if (c.options.activation == ActivationKind::kDice) {
    a->SetTraining(false);
    Tensor<U> eval_out = output(b_size, c.d);
    a->Forward(query, keys, c.lengths, &eval_out);
    run.eval_out = HostCast<double>(eval_out);
  }
  return run;
}

// ||a - b|| (infinite when the shapes differ).
double Distance(const Tensor<double>& a, const Tensor<double>& b) {
  if (!a.SameShape(b)) return std::numeric_limits<double>::infinity();
  double sum = 0;
  for (int64_t i = 0; i < a.size(); ++i) sum += (a.data()[i] - b.data()[i]) * (a.data()[i] - b.data()[i]);
  return std::sqrt(sum);
}

// `t` with every element x moved to x (1 + delta r), r uniform in [-1, 1], then rounded to T.
template <typename T>
Tensor<double> Nudged(const Tensor<double>& t, double delta, std::mt19937_64* rng) {
  std::uniform_real_distribution<double> u(-1, 1);
  Tensor<double> out = t;
  for (int64_t i = 0; i < out.size(); ++i) out.data()[i] = static_cast<T>(out.data()[i] * (1 + delta * u(*rng)));
  return out;
}

// Each compared quantity of a run, by name, in a fixed order (the same for every run of a case).
std::vector<std::pair<std::string, const Tensor<double>*>> Quantities(const AttentionRun& r) {
  std::vector<std::pair<std::string, const Tensor<double>*>> q = {
      {"out", &r.out}, {"weights", &r.weights}, {"dquery", &r.dquery}, {"dkeys", &r.dkeys},
      {"dkeys, no dquery", &r.dkeys2}, {"evaluation out", &r.eval_out}};
  for (size_t i = 0; i < r.buffers.size(); ++i) q.emplace_back(absl::StrCat("buffer ", i), &r.buffers[i]);
  for (size_t i = 0; i < r.grads.size(); ++i) q.emplace_back("d" + r.names[i], &r.grads[i]);
  return q;
}

double Norm(const Tensor<double>& t) { return Distance(t, Tensor<double>(t.rows(), t.cols())); }

// How the GPU is judged. The reference is the CPU attention in double on the same values. Many
// compared quantities are sums whose terms nearly cancel (an attention score near 0 when L = 1;
// a bias gradient under a softmax, whose score gradients sum to 0), and rounding scales with the
// terms, not with their small sum: in 201 seeds on an H200 (2026-11-29), 19 quantities were off
// by more than 1e-5 of their norm (up to 3e-4), and the CPU in float was off double on the same
// ones by between a seventh of the GPU's error and as much. So the GPU's error against double must
// be within kTolerance<T> of the quantity's norm, or within kRoundingFactor times the error the
// CPU attention in T makes on the same problem: the largest of kRoundingSamples runs, on these
// inputs and on inputs nudged by a few units in the last place of T (each rounds differently,
// so their largest error is the scale of T's rounding here). Those 19, replayed on the CPU,
// needed a factor of at most 2.7 and used at most 57% of this bound. The score layer's bias
// gradient, exactly 0 under a softmax, is judged against the norm of its terms
// (ScoreGradNorm). With T = double the CPU and the reference are one computation, so only
// kTolerance<double> remains.
constexpr int kRoundingSamples = 4;
constexpr double kRoundingFactor = 8;
// The most of a quantity's norm the rounding allowance may be (those 19 used at most 0.6%).
constexpr double kMaxRoundingShare = 0.05;
constexpr double kNudge = 4.0 / (1 << 24);

TYPED_TEST(GpuAttentionTest, MatchesTheCpu) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  // The nudges draw from their own generator, so a seed gives the same cases whatever they take.
  std::mt19937_64 nudge_rng(seed ^ 0x9E3779B97F4A7C15ULL);
  CpuLayerFactory<T> cpu_factory;
  CpuLayerFactory<double> ref_factory;
  cuda::CudaLayerFactory<T> gpu_factory;
  // The largest share of its bound a quantity's error used, printed at the end.
  double worst_used = 0;
  std::string worst_where;
  for (bool softmax : {false, true}) {
    for (ActivationKind activation : {ActivationKind::kSigmoid, ActivationKind::kDice}) {
      for (int d : {8, 16}) {
        for (int max_len : {1, 10}) {
          for (int b_size : {1, 37}) {
            const std::string what = std::string(ActivationKindName(activation)) +
                                     (softmax ? ", softmax" : ", raw") + ", d " +
                                     std::to_string(d) + ", L " + std::to_string(max_len) + ", B " +
                                     std::to_string(b_size);
            SCOPED_TRACE(what);
            AttentionCase c;
            c.d = d;
            c.options.hidden = {12, 5};
            c.options.activation = activation;
            c.options.softmax = softmax;
            c.init_seed = rng();
            // Random values everywhere (biases and Dice's alpha start at 0), drawn in T.
            {
              std::unique_ptr<TargetAttention<T>> shape = cpu_factory.MakeAttention(d, c.options, c.init_seed);
              for (Param<T>* p : shape->Params()) {
                c.params.push_back(HostCast<double>(RandomTensor<T>(p->value.rows(), p->value.cols(), &rng, -0.6, 0.6)));
              }
            }
            c.lengths = RandomLengths(b_size, max_len, &rng);
            c.query = HostCast<double>(RandomTensor<T>(b_size, d, &rng));
            c.keys = HostCast<double>(RandomTensor<T>(b_size * max_len, d, &rng));
            c.dout = HostCast<double>(RandomTensor<T>(b_size, d, &rng));

            const AttentionRun gpu = RunAttention<T>(&gpu_factory, c);
            const AttentionRun cpu = RunAttention<T>(&cpu_factory, c);
            const AttentionRun ref = RunAttention<double>(&ref_factory, c);
            // Same seed, same initial weights and names.
            ASSERT_EQ(gpu.names, cpu.names);
            for (size_t i = 0; i < gpu.initial.size(); ++i) {
              EXPECT_EQ(RelativeError(gpu.initial[i], cpu.initial[i]), 0.0) << "initial " << gpu.names[i];
            }
            if (activation == ActivationKind::kDice) {
              EXPECT_EQ(gpu.buffers.size(), 4u);  // running mean and variance of two Dice layers
            }
            ASSERT_EQ(gpu.weights.rows(), b_size);
            ASSERT_EQ(gpu.weights.cols(), max_len);
            for (int b = 0; b < b_size; ++b) {
              for (int j = c.lengths[b]; j < max_len; ++j) {
                EXPECT_EQ(gpu.weights.at(b, j), 0.0) << "padded weight " << b << ", " << j;
              }
              ExpectZeroRows(gpu.dkeys, b * max_len + c.lengths[b], max_len - c.lengths[b], "padded dkeys");
            }

            // The scale of T's rounding on this problem: the CPU in T against double, on these
            // inputs and on nudged ones.
            const auto ref_q = Quantities(ref);
            std::vector<double> rounding(ref_q.size(), 0);
            for (int k = 0; k < kRoundingSamples; ++k) {
              AttentionCase nudged = c;
              if (k > 0) {
                for (Tensor<double>& p : nudged.params) p = Nudged<T>(p, kNudge, &nudge_rng);
                nudged.query = Nudged<T>(c.query, kNudge, &nudge_rng);
                nudged.keys = Nudged<T>(c.keys, kNudge, &nudge_rng);
                nudged.dout = Nudged<T>(c.dout, kNudge, &nudge_rng);
              }
              const AttentionRun in_t = k == 0 ? cpu : RunAttention<T>(&cpu_factory, nudged);
              const AttentionRun exact = k == 0 ? ref : RunAttention<double>(&ref_factory, nudged);
              const auto t_q = Quantities(in_t);
              const auto exact_q = Quantities(exact);
              ASSERT_EQ(t_q.size(), ref_q.size());
              ASSERT_EQ(exact_q.size(), ref_q.size());
              for (size_t i = 0; i < ref_q.size(); ++i) {
                rounding[i] = std::max(rounding[i], Distance(*t_q[i].second, *exact_q[i].second));
              }
            }
            // The score layer's bias gradient (the last parameter): three calls of sum_i dscore_i.
            ASSERT_EQ(ref.grads.back().size(), 1);
            const double score_bias_terms = 3 * ScoreGradNorm(ref.weights, c.keys, c.dout, c.lengths, softmax);

            const auto gpu_q = Quantities(gpu);
            ASSERT_EQ(gpu_q.size(), ref_q.size());
            for (size_t i = 0; i < gpu_q.size(); ++i) {
              const double norm = i + 1 == gpu_q.size() ? std::max(Norm(*ref_q[i].second), score_bias_terms)
                                                        : Norm(*ref_q[i].second);
              // The rounding allowance never reaches kMaxRoundingShare of the norm: a GPU result
              // that is wrong or missing (all 0) cannot hide behind an ill-conditioned sum.
              EXPECT_TRUE(std::isfinite(rounding[i])) << gpu_q[i].first;
              const double bound = std::max(kTolerance<T> * norm,
                                            std::min(kRoundingFactor * rounding[i], kMaxRoundingShare * norm));
              const double error = Distance(*gpu_q[i].second, *ref_q[i].second);
              EXPECT_LE(error, bound) << gpu_q[i].first << ": norm " << norm << ", T's rounding " << rounding[i];
              const double used = bound > 0 ? error / bound : (error > 0 ? 1e300 : 0);
              if (used > worst_used) {
                worst_used = used;
                worst_where = absl::StrCat(what, ", ", gpu_q[i].first, ": error ", error, ", norm ", norm,
                                           ", T's rounding ", rounding[i]);
              }
            }
          }
        }
      }
    }
  }
  std::printf("largest share of the bound used: %.3g (%s)\n", worst_used, worst_where.c_str());
}

TYPED_TEST(GpuAttentionTest, AllEmptySequencesGiveZerosAndNoGradient) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  cuda::CudaLayerFactory<T> factory;
  for (bool softmax : {false, true}) {
    SCOPED_TRACE(softmax ? "softmax" : "raw");
    AttentionOptions options;
    options.softmax = softmax;
    options.activation = ActivationKind::kDice;
    std::unique_ptr<TargetAttention<T>> att = factory.MakeAttention(8, options, rng());
    const int b_size = 5;
    const int max_len = 4;
    const Tensor<T> query = RandomTensor<T>(b_size, 8, &rng).To(Device::kCuda);
    const Tensor<T> keys = RandomTensor<T>(b_size * max_len, 8, &rng).To(Device::kCuda);
    Tensor<T> out = PoisonedDeviceTensor<T>(b_size, 8);
    att->Forward(query, keys, std::vector<int>(b_size, 0), &out);
    ExpectZeroRows(out, 0, b_size, "out");
    ExpectZeroRows(att->weights(), 0, b_size, "weights");
    Tensor<T> dquery = PoisonedDeviceTensor<T>(b_size, 8);
    Tensor<T> dkeys = PoisonedDeviceTensor<T>(b_size * max_len, 8);
    att->ZeroGrad();
    att->Backward(RandomTensor<T>(b_size, 8, &rng).To(Device::kCuda), &dquery, &dkeys);
    ExpectZeroRows(dquery, 0, b_size, "dquery");
    ExpectZeroRows(dkeys, 0, b_size * max_len, "dkeys");
    for (Param<T>* p : att->Params()) ExpectZeroRows(p->grad, 0, p->grad.rows(), p->name);

    // An empty batch.
    Tensor<T> empty_query(Device::kCuda);
    Tensor<T> empty_keys(Device::kCuda);
    empty_query.ResizeUninitialized(0, 8);
    empty_keys.ResizeUninitialized(0, 8);
    att->Forward(empty_query, empty_keys, {}, &out);
    EXPECT_EQ(out.rows(), 0);
    EXPECT_EQ(out.cols(), 8);
  }
}

}  // namespace
}  // namespace choir::models
