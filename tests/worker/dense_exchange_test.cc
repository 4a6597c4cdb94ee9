// The dense exchange of a cluster step (worker/internal/dense_exchange.h) over an in-process
// group: the summed gradients are exactly the rank-ordered float sums of each worker's
// share-scaled gradients, the loss likewise, worker 0's values reach everyone, a lone worker is
// left alone, and a missing worker is an error rather than a hang.
#include "worker/internal/dense_exchange.h"

#include <random>
#include <thread>
#include <vector>

#include "absl/time/time.h"
#include "core/collective.h"
#include "gtest/gtest.h"
#include "models/layers.h"

namespace choir::worker::internal {
namespace {

using models::Device;
using models::Param;
using models::Tensor;

// One worker's parameters: three tensors of odd shapes, values and gradients random.
struct WorkerParams {
  Param<float> a, b, c;
  std::vector<Param<float>*> all() { return {&a, &b, &c}; }
  std::vector<const Param<float>*> all() const { return {&a, &b, &c}; }
};

void Fill(std::mt19937* rng, Param<float>* p, int rows, int cols) {
  std::uniform_real_distribution<float> u(-2, 2);
  p->value.Resize(rows, cols);
  p->grad.Resize(rows, cols);
  for (int64_t i = 0; i < p->value.size(); ++i) {
    p->value.data()[i] = u(*rng);
    p->grad.data()[i] = u(*rng);
  }
}

std::vector<WorkerParams> MakeWorkers(int n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<WorkerParams> w(n);
  for (WorkerParams& p : w) {
    Fill(&rng, &p.a, 3, 5);
    Fill(&rng, &p.b, 1, 7);
    Fill(&rng, &p.c, 17, 2);
  }
  return w;
}

TEST(DenseExchangeTest, SumsShareScaledGradientsAndLossesInRankOrder) {
  constexpr int kWorkers = 3;
  std::vector<WorkerParams> workers = MakeWorkers(kWorkers, 7);
  const float shares[kWorkers] = {0.5f, 0.3125f, 0.1875f};
  const double losses[kWorkers] = {0.71, 0.64, 0.93};
  // The expected result, computed as the exchange must: (s0 g0 + s1 g1) + s2 g2 in float.
  std::vector<std::vector<float>> expected(3);
  for (int t = 0; t < 3; ++t) {
    const int64_t n = workers[0].all()[t]->grad.size();
    expected[t].assign(n, 0.f);
    for (int64_t i = 0; i < n; ++i) {
      float sum = 0;
      for (int w = 0; w < kWorkers; ++w) {
        const float g = workers[w].all()[t]->grad.data()[i] * shares[w];
        sum = w == 0 ? g : sum + g;
      }
      expected[t][i] = sum;
    }
  }
  float expected_loss = 0;
  for (int w = 0; w < kWorkers; ++w) {
    const float l = static_cast<float>(losses[w] * shares[w]);
    expected_loss = w == 0 ? l : expected_loss + l;
  }

  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(kWorkers);
  std::vector<absl::StatusOr<double>> results(kWorkers, absl::UnknownError("not run"));
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      DenseExchange exchange(workers[w].all(), group[w].get(), Device::kCpu);
      results[w] = exchange.AllReduce(shares[w], losses[w]);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int w = 0; w < kWorkers; ++w) {
    ASSERT_TRUE(results[w].ok()) << results[w].status();
    EXPECT_EQ(*results[w], static_cast<double>(expected_loss)) << "worker " << w;
    for (int t = 0; t < 3; ++t) {
      const Tensor<float>& g = workers[w].all()[t]->grad;
      for (int64_t i = 0; i < g.size(); ++i) {
        ASSERT_EQ(g.data()[i], expected[t][i]) << "worker " << w << ", tensor " << t << ", element " << i;
      }
    }
  }
}

TEST(DenseExchangeTest, BroadcastGivesEveryWorkerWorker0sValuesAndLeavesGradients) {
  constexpr int kWorkers = 3;
  std::vector<WorkerParams> workers = MakeWorkers(kWorkers, 11);
  const std::vector<WorkerParams> before = workers;
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(kWorkers);
  std::vector<absl::Status> results(kWorkers);
  std::vector<std::thread> threads;
  for (int w = 0; w < kWorkers; ++w) {
    threads.emplace_back([&, w] {
      DenseExchange exchange(workers[w].all(), group[w].get(), Device::kCpu);
      results[w] = exchange.BroadcastFromWorker0();
    });
  }
  for (std::thread& t : threads) t.join();
  for (int w = 0; w < kWorkers; ++w) {
    ASSERT_TRUE(results[w].ok()) << results[w];
    for (int t = 0; t < 3; ++t) {
      const Param<float>* got = workers[w].all()[t];
      const Param<float>* want = before[0].all()[t];
      const Param<float>* own = before[w].all()[t];
      for (int64_t i = 0; i < got->value.size(); ++i) {
        ASSERT_EQ(got->value.data()[i], want->value.data()[i]) << "worker " << w << ", tensor " << t;
        ASSERT_EQ(got->grad.data()[i], own->grad.data()[i]) << "worker " << w << ", tensor " << t;
      }
    }
  }
}

TEST(DenseExchangeTest, ALoneWorkerKeepsItsGradientsAndALoneShareStillScales) {
  std::vector<WorkerParams> workers = MakeWorkers(1, 3);
  const WorkerParams before = workers[0];
  DenseExchange lone(workers[0].all(), nullptr, Device::kCpu);
  absl::StatusOr<double> loss = lone.AllReduce(1.0f, 0.123456789);
  ASSERT_TRUE(loss.ok());
  EXPECT_EQ(*loss, static_cast<double>(0.123456789f));
  EXPECT_TRUE(lone.BroadcastFromWorker0().ok());
  for (int t = 0; t < 3; ++t) {
    const Param<float>* got = workers[0].all()[t];
    const Param<float>* want = before.all()[t];
    for (int64_t i = 0; i < got->grad.size(); ++i) {
      ASSERT_EQ(got->grad.data()[i], want->grad.data()[i]);
      ASSERT_EQ(got->value.data()[i], want->value.data()[i]);
    }
  }
  // A share below 1 (a short last slice) scales even without a group.
  loss = lone.AllReduce(0.5f, 2.0);
  ASSERT_TRUE(loss.ok());
  EXPECT_EQ(*loss, 1.0);
  for (int t = 0; t < 3; ++t) {
    const Param<float>* got = workers[0].all()[t];
    const Param<float>* want = before.all()[t];
    for (int64_t i = 0; i < got->grad.size(); ++i) ASSERT_EQ(got->grad.data()[i], want->grad.data()[i] * 0.5f);
  }
}

TEST(DenseExchangeTest, AMissingWorkerIsADeadlineNotAHang) {
  std::vector<WorkerParams> workers = MakeWorkers(2, 5);
  InProcessCollectiveOptions options;
  options.timeout = absl::Milliseconds(200);
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(2, options);
  DenseExchange exchange(workers[0].all(), group[0].get(), Device::kCpu);
  const absl::StatusOr<double> loss = exchange.AllReduce(0.5f, 1.0);  // worker 1 never comes
  ASSERT_FALSE(loss.ok());
  EXPECT_TRUE(absl::IsDeadlineExceeded(loss.status())) << loss.status();
  EXPECT_NE(loss.status().message().find("rank(s) 1 of 2 did not arrive"), std::string::npos) << loss.status();
}

}  // namespace
}  // namespace choir::worker::internal
