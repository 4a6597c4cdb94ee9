// The CUDA single-input layers against their CPU references (models/cpu_layers.cc): Linear, the
// element-wise activations, PReLU, Dice (training and evaluation) and LayerNorm, in float and
// double, on batches of 1, 37 (not a multiple of 32) and 300 rows. Each case draws fresh random
// inputs and parameters (the seed is printed on failure), runs Forward and Backward on both
// backends with the GPU outputs pre-filled with NaN (an unwritten element fails the
// comparison), and compares outputs, input gradients and parameter gradients (after two
// Backward calls, so accumulation is checked, and after a third one without dx) with the
// relative tolerance of gpu_test_util.h (parameter gradients, sums over the batch, against at
// least their uncancelled size).
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <random>
#include <vector>

#include "gtest/gtest.h"
#include "models/cuda/cuda.h"
#include "models/layers.h"
#include "models/tensor.h"
#include "tests/gpu/gpu_test_util.h"

namespace choir::models::cuda {
namespace {

using choir::testing::FreshSeed;
using choir::testing::kTolerance;
using choir::testing::PoisonedDeviceTensor;
using choir::testing::RandomTensor;
using choir::testing::RelativeError;
using choir::testing::Rms;
using choir::testing::SumScale;

// 256 and 513 rows: one and three whole-or-partial chunks of the column sums (kColumnChunk 256);
// width 33: a partial second tile of 32 features.
constexpr int kBatches[] = {1, 37, 256, 300, 513};
constexpr int kWidths[] = {1, 7, 33, 64};
// LayerNorm normalises over the features: width 1 is degenerate (every output is beta) and very
// small widths make dx a near-total cancellation; 300 spans more than one block of threads.
constexpr int kNormWidths[] = {7, 64, 300};
// Inputs are drawn from [-kInputRange, kInputRange): both signs, and sigmoid/tanh away from 0.
constexpr double kInputRange = 2.0;

// A CPU layer and the CUDA layer made with the same arguments.
template <typename T>
struct LayerPair {
  std::unique_ptr<Layer<T>> cpu;
  std::unique_ptr<Layer<T>> gpu;
};

// `make(factory)` returns a layer from `factory`; called once per backend.
template <typename T, typename Make>
LayerPair<T> MakePair(Make make) {
  CpuLayerFactory<T> cpu_factory;
  CudaLayerFactory<T> gpu_factory;
  LayerPair<T> pair;
  pair.cpu = make(static_cast<LayerFactory<T>&>(cpu_factory));
  pair.gpu = make(static_cast<LayerFactory<T>&>(gpu_factory));
  return pair;
}

// The GPU layer's parameters have the CPU layer's names, shapes and exact values, live on the
// GPU, and the same holds for the buffers.
template <typename T>
void ExpectSameState(LayerPair<T>* pair) {
  const std::vector<Param<T>*> cpu = pair->cpu->Params();
  const std::vector<Param<T>*> gpu = pair->gpu->Params();
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_EQ(gpu[i]->name, cpu[i]->name);
    EXPECT_EQ(gpu[i]->value.device(), Device::kCuda) << cpu[i]->name;
    EXPECT_EQ(gpu[i]->grad.device(), Device::kCuda) << cpu[i]->name;
    EXPECT_EQ(RelativeError(gpu[i]->value, cpu[i]->value), 0.0) << cpu[i]->name;
    EXPECT_EQ(RelativeError(gpu[i]->grad, cpu[i]->grad), 0.0) << cpu[i]->name;
  }
  const std::vector<Tensor<T>*> cpu_buffers = pair->cpu->Buffers();
  const std::vector<Tensor<T>*> gpu_buffers = pair->gpu->Buffers();
  ASSERT_EQ(gpu_buffers.size(), cpu_buffers.size());
  for (size_t i = 0; i < cpu_buffers.size(); ++i) {
    EXPECT_EQ(gpu_buffers[i]->device(), Device::kCuda) << "buffer " << i;
    EXPECT_EQ(RelativeError(*gpu_buffers[i], *cpu_buffers[i]), 0.0) << "buffer " << i;
  }
}

// Writes the same random values, uniform in [lo, hi), into parameter `index` of both layers.
template <typename T>
void RandomizeParam(LayerPair<T>* pair, size_t index, double lo, double hi, std::mt19937_64* rng) {
  const std::vector<Param<T>*> cpu = pair->cpu->Params();
  const std::vector<Param<T>*> gpu = pair->gpu->Params();
  ASSERT_LT(index, cpu.size());
  ASSERT_EQ(gpu.size(), cpu.size());
  const Tensor<T> host =
      RandomTensor<T>(cpu[index]->value.rows(), cpu[index]->value.cols(), rng, lo, hi);
  cpu[index]->value = host;
  gpu[index]->value.CopyFrom(host);  // uploads: the GPU parameter stays on the GPU
  ASSERT_EQ(gpu[index]->value.device(), Device::kCuda);
}

// Likewise for buffer `index` (Dice's running mean and variance).
template <typename T>
void RandomizeBuffer(LayerPair<T>* pair, size_t index, double lo, double hi, std::mt19937_64* rng) {
  const std::vector<Tensor<T>*> cpu = pair->cpu->Buffers();
  const std::vector<Tensor<T>*> gpu = pair->gpu->Buffers();
  ASSERT_LT(index, cpu.size());
  ASSERT_EQ(gpu.size(), cpu.size());
  const Tensor<T> host = RandomTensor<T>(cpu[index]->rows(), cpu[index]->cols(), rng, lo, hi);
  *cpu[index] = host;
  gpu[index]->CopyFrom(host);
  ASSERT_EQ(gpu[index]->device(), Device::kCuda);
}

// Every parameter gradient of these layers is a sum over the batch rows (and the Backward calls)
// of an input (or its normalised form, of about the same size) times an upstream gradient, so the
// floor of RelativeError is SumScale over rows * calls terms: a bias or a width-1 alpha is one
// such sum and cancels towards 0 in a few percent of draws.
template <typename T>
void ExpectSameGrads(LayerPair<T>* pair, const char* when, int terms, double input_rms,
                     double upstream_rms, double tolerance) {
  const std::vector<Param<T>*> cpu = pair->cpu->Params();
  const std::vector<Param<T>*> gpu = pair->gpu->Params();
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    const double floor = SumScale(cpu[i]->grad.size(), terms, input_rms, upstream_rms);
    EXPECT_LE(RelativeError(gpu[i]->grad, cpu[i]->grad, floor), tolerance)
        << "gradient of " << cpu[i]->name << " " << when;
  }
}

