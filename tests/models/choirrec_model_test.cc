// ChoirRec's dual-channel model: finite-difference gradients of the whole model (double
// precision), the two stop-gradients, the gates, the KD gate and the margin loss on hand-made
// cases, and the ablation switches.
#include "models/choirrec_model.h"

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <tuple>

#include "gtest/gtest.h"
#include "tests/models/grad_check.h"

namespace choir::models {
namespace {

using testing::ExpectMatchesFiniteDifferences;
using testing::RandomTensor;

constexpr int kBatch = 5;
constexpr int kDim = 3;

// 4 slots (0 user, 1 item, 2 category, 3 context), 2 dense, one individual sequence keyed by
// the category slot (length 3), 3 group levels, 2 attribute slots, 3 statistics, one group
// sequence keyed by the item slot (length 2), 4 activity features.
ModelShape SmallShape() {
  ModelShape s;
  s.num_slots = 4;
  s.embedding_dim = kDim;
  s.num_dense = 2;
  s.max_seq_len = 3;
  s.sequence_targets = {2};
  s.group_levels = 3;
  s.group_attribute_slots = 2;
  s.group_stats = 3;
  s.group_max_seq_len = 2;
  s.group_sequence_targets = {1};
  s.group_channel_slots = {1, 2, 3};
  s.activity_features = 4;
  return s;
}

ModelConfig SmallConfig() {
  ModelConfig c;
  c.set_type("choirrec");
  c.set_embedding_dim(kDim);
  c.add_hidden(5);
  c.add_hidden(4);
  c.set_activation("tanh");  // smooth, so central differences are exact to O(eps^2)
  c.add_attention_hidden(3);
  ChoirRecConfig* r = c.mutable_choirrec();
  r->add_group_hidden(4);
  r->add_group_hidden(3);
  r->set_fusion_dim(4);
  r->add_gate_hidden(3);
  return c;
}

BasicModelInputs<double> SmallInputs(const ModelShape& s, uint64_t seed) {
  BasicModelInputs<double> in;
  const int d = s.embedding_dim;
  in.slots = RandomTensor(kBatch, s.num_slots * d, seed);
  in.dense = RandomTensor(kBatch, s.num_dense, seed + 1, 0, 2);
  in.sequences = {RandomTensor(kBatch * s.max_seq_len, d, seed + 2)};
  in.lengths = {{3, 1, 0, 2, 3}};
  for (int b = 0; b < kBatch; ++b) {  // padded rows are zero, as the trainer writes them
    for (int j = in.lengths[0][b]; j < s.max_seq_len; ++j) {
      for (int k = 0; k < d; ++k) in.sequences[0].at(b * s.max_seq_len + j, k) = 0;
    }
  }
  in.group_ids = RandomTensor(kBatch, s.group_levels * d, seed + 3);
  in.group_attributes = RandomTensor(kBatch, s.group_attribute_slots * d, seed + 4);
  in.group_stats = RandomTensor(kBatch, s.group_stats, seed + 5, 0, 1);
  in.group_sequences = {RandomTensor(kBatch * s.group_max_seq_len, d, seed + 6)};
  in.group_lengths = {{2, 0, 1, 2, 2}};
  in.activity = RandomTensor(kBatch, s.activity_features, seed + 7, 0, 3);
  in.purchases = {0, 5, 10, 3, 1};
  return in;
}

std::unique_ptr<ChoirRecModel<double>> MakeModel(const ModelConfig& config, const ModelShape& shape,
                                                 CpuLayerFactory<double>* factory) {
  absl::StatusOr<std::unique_ptr<ChoirRecModel<double>>> m =
      ChoirRecModel<double>::Create(config, shape, 7, factory);
  EXPECT_TRUE(m.ok()) << m.status();
  return m.ok() ? std::move(*m) : nullptr;
}

const std::vector<double> kLabels = {1, 0, 0, 1, 0};
const std::vector<double> kWeights = {1.0, 0.5, 2.0, 1.0, 1.5};

// Which gradients a finite-difference run compares.
struct Check {
  bool individual_params = true, group_params = true, gate_params = true;
  bool slots = true, sequences = true, group_inputs = true;
  bool kd_opens = false;  // the KD gate must open for some sample (so that KD is what is checked)
};

// Compares the analytic gradients of TrainBackward's loss with central differences.
void CheckGradients(const ModelConfig& config, const Check& check, const std::string& what,
                    const ModelShape& shape = SmallShape()) {
  CpuLayerFactory<double> factory;
  std::unique_ptr<ChoirRecModel<double>> model = MakeModel(config, shape, &factory);
  ASSERT_NE(model, nullptr);
  BasicModelInputs<double> in = SmallInputs(shape, 11);
  Tensor<double> logits;
  model->Forward(in, &logits);
  std::vector<Param<double>*> all = model->Params();
  ZeroGrads(all);
  BasicModelGrads<double> grads;
  const LossStats stats = model->TrainBackward(kLabels, kWeights, &grads, nullptr);
  EXPECT_TRUE(std::isfinite(stats.loss));
  if (check.kd_opens) {
    EXPECT_GT(stats.kd_active, 0) << what;
    EXPECT_GT(stats.kd, 0) << what;
  }
  auto loss = [&]() {
    Tensor<double> out;
    model->Forward(in, &out);
    typename ChoirRecModel<double>::HeadGrads heads;
    return model->ComputeHeadGrads(kLabels, kWeights, &heads, nullptr).loss;
  };
  auto check_params = [&](std::vector<Param<double>*> params, const char* part) {
    ASSERT_FALSE(params.empty()) << part;
    for (Param<double>* p : params) {
      const Tensor<double> analytic = p->grad;
      EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &p->value, analytic, what + " " + part + " " + p->name), 0);
    }
  };
  if (check.individual_params) check_params(model->IndividualParams(), "individual");
  if (check.group_params) check_params(model->GroupParams(), "group");
  if (check.gate_params && config.choirrec().use_gates()) check_params(model->GateParams(), "gate");
  if (check.slots) {
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &in.slots, grads.slots, what + " slots"), 0);
  }
  if (check.sequences) {
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &in.sequences[0], grads.sequences[0], what + " sequence"), 0);
  }
  if (check.group_inputs) {
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &in.group_ids, grads.group_ids, what + " group_ids"), 0);
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &in.group_attributes, grads.group_attributes,
                                             what + " group_attributes"),
              0);
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &in.group_sequences[0], grads.group_sequences[0],
                                             what + " group_sequence"),
              0);
  }
}

