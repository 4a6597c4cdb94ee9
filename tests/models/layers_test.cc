// Layer library: forward values on hand-computed cases, backward against finite differences
// (double precision, tolerance in grad_check.h), determinism of initialisation.
#include "models/layers.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <type_traits>
#include <vector>

#include "gtest/gtest.h"
#include "models/tensor.h"
#include "tests/models/grad_check.h"

namespace choir::models {
namespace {

using testing::CheckLayerGradients;
using testing::Dot;
using testing::ExpectMatchesFiniteDifferences;
using testing::RandomTensor;

// Gives every parameter random values (so zero-initialised biases and alphas are exercised).
void RandomizeParams(const std::vector<Param<double>*>& params, uint64_t seed) {
  for (Param<double>* p : params) {
    p->value = RandomTensor(p->value.rows(), p->value.cols(), seed++, -0.8, 0.8);
  }
}

TEST(TensorTest, ShapeFillAndResizeKeepCapacity) {
  Tensor<float> t(2, 3, 1.5f);
  EXPECT_EQ(t.rows(), 2);
  EXPECT_EQ(t.cols(), 3);
  EXPECT_EQ(t.size(), 6);
  EXPECT_EQ(t.device(), Device::kCpu);
  EXPECT_EQ(t.at(1, 2), 1.5f);
  t.at(1, 0) = 4;
  EXPECT_EQ(t.row(1)[0], 4);
  const float* before = t.data();
  t.Resize(3, 2);
  EXPECT_EQ(t.data(), before);  // same allocation
  EXPECT_EQ(t.at(2, 1), 0.0f);
  t.Fill(2);
  EXPECT_EQ(t.at(0, 0), 2);
}

TEST(LinearTest, ForwardMatchesHandComputation) {
  CpuLayerFactory<double> factory;
  auto linear = factory.MakeLinear(2, 3, 1);
  std::vector<Param<double>*> params = linear->Params();
  ASSERT_EQ(params.size(), 2u);
  EXPECT_EQ(params[0]->name, "w");
  EXPECT_EQ(params[1]->name, "b");
  // W = [[1, 2, 3], [4, 5, 6]], b = [0.5, -1, 2].
  const double w[] = {1, 2, 3, 4, 5, 6};
  std::copy(w, w + 6, params[0]->value.data());
  params[1]->value.at(0, 0) = 0.5;
  params[1]->value.at(0, 1) = -1;
  params[1]->value.at(0, 2) = 2;
  Tensor<double> x(2, 2);
  x.at(0, 0) = 1;
  x.at(0, 1) = -1;
  x.at(1, 0) = 2;
  x.at(1, 1) = 0.5;
  Tensor<double> y;
  linear->Forward(x, &y);
  ASSERT_EQ(y.rows(), 2);
  ASSERT_EQ(y.cols(), 3);
  // Row 0: [1 - 4, 2 - 5, 3 - 6] + b = [-2.5, -4, -1].
  EXPECT_DOUBLE_EQ(y.at(0, 0), -2.5);
  EXPECT_DOUBLE_EQ(y.at(0, 1), -4);
  EXPECT_DOUBLE_EQ(y.at(0, 2), -1);
  // Row 1: [2 + 2, 4 + 2.5, 6 + 3] + b = [4.5, 5.5, 11].
  EXPECT_DOUBLE_EQ(y.at(1, 0), 4.5);
  EXPECT_DOUBLE_EQ(y.at(1, 1), 5.5);
  EXPECT_DOUBLE_EQ(y.at(1, 2), 11);
}

TEST(LinearTest, GradientsMatchFiniteDifferences) {
  CpuLayerFactory<double> factory;
  auto linear = factory.MakeLinear(5, 4, 7);
  RandomizeParams(linear->Params(), 100);
  CheckLayerGradients(linear.get(), RandomTensor(6, 5, 3), 11, "linear");
}

TEST(LinearTest, ParamGradsAccumulateAndDxMayBeSkipped) {
  CpuLayerFactory<double> factory;
  auto linear = factory.MakeLinear(3, 2, 7);
  const Tensor<double> x = RandomTensor(4, 3, 1);
  const Tensor<double> dy = RandomTensor(4, 2, 2);
  Tensor<double> y;
  linear->Forward(x, &y);
  linear->ZeroGrad();
  linear->Backward(dy, nullptr);
  const Tensor<double> once = linear->Params()[0]->grad;
  linear->Backward(dy, nullptr);
  const Tensor<double>& twice = linear->Params()[0]->grad;
  for (int64_t i = 0; i < once.size(); ++i) {
    EXPECT_DOUBLE_EQ(twice.data()[i], 2 * once.data()[i]);
  }
  linear->ZeroGrad();
  for (int64_t i = 0; i < twice.size(); ++i) EXPECT_EQ(twice.data()[i], 0.0);
}

TEST(LinearTest, InitIsDeterministicForASeedAndDiffersAcrossSeeds) {
  CpuLayerFactory<double> factory;
  auto a = factory.MakeLinear(8, 4, 42);
  auto b = factory.MakeLinear(8, 4, 42);
  auto c = factory.MakeLinear(8, 4, 43);
  const Tensor<double>& wa = a->Params()[0]->value;
  const Tensor<double>& wb = b->Params()[0]->value;
  const Tensor<double>& wc = c->Params()[0]->value;
  int differ = 0;
  const double limit = std::sqrt(6.0 / 12);
  for (int64_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(wa.data()[i], wb.data()[i]);
    differ += wa.data()[i] != wc.data()[i];
    EXPECT_LE(std::abs(wa.data()[i]), limit);
  }
  EXPECT_EQ(differ, wa.size());
  // Float and double backends draw the same values (up to float rounding).
  CpuLayerFactory<float> float_factory;
  auto f = float_factory.MakeLinear(8, 4, 42);
  for (int64_t i = 0; i < wa.size(); ++i) {
    EXPECT_EQ(f->Params()[0]->value.data()[i], static_cast<float>(wa.data()[i]));
  }
}

class ActivationGradientTest : public ::testing::TestWithParam<ActivationKind> {};

TEST_P(ActivationGradientTest, GradientsMatchFiniteDifferences) {
  CpuLayerFactory<double> factory;
  auto layer = factory.MakeActivation(GetParam(), 5, DiceOptions{});
  RandomizeParams(layer->Params(), 50);
  CheckLayerGradients(layer.get(), RandomTensor(7, 5, 9, -2, 2), 21,
                      ActivationKindName(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(AllKinds, ActivationGradientTest,
                         ::testing::Values(ActivationKind::kIdentity, ActivationKind::kRelu,
                                           ActivationKind::kSigmoid, ActivationKind::kTanh,
                                           ActivationKind::kPrelu, ActivationKind::kDice),
                         [](const auto& info) { return ActivationKindName(info.param); });

TEST(ActivationTest, ForwardValues) {
  CpuLayerFactory<double> factory;
  Tensor<double> x(1, 3);
  x.at(0, 0) = -2;
  x.at(0, 1) = 0;
  x.at(0, 2) = 3;
  Tensor<double> y;
  factory.MakeActivation(ActivationKind::kRelu, 3, {})->Forward(x, &y);
  EXPECT_EQ(y.at(0, 0), 0);
  EXPECT_EQ(y.at(0, 2), 3);
  factory.MakeActivation(ActivationKind::kPrelu, 3, {})->Forward(x, &y);
  EXPECT_DOUBLE_EQ(y.at(0, 0), -0.5);  // alpha starts at 0.25
  EXPECT_DOUBLE_EQ(y.at(0, 2), 3);
  factory.MakeActivation(ActivationKind::kSigmoid, 3, {})->Forward(x, &y);
  EXPECT_DOUBLE_EQ(y.at(0, 0), 1 / (1 + std::exp(2.0)));
  EXPECT_DOUBLE_EQ(y.at(0, 1), 0.5);
  factory.MakeActivation(ActivationKind::kTanh, 3, {})->Forward(x, &y);
  EXPECT_DOUBLE_EQ(y.at(0, 2), std::tanh(3.0));
}

// The sigmoid layer runs in SIMD blocks with Eigen's exp; it must agree with the scalar
// Sigmoid (std::exp) to a few ulps over a wide range, across block boundaries, in both
// precisions; where the result is below the smallest normal number (float: x < -87.3), to
// within that number.
template <typename T>
void ExpectSigmoidLayerMatchesScalar() {
  CpuLayerFactory<T> factory;
  const int n = 5003;  // several blocks and a partial one
  Tensor<T> x(1, n);
  for (int i = 0; i < n; ++i) x.at(0, i) = static_cast<T>(-100.0 + 200.0 * i / (n - 1));
  x.at(0, 17) = T(0);
  x.at(0, 18) = -T(0);
  x.at(0, 2048) = T(1e-30);
  x.at(0, 4095) = T(-1e-30);
  x.at(0, 100) = std::numeric_limits<T>::infinity();
  x.at(0, 101) = -std::numeric_limits<T>::infinity();
  Tensor<T> y;
  auto layer = factory.MakeActivation(ActivationKind::kSigmoid, n, {});
  layer->Forward(x, &y);
  // |got - want| <= 4 ulp |want| + the smallest normal number; the worst ratio to that bound.
  const double ulps = 4 * std::numeric_limits<T>::epsilon();
  const double tiny = std::numeric_limits<T>::min();
  int worst = 0;
  double worst_ratio = 0;
  for (int i = 0; i < n; ++i) {
    const double want = Sigmoid(x.at(0, i));
    const double got = y.at(0, i);
    ASSERT_TRUE(std::isfinite(got)) << "x = " << x.at(0, i);
    ASSERT_GE(got, 0);
    ASSERT_LE(got, 1);
    const double ratio = std::abs(got - want) / (ulps * std::abs(want) + tiny);
    if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
  }
  EXPECT_LE(worst_ratio, 1) << "at x = " << x.at(0, worst) << ": " << y.at(0, worst) << " vs "
                            << Sigmoid(x.at(0, worst));
  EXPECT_EQ(y.at(0, 17), T(0.5));
  EXPECT_EQ(y.at(0, 18), T(0.5));
  EXPECT_EQ(y.at(0, 100), T(1));
  EXPECT_LE(y.at(0, 101), std::numeric_limits<T>::min());

  // In place gives the same values; NaN stays NaN.
  Tensor<T> z = x;
  z.at(0, 3000) = std::numeric_limits<T>::quiet_NaN();
  layer->Forward(z, &z);
  EXPECT_TRUE(std::isnan(z.at(0, 3000)));
  for (int i = 0; i < n; ++i) {
    if (i == 3000) continue;
    ASSERT_EQ(z.at(0, i), y.at(0, i)) << "x = " << x.at(0, i);
  }
}

TEST(ActivationTest, SigmoidLayerMatchesTheScalarFormula) {
  ExpectSigmoidLayerMatchesScalar<float>();
  ExpectSigmoidLayerMatchesScalar<double>();
}

TEST(ActivationTest, ParseAndName) {
  ActivationKind kind;
  ASSERT_TRUE(ParseActivationKind("dice", &kind));
  EXPECT_EQ(kind, ActivationKind::kDice);
  EXPECT_STREQ(ActivationKindName(ActivationKind::kPrelu), "prelu");
  EXPECT_FALSE(ParseActivationKind("gelu", &kind));
}

TEST(DiceTest, TrainingUsesBatchStatisticsAndEvalUsesRunningOnes) {
  CpuLayerFactory<double> factory;
  DiceOptions options;
  options.momentum = 0.5;
  auto dice = factory.MakeActivation(ActivationKind::kDice, 1, options);
  ASSERT_EQ(dice->Buffers().size(), 2u);
  Tensor<double> x(2, 1);
  x.at(0, 0) = 1;
  x.at(1, 0) = 3;  // batch mean 2, variance 1
  Tensor<double> y;
  dice->Forward(x, &y);
  // alpha = 0: y = x * sigmoid((x - 2) / sqrt(1 + eps)).
  EXPECT_NEAR(y.at(0, 0), 1 / (1 + std::exp(1.0)), 1e-7);
  EXPECT_NEAR(y.at(1, 0), 3 / (1 + std::exp(-1.0)), 1e-7);
  // Running stats started at mean 0, var 1: now 0.5 * 0 + 0.5 * 2 = 1 and 0.5 * 1 + 0.5 * 1 = 1.
  EXPECT_DOUBLE_EQ(dice->Buffers()[0]->at(0, 0), 1.0);
  EXPECT_DOUBLE_EQ(dice->Buffers()[1]->at(0, 0), 1.0);
  dice->SetTraining(false);
  dice->Forward(x, &y);
  EXPECT_NEAR(y.at(0, 0), 1 * 0.5, 1e-7);  // (1 - 1) / 1 = 0 -> p = 0.5
  EXPECT_NEAR(y.at(1, 0), 3 / (1 + std::exp(-2.0)), 1e-7);
  EXPECT_DOUBLE_EQ(dice->Buffers()[0]->at(0, 0), 1.0);  // eval leaves running stats alone
}

TEST(DiceTest, EvalModeGradientsMatchFiniteDifferences) {
  CpuLayerFactory<double> factory;
  auto dice = factory.MakeActivation(ActivationKind::kDice, 4, DiceOptions{});
  RandomizeParams(dice->Params(), 5);
  dice->Buffers()[0]->Fill(0.3);
  dice->Buffers()[1]->Fill(1.7);
  dice->SetTraining(false);
  CheckLayerGradients(dice.get(), RandomTensor(5, 4, 9, -2, 2), 3, "dice eval");
}

TEST(LayerNormTest, ForwardNormalisesEachRow) {
  CpuLayerFactory<double> factory;
  auto ln = factory.MakeLayerNorm(4, 1e-5);
  Tensor<double> x(1, 4);
  for (int c = 0; c < 4; ++c) x.at(0, c) = c + 1;  // mean 2.5, var 1.25
  Tensor<double> y;
  ln->Forward(x, &y);
  for (int c = 0; c < 4; ++c) {
    EXPECT_NEAR(y.at(0, c), (c + 1 - 2.5) / std::sqrt(1.25 + 1e-5), 1e-12);
  }
}

TEST(LayerNormTest, GradientsMatchFiniteDifferences) {
  CpuLayerFactory<double> factory;
  auto ln = factory.MakeLayerNorm(6, 1e-5);
  RandomizeParams(ln->Params(), 8);
  CheckLayerGradients(ln.get(), RandomTensor(4, 6, 2, -3, 3), 5, "layernorm");
}

TEST(MlpTest, StructureNamesAndOutputShape) {
  CpuLayerFactory<double> factory;
  MlpOptions options;
  options.hidden = {8, 4};
  options.out = 2;
  options.activation = ActivationKind::kPrelu;
  Mlp<double> mlp(&factory, 5, options, 1);
  std::vector<std::string> names;
  for (Param<double>* p : mlp.Params()) names.push_back(p->name);
  EXPECT_EQ(names, (std::vector<std::string>{"l0.w", "l0.b", "l1.alpha", "l2.w", "l2.b", "l3.alpha",
                                             "l4.w", "l4.b"}));
  EXPECT_EQ(ParamCount(mlp.Params()), 5 * 8 + 8 + 8 + 8 * 4 + 4 + 4 + 4 * 2 + 2);
  Tensor<double> y;
  mlp.Forward(RandomTensor(3, 5, 1), &y);
  EXPECT_EQ(y.rows(), 3);
  EXPECT_EQ(y.cols(), 2);
}

class MlpGradientTest : public ::testing::TestWithParam<ActivationKind> {};

TEST_P(MlpGradientTest, GradientsMatchFiniteDifferences) {
  CpuLayerFactory<double> factory;
  MlpOptions options;
  options.hidden = {6, 3};
  options.out = 2;
  options.activation = GetParam();
  options.output_activation = ActivationKind::kSigmoid;
  auto mlp = factory.MakeMlp(4, options, 77);
  RandomizeParams(mlp->Params(), 300);
  CheckLayerGradients(mlp.get(), RandomTensor(5, 4, 12, -1.5, 1.5), 13,
                      std::string("mlp/") + ActivationKindName(GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Activations, MlpGradientTest,
                         ::testing::Values(ActivationKind::kRelu, ActivationKind::kSigmoid,
                                           ActivationKind::kTanh, ActivationKind::kPrelu,
                                           ActivationKind::kDice),
                         [](const auto& info) { return ActivationKindName(info.param); });

TEST(MlpTest, SameSeedSameInitDifferentSeedDifferent) {
  CpuLayerFactory<float> factory;
  MlpOptions options;
  options.hidden = {16};
  auto a = factory.MakeMlp(8, options, 5);
  auto b = factory.MakeMlp(8, options, 5);
  auto c = factory.MakeMlp(8, options, 6);
  std::vector<float> va(ParamCount(a->Params())), vb(va.size()), vc(va.size());
  CopyValuesTo(a->Params(), va.data());
  CopyValuesTo(b->Params(), vb.data());
  CopyValuesTo(c->Params(), vc.data());
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  // The two Linear layers of one MLP get different seeds.
  EXPECT_NE(a->Params()[0]->value.at(0, 0), a->Params()[2]->value.at(0, 0));
}

TEST(ParamsTest, FlatCopiesRoundTrip) {
  CpuLayerFactory<double> factory;
  MlpOptions options;
  options.hidden = {3};
  auto mlp = factory.MakeMlp(2, options, 1);
  std::vector<Param<double>*> params = mlp->Params();
  const int64_t n = ParamCount(params);
  std::vector<double> flat(n);
  for (int64_t i = 0; i < n; ++i) flat[i] = 0.5 * i;
  CopyGradsFrom(params, flat.data());
  CopyValuesFrom(params, flat.data());
  EXPECT_EQ(params[1]->grad.at(0, 0), 0.5 * 6);  // after w [2, 3]
  std::vector<double> back(n);
  CopyGradsTo(params, back.data());
  EXPECT_EQ(back, flat);
  CopyValuesTo(params, back.data());
  EXPECT_EQ(back, flat);
}

TEST(ConcatSplitTest, ConcatThenSplitRoundTrips) {
  const Tensor<double> a = RandomTensor(3, 2, 1);
  const Tensor<double> b = RandomTensor(3, 4, 2);
  const Tensor<double> c = RandomTensor(3, 1, 3);
  Tensor<double> y;
  ConcatCols<double>({&a, &b, &c}, &y);
  ASSERT_EQ(y.cols(), 7);
  EXPECT_EQ(y.at(1, 0), a.at(1, 0));
  EXPECT_EQ(y.at(2, 3), b.at(2, 1));
  EXPECT_EQ(y.at(0, 6), c.at(0, 0));
  Tensor<double> a2, c2;
  SplitCols<double>(y, {2, 4, 1}, {&a2, nullptr, &c2});
  for (int64_t i = 0; i < a.size(); ++i) EXPECT_EQ(a2.data()[i], a.data()[i]);
  for (int64_t i = 0; i < c.size(); ++i) EXPECT_EQ(c2.data()[i], c.data()[i]);
}

TEST(ConcatSplitTest, SplitIsTheGradientOfConcat) {
  Tensor<double> a = RandomTensor(3, 2, 1);
  Tensor<double> b = RandomTensor(3, 4, 2);
  const Tensor<double> r = RandomTensor(3, 6, 3);
  Tensor<double> da, db;
  SplitCols<double>(r, {2, 4}, {&da, &db});
  auto loss = [&]() {
    Tensor<double> y;
    ConcatCols<double>({&a, &b}, &y);
    return Dot(y, r);
  };
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &a, da, "concat da"), 0);
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &b, db, "concat db"), 0);
}

TEST(PoolTest, SumAndMeanOfPackedAndPaddedBags) {
  CpuLayerFactory<double> factory;
  // Packed: bag 0 = rows 0..1, bag 1 empty, bag 2 = row 2.
  Tensor<double> rows(3, 2);
  const double v[] = {1, 2, 3, 4, 10, 20};
  std::copy(v, v + 6, rows.data());
  Tensor<double> out;
  factory.MakePool(PoolMode::kSum)->Forward(rows, {2, 0, 1}, 0, &out);
  ASSERT_EQ(out.rows(), 3);
  EXPECT_EQ(out.at(0, 0), 4);
  EXPECT_EQ(out.at(0, 1), 6);
  EXPECT_EQ(out.at(1, 0), 0);
  EXPECT_EQ(out.at(2, 1), 20);
  factory.MakePool(PoolMode::kMean)->Forward(rows, {2, 0, 1}, 0, &out);
  EXPECT_EQ(out.at(0, 0), 2);
  EXPECT_EQ(out.at(1, 1), 0);
  EXPECT_EQ(out.at(2, 0), 10);
  // Padded, max_len 3: bag 0 holds 1 row, bag 1 holds 0; the padding is ignored.
  Tensor<double> padded(6, 1, 99);
  padded.at(0, 0) = 5;
  factory.MakePool(PoolMode::kMean)->Forward(padded, {1, 0}, 3, &out);
  EXPECT_EQ(out.at(0, 0), 5);
  EXPECT_EQ(out.at(1, 0), 0);
}

class PoolGradientTest : public ::testing::TestWithParam<std::tuple<PoolMode, int>> {};

TEST_P(PoolGradientTest, GradientsMatchFiniteDifferences) {
  const auto [mode, max_len] = GetParam();
  CpuLayerFactory<double> factory;
  auto pool = factory.MakePool(mode);
  const std::vector<int> lengths = {3, 0, 1, 4};
  Tensor<double> rows = RandomTensor(max_len > 0 ? 4 * max_len : 8, 3, 4);
  Tensor<double> out;
  pool->Forward(rows, lengths, max_len, &out);
  const Tensor<double> r = RandomTensor(4, 3, 5);
  Tensor<double> drows;
  pool->Backward(r, &drows);
  auto loss = [&]() {
    Tensor<double> y;
    pool->Forward(rows, lengths, max_len, &y);
    return Dot(y, r);
  };
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &rows, drows, "pool drows"), 0);
}

INSTANTIATE_TEST_SUITE_P(Modes, PoolGradientTest,
                         ::testing::Combine(::testing::Values(PoolMode::kSum, PoolMode::kMean),
                                            ::testing::Values(0, 4)));

TEST(BceTest, WeightedLossMatchesHandComputation) {
  Tensor<double> logits(3, 1);
  logits.at(0, 0) = 0;
  logits.at(1, 0) = 2;
  logits.at(2, 0) = -1;
  const std::vector<double> labels = {1, 0, 0};
  const std::vector<double> weights = {2, 1, 0.5};
  Tensor<double> dlogits;
  std::vector<double> per_sample;
  const double loss = BinaryCrossEntropy<double>(logits, labels, weights, &dlogits, &per_sample);
  const double b0 = std::log(2.0);                 // -log(sigmoid(0))
  const double b1 = std::log(1 + std::exp(2.0));   // -log(1 - sigmoid(2))
  const double b2 = std::log(1 + std::exp(-1.0));  // -log(1 - sigmoid(-1))
  EXPECT_NEAR(loss, (2 * b0 + 1 * b1 + 0.5 * b2) / 3, 1e-14);
  EXPECT_NEAR(per_sample[1], b1, 1e-14);
  EXPECT_NEAR(dlogits.at(0, 0), 2 * (0.5 - 1) / 3, 1e-14);
  EXPECT_NEAR(dlogits.at(1, 0), 1 / (1 + std::exp(-2.0)) / 3, 1e-14);
  // No weights means weight 1 everywhere.
  EXPECT_NEAR(BinaryCrossEntropy<double>(logits, labels, {}, nullptr), (b0 + b1 + b2) / 3, 1e-14);
}

TEST(BceTest, GradientMatchesFiniteDifferences) {
  Tensor<double> logits = RandomTensor(6, 1, 3, -4, 4);
  const std::vector<double> labels = {1, 0, 1, 1, 0, 0.3};
  const std::vector<double> weights = {1, 2, 0.5, 0, 3, 1};
  Tensor<double> dlogits;
  BinaryCrossEntropy<double>(logits, labels, weights, &dlogits);
  auto loss = [&]() { return BinaryCrossEntropy<double>(logits, labels, weights, nullptr); };
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &logits, dlogits, "bce dlogits"), 0);
}