template <typename T>
void ExpectSameBuffers(LayerPair<T>* pair, const char* when) {
  const std::vector<Tensor<T>*> cpu = pair->cpu->Buffers();
  const std::vector<Tensor<T>*> gpu = pair->gpu->Buffers();
  ASSERT_EQ(gpu.size(), cpu.size());
  for (size_t i = 0; i < cpu.size(); ++i) {
    EXPECT_LE(RelativeError(*gpu[i], *cpu[i]), kTolerance<T>) << "buffer " << i << " " << when;
  }
}

// One training step on both layers: Forward on a random x [rows, in], then two Backward calls
// with fresh random dy [rows, out] (dx compared each time), then a third Backward with
// dx == nullptr. Parameter gradients are compared after the second and the third call.
template <typename T>
void ExpectSameStep(LayerPair<T>* pair, int rows, int in, int out, std::mt19937_64* rng,
                    double tolerance = kTolerance<T>) {
  const Tensor<T> x = RandomTensor<T>(rows, in, rng, -kInputRange, kInputRange);
  Tensor<T> y_cpu;
  pair->cpu->Forward(x, &y_cpu);
  Tensor<T> y_gpu = PoisonedDeviceTensor<T>(rows, out);
  pair->gpu->Forward(x.To(Device::kCuda), &y_gpu);
  EXPECT_EQ(y_gpu.device(), Device::kCuda);
  EXPECT_EQ(y_gpu.rows(), rows);
  EXPECT_EQ(y_gpu.cols(), out);
  EXPECT_LE(RelativeError(y_gpu, y_cpu), tolerance) << "forward output";

  Tensor<T> dy;
  for (int call = 1; call <= 2; ++call) {
    dy = RandomTensor<T>(rows, out, rng);
    Tensor<T> dx_cpu;
    pair->cpu->Backward(dy, &dx_cpu);
    Tensor<T> dx_gpu = PoisonedDeviceTensor<T>(rows, in);
    pair->gpu->Backward(dy.To(Device::kCuda), &dx_gpu);
    EXPECT_EQ(dx_gpu.device(), Device::kCuda);
    EXPECT_LE(RelativeError(dx_gpu, dx_cpu), tolerance) << "dx of backward call " << call;
  }
  ExpectSameGrads(pair, "after two backward calls", 2 * rows, Rms(x), Rms(dy), tolerance);

  dy = RandomTensor<T>(rows, out, rng);
  pair->cpu->Backward(dy, nullptr);
  pair->gpu->Backward(dy.To(Device::kCuda), nullptr);
  ExpectSameGrads(pair, "after a third backward call without dx", 3 * rows, Rms(x), Rms(dy),
                  tolerance);
}