// Without the two stop-gradients (no injection, no KD) the analytic gradient is the true
// gradient of the loss: every parameter and every embedding input is checked.
TEST(ChoirRecGradientTest, WholeModelWithoutStopGradientsMatchesFiniteDifferences) {
  ModelConfig config = SmallConfig();
  config.mutable_choirrec()->set_use_injection(false);
  config.mutable_choirrec()->set_use_kd(false);
  config.mutable_choirrec()->set_aux_loss_weight(0.3);
  CheckGradients(config, Check{}, "no-stopgrad");
}

// The same with the gates switched off (a_fuse = a_kd = 0.5, no gate parameters), and with a
// single group level (no hierarchical fusion steps, only the fusion MLP over h_1).
TEST(ChoirRecGradientTest, WithoutGatesOrWithOneGroupLevelMatchesFiniteDifferences) {
  ModelConfig config = SmallConfig();
  config.mutable_choirrec()->set_use_injection(false);
  config.mutable_choirrec()->set_use_kd(false);
  config.mutable_choirrec()->set_aux_loss_weight(0.3);
  ModelConfig no_gates = config;
  no_gates.mutable_choirrec()->set_use_gates(false);
  CheckGradients(no_gates, Check{}, "no gates");
  ModelShape one_level = SmallShape();
  one_level.group_levels = 1;
  CheckGradients(config, Check{}, "one level", one_level);
}

