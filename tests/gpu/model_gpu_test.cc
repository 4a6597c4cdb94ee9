// Whole models on the GPU against the same models on the CPU: dnn, din and ChoirRec built with
// the same seed from CudaLayerFactory and CpuLayerFactory see the same random batch; logits,
// loss, every input gradient and every parameter gradient must agree, and so must the
// parameters after several Adagrad steps. ChoirRec also runs in double, where the agreement is
// to 1e-12.
//
// Gradients of ReLU and PReLU jump at 0: a pre-activation within float rounding (~1e-7) of 0 gets
// slope 1 on one backend and 0 on the other, and that one element moves a layer's gradient by
// ~1 / sqrt(batch * width), far beyond the float tolerance. Over the ~10^6 activations of these
// float comparisons that happens in several percent of runs, so the large float batches use
// smooth activations (tanh, sigmoid, Dice); ReLU runs in double (rounding ~1e-16) and PReLU at
// batch 1. The gate MLP's small ReLU layer (8 units on 4 inputs) stays; its odds are ~1e-3.
#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "models/choirrec_model.h"
#include "models/cuda/cuda.h"
#include "models/optimizer.h"
#include "models/ranking_model.h"
#include "tests/gpu/gpu_test_util.h"

namespace choir::models {
namespace {

using choir::testing::FreshSeed;
using choir::testing::kTolerance;
using choir::testing::RandomTensor;
using choir::testing::RelativeError;
using choir::testing::Rms;

constexpr int kDim = 8;

ModelShape Shape(int max_seq_len) {
  ModelShape s;
  s.num_slots = 4;  // 0 user, 1 item, 2 category, 3 context
  s.embedding_dim = kDim;
  s.num_dense = 3;
  s.max_seq_len = max_seq_len;
  s.sequence_targets = {2, 1};
  s.group_levels = 3;
  s.group_attribute_slots = 2;
  s.group_stats = 4;
  s.group_max_seq_len = 5;
  s.group_sequence_targets = {1};
  s.group_channel_slots = {1, 2, 3};
  s.activity_features = 4;
  return s;
}

template <typename T>
BasicModelInputs<T> RandomInputs(const ModelShape& s, int batch, std::mt19937_64* rng) {
  BasicModelInputs<T> in;
  const int d = s.embedding_dim;
  std::uniform_int_distribution<int> len(0, s.max_seq_len), glen(0, s.group_max_seq_len);
  in.slots = RandomTensor<T>(batch, s.num_slots * d, rng);
  in.dense = RandomTensor<T>(batch, s.num_dense, rng, 0, 2);
  for (size_t q = 0; q < s.sequence_targets.size(); ++q) {
    in.sequences.push_back(RandomTensor<T>(batch * s.max_seq_len, d, rng));
    in.lengths.emplace_back(batch);
    for (int& l : in.lengths.back()) l = len(*rng);
  }
  in.group_ids = RandomTensor<T>(batch, s.group_levels * d, rng);
  in.group_attributes = RandomTensor<T>(batch, s.group_attribute_slots * d, rng);
  in.group_stats = RandomTensor<T>(batch, s.group_stats, rng, -2, 2);
  in.group_sequences.push_back(RandomTensor<T>(batch * s.group_max_seq_len, d, rng));
  in.group_lengths.emplace_back(batch);
  for (int& l : in.group_lengths.back()) l = glen(*rng);
  in.activity = RandomTensor<T>(batch, s.activity_features, rng, 0, 3);
  std::uniform_int_distribution<int> purchases(0, 8);
  for (int b = 0; b < batch; ++b) in.purchases.push_back(static_cast<T>(purchases(*rng)));
  return in;
}

template <typename T>
void RandomLabels(int batch, std::mt19937_64* rng, std::vector<T>* labels, std::vector<T>* weights) {
  std::uniform_real_distribution<double> u(0, 1);
  labels->resize(batch);
  weights->resize(batch);
  for (int b = 0; b < batch; ++b) {
    (*labels)[b] = u(*rng) < 0.4 ? T(1) : T(0);
    (*weights)[b] = static_cast<T>(0.5 + u(*rng));
  }
}

// The floor of RelativeError (see gpu_test_util.h) for parameter `i`'s gradient: for a Linear's
// bias "....b", whose gradient sums the upstream gradient dy over the batch and can cancel to
// near 0 (a tower's one-output bias, an attention score bias), ||dW|| / sqrt(fan_in) of the same
// layer's weight "....w" [fan_in, out]: that is ||dy|| * rms(layer input), the bias's uncancelled
// size for the bounded activations these towers feed their last layers. 0 for other parameters.
template <typename T>
double BiasFloor(const std::vector<Param<T>*>& params, size_t i) {
  const std::string& name = params[i]->name;
  const bool bias = name == "b" || (name.size() > 2 && name.compare(name.size() - 2, 2, ".b") == 0);
  if (!bias) return 0;
  const std::string weight = name.substr(0, name.size() - 1) + "w";
  for (const Param<T>* p : params) {
    // ||dW|| / sqrt(rows) = rms(dW) * sqrt(cols).
    if (p->name == weight) return Rms(p->grad) * std::sqrt(static_cast<double>(p->grad.cols()));
  }
  return 0;
}

// Compares one training step (Forward, TrainBackward) and then `steps` Adagrad steps of two
// models that were built alike on the two backends.
template <typename T>
void ExpectSameTraining(BasicModel<T>* cpu, BasicModel<T>* gpu, const ModelShape& shape, int batch,
                        std::mt19937_64* rng, double tolerance) {
  const std::vector<Param<T>*> cp = cpu->Params(), gp = gpu->Params();
  ASSERT_EQ(cp.size(), gp.size());
  for (size_t i = 0; i < cp.size(); ++i) {
    ASSERT_EQ(cp[i]->name, gp[i]->name);
    EXPECT_EQ(gp[i]->value.device(), Device::kCuda) << gp[i]->name;
    EXPECT_EQ(RelativeError(gp[i]->value, cp[i]->value), 0.0) << "initial " << cp[i]->name;
  }
  AdagradOptions options;
  options.schedule.lr0 = 0.05;
  options.schedule.lr_end = 0.05;
  Adagrad<T> cpu_opt(options), gpu_opt(options);
  // The trained values' floors: a bias whose gradient cancels moves by about as little, so its
  // value is judged against the most its steps can move it for a gradient of its floor's size.
  // An Adagrad step lr g / sqrt(acc + g^2) changes by at most lr / sqrt(acc0) per unit of g.
  std::vector<double> trained_floor(cp.size(), 0.0);
  for (int step = 0; step < 3; ++step) {
    SCOPED_TRACE(step);
    const BasicModelInputs<T> in = RandomInputs<T>(shape, batch, rng);
    std::vector<T> labels, weights;
    RandomLabels(batch, rng, &labels, &weights);
    Tensor<T> cl, gl;
    cpu->Forward(in, &cl);
    gpu->Forward(in, &gl);
    EXPECT_EQ(gl.device(), Device::kCpu);  // handed back on the caller's device
    EXPECT_LE(RelativeError(gl, cl), tolerance) << "logits";
    ZeroGrads(cp);
    ZeroGrads(gp);
    BasicModelGrads<T> cg, gg;
    std::vector<T> cps, gps;
    const LossStats cs = cpu->TrainBackward(labels, weights, &cg, &cps);
    const LossStats gs = gpu->TrainBackward(labels, weights, &gg, &gps);
    EXPECT_NEAR(gs.loss, cs.loss, tolerance * std::abs(cs.loss)) << "loss";
    EXPECT_EQ(gs.kd_active, cs.kd_active);
    EXPECT_LE(RelativeError(gg.slots, cg.slots), tolerance) << "slot gradients";
    ASSERT_EQ(gg.sequences.size(), cg.sequences.size());
    for (size_t q = 0; q < cg.sequences.size(); ++q) {
      EXPECT_LE(RelativeError(gg.sequences[q], cg.sequences[q]), tolerance) << "sequence " << q;
    }
    EXPECT_LE(RelativeError(gg.group_ids, cg.group_ids), tolerance) << "group id gradients";
    EXPECT_LE(RelativeError(gg.group_attributes, cg.group_attributes), tolerance);
    ASSERT_EQ(gg.group_sequences.size(), cg.group_sequences.size());
    for (size_t q = 0; q < cg.group_sequences.size(); ++q) {
      EXPECT_LE(RelativeError(gg.group_sequences[q], cg.group_sequences[q]), tolerance);
    }
    for (size_t i = 0; i < cp.size(); ++i) {
      const double floor = BiasFloor(cp, i);
      EXPECT_LE(RelativeError(gp[i]->grad, cp[i]->grad, floor), tolerance) << "gradient of " << cp[i]->name;
      trained_floor[i] += options.schedule.lr0 * floor / std::sqrt(options.initial_accumulator);
    }
    cpu_opt.Step(cp);
    gpu_opt.Step(gp);
  }
  for (size_t i = 0; i < cp.size(); ++i) {
    EXPECT_LE(RelativeError(gp[i]->value, cp[i]->value, trained_floor[i]), tolerance) << "trained " << cp[i]->name;
  }
  const std::vector<Tensor<T>*> cb = cpu->Buffers(), gb = gpu->Buffers();
  ASSERT_EQ(cb.size(), gb.size());
  for (size_t i = 0; i < cb.size(); ++i) EXPECT_LE(RelativeError(*gb[i], *cb[i]), tolerance) << "buffer " << i;
}

ModelConfig ChoirRecConfigFor(const std::string& activation) {
  ModelConfig c;
  c.set_type("choirrec");
  c.set_embedding_dim(kDim);
  c.add_hidden(64);
  c.add_hidden(32);
  c.set_activation(activation);
  c.add_attention_hidden(16);
  ChoirRecConfig* r = c.mutable_choirrec();
  r->add_group_hidden(32);
  r->add_group_hidden(16);
  r->set_fusion_dim(12);
  r->add_gate_hidden(8);
  r->set_aux_loss_weight(1.0);
  r->set_kd_lambda(0.5);  // large enough that the KD terms matter in the comparison
  r->set_kd_min_purchases(2);
  r->set_kd_confidence(0.05);
  return c;
}

template <typename T>
void CompareChoirRec(const std::string& activation, int batch) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const ModelShape shape = Shape(10);
  const ModelConfig config = ChoirRecConfigFor(activation);
  CpuLayerFactory<T> cpu_factory;
  cuda::CudaLayerFactory<T> gpu_factory;
  auto cpu = ChoirRecModel<T>::Create(config, shape, 42, &cpu_factory);
  auto gpu = ChoirRecModel<T>::Create(config, shape, 42, &gpu_factory);
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  ExpectSameTraining<T>(cpu->get(), gpu->get(), (*cpu)->shape(), batch, &rng, kTolerance<T> * 10);
}

TEST(GpuModelTest, ChoirRecDoubleMatchesTheCpu) {
  CHOIR_REQUIRE_GPU();
  CompareChoirRec<double>("relu", 300);
  CompareChoirRec<double>("dice", 37);
}

TEST(GpuModelTest, ChoirRecFloatMatchesTheCpu) {
  CHOIR_REQUIRE_GPU();
  CompareChoirRec<float>("tanh", 1000);
  CompareChoirRec<float>("prelu", 1);
}

TEST(GpuModelTest, DnnAndDinMatchTheCpu) {
  CHOIR_REQUIRE_GPU();
  for (const char* type : {"dnn", "din", "dnn+groupid"}) {
    SCOPED_TRACE(type);
    const uint64_t seed = FreshSeed();
    SCOPED_TRACE(seed);
    std::mt19937_64 rng(seed);
    ModelConfig c;
    c.set_type(type);
    c.set_embedding_dim(kDim);
    c.add_hidden(64);
    c.add_hidden(32);
    // Smooth activations (see the top of the file): ReLU's kink makes float gradients flaky.
    const std::string t(type);
    c.set_activation(t == "din" ? "dice" : t == "dnn" ? "tanh" : "sigmoid");
    CpuLayerFactory<float> cpu_factory;
    cuda::CudaLayerFactory<float> gpu_factory;
    auto cpu = RankingModel::Create(c, Shape(10), 9, &cpu_factory);
    auto gpu = RankingModel::Create(c, Shape(10), 9, &gpu_factory);
    ASSERT_TRUE(cpu.ok() && gpu.ok()) << cpu.status() << gpu.status();
    ExpectSameTraining<float>(cpu->get(), gpu->get(), (*cpu)->shape(), 500, &rng, kTolerance<float> * 10);
  }
}

// Evaluation mode (Dice's running statistics) gives the same predictions too.
TEST(GpuModelTest, EvaluationModeMatchesTheCpu) {
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(seed);
  std::mt19937_64 rng(seed);
  const ModelShape shape = Shape(10);
  const ModelConfig config = ChoirRecConfigFor("dice");
  CpuLayerFactory<float> cpu_factory;
  cuda::CudaLayerFactory<float> gpu_factory;
  auto cpu = ChoirRecModel<float>::Create(config, shape, 3, &cpu_factory);
  auto gpu = ChoirRecModel<float>::Create(config, shape, 3, &gpu_factory);
  ASSERT_TRUE(cpu.ok() && gpu.ok());
  Tensor<float> cl, gl;
  for (int i = 0; i < 3; ++i) {  // training forwards move the running statistics
    const BasicModelInputs<float> in = RandomInputs<float>((*cpu)->shape(), 200, &rng);
    (*cpu)->Forward(in, &cl);
    (*gpu)->Forward(in, &gl);
  }
  (*cpu)->SetTraining(false);
  (*gpu)->SetTraining(false);
  const BasicModelInputs<float> in = RandomInputs<float>((*cpu)->shape(), 333, &rng);
  (*cpu)->Forward(in, &cl);
  (*gpu)->Forward(in, &gl);
  EXPECT_LE(RelativeError(gl, cl), kTolerance<float> * 10);
}

}  // namespace
}  // namespace choir::models