template <typename T>
class CudaLayersTest : public ::testing::Test {};

using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CudaLayersTest, FloatTypes);

TYPED_TEST(CudaLayersTest, LinearMatchesCpu) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  const int shapes[][2] = {{1, 1}, {7, 64}, {64, 7}, {64, 1}, {37, 300}};
  for (int rows : kBatches) {
    for (const auto& shape : shapes) {
      const int in = shape[0];
      const int out = shape[1];
      const uint64_t seed = FreshSeed();
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", Linear " << in << " -> " << out
                                        << ", " << rows << " rows");
      std::mt19937_64 rng(seed);
      LayerPair<T> pair =
          MakePair<T>([&](LayerFactory<T>& f) { return f.MakeLinear(in, out, seed); });
      // Same seed, same initial weights; the bias starts at 0, so give it random values.
      ExpectSameState(&pair);
      RandomizeParam(&pair, 1, -1, 1, &rng);
      ExpectSameStep(&pair, rows, in, out, &rng);
    }
  }
}

// Products with inputs rounded on the tensor cores (trainer.matmul_precision): TF32 keeps 10
// mantissa bits (unit roundoff 2^-11), bf16 7 (2^-8); products accumulate in fp32. Rounding both
// operands of every product gives a relative error of about sqrt(2/3) * u per product, which
// sums over the random-signed terms to about the same relative L2 error: ~4e-4 (TF32) and
// ~3e-3 (bf16). The tolerances allow 5x that; fp32's own 1e-5 would fail them.
TEST(CudaReducedPrecisionTest, LinearWithTf32AndBf16ProductsMatchesCpuWithinTheirRounding) {
  CHOIR_REQUIRE_GPU();
  struct BackToFp32 {
    ~BackToFp32() { SetMatmulPrecision(MatmulPrecision::kFp32); }
  } back_to_fp32;  // also when a fatal failure ends the test early
  struct Mode {
    MatmulPrecision precision;
    double tolerance;
  };
  for (const Mode mode : {Mode{MatmulPrecision::kTf32, 2.5e-3}, Mode{MatmulPrecision::kBf16, 1.5e-2}}) {
    SetMatmulPrecision(mode.precision);
    const int shapes[][2] = {{7, 64}, {64, 7}, {300, 200}};
    for (int rows : {37, 1024}) {
      for (const auto& shape : shapes) {
        const uint64_t seed = FreshSeed();
        SCOPED_TRACE(::testing::Message() << MatmulPrecisionName(mode.precision) << ", seed " << seed << ", Linear "
                                          << shape[0] << " -> " << shape[1] << ", " << rows << " rows");
        std::mt19937_64 rng(seed);
        LayerPair<float> pair =
            MakePair<float>([&](LayerFactory<float>& f) { return f.MakeLinear(shape[0], shape[1], seed); });
        RandomizeParam(&pair, 1, -1, 1, &rng);
        ExpectSameStep(&pair, rows, shape[0], shape[1], &rng, mode.tolerance);
      }
    }
    // The rounding shows: the products are not plain fp32 (else the option does nothing).
    LayerPair<float> pair = MakePair<float>([&](LayerFactory<float>& f) { return f.MakeLinear(300, 200, 1); });
    std::mt19937_64 rng(1);
    const Tensor<float> x = RandomTensor<float>(1024, 300, &rng, -kInputRange, kInputRange);
    Tensor<float> y_cpu, y_gpu(Device::kCuda);
    pair.cpu->Forward(x, &y_cpu);
    pair.gpu->Forward(x.To(Device::kCuda), &y_gpu);
    EXPECT_GT(RelativeError(y_gpu, y_cpu), 1e-5) << MatmulPrecisionName(mode.precision)
                                                 << " products gave fp32 results";
  }
}