// With the injection, the individual channel's parameters, the gates and the inputs only the
// individual channel reads (the user slot, the individual sequence) still see the true
// gradient; the group channel's do not (stop-gradient), see the next tests.
TEST(ChoirRecGradientTest, IndividualSideWithInjectionMatchesFiniteDifferences) {
  ModelConfig config = SmallConfig();
  config.mutable_choirrec()->set_use_kd(false);
  config.mutable_choirrec()->set_aux_loss_weight(0.3);
  Check check;
  check.group_params = check.group_inputs = check.slots = false;
  CheckGradients(config, check, "injection");
}

// With KD (and a large lambda so that it matters), the group channel's parameters, the gates
// and the group inputs see the true gradient: the teacher does not depend on them.
// KD that matters (lambda 0.7, margin 0.01, any confidence), without the injection's
// stop-gradient, the gate open by purchases at `min_purchases`.
ModelConfig DistillationConfig(int min_purchases) {
  ModelConfig config = SmallConfig();
  ChoirRecConfig* r = config.mutable_choirrec();
  r->set_use_injection(false);
  r->set_kd_lambda(0.7);
  r->set_kd_margin(0.01);
  r->set_kd_confidence(0.0);
  r->set_kd_min_purchases(min_purchases);
  return config;
}

TEST(ChoirRecGradientTest, GroupSideWithDistillationMatchesFiniteDifferences) {
  const ModelConfig config = DistillationConfig(1);
  Check check;
  check.individual_params = check.slots = check.sequences = false;
  check.kd_opens = true;
  CheckGradients(config, check, "kd");
}

// kd_direction group_to_individual: the individual channel is the student, so its parameters,
// its sequence and the gates see the true gradient of the loss with KD (the KD gate opens where
// purchases < kd_min_purchases: samples 0, 3 and 4 here); also with the plain hinge.
TEST(ChoirRecGradientTest, IndividualSideWithReverseDistillationMatchesFiniteDifferences) {
  for (const char* form : {"squared_hinge", "hinge"}) {
    ModelConfig config = DistillationConfig(4);
    config.mutable_choirrec()->set_kd_direction("group_to_individual");
    config.mutable_choirrec()->set_kd_margin_form(form);
    Check check;
    check.group_params = check.group_inputs = check.slots = false;
    check.kd_opens = true;
    CheckGradients(config, check, std::string("reverse kd ") + form);
  }
}

TEST(ChoirRecStopGradientTest, IndividualLossGivesNoGradientToTheGroupChannel) {
  CpuLayerFactory<double> factory;
  const ModelShape shape = SmallShape();
  std::unique_ptr<ChoirRecModel<double>> model = MakeModel(SmallConfig(), shape, &factory);
  ASSERT_NE(model, nullptr);
  BasicModelInputs<double> in = SmallInputs(shape, 3);
  Tensor<double> logits;
  model->Forward(in, &logits);
  ZeroGrads(model->Params());
  ChoirRecModel<double>::HeadGrads heads;
  heads.dz_ind = RandomTensor(kBatch, 1, 5);  // a loss on z_ind alone
  BasicModelGrads<double> grads;
  model->BackwardFromHeads(heads, &grads);
  for (Param<double>* p : model->GroupParams()) {
    for (int64_t i = 0; i < p->grad.size(); ++i) ASSERT_EQ(p->grad.data()[i], 0.0) << p->name;
  }
  for (const Tensor<double>* t : {&grads.group_ids, &grads.group_attributes, &grads.group_sequences[0]}) {
    for (int64_t i = 0; i < t->size(); ++i) ASSERT_EQ(t->data()[i], 0.0);
  }
  for (Param<double>* p : model->GateParams()) {
    for (int64_t i = 0; i < p->grad.size(); ++i) ASSERT_EQ(p->grad.data()[i], 0.0) << p->name;
  }
  // The individual channel, the injection included, did receive gradient.
  double individual = 0;
  bool inject_seen = false;
  for (Param<double>* p : model->IndividualParams()) {
    double norm = 0;
    for (int64_t i = 0; i < p->grad.size(); ++i) norm += std::abs(p->grad.data()[i]);
    individual += norm;
    if (p->name.rfind("ind.inject.", 0) == 0 && norm > 0) inject_seen = true;
  }
  EXPECT_GT(individual, 0);
  EXPECT_TRUE(inject_seen);
}

