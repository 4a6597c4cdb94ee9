// RankingModel as the trainer wires it: input gradients (dslots, dsequences) against central
// finite differences of BCE(logits, labels), computed in float, and which inputs the models
// look at. The layer library itself is checked in double in tests/models; these tests pin the
// model's wiring: the din query copied from the target slot's columns, dquery added back into
// those columns, and the split of the tower input's gradient into slots | dense | pooled.
#include "models/ranking_model.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <ostream>
#include <random>
#include <string>
#include <vector>

#include "core/proto/job.pb.h"
#include "gtest/gtest.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models {
namespace {

constexpr int kBatch = 4;
constexpr int kSlots = 3;
constexpr int kDim = 4;
constexpr int kMaxLen = 5;

// Finite differences in float. Inputs are O(1); with eps = 1e-2 the rounding noise of a float
// loss (~1e-7 absolute) contributes ~1e-5 to a central difference and the truncation error
// (eps^2 / 6 * f''') ~2e-5 for this smooth (tanh / sigmoid) network. Analytic gradients are
// ~1e-3..1e-1, so |analytic - numeric| <= kRelTol * max(|a|, |n|) + kAbsTol is robust and
// still catches a gradient that lands in the wrong columns or is missing a term.
constexpr float kFdEps = 1e-2f;
constexpr double kRelTol = 2e-2;
constexpr double kAbsTol = 2e-4;

ModelConfig Config(const std::string& type) {
  ModelConfig c;
  c.set_type(type);
  c.add_hidden(8);
  c.set_activation("tanh");  // smooth, so finite differences do not straddle kinks
  c.add_attention_hidden(6);
  return c;
}

// Two sequences whose targets are slot 2 and slot 0, so a query taken from (or a gradient
// added to) the wrong columns shows.
ModelShape Shape(int num_dense) {
  ModelShape s;
  s.num_slots = kSlots;
  s.embedding_dim = kDim;
  s.num_dense = num_dense;
  s.max_seq_len = kMaxLen;
  s.sequence_targets = {2, 0};
  return s;
}

void FillUniform(Tensor<float>* t, std::mt19937_64* rng, float lo, float hi) {
  std::uniform_real_distribution<float> dist(lo, hi);
  for (int64_t i = 0; i < t->size(); ++i) t->data()[i] = dist(*rng);
}

// Random inputs; sequence lengths cover 0, 1, a partial and the full max_seq_len. Padded rows
// hold `pad` (the trainer pads with 0).
ModelInputs RandomInputs(const ModelShape& shape, uint64_t seed, float pad = 0.0f) {
  std::mt19937_64 rng(seed);
  ModelInputs in;
  in.slots.Resize(kBatch, shape.num_slots * shape.embedding_dim);
  FillUniform(&in.slots, &rng, -1, 1);
  in.dense.Resize(kBatch, shape.num_dense);
  FillUniform(&in.dense, &rng, 0, 2);
  const std::vector<std::vector<int>> lengths = {{0, 1, kMaxLen, 3}, {kMaxLen, 0, 1, 2}};
  for (size_t q = 0; q < shape.sequence_targets.size(); ++q) {
    Tensor<float> seq(kBatch * kMaxLen, shape.embedding_dim);
    FillUniform(&seq, &rng, -1, 1);
    for (int b = 0; b < kBatch; ++b) {
      for (int j = lengths[q][b]; j < kMaxLen; ++j) {
        std::fill(seq.row(b * kMaxLen + j), seq.row(b * kMaxLen + j) + shape.embedding_dim, pad);
      }
    }
    in.sequences.push_back(seq);
    in.lengths.push_back(lengths[q]);
  }
  return in;
}

const std::vector<float> kLabels = {1, 0, 0, 1};

// Mean BCE over the batch, accumulated in double from the float logits.
double Loss(RankingModel* model, const ModelInputs& in) {
  Tensor<float> logits;
  model->Forward(in, &logits);
  double sum = 0;
  for (int b = 0; b < logits.rows(); ++b) {
    const double z = logits.at(b, 0), y = kLabels[b];
    sum += std::max(z, 0.0) - z * y + std::log1p(std::exp(-std::abs(z)));
  }
  return sum / logits.rows();
}

// Compares `analytic` with central differences of Loss over every element of `*x` (restored
// afterwards). Returns the number of elements with |analytic| > 10 * kAbsTol, so callers can
// check that the comparison was not vacuous.
int ExpectMatchesFiniteDifferences(RankingModel* model, ModelInputs* in, Tensor<float>* x,
                                   const Tensor<float>& analytic, const std::string& what) {
  EXPECT_TRUE(x->SameShape(analytic)) << what << ": " << analytic.rows() << "x" << analytic.cols()
                                      << " vs " << x->rows() << "x" << x->cols();
  if (!x->SameShape(analytic)) return 0;
  int bad = 0, significant = 0;
  for (int64_t i = 0; i < x->size(); ++i) {
    const float saved = x->data()[i];
    x->data()[i] = saved + kFdEps;
    const double plus = Loss(model, *in);
    x->data()[i] = saved - kFdEps;
    const double minus = Loss(model, *in);
    x->data()[i] = saved;
    const double numeric = (plus - minus) / (2.0 * kFdEps);
    const double a = analytic.data()[i];
    significant += std::abs(a) > 10 * kAbsTol;
    if (std::abs(a - numeric) > kRelTol * std::max(std::abs(a), std::abs(numeric)) + kAbsTol) {
      if (++bad <= 8) {
        ADD_FAILURE() << what << "[" << i / x->cols() << "," << i % x->cols() << "]: analytic " << a
                      << " numeric " << numeric;
      }
    }
  }
  EXPECT_EQ(bad, 0) << what;
  return significant;
}

struct GradCase {
  std::string type;
  int num_dense;
};

void PrintTo(const GradCase& c, std::ostream* os) { *os << c.type << " with " << c.num_dense << " dense"; }

class RankingModelGradientTest : public ::testing::TestWithParam<GradCase> {};

TEST_P(RankingModelGradientTest, InputGradientsMatchFiniteDifferences) {
  const GradCase c = GetParam();
  const ModelShape shape = Shape(c.num_dense);
  CpuLayerFactory<float> factory;
  absl::StatusOr<std::unique_ptr<RankingModel>> model = RankingModel::Create(Config(c.type), shape, 7, &factory);
  ASSERT_TRUE(model.ok()) << model.status();
  RankingModel* m = model->get();
  ModelInputs in = RandomInputs(shape, 11);
  if (c.type == "dnn") {
    in.sequences.clear();  // the trainer does not read sequences for dnn
    in.lengths.clear();
  }

  Tensor<float> logits, dlogits, dslots;
  std::vector<Tensor<float>> dseqs;
  m->Forward(in, &logits);
  ASSERT_EQ(logits.rows(), kBatch);
  ASSERT_EQ(logits.cols(), 1);
  BinaryCrossEntropy<float>(logits, kLabels, {}, &dlogits);
  m->Backward(dlogits, &dslots, &dseqs);

  ASSERT_EQ(dslots.rows(), kBatch);
  ASSERT_EQ(dslots.cols(), kSlots * kDim);
  const int significant = ExpectMatchesFiniteDifferences(m, &in, &in.slots, dslots, c.type + " dslots");
  EXPECT_GE(significant, kBatch * kSlots * kDim / 2) << "too few non-negligible gradients to test";

  if (c.type == "dnn") {
    EXPECT_TRUE(dseqs.empty());
    return;
  }
  ASSERT_EQ(dseqs.size(), 2u);
  int seq_significant = 0;
  for (int q = 0; q < 2; ++q) {
    ASSERT_EQ(dseqs[q].rows(), kBatch * kMaxLen);
    ASSERT_EQ(dseqs[q].cols(), kDim);
    // Padded rows get exactly 0.
    for (int b = 0; b < kBatch; ++b) {
      for (int j = in.lengths[q][b]; j < kMaxLen; ++j) {
        for (int k = 0; k < kDim; ++k) {
          EXPECT_EQ(dseqs[q].at(b * kMaxLen + j, k), 0.0f) << "sequence " << q << " sample " << b << " pos " << j;
        }
      }
    }
    seq_significant += ExpectMatchesFiniteDifferences(m, &in, &in.sequences[q], dseqs[q],
                                                      c.type + " dsequences[" + std::to_string(q) + "]");
  }
  EXPECT_GE(seq_significant, 10) << "too few non-negligible sequence gradients to test";
}

INSTANTIATE_TEST_SUITE_P(Models, RankingModelGradientTest,
                         ::testing::Values(GradCase{"dnn", 2}, GradCase{"dnn", 0}, GradCase{"din", 2},
                                           GradCase{"din", 0}),
                         [](const ::testing::TestParamInfo<GradCase>& info) {
                           return info.param.type + "_dense" + std::to_string(info.param.num_dense);
                         });

TEST(RankingModelTest, SecondBackwardOverwritesInputGradients) {
  // dslots and dsequences are overwritten, not accumulated (the trainer reuses its tensors).
  const ModelShape shape = Shape(2);
  CpuLayerFactory<float> factory;
  absl::StatusOr<std::unique_ptr<RankingModel>> model = RankingModel::Create(Config("din"), shape, 7, &factory);
  ASSERT_TRUE(model.ok()) << model.status();
  const ModelInputs in = RandomInputs(shape, 11);
  Tensor<float> logits, dlogits, dslots1, dslots2;
  std::vector<Tensor<float>> dseqs1, dseqs2;
  (*model)->Forward(in, &logits);
  BinaryCrossEntropy<float>(logits, kLabels, {}, &dlogits);
  (*model)->Backward(dlogits, &dslots1, &dseqs1);
  dslots2 = dslots1;
  dseqs2 = dseqs1;
  (*model)->Forward(in, &logits);
  (*model)->Backward(dlogits, &dslots2, &dseqs2);
  ASSERT_TRUE(dslots1.SameShape(dslots2));
  for (int64_t i = 0; i < dslots1.size(); ++i) EXPECT_EQ(dslots1.data()[i], dslots2.data()[i]) << i;
  ASSERT_EQ(dseqs1.size(), dseqs2.size());
  for (size_t q = 0; q < dseqs1.size(); ++q) {
    for (int64_t i = 0; i < dseqs1[q].size(); ++i) EXPECT_EQ(dseqs1[q].data()[i], dseqs2[q].data()[i]);
  }
}

bool BitwiseEqual(const Tensor<float>& a, const Tensor<float>& b) {
  return a.SameShape(b) && std::equal(a.data(), a.data() + a.size(), b.data(),
                                      [](float x, float y) { return std::memcmp(&x, &y, sizeof x) == 0; });
}

TEST(RankingModelTest, DnnIgnoresSequences) {
  const ModelShape shape = Shape(2);  // sequence targets given, dnn drops them
  CpuLayerFactory<float> factory;
  absl::StatusOr<std::unique_ptr<RankingModel>> model = RankingModel::Create(Config("dnn"), shape, 7, &factory);
  ASSERT_TRUE(model.ok()) << model.status();
  EXPECT_FALSE((*model)->uses_sequences());
  EXPECT_TRUE((*model)->shape().sequence_targets.empty());
  ModelInputs in = RandomInputs(shape, 11);
  Tensor<float> base, other;
  (*model)->Forward(in, &base);
  ModelInputs changed = in;
  std::mt19937_64 rng(99);
  for (auto& seq : changed.sequences) FillUniform(&seq, &rng, -5, 5);
  changed.lengths = {{kMaxLen, kMaxLen, 0, 1}, {2, 3, 4, kMaxLen}};
  (*model)->Forward(changed, &other);
  EXPECT_TRUE(BitwiseEqual(base, other));
  ModelInputs none = in;
  none.sequences.clear();
  none.lengths.clear();
  (*model)->Forward(none, &other);
  EXPECT_TRUE(BitwiseEqual(base, other));
}

class DinSensitivityTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<RankingModel>> m = RankingModel::Create(Config("din"), shape_, 7, &factory_);
    ASSERT_TRUE(m.ok()) << m.status();
    model_ = std::move(*m);
    // Padded positions hold NaN: the attention must never read them.
    in_ = RandomInputs(shape_, 11, std::numeric_limits<float>::quiet_NaN());
    model_->Forward(in_, &base_);
    for (int b = 0; b < kBatch; ++b) ASSERT_TRUE(std::isfinite(base_.at(b, 0))) << b;
  }

  ModelShape shape_ = Shape(2);
  CpuLayerFactory<float> factory_;
  std::unique_ptr<RankingModel> model_;
  ModelInputs in_;
  Tensor<float> base_;
};

