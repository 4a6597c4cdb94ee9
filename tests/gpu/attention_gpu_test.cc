// CUDA embedding-bag pooling and DIN target attention against the CPU implementations
// (CpuLayerFactory): sum and mean pooling, packed and padded, with empty, single-row and full
// bags; attention with raw scores and softmax, sigmoid and Dice (training mode) attention MLPs
// and lengths from 0 to L, comparing outputs, weights, input gradients, parameter gradients
// accumulated over several Backward calls, and Dice's running statistics. Fresh random inputs
// each run (the seed is printed on failure); GPU outputs are poisoned with NaN beforehand.
// Tolerances: gpu_test_util.h, except for the parameter gradients. Those are sums over every
// valid position of every sample, and under a softmax they nearly cancel (the score layer's bias
// gradient exactly: it is 0), so a relative error against their small norm measures float
// rounding, not the kernels: a GPU run once found 1.3e-5 on a hidden layer's bias with one
// sample of 10 positions (seed 16967318389307893011, under compute-sanitizer racecheck, which
// found no hazard). They are judged against a third attention, on the CPU in double with the same
// values: the GPU's error must be within kTolerance<T> of the reference's norm, or within
// kGradRoundingFactor times the error of the CPU attention in T (the rounding a correct
// implementation in T makes on those sums); the score layer's bias against the norm of its
// terms as well.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
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

// See the header comment: how many times the CPU's own rounding error (in T, against double) a
// GPU parameter gradient may be off by.
constexpr double kGradRoundingFactor = 4;

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
// ignores a constant added to every score), so this is the floor of its RelativeError.
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