TEST(ChoirRecStopGradientTest, DistillationGivesNoGradientToTheTeacher) {
  CpuLayerFactory<double> factory;
  ModelConfig config = SmallConfig();
  ChoirRecConfig* r = config.mutable_choirrec();
  r->set_kd_lambda(1.0);
  r->set_kd_margin(0.0);
  r->set_kd_confidence(0.0);
  r->set_kd_min_purchases(0);
  const ModelShape shape = SmallShape();
  std::unique_ptr<ChoirRecModel<double>> model = MakeModel(config, shape, &factory);
  ASSERT_NE(model, nullptr);
  BasicModelInputs<double> in = SmallInputs(shape, 9);
  Tensor<double> logits;
  model->Forward(in, &logits);
  ChoirRecModel<double>::HeadGrads heads;
  const LossStats stats = model->ComputeHeadGrads(kLabels, kWeights, &heads, nullptr);
  EXPECT_EQ(stats.kd_active, kBatch);
  EXPECT_GT(stats.kd, 0);
  heads.dz.Zero();  // keep the KD term alone
  for (int b = 0; b < kBatch; ++b) EXPECT_EQ(heads.dz_ind.at(b, 0), 0.0);
  ZeroGrads(model->Params());
  BasicModelGrads<double> grads;
  model->BackwardFromHeads(heads, &grads);
  for (Param<double>* p : model->IndividualParams()) {
    for (int64_t i = 0; i < p->grad.size(); ++i) ASSERT_EQ(p->grad.data()[i], 0.0) << p->name;
  }
  for (int64_t i = 0; i < grads.sequences[0].size(); ++i) ASSERT_EQ(grads.sequences[0].data()[i], 0.0);
  double student = 0, gate = 0;
  for (Param<double>* p : model->GroupParams()) {
    for (int64_t i = 0; i < p->grad.size(); ++i) student += std::abs(p->grad.data()[i]);
  }
  for (Param<double>* p : model->GateParams()) {
    for (int64_t i = 0; i < p->grad.size(); ++i) gate += std::abs(p->grad.data()[i]);
  }
  EXPECT_GT(student, 0);
  EXPECT_GT(gate, 0);  // through a_kd
}

TEST(ChoirRecGateTest, MarginLossOnHandMadeCases) {
  constexpr MarginForm kSquared = MarginForm::kSquaredHinge;
  double da = -1;
  EXPECT_NEAR(MarginLoss<double>(0.9, 0.5, 0.05, kSquared, &da), 0.35 * 0.35, 1e-15);
  EXPECT_NEAR(da, 0.7, 1e-15);
  EXPECT_NEAR(MarginLoss<double>(0.1, 0.5, 0.05, kSquared, &da), 0.35 * 0.35, 1e-15);
  EXPECT_NEAR(da, -0.7, 1e-15);
  EXPECT_EQ(MarginLoss<double>(0.52, 0.5, 0.05, kSquared, &da), 0.0);
  EXPECT_EQ(da, 0.0);
  EXPECT_EQ(MarginLoss<double>(0.45, 0.5, 0.05, kSquared, &da), 0.0);  // exactly at the margin
  // The plain hinge: the excess itself, slope +-1.
  EXPECT_NEAR(MarginLoss<double>(0.9, 0.5, 0.05, MarginForm::kHinge, &da), 0.35, 1e-15);
  EXPECT_EQ(da, 1.0);
  EXPECT_NEAR(MarginLoss<double>(0.1, 0.5, 0.05, MarginForm::kHinge, &da), 0.35, 1e-15);
  EXPECT_EQ(da, -1.0);
  EXPECT_EQ(MarginLoss<double>(0.53, 0.5, 0.05, MarginForm::kHinge, &da), 0.0);
  EXPECT_EQ(da, 0.0);
}

