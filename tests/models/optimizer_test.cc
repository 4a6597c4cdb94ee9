// Dense optimisers: Adagrad and SGD updates against hand computation, the learning-rate
// schedule's end points.
#include "models/optimizer.h"

#include <cmath>
#include <vector>

#include "gtest/gtest.h"
#include "models/layers.h"

namespace choir::models {
namespace {

Param<double> MakeParam(std::vector<double> values) {
  Param<double> p;
  p.name = "p";
  p.value.Resize(1, static_cast<int>(values.size()));
  p.grad.Resize(1, static_cast<int>(values.size()));
  std::copy(values.begin(), values.end(), p.value.data());
  return p;
}

TEST(LrScheduleTest, ConstantWithoutDecay) {
  LrSchedule s;
  s.lr0 = 0.05;
  EXPECT_EQ(s.At(0), 0.05);
  EXPECT_EQ(s.At(1000000), 0.05);
}

TEST(LrScheduleTest, LinearHitsLrEndAtTheLastStep) {
  LrSchedule s;  // paper: 0.01 -> 0.001
  s.decay_steps = 10;
  EXPECT_EQ(s.At(0), 0.01);
  EXPECT_NEAR(s.At(3), 0.01 - 0.009 * 3 / 9, 1e-15);
  EXPECT_EQ(s.At(9), 0.001);
  EXPECT_EQ(s.At(50), 0.001);
  for (int t = 1; t < 10; ++t) EXPECT_LT(s.At(t), s.At(t - 1));
}

TEST(LrScheduleTest, ExponentialHitsLrEndAtTheLastStep) {
  LrSchedule s;
  s.kind = LrSchedule::Kind::kExponential;
  s.decay_steps = 5;
  EXPECT_EQ(s.At(0), 0.01);
  EXPECT_NEAR(s.At(2), std::sqrt(0.01 * 0.001), 1e-15);  // halfway: geometric mean
  EXPECT_EQ(s.At(4), 0.001);
  EXPECT_EQ(s.At(5), 0.001);
  s.decay_steps = 1;
  EXPECT_EQ(s.At(0), 0.001);
}

TEST(AdagradTest, ThreeStepsMatchHandComputation) {
  AdagradOptions options;
  options.schedule.decay_steps = 3;  // lr = 0.01, 0.0055, 0.001
  options.initial_accumulator = 0.1;
  options.eps = 1e-10;
  Adagrad<double> adagrad(options);
  Param<double> p = MakeParam({1.0, -2.0});
  const double grads[3][2] = {{0.5, -1.0}, {0.2, 0.0}, {-0.3, 2.0}};
  const double lrs[3] = {0.01, 0.0055, 0.001};
  double w[2] = {1.0, -2.0};
  double acc[2] = {0.1, 0.1};
  for (int t = 0; t < 3; ++t) {
    EXPECT_NEAR(adagrad.current_lr(), lrs[t], 1e-16);
    for (int i = 0; i < 2; ++i) {
      p.grad.at(0, i) = grads[t][i];
      acc[i] += grads[t][i] * grads[t][i];
      w[i] -= lrs[t] * grads[t][i] / (std::sqrt(acc[i]) + 1e-10);
    }
    adagrad.Step({&p});
    for (int i = 0; i < 2; ++i) {
      EXPECT_NEAR(p.value.at(0, i), w[i], 1e-15) << "step " << t << " element " << i;
      EXPECT_NEAR(adagrad.accumulators()[0].at(0, i), acc[i], 1e-15);
    }
  }
  EXPECT_EQ(adagrad.step(), 3);
  // Spot value of the first step: w0 = 1 - 0.01 * 0.5 / (sqrt(0.1 + 0.25) + eps).
  Param<double> q = MakeParam({1.0});
  Adagrad<double> fresh(options);
  q.grad.at(0, 0) = 0.5;
  fresh.Step({&q});
  EXPECT_NEAR(q.value.at(0, 0), 1 - 0.01 * 0.5 / (std::sqrt(0.35) + 1e-10), 1e-15);
}

TEST(AdagradTest, StepDoesNotZeroGradsAndResumesFromStep) {
  AdagradOptions options;
  options.schedule.decay_steps = 11;
  Adagrad<float> adagrad(options);
  adagrad.set_step(10);
  EXPECT_DOUBLE_EQ(adagrad.current_lr(), 0.001);
  Param<float> p;
  p.value.Resize(2, 2, 1.0f);
  p.grad.Resize(2, 2, 0.25f);
  adagrad.Step({&p});
  EXPECT_EQ(p.grad.at(1, 1), 0.25f);
  EXPECT_LT(p.value.at(1, 1), 1.0f);
}

TEST(SgdTest, UpdatesWithScheduledRate) {
  LrSchedule s;
  s.lr0 = 0.1;
  s.lr_end = 0.05;
  s.decay_steps = 2;
  Sgd<double> sgd(s);
  Param<double> p = MakeParam({1.0, 2.0});
  p.grad.at(0, 0) = 1.0;
  p.grad.at(0, 1) = -2.0;
  sgd.Step({&p});
  EXPECT_DOUBLE_EQ(p.value.at(0, 0), 0.9);
  EXPECT_DOUBLE_EQ(p.value.at(0, 1), 2.2);
  sgd.Step({&p});
  EXPECT_DOUBLE_EQ(p.value.at(0, 0), 0.85);
  EXPECT_DOUBLE_EQ(p.value.at(0, 1), 2.3);
}

}  // namespace
}  // namespace choir::models