TYPED_TEST(GpuAttentionTest, MatchesTheCpu) {
  using T = TypeParam;
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  CpuLayerFactory<T> cpu_factory;
  CpuLayerFactory<double> ref_factory;
  cuda::CudaLayerFactory<T> gpu_factory;
  // The largest parameter-gradient error seen, and the largest ratio of the GPU's error to the
  // CPU's, printed at the end: how much of the bound a run used.
  double worst_gpu_error = 0, worst_ratio = 0;
  std::string worst_error_case, worst_ratio_case;
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
            AttentionOptions options;
            options.hidden = {12, 5};
            options.activation = activation;
            options.softmax = softmax;
            const uint64_t init_seed = rng();
            std::unique_ptr<TargetAttention<T>> cpu =
                cpu_factory.MakeAttention(d, options, init_seed);
            std::unique_ptr<TargetAttention<T>> gpu =
                gpu_factory.MakeAttention(d, options, init_seed);
            std::unique_ptr<TargetAttention<double>> ref =
                ref_factory.MakeAttention(d, options, init_seed);
            cpu->SetTraining(true);
            gpu->SetTraining(true);
            ref->SetTraining(true);

            // Same seed, same initial weights. Then random values everywhere (biases and Dice's
            // alpha start at 0), the same on both.
            const std::vector<Param<T>*> cpu_params = cpu->Params();
            const std::vector<Param<T>*> gpu_params = gpu->Params();
            const std::vector<Param<double>*> ref_params = ref->Params();
            ASSERT_EQ(gpu_params.size(), cpu_params.size());
            ASSERT_EQ(ref_params.size(), cpu_params.size());
            for (size_t i = 0; i < cpu_params.size(); ++i) {
              EXPECT_EQ(gpu_params[i]->name, cpu_params[i]->name);
              EXPECT_EQ(RelativeError(gpu_params[i]->value, cpu_params[i]->value), 0.0)
                  << "initial " << cpu_params[i]->name;
              const Tensor<T> value = RandomTensor<T>(cpu_params[i]->value.rows(),
                                                      cpu_params[i]->value.cols(), &rng, -0.6, 0.6);
              cpu_params[i]->value = value;
              gpu_params[i]->value.CopyFrom(value);
              ref_params[i]->value = HostCast<double>(value);
            }
            cpu->ZeroGrad();
            gpu->ZeroGrad();
            ref->ZeroGrad();

            const std::vector<int> lengths = RandomLengths(b_size, max_len, &rng);
            const Tensor<T> query = RandomTensor<T>(b_size, d, &rng);
            const Tensor<T> keys = RandomTensor<T>(b_size * max_len, d, &rng);
            const Tensor<T> dout = RandomTensor<T>(b_size, d, &rng);
            const Tensor<T> gpu_query = query.To(Device::kCuda);
            const Tensor<T> gpu_keys = keys.To(Device::kCuda);
            const Tensor<T> gpu_dout = dout.To(Device::kCuda);

            Tensor<T> cpu_out;
            Tensor<T> gpu_out = PoisonedDeviceTensor<T>(b_size, d);
            cpu->Forward(query, keys, lengths, &cpu_out);
            gpu->Forward(gpu_query, gpu_keys, lengths, &gpu_out);
            Tensor<double> ref_out;
            const Tensor<double> ref_keys = HostCast<double>(keys);
            const Tensor<double> ref_dout = HostCast<double>(dout);
            ref->Forward(HostCast<double>(query), ref_keys, lengths, &ref_out);
            EXPECT_EQ(gpu_out.device(), Device::kCuda);
            EXPECT_LE(RelativeError(gpu_out, cpu_out), kTolerance<T>) << "out";
            EXPECT_LE(RelativeError(gpu->weights(), cpu->weights()), kTolerance<T>) << "weights";
            const Tensor<T> weights = gpu->weights().To(Device::kCpu);
            ASSERT_EQ(weights.rows(), b_size);
            ASSERT_EQ(weights.cols(), max_len);
            for (int b = 0; b < b_size; ++b) {
              for (int j = lengths[b]; j < max_len; ++j) {
                EXPECT_EQ(weights.at(b, j), T(0)) << "padded weight " << b << ", " << j;
              }
            }
            const std::vector<Tensor<T>*> cpu_buffers = cpu->Buffers();
            const std::vector<Tensor<T>*> gpu_buffers = gpu->Buffers();
            ASSERT_EQ(gpu_buffers.size(), cpu_buffers.size());
            if (activation == ActivationKind::kDice) {
              EXPECT_EQ(cpu_buffers.size(), 4u);  // running mean and variance of two Dice layers
            }
            for (size_t i = 0; i < cpu_buffers.size(); ++i) {
              EXPECT_LE(RelativeError(*gpu_buffers[i], *cpu_buffers[i]), kTolerance<T>)
                  << "buffer " << i;
            }

            // Three Backward calls: both input gradients, dkeys only, none. The parameter
            // gradients accumulate over all three.
            Tensor<T> cpu_dquery, cpu_dkeys, cpu_dkeys2;
            Tensor<T> gpu_dquery = PoisonedDeviceTensor<T>(b_size, d);
            Tensor<T> gpu_dkeys = PoisonedDeviceTensor<T>(b_size * max_len, d);
            Tensor<T> gpu_dkeys2 = PoisonedDeviceTensor<T>(b_size * max_len, d);
            cpu->Backward(dout, &cpu_dquery, &cpu_dkeys);
            gpu->Backward(gpu_dout, &gpu_dquery, &gpu_dkeys);
            cpu->Backward(dout, nullptr, &cpu_dkeys2);
            gpu->Backward(gpu_dout, nullptr, &gpu_dkeys2);
            cpu->Backward(dout, nullptr, nullptr);
            gpu->Backward(gpu_dout, nullptr, nullptr);
            Tensor<double> ref_dquery, ref_dkeys;
            ref->Backward(ref_dout, &ref_dquery, &ref_dkeys);
            ref->Backward(ref_dout, nullptr, &ref_dkeys);
            ref->Backward(ref_dout, nullptr, nullptr);
            EXPECT_LE(RelativeError(gpu_dquery, cpu_dquery), kTolerance<T>) << "dquery";
            EXPECT_LE(RelativeError(gpu_dkeys, cpu_dkeys), kTolerance<T>) << "dkeys";
            EXPECT_LE(RelativeError(gpu_dkeys2, cpu_dkeys2), kTolerance<T>) << "dkeys, no dquery";
            for (int b = 0; b < b_size; ++b) {
              ExpectZeroRows(gpu_dkeys, b * max_len + lengths[b], max_len - lengths[b],
                             "padded dkeys");
            }
            // The last parameter is the score layer's bias: three calls of sum_i dscore_i.
            ASSERT_EQ(cpu_params.back()->grad.size(), 1);
            const double bias_floor =
                3 * ScoreGradNorm(ref->weights(), ref_keys, ref_dout, lengths, softmax);
            for (size_t i = 0; i < cpu_params.size(); ++i) {
              const double floor = i + 1 == cpu_params.size() ? bias_floor : 0;
              const Tensor<double>& exact = ref_params[i]->grad;
              const double gpu_error = RelativeError(HostCast<double>(gpu_params[i]->grad), exact, floor);
              const double cpu_error = RelativeError(HostCast<double>(cpu_params[i]->grad), exact, floor);
              EXPECT_LE(gpu_error, std::max(kTolerance<T>, kGradRoundingFactor * cpu_error))
                  << "d" << cpu_params[i]->name << " (the CPU in this type: " << cpu_error << ")";
              const std::string where = absl::StrCat(what, ", d", cpu_params[i]->name, ": GPU ",
                                                     gpu_error, ", CPU ", cpu_error);
              if (gpu_error > worst_gpu_error) {
                worst_gpu_error = gpu_error;
                worst_error_case = where;
              }
              if (cpu_error > 0 && gpu_error / cpu_error > worst_ratio) {
                worst_ratio = gpu_error / cpu_error;
                worst_ratio_case = where;
              }
            }

            // Evaluation mode: Dice switches to the running statistics.
            if (activation == ActivationKind::kDice) {
              cpu->SetTraining(false);
              gpu->SetTraining(false);
              Tensor<T> cpu_eval;
              Tensor<T> gpu_eval = PoisonedDeviceTensor<T>(b_size, d);
              cpu->Forward(query, keys, lengths, &cpu_eval);
              gpu->Forward(gpu_query, gpu_keys, lengths, &gpu_eval);
              EXPECT_LE(RelativeError(gpu_eval, cpu_eval), kTolerance<T>) << "evaluation out";
            }
          }
        }
      }
    }
  }
  std::printf("parameter gradients against double: largest error (%s); largest GPU/CPU ratio %.3g (%s)\n",
              worst_error_case.c_str(), worst_ratio, worst_ratio_case.c_str());
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