TEST(ChoirRecGateTest, KdGateOnHandMadeCases) {
  // theta_act = 3 purchases, theta_conf = 0.3; the individual channel teaches the rich users.
  constexpr KdDirection kDefault = KdDirection::kIndividualToGroup;
  EXPECT_TRUE(KdGateOpen<double>(3, 0.85, 3, 0.3, kDefault));
  EXPECT_TRUE(KdGateOpen<double>(10, 0.15, 3, 0.3, kDefault));
  EXPECT_FALSE(KdGateOpen<double>(3, 0.75, 3, 0.3, kDefault));  // not confident enough
  EXPECT_FALSE(KdGateOpen<double>(3, 0.5, 3, 0.3, kDefault));
  EXPECT_FALSE(KdGateOpen<double>(2, 0.95, 3, 0.3, kDefault));  // too few purchases
  EXPECT_FALSE(KdGateOpen<double>(0, 0.01, 3, 0.3, kDefault));
  // The group channel teaches the sparse users (purchases < theta_act).
  constexpr KdDirection kReverse = KdDirection::kGroupToIndividual;
  EXPECT_TRUE(KdGateOpen<double>(2, 0.85, 3, 0.3, kReverse));
  EXPECT_TRUE(KdGateOpen<double>(0, 0.15, 3, 0.3, kReverse));
  EXPECT_FALSE(KdGateOpen<double>(3, 0.95, 3, 0.3, kReverse));  // the user's own history counts
  EXPECT_FALSE(KdGateOpen<double>(1, 0.7, 3, 0.3, kReverse));   // not confident enough
}

// The KD term on hand-made heads, in both directions and with both margin forms: a sample's term
// is w a_kd L_margin(p_student, p_teacher), written out here; only the student's logit and a_kd
// receive its gradient, which matches central differences of the loss.
TEST(ChoirRecGateTest, DistillationTermIsWeightedAndMovesOnlyTheStudent) {
  constexpr int kB = 4;
  Tensor<double> z_ind(kB, 1), z_grp(kB, 1), gates(kB, 2);
  const double zi[kB] = {2.0, -1.5, 0.3, -2.5}, zg[kB] = {-0.5, 1.0, 0.0, 2.0};
  const double a_fuse[kB] = {0.3, 0.6, 0.5, 0.2}, a_kd[kB] = {0.8, 0.4, 0.9, 0.6};
  for (int b = 0; b < kB; ++b) {
    z_ind.at(b, 0) = zi[b];
    z_grp.at(b, 0) = zg[b];
    gates.at(b, 0) = a_fuse[b];
    gates.at(b, 1) = a_kd[b];
  }
  const std::vector<double> labels = {1, 0, 1, 0}, weights = {2.0, 0.5, 1.0, 3.0}, purchases = {5, 0, 4, 1};
  auto sigmoid = [](double x) { return 1 / (1 + std::exp(-x)); };
  for (KdDirection direction : {KdDirection::kIndividualToGroup, KdDirection::kGroupToIndividual}) {
    for (MarginForm form : {MarginForm::kSquaredHinge, MarginForm::kHinge}) {
      const bool ind_teaches = direction == KdDirection::kIndividualToGroup;
      SCOPED_TRACE(std::string(ind_teaches ? "individual teaches" : "group teaches") +
                   (form == MarginForm::kHinge ? ", hinge" : ", squared hinge"));
      FusionLossOptions options;
      options.kd_lambda = 0.5;
      options.kd_margin = 0.05;
      options.kd_confidence = 0.1;
      options.kd_min_purchases = 3;
      options.kd_direction = direction;
      options.kd_margin_form = form;
      auto run = [&](HeadGrads<double>* grads) {
        const FusionHeads<double> heads{&z_ind, &z_grp, &gates};
        Tensor<double> z;
        FuseLogits(heads, &z);
        HeadGrads<double> unused;
        return FusionHeadLoss<double>(heads, z, labels, weights, purchases, options,
                                      grads != nullptr ? grads : &unused, nullptr);
      };
      HeadGrads<double> grads;
      const FusionLoss loss = run(&grads);
      double kd = 0;
      int open = 0;
      for (int b = 0; b < kB; ++b) {
        const double teacher = sigmoid(ind_teaches ? zi[b] : zg[b]);
        const double student = sigmoid(ind_teaches ? zg[b] : zi[b]);
        const bool active = ind_teaches ? purchases[b] >= 3 : purchases[b] < 3;
        if (!active || std::abs(teacher - 0.5) <= 0.1) continue;
        ++open;
        const double excess = std::max(0.0, std::abs(student - teacher) - 0.05);
        kd += weights[b] * a_kd[b] * (form == MarginForm::kHinge ? excess : excess * excess);
      }
      EXPECT_EQ(loss.kd_active, open);
      EXPECT_GE(open, 1);
      EXPECT_NEAR(loss.kd, kd / kB, 1e-15);
      for (int b = 0; b < kB; ++b) {
        EXPECT_EQ((ind_teaches ? grads.dz_ind : grads.dz_grp).at(b, 0), 0.0) << "the teacher, sample " << b;
      }
      // Through the fusion: the student's logit and a_kd against central differences of the
      // total loss (the teacher's would differ: its probability is a constant of the KD term).
      Tensor<double> dz_ind, dz_grp, dgates;
      FusionBackward<double>(FusionHeads<double>{&z_ind, &z_grp, &gates}, grads, &dz_ind, &dz_grp, &dgates);
      Tensor<double>& student = ind_teaches ? z_grp : z_ind;
      const Tensor<double>& dstudent = ind_teaches ? dz_grp : dz_ind;
      constexpr double kEps = 1e-6;
      for (int b = 0; b < kB; ++b) {
        for (auto [value, analytic, what] : {std::tuple<double*, double, const char*>{&student.at(b, 0), dstudent.at(b, 0), "student logit"},
                                             {&gates.at(b, 1), dgates.at(b, 1), "a_kd"}}) {
          const double keep = *value;
          *value = keep + kEps;
          const double up = run(nullptr).total;
          *value = keep - kEps;
          const double down = run(nullptr).total;
          *value = keep;
          EXPECT_NEAR(analytic, (up - down) / (2 * kEps), 1e-8) << what << ", sample " << b;
        }
      }
    }
  }
}