TYPED_TEST(CudaLayersTest, PointwiseActivationsMatchCpu) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  const ActivationKind kinds[] = {ActivationKind::kIdentity, ActivationKind::kRelu,
                                  ActivationKind::kSigmoid, ActivationKind::kTanh};
  for (ActivationKind kind : kinds) {
    for (int rows : kBatches) {
      for (int dim : kWidths) {
        const uint64_t seed = FreshSeed();
        SCOPED_TRACE(::testing::Message() << "seed " << seed << ", " << ActivationKindName(kind)
                                          << " over " << dim << " features, " << rows << " rows");
        std::mt19937_64 rng(seed);
        LayerPair<T> pair = MakePair<T>(
            [&](LayerFactory<T>& f) { return f.MakeActivation(kind, dim, DiceOptions()); });
        ExpectSameState(&pair);
        ExpectSameStep(&pair, rows, dim, dim, &rng);
      }
    }
  }
}

// The reductions have a fixed order: the same Dice and LayerNorm steps, twice from the same
// state and inputs, give bit-identical outputs, input gradients, parameter gradients and
// running statistics (Dice's column sums switch between one and three quantities in a step).
TEST(CudaDeterminismTest, RepeatedStepsAreBitIdentical) {
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int rows = 777, dim = 45;
  const Tensor<float> x = RandomTensor<float>(rows, dim, &rng, -kInputRange, kInputRange);
  const Tensor<float> dy = RandomTensor<float>(rows, dim, &rng);
  CudaLayerFactory<float> factory;
  for (int which = 0; which < 2; ++which) {
    SCOPED_TRACE(which == 0 ? "dice" : "layernorm");
    std::vector<Tensor<float>> results[2];
    for (int run = 0; run < 2; ++run) {
      std::unique_ptr<Layer<float>> layer = which == 0
                                                ? factory.MakeActivation(ActivationKind::kDice, dim, DiceOptions())
                                                : factory.MakeLayerNorm(dim, 1e-5);
      Tensor<float> y(Device::kCuda), dx(Device::kCuda);
      for (int step = 0; step < 2; ++step) {
        layer->Forward(x.To(Device::kCuda), &y);
        layer->Backward(dy.To(Device::kCuda), &dx);
      }
      results[run] = {y.To(Device::kCpu), dx.To(Device::kCpu)};
      for (Param<float>* p : layer->Params()) results[run].push_back(p->grad.To(Device::kCpu));
      for (Tensor<float>* b : layer->Buffers()) results[run].push_back(b->To(Device::kCpu));
    }
    ASSERT_EQ(results[0].size(), results[1].size());
    for (size_t i = 0; i < results[0].size(); ++i) {
      ASSERT_TRUE(results[0][i].SameShape(results[1][i]));
      EXPECT_EQ(0, std::memcmp(results[0][i].data(), results[1][i].data(), results[0][i].size() * sizeof(float)))
          << "tensor " << i << " (y, dx, parameter gradients, buffers) differs between identical runs";
    }
  }
}

TYPED_TEST(CudaLayersTest, PreluMatchesCpu) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  for (int rows : kBatches) {
    for (int dim : kWidths) {
      const uint64_t seed = FreshSeed();
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", prelu over " << dim
                                        << " features, " << rows << " rows");
      std::mt19937_64 rng(seed);
      LayerPair<T> pair = MakePair<T>([&](LayerFactory<T>& f) {
        return f.MakeActivation(ActivationKind::kPrelu, dim, DiceOptions());
      });
      ExpectSameState(&pair);
      RandomizeParam(&pair, 0, -0.8, 0.8, &rng);  // alpha per feature
      ExpectSameStep(&pair, rows, dim, dim, &rng);
    }
  }
}

// Training mode: batch statistics, the running averages updated by every Forward, and the
// backward pass through the statistics. Two steps, so the second starts from updated state.
TYPED_TEST(CudaLayersTest, DiceInTrainingMatchesCpu) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  DiceOptions options;
  options.eps = 1e-8;
  options.momentum = 0.9;
  for (int rows : kBatches) {
    for (int dim : kWidths) {
      const uint64_t seed = FreshSeed();
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", dice (training) over " << dim
                                        << " features, " << rows << " rows");
      std::mt19937_64 rng(seed);
      LayerPair<T> pair = MakePair<T>([&](LayerFactory<T>& f) {
        return f.MakeActivation(ActivationKind::kDice, dim, options);
      });
      ExpectSameState(&pair);
      // alpha, running mean, running variance.
      RandomizeParam(&pair, 0, -0.8, 0.8, &rng);
      RandomizeBuffer(&pair, 0, -0.5, 0.5, &rng);
      RandomizeBuffer(&pair, 1, 0.5, 2.0, &rng);
      pair.cpu->SetTraining(true);
      pair.gpu->SetTraining(true);
      for (int step = 1; step <= 2; ++step) {
        SCOPED_TRACE(::testing::Message() << "step " << step);
        ExpectSameStep(&pair, rows, dim, dim, &rng);
        // Only Forward changes the running statistics.
        ExpectSameBuffers(&pair, "after a training step");
      }
    }
  }
}