TEST(BceTest, ExtremeLogitsStayFinite) {
  Tensor<float> logits(2, 1);
  logits.at(0, 0) = 200;
  logits.at(1, 0) = -200;
  const std::vector<float> labels = {0, 1};
  Tensor<float> dlogits;
  const float loss = BinaryCrossEntropy<float>(logits, labels, {}, &dlogits);
  EXPECT_NEAR(loss, 200.0f, 1e-3);
  EXPECT_NEAR(dlogits.at(0, 0), 0.5f, 1e-6);
  EXPECT_NEAR(dlogits.at(1, 0), -0.5f, 1e-6);
}

TEST(FloatBackendTest, FloatMlpAgreesWithDoubleMlp) {
  CpuLayerFactory<float> ff;
  CpuLayerFactory<double> fd;
  MlpOptions options;
  options.hidden = {32, 16};
  options.activation = ActivationKind::kRelu;
  auto mf = ff.MakeMlp(10, options, 9);
  auto md = fd.MakeMlp(10, options, 9);
  const Tensor<double> xd = RandomTensor(64, 10, 1);
  Tensor<float> xf(64, 10);
  for (int64_t i = 0; i < xd.size(); ++i) xf.data()[i] = static_cast<float>(xd.data()[i]);
  Tensor<float> yf;
  Tensor<double> yd;
  mf->Forward(xf, &yf);
  md->Forward(xd, &yd);
  for (int64_t i = 0; i < yd.size(); ++i) EXPECT_NEAR(yf.data()[i], yd.data()[i], 1e-5);
}

}  // namespace
}  // namespace choir::models