TEST(ChoirRecGateTest, FusionAndKdGatesFollowTheFormulas) {
  CpuLayerFactory<double> factory;
  ModelConfig config = SmallConfig();
  config.mutable_choirrec()->set_kd_min_purchases(3);
  config.mutable_choirrec()->set_kd_confidence(0.05);
  const ModelShape shape = SmallShape();
  std::unique_ptr<ChoirRecModel<double>> model = MakeModel(config, shape, &factory);
  ASSERT_NE(model, nullptr);
  BasicModelInputs<double> in = SmallInputs(shape, 21);
  Tensor<double> logits;
  model->Forward(in, &logits);
  const std::vector<int> gates = model->KdGates();
  for (int b = 0; b < kBatch; ++b) {
    const double a = model->a_fuse().at(b, 0);
    EXPECT_GT(a, 0);
    EXPECT_LT(a, 1);
    EXPECT_GT(model->a_kd().at(b, 0), 0);
    EXPECT_LT(model->a_kd().at(b, 0), 1);
    EXPECT_NEAR(logits.at(b, 0), (1 - a) * model->z_ind().at(b, 0) + a * model->z_grp().at(b, 0), 1e-15);
    const double p_ind = Sigmoid<double>(model->z_ind().at(b, 0));
    const bool want = in.purchases[b] >= 3 && std::abs(p_ind - 0.5) > 0.05;
    EXPECT_EQ(gates[b], want ? 1 : 0) << "sample " << b;
  }
  EXPECT_EQ(gates[0], 0);  // 0 purchases
  EXPECT_EQ(gates[4], 0);  // 1 purchase

  // Gates off: a_fuse = a_kd = 0.5 exactly.
  config.mutable_choirrec()->set_use_gates(false);
  std::unique_ptr<ChoirRecModel<double>> fixed = MakeModel(config, shape, &factory);
  ASSERT_NE(fixed, nullptr);
  fixed->Forward(in, &logits);
  EXPECT_TRUE(fixed->GateParams().empty());
  for (int b = 0; b < kBatch; ++b) {
    EXPECT_EQ(fixed->a_fuse().at(b, 0), 0.5);
    EXPECT_EQ(fixed->a_kd().at(b, 0), 0.5);
    EXPECT_NEAR(logits.at(b, 0), 0.5 * fixed->z_ind().at(b, 0) + 0.5 * fixed->z_grp().at(b, 0), 1e-15);
  }
}

