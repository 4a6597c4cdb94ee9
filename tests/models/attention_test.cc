// DIN target attention: a hand-computed forward, masking of padded positions, and gradients of
// query, keys and attention-MLP parameters against finite differences (double precision,
// tolerance in grad_check.h) with sequence lengths 0, 1, partial and full.
#include <algorithm>
#include <cmath>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "gtest/gtest.h"
#include "models/layers.h"
#include "models/tensor.h"
#include "tests/models/grad_check.h"

namespace choir::models {
namespace {

using testing::Dot;
using testing::ExpectMatchesFiniteDifferences;
using testing::RandomTensor;

// dim 1, no hidden layer: score = 1 q + 2 k + 3 (q - k) + 4 q k + 0.5.
std::unique_ptr<TargetAttention<double>> HandAttention(bool softmax) {
  CpuLayerFactory<double> factory;
  AttentionOptions options;
  options.hidden = {};
  options.softmax = softmax;
  auto att = factory.MakeAttention(1, options, 3);
  std::vector<Param<double>*> params = att->Params();
  EXPECT_EQ(params.size(), 2u);
  for (int i = 0; i < 4; ++i) params[0]->value.at(i, 0) = i + 1;
  params[1]->value.at(0, 0) = 0.5;
  return att;
}

struct HandCase {
  Tensor<double> query{3, 1};
  Tensor<double> keys{9, 1};
  std::vector<int> lengths = {2, 0, 3};
  HandCase() {
    const double q[] = {2, -1, 1};
    const double k[] = {1, 3, 5 /*pad*/, 7, 7, 7 /*all pad*/, 0.5, -1, 2};
    std::copy(q, q + 3, query.data());
    std::copy(k, k + 9, keys.data());
  }
};

TEST(TargetAttentionTest, ForwardMatchesHandComputation) {
  auto att = HandAttention(false);
  HandCase c;
  Tensor<double> out;
  att->Forward(c.query, c.keys, c.lengths, &out);
  ASSERT_EQ(out.rows(), 3);
  ASSERT_EQ(out.cols(), 1);
  // Sample 0: scores 15.5 (k = 1), 29.5 (k = 3); the padded 5 is ignored.
  EXPECT_DOUBLE_EQ(att->weights().at(0, 0), 15.5);
  EXPECT_DOUBLE_EQ(att->weights().at(0, 1), 29.5);
  EXPECT_EQ(att->weights().at(0, 2), 0);
  EXPECT_DOUBLE_EQ(out.at(0, 0), 15.5 * 1 + 29.5 * 3);
  // Sample 1: length 0 -> zero output, zero weights.
  EXPECT_EQ(out.at(1, 0), 0);
  EXPECT_EQ(att->weights().at(1, 0), 0);
  // Sample 2: scores 6, 1.5, 10.5.
  EXPECT_DOUBLE_EQ(att->weights().at(2, 1), 1.5);
  EXPECT_DOUBLE_EQ(out.at(2, 0), 6 * 0.5 + 1.5 * -1 + 10.5 * 2);
}

TEST(TargetAttentionTest, SoftmaxForwardMatchesHandComputation) {
  auto att = HandAttention(true);
  HandCase c;
  Tensor<double> out;
  att->Forward(c.query, c.keys, c.lengths, &out);
  const double w0 = 1 / (1 + std::exp(29.5 - 15.5));
  EXPECT_NEAR(att->weights().at(0, 0), w0, 1e-15);
  EXPECT_NEAR(out.at(0, 0), w0 * 1 + (1 - w0) * 3, 1e-14);
  EXPECT_EQ(att->weights().at(0, 2), 0);
  EXPECT_EQ(out.at(1, 0), 0);
  const double z = std::exp(6.0) + std::exp(1.5) + std::exp(10.5);
  EXPECT_NEAR(out.at(2, 0), (std::exp(6.0) * 0.5 - std::exp(1.5) + std::exp(10.5) * 2) / z, 1e-14);
  double sum = 0;
  for (int j = 0; j < 3; ++j) sum += att->weights().at(2, j);
  EXPECT_NEAR(sum, 1, 1e-15);
}

TEST(TargetAttentionTest, PaddedKeysChangeNothing) {
  CpuLayerFactory<double> factory;
  AttentionOptions options;
  options.activation = ActivationKind::kDice;  // batch statistics must not see padding either
  auto att = factory.MakeAttention(4, options, 9);
  const Tensor<double> query = RandomTensor(3, 4, 1);
  Tensor<double> keys = RandomTensor(3 * 5, 4, 2);
  const std::vector<int> lengths = {5, 2, 0};
  Tensor<double> out1, out2;
  att->Forward(query, keys, lengths, &out1);
  for (int row : {7, 8, 9, 10, 11, 12, 13, 14}) {
    for (int c = 0; c < 4; ++c) keys.at(row, c) = 1e3 * (row + c);
  }
  att->Forward(query, keys, lengths, &out2);
  for (int64_t i = 0; i < out1.size(); ++i) EXPECT_EQ(out1.data()[i], out2.data()[i]);
  Tensor<double> dquery, dkeys;
  att->Backward(RandomTensor(3, 4, 3), &dquery, &dkeys);
  for (int row : {7, 8, 9, 10, 11, 12, 13, 14}) {
    for (int c = 0; c < 4; ++c) EXPECT_EQ(dkeys.at(row, c), 0) << row;
  }
  for (int c = 0; c < 4; ++c) EXPECT_EQ(dquery.at(2, c), 0);  // length 0: no gradient
}

TEST(TargetAttentionTest, InitIsDeterministicForASeed) {
  CpuLayerFactory<float> factory;
  auto a = factory.MakeAttention(8, AttentionOptions{}, 1);
  auto b = factory.MakeAttention(8, AttentionOptions{}, 1);
  auto c = factory.MakeAttention(8, AttentionOptions{}, 2);
  std::vector<float> va(ParamCount(a->Params())), vb(va.size()), vc(va.size());
  EXPECT_EQ(va.size(), 32u * 36 + 36 + 36 + 1u);
  CopyValuesTo(a->Params(), va.data());
  CopyValuesTo(b->Params(), vb.data());
  CopyValuesTo(c->Params(), vc.data());
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
}

// The CPU attention computes the MLP's first Linear in a factored form; it must equal the
// plain MLP over the packed rows [q, k, q - k, q * k] with the same parameters: the weights,
// the parameter gradients and, by the chain rule through the concatenation (and the softmax),
// the input gradients. Float (the training precision) at 1e-5, and double at 1e-12.
template <typename T>
void ExpectCloseInNorm(const Tensor<T>& got, const Tensor<T>& want, double tolerance,
                       const std::string& what) {
  ASSERT_TRUE(got.SameShape(want)) << what;
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < want.size(); ++i) {
    diff += std::pow(static_cast<double>(got.data()[i]) - want.data()[i], 2);
    norm += std::pow(static_cast<double>(want.data()[i]), 2);
  }
  EXPECT_LE(std::sqrt(diff), tolerance * std::sqrt(norm)) << what;
}

template <typename T>
Tensor<T> Cast(const Tensor<double>& x) {
  Tensor<T> y(x.rows(), x.cols());
  std::copy(x.data(), x.data() + x.size(), y.data());
  return y;
}

template <typename T>
void ExpectFactoredAttentionMatchesTheMlp(ActivationKind activation, std::vector<int> hidden,
                                          bool softmax, double tolerance) {
  CpuLayerFactory<T> factory;
  AttentionOptions options;
  options.hidden = hidden;
  options.activation = activation;
  options.softmax = softmax;
  const int d = 16, max_len = 6;
  const std::vector<int> lengths = {6, 0, 3, 1, 5, 6, 2};
  const int b_size = static_cast<int>(lengths.size());
  auto att = factory.MakeAttention(d, options, 4);
  Mlp<T> mlp(&factory, 4 * d,
             MlpOptions{options.hidden, 1, options.activation, ActivationKind::kIdentity,
                        options.dice},
             99);
  std::vector<T> values(ParamCount(att->Params()));
  ASSERT_EQ(values.size(), static_cast<size_t>(ParamCount(mlp.Params())));
  CopyValuesTo(att->Params(), values.data());
  CopyValuesFrom(mlp.Params(), values.data());
  const Tensor<T> query = Cast<T>(RandomTensor(b_size, d, 1));
  const Tensor<T> keys = Cast<T>(RandomTensor(b_size * max_len, d, 2));
  const Tensor<T> dout = Cast<T>(RandomTensor(b_size, d, 3));

  Tensor<T> out, dquery, dkeys;
  att->Forward(query, keys, lengths, &out);
  att->ZeroGrad();
  att->Backward(dout, &dquery, &dkeys);

  // The reference: pack, run the MLP, normalise, and chain by hand.
  std::vector<std::pair<int, int>> valid;  // (sample, position)
  for (int b = 0; b < b_size; ++b) {
    for (int j = 0; j < lengths[b]; ++j) valid.emplace_back(b, j);
  }
  const int v = static_cast<int>(valid.size());
  Tensor<T> packed(v, 4 * d), scores;
  for (int i = 0; i < v; ++i) {
    const T* q = query.row(valid[i].first);
    const T* k = keys.row(valid[i].first * max_len + valid[i].second);
    for (int c = 0; c < d; ++c) {
      packed.at(i, c) = q[c];
      packed.at(i, d + c) = k[c];
      packed.at(i, 2 * d + c) = q[c] - k[c];
      packed.at(i, 3 * d + c) = q[c] * k[c];
    }
  }
  mlp.Forward(packed, &scores);
  mlp.ZeroGrad();
  std::vector<double> weight(v), dweight(v);
  for (int i = 0, first = 0; i < v; ++i) {
    const auto [b, j] = valid[i];
    if (j == 0) first = i;
    double dot = 0;
    for (int c = 0; c < d; ++c) dot += dout.at(b, c) * keys.at(b * max_len + j, c);
    dweight[i] = dot;
    weight[i] = scores.at(i, 0);
    if (softmax && j + 1 == lengths[b]) {  // the sample's last position: normalise its run
      double top = weight[first], sum = 0;
      for (int r = first; r <= i; ++r) top = std::max(top, weight[r]);
      for (int r = first; r <= i; ++r) sum += weight[r] = std::exp(weight[r] - top);
      for (int r = first; r <= i; ++r) weight[r] /= sum;
    }
  }
  Tensor<T> dscores(v, 1), dpacked;
  for (int i = 0, first = 0; i < v; ++i) {
    const auto [b, j] = valid[i];
    if (j == 0) first = i;
    EXPECT_NEAR(att->weights().at(b, j), weight[i], tolerance * std::max(1.0, std::abs(weight[i])));
    double inner = 0;
    for (int r = first; r < first + lengths[b]; ++r) inner += weight[r] * dweight[r];
    dscores.at(i, 0) = static_cast<T>(softmax ? weight[i] * (dweight[i] - inner) : dweight[i]);
  }
  mlp.Backward(dscores, &dpacked);
  Tensor<T> want_dquery(b_size, d), want_dkeys(b_size * max_len, d);
  for (int i = 0; i < v; ++i) {
    const auto [b, j] = valid[i];
    const int row = b * max_len + j;
    const T* g = dpacked.row(i);
    for (int c = 0; c < d; ++c) {
      want_dquery.at(b, c) += g[c] + g[2 * d + c] + g[3 * d + c] * keys.at(row, c);
      want_dkeys.at(row, c) += static_cast<T>(weight[i]) * dout.at(b, c) + g[d + c] -
                               g[2 * d + c] + g[3 * d + c] * query.at(b, c);
    }
  }
  ExpectCloseInNorm(dquery, want_dquery, tolerance, "dquery");
  ExpectCloseInNorm(dkeys, want_dkeys, tolerance, "dkeys");
  const std::vector<Param<T>*> got = att->Params(), want = mlp.Params();
  for (size_t i = 0; i < got.size(); ++i) {
    if (softmax && i + 1 == got.size()) {
      // The score's bias: the softmax is shift-invariant, so its exact gradient is 0 and both
      // sides are rounding residue of sum(dscores); bound them by that sum's terms.
      double terms = 0;
      for (int r = 0; r < v; ++r) terms += std::abs(static_cast<double>(dscores.at(r, 0)));
      EXPECT_LE(std::abs(static_cast<double>(got[i]->grad.at(0, 0))), tolerance * terms);
      EXPECT_LE(std::abs(static_cast<double>(want[i]->grad.at(0, 0))), tolerance * terms);
      continue;
    }
    ExpectCloseInNorm(got[i]->grad, want[i]->grad, tolerance, "d" + want[i]->name);
  }

  // Asking only for dkeys gives the same dkeys and parameter gradients.
  std::vector<Tensor<T>> grads;
  for (Param<T>* p : got) grads.push_back(p->grad);
  att->ZeroGrad();
  Tensor<T> dkeys_only;
  att->Backward(dout, nullptr, &dkeys_only);
  ExpectCloseInNorm(dkeys_only, dkeys, 0, "dkeys alone");
  for (size_t i = 0; i < got.size(); ++i) {
    ExpectCloseInNorm(got[i]->grad, grads[i], 0, "d" + want[i]->name + " with dkeys alone");
  }
}

TEST(TargetAttentionTest, FactoredFirstLayerMatchesTheMlpOnPackedRows) {
  for (ActivationKind activation : {ActivationKind::kSigmoid, ActivationKind::kDice}) {
    for (const std::vector<int>& hidden : {std::vector<int>{36, 8}, std::vector<int>{}}) {
      for (bool softmax : {false, true}) {
        SCOPED_TRACE(std::string(ActivationKindName(activation)) + " hidden " +
                     std::to_string(hidden.size()) + (softmax ? " softmax" : " raw"));
        ExpectFactoredAttentionMatchesTheMlp<float>(activation, hidden, softmax, 1e-5);
        ExpectFactoredAttentionMatchesTheMlp<double>(activation, hidden, softmax, 1e-12);
      }
    }
  }
}

// (activation, softmax)
class AttentionGradientTest : public ::testing::TestWithParam<std::tuple<ActivationKind, bool>> {};

TEST_P(AttentionGradientTest, GradientsMatchFiniteDifferences) {
  const auto [activation, softmax] = GetParam();
  CpuLayerFactory<double> factory;
  AttentionOptions options;
  options.hidden = {7, 3};
  options.activation = activation;
  options.softmax = softmax;
  const int d = 3;
  const int max_len = 4;
  auto att = factory.MakeAttention(d, options, 21);
  uint64_t seed = 500;
  for (Param<double>* p : att->Params()) {
    p->value = RandomTensor(p->value.rows(), p->value.cols(), seed++, -0.8, 0.8);
  }
  // Lengths 0, 1, partial and full.
  const std::vector<int> lengths = {0, 1, 3, max_len, 2};
  const int b_size = static_cast<int>(lengths.size());
  Tensor<double> query = RandomTensor(b_size, d, 1);
  Tensor<double> keys = RandomTensor(b_size * max_len, d, 2);
  const Tensor<double> r = RandomTensor(b_size, d, 3);

  Tensor<double> out;
  att->Forward(query, keys, lengths, &out);
  att->ZeroGrad();
  Tensor<double> dquery, dkeys;
  att->Backward(r, &dquery, &dkeys);
  std::vector<Tensor<double>> grads;
  for (Param<double>* p : att->Params()) grads.push_back(p->grad);

  auto loss = [&]() {
    Tensor<double> y;
    att->Forward(query, keys, lengths, &y);
    return Dot(y, r);
  };
  const std::string what =
      std::string(ActivationKindName(activation)) + (softmax ? "/softmax" : "/raw");
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &query, dquery, what + " dquery"), 0);
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &keys, dkeys, what + " dkeys"), 0);
  std::vector<Param<double>*> params = att->Params();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &params[i]->value, grads[i],
                                             what + " d" + params[i]->name),
              0);
  }

  // Parameter gradients alone (no input gradients requested) are the same.
  att->Forward(query, keys, lengths, &out);
  att->ZeroGrad();
  att->Backward(r, nullptr, nullptr);
  for (size_t i = 0; i < params.size(); ++i) {
    for (int64_t j = 0; j < grads[i].size(); ++j) {
      EXPECT_DOUBLE_EQ(params[i]->grad.data()[j], grads[i].data()[j]);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Variants, AttentionGradientTest,
    ::testing::Combine(::testing::Values(ActivationKind::kSigmoid, ActivationKind::kPrelu,
                                         ActivationKind::kDice, ActivationKind::kRelu,
                                         ActivationKind::kTanh),
                       ::testing::Bool()),
    [](const auto& info) {
      return std::string(ActivationKindName(std::get<0>(info.param))) +
             (std::get<1>(info.param) ? "_softmax" : "_raw");
    });

TEST(TargetAttentionTest, EmptyBatchAndAllEmptySequences) {
  CpuLayerFactory<double> factory;
  auto att = factory.MakeAttention(2, AttentionOptions{}, 1);
  Tensor<double> out, dq, dk;
  att->Forward(Tensor<double>(2, 2, 1.0), Tensor<double>(6, 2, 1.0), {0, 0}, &out);
  EXPECT_EQ(out.rows(), 2);
  EXPECT_EQ(out.at(1, 1), 0);
  att->Backward(Tensor<double>(2, 2, 1.0), &dq, &dk);
  EXPECT_EQ(dk.rows(), 6);
  EXPECT_EQ(dq.at(0, 0), 0);
  att->Forward(Tensor<double>(0, 2), Tensor<double>(0, 2), {}, &out);
  EXPECT_EQ(out.rows(), 0);
}

}  // namespace
}  // namespace choir::models