TEST_F(DinSensitivityTest, ChangingAValidSequenceElementChangesOnlyThatSamplesLogit) {
  // Sample 2 has length 5 in sequence 0 and length 1 in sequence 1.
  for (auto [q, j] : {std::pair{0, 0}, std::pair{0, 4}, std::pair{1, 0}}) {
    ModelInputs changed = in_;
    float* row = changed.sequences[q].row(2 * kMaxLen + j);
    for (int k = 0; k < kDim; ++k) row[k] = -row[k] + 0.5f;
    Tensor<float> out;
    model_->Forward(changed, &out);
    for (int b = 0; b < kBatch; ++b) {
      if (b == 2) {
        EXPECT_GT(std::abs(out.at(b, 0) - base_.at(b, 0)), 1e-5f) << "sequence " << q << " position " << j;
      } else {
        EXPECT_EQ(out.at(b, 0), base_.at(b, 0)) << "sequence " << q << " position " << j << " sample " << b;
      }
    }
  }
}

TEST_F(DinSensitivityTest, ChangingPaddedPositionsChangesNothing) {
  ModelInputs changed = in_;
  for (int q = 0; q < 2; ++q) {
    for (int b = 0; b < kBatch; ++b) {
      for (int j = in_.lengths[q][b]; j < kMaxLen; ++j) {
        std::fill(changed.sequences[q].row(b * kMaxLen + j), changed.sequences[q].row(b * kMaxLen + j) + kDim, 3.0f);
      }
    }
  }
  Tensor<float> out;
  model_->Forward(changed, &out);
  EXPECT_TRUE(BitwiseEqual(base_, out));
}