TEST(ChoirRecAblationTest, EachSwitchRemovesItsComponent) {
  CpuLayerFactory<double> factory;
  const ModelShape shape = SmallShape();
  std::unique_ptr<ChoirRecModel<double>> full = MakeModel(SmallConfig(), shape, &factory);
  ASSERT_NE(full, nullptr);
  const int64_t full_params = ParamCount(full->Params());
  struct Case {
    const char* name;
    void (ChoirRecConfig::*set)(bool);
  };
  for (const Case& c : {Case{"group_ids", &ChoirRecConfig::set_use_group_ids},
                        Case{"attribute_completion", &ChoirRecConfig::set_use_attribute_completion},
                        Case{"group_sequence", &ChoirRecConfig::set_use_group_sequence},
                        Case{"injection", &ChoirRecConfig::set_use_injection},
                        Case{"gates", &ChoirRecConfig::set_use_gates}}) {
    ModelConfig config = SmallConfig();
    (config.mutable_choirrec()->*c.set)(false);
    std::unique_ptr<ChoirRecModel<double>> m = MakeModel(config, shape, &factory);
    ASSERT_NE(m, nullptr) << c.name;
    EXPECT_LT(ParamCount(m->Params()), full_params) << c.name;
    BasicModelInputs<double> in = SmallInputs(shape, 5);
    Tensor<double> logits;
    m->Forward(in, &logits);
    BasicModelGrads<double> grads;
    const LossStats stats = m->TrainBackward(kLabels, {}, &grads, nullptr);
    EXPECT_TRUE(std::isfinite(stats.loss)) << c.name;
    if (std::string(c.name) == "group_ids") {
      EXPECT_TRUE(grads.group_ids.empty());
    }
    if (std::string(c.name) == "attribute_completion") {
      EXPECT_TRUE(grads.group_attributes.empty());
    }
    if (std::string(c.name) == "group_sequence") {
      EXPECT_TRUE(grads.group_sequences.empty());
    }
  }
  // KD off: the loss is the BCE alone.
  ModelConfig config = SmallConfig();
  config.mutable_choirrec()->set_use_kd(false);
  std::unique_ptr<ChoirRecModel<double>> m = MakeModel(config, shape, &factory);
  BasicModelInputs<double> in = SmallInputs(shape, 5);
  Tensor<double> logits;
  m->Forward(in, &logits);
  BasicModelGrads<double> grads;
  const LossStats stats = m->TrainBackward(kLabels, {}, &grads, nullptr);
  EXPECT_EQ(stats.kd_active, 0);
  EXPECT_EQ(stats.loss, stats.bce);
}