// Evaluation mode: the running statistics normalise, stay unchanged, and are constants for the
// backward pass.
TYPED_TEST(CudaLayersTest, DiceInEvaluationMatchesCpu) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  for (int rows : kBatches) {
    for (int dim : kWidths) {
      const uint64_t seed = FreshSeed();
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", dice (evaluation) over " << dim
                                        << " features, " << rows << " rows");
      std::mt19937_64 rng(seed);
      LayerPair<T> pair = MakePair<T>([&](LayerFactory<T>& f) {
        return f.MakeActivation(ActivationKind::kDice, dim, DiceOptions());
      });
      ExpectSameState(&pair);
      RandomizeParam(&pair, 0, -0.8, 0.8, &rng);
      RandomizeBuffer(&pair, 0, -0.5, 0.5, &rng);
      RandomizeBuffer(&pair, 1, 0.5, 2.0, &rng);
      const Tensor<T> running_mean = *pair.cpu->Buffers()[0];
      const Tensor<T> running_var = *pair.cpu->Buffers()[1];
      pair.cpu->SetTraining(false);
      pair.gpu->SetTraining(false);
      ExpectSameStep(&pair, rows, dim, dim, &rng);
      EXPECT_EQ(RelativeError(*pair.gpu->Buffers()[0], running_mean), 0.0)
          << "evaluation changed the running mean";
      EXPECT_EQ(RelativeError(*pair.gpu->Buffers()[1], running_var), 0.0)
          << "evaluation changed the running variance";
    }
  }
}

TYPED_TEST(CudaLayersTest, LayerNormMatchesCpu) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  for (int rows : kBatches) {
    for (int dim : kNormWidths) {
      const uint64_t seed = FreshSeed();
      SCOPED_TRACE(::testing::Message() << "seed " << seed << ", LayerNorm over " << dim
                                        << " features, " << rows << " rows");
      std::mt19937_64 rng(seed);
      LayerPair<T> pair =
          MakePair<T>([&](LayerFactory<T>& f) { return f.MakeLayerNorm(dim, 1e-5); });
      ExpectSameState(&pair);
      RandomizeParam(&pair, 0, 0.5, 1.5, &rng);  // gamma
      RandomizeParam(&pair, 1, -1, 1, &rng);     // beta
      ExpectSameStep(&pair, rows, dim, dim, &rng);
    }
  }
}

// A batch of 0 rows: outputs are [0, width] on the GPU, no gradient changes, no cuBLAS call
// with a zero dimension. Gradients are made non-zero by a full step first.
TYPED_TEST(CudaLayersTest, EveryLayerHandlesAnEmptyBatch) {
  CHOIR_REQUIRE_GPU();
  using T = TypeParam;
  const int in = 7;
  const int out = 5;
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  std::vector<LayerPair<T>> pairs;
  pairs.push_back(MakePair<T>([&](LayerFactory<T>& f) { return f.MakeLinear(in, out, seed); }));
  for (ActivationKind kind :
       {ActivationKind::kIdentity, ActivationKind::kRelu, ActivationKind::kSigmoid,
        ActivationKind::kTanh, ActivationKind::kPrelu, ActivationKind::kDice}) {
    pairs.push_back(
        MakePair<T>([&](LayerFactory<T>& f) { return f.MakeActivation(kind, in, DiceOptions()); }));
  }
  pairs.push_back(MakePair<T>([&](LayerFactory<T>& f) { return f.MakeLayerNorm(in, 1e-5); }));
  for (size_t i = 0; i < pairs.size(); ++i) {
    SCOPED_TRACE(::testing::Message() << "layer " << i << " (0: Linear, then the activations, "
                                      << "then LayerNorm)");
    const int width = i == 0 ? out : in;
    ExpectSameStep(&pairs[i], 11, in, width, &rng);
    ExpectSameStep(&pairs[i], 0, in, width, &rng);
  }
}

}  // namespace
}  // namespace choir::models::cuda