TEST(RankingModelCreateTest, RejectsUnknownTypeAndActivationNamingTheField) {
  CpuLayerFactory<float> factory;
  absl::StatusOr<std::unique_ptr<RankingModel>> m = RankingModel::Create(Config("foo"), Shape(2), 1, &factory);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("model.type"), std::string::npos) << m.status();
  EXPECT_NE(m.status().message().find("foo"), std::string::npos) << m.status();

  ModelConfig bad = Config("dnn");
  bad.set_activation("bar");
  m = RankingModel::Create(bad, Shape(2), 1, &factory);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("model.activation"), std::string::npos) << m.status();
  EXPECT_NE(m.status().message().find("bar"), std::string::npos) << m.status();

  ModelShape no_slots = Shape(2);
  no_slots.num_slots = 0;
  m = RankingModel::Create(Config("dnn"), no_slots, 1, &factory);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);

  ModelShape bad_target = Shape(2);
  bad_target.sequence_targets = {kSlots};
  m = RankingModel::Create(Config("din"), bad_target, 1, &factory);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(RankingModelCreateTest, DinWithoutSequencesIsFailedPreconditionAsDocumented) {
  // models/ranking_model.h: "FAILED_PRECONDITION for din when the data has no behaviour
  // sequences."
  CpuLayerFactory<float> factory;
  ModelShape shape = Shape(2);
  shape.sequence_targets.clear();
  absl::StatusOr<std::unique_ptr<RankingModel>> m = RankingModel::Create(Config("din"), shape, 1, &factory);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition) << m.status();
}

}  // namespace
}  // namespace choir::models