// A worker's last batch can be empty: forward and backward run with and without the gates,
// give zero-row logits and gradients, and leave every parameter gradient zero.
TEST(ChoirRecAblationTest, AnEmptyBatchRunsForwardAndBackward) {
  CpuLayerFactory<double> factory;
  const ModelShape shape = SmallShape();
  for (bool use_gates : {true, false}) {
    ModelConfig config = SmallConfig();
    config.mutable_choirrec()->set_use_gates(use_gates);
    std::unique_ptr<ChoirRecModel<double>> m = MakeModel(config, shape, &factory);
    ASSERT_NE(m, nullptr);
    const int d = shape.embedding_dim;
    BasicModelInputs<double> in;
    in.slots = Tensor<double>(0, shape.num_slots * d);
    in.dense = Tensor<double>(0, shape.num_dense);
    in.sequences = {Tensor<double>(0, d)};
    in.lengths = {{}};
    in.group_ids = Tensor<double>(0, shape.group_levels * d);
    in.group_attributes = Tensor<double>(0, shape.group_attribute_slots * d);
    in.group_stats = Tensor<double>(0, shape.group_stats);
    in.group_sequences = {Tensor<double>(0, d)};
    in.group_lengths = {{}};
    in.activity = Tensor<double>(0, shape.activity_features);
    Tensor<double> logits(3, 3);
    m->Forward(in, &logits);
    EXPECT_EQ(logits.rows(), 0) << "gates " << use_gates;
    EXPECT_EQ(m->a_fuse().rows(), 0);
    std::vector<Param<double>*> params = m->Params();
    ZeroGrads(params);
    BasicModelGrads<double> grads;
    const LossStats stats = m->TrainBackward({}, {}, &grads, nullptr);
    EXPECT_EQ(stats.kd_active, 0);
    EXPECT_EQ(grads.slots.rows(), 0);
    for (const Param<double>* p : params) {
      for (int64_t i = 0; i < p->grad.size(); ++i) {
        ASSERT_EQ(p->grad.data()[i], 0) << p->name << " gates " << use_gates;
      }
    }
  }
}

// Dice keeps running statistics that a checkpoint must save: every Dice layer's buffers are
// listed (tanh layers have none).
TEST(ChoirRecCreateTest, BuffersListDiceRunningStatistics) {
  CpuLayerFactory<double> factory;
  std::unique_ptr<ChoirRecModel<double>> tanh_model = MakeModel(SmallConfig(), SmallShape(), &factory);
  ASSERT_NE(tanh_model, nullptr);
  EXPECT_TRUE(tanh_model->Buffers().empty());
  ModelConfig config = SmallConfig();
  config.set_activation("dice");
  std::unique_ptr<ChoirRecModel<double>> dice = MakeModel(config, SmallShape(), &factory);
  ASSERT_NE(dice, nullptr);
  const std::vector<Tensor<double>*> buffers = dice->Buffers();
  EXPECT_FALSE(buffers.empty());
  BasicModelInputs<double> in = SmallInputs(SmallShape(), 2);
  std::vector<std::vector<double>> before;
  for (Tensor<double>* b : buffers) before.emplace_back(b->data(), b->data() + b->size());
  Tensor<double> logits;
  dice->Forward(in, &logits);  // training mode: running statistics move
  bool moved = false;
  for (size_t i = 0; i < buffers.size(); ++i) {
    moved |= std::vector<double>(buffers[i]->data(), buffers[i]->data() + buffers[i]->size()) != before[i];
  }
  EXPECT_TRUE(moved);
}

TEST(ChoirRecCreateTest, MissingInputsAndBadSettingsAreNamed) {
  CpuLayerFactory<double> factory;
  ModelShape shape = SmallShape();
  shape.group_levels = 0;
  auto m = ChoirRecModel<double>::Create(SmallConfig(), shape, 1, &factory);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(m.status().message().find("model.groups.table"), std::string::npos) << m.status();
  ModelConfig config = SmallConfig();
  config.mutable_choirrec()->set_kd_confidence(0.7);
  m = ChoirRecModel<double>::Create(config, SmallShape(), 1, &factory);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("kd_confidence"), std::string::npos) << m.status();
  config = SmallConfig();
  config.mutable_choirrec()->set_kd_direction("both");
  m = ChoirRecModel<double>::Create(config, SmallShape(), 1, &factory);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("kd_direction: 'both'"), std::string::npos) << m.status();
  config = SmallConfig();
  config.mutable_choirrec()->set_kd_margin_form("squared");
  m = ChoirRecModel<double>::Create(config, SmallShape(), 1, &factory);
  EXPECT_EQ(m.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("kd_margin_form: 'squared'"), std::string::npos) << m.status();
}

}  // namespace
}  // namespace choir::models
