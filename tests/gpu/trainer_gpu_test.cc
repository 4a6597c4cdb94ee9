// GPU workers: the dense exchange (worker/internal/dense_exchange.h) with the parameters on the
// GPU, through a host buffer or, with NCCL, a device buffer, gives exactly the host arithmetic;
// a cuda job trains the same in one process, in a local cluster whose worker sums on the host,
// and in one whose worker has an NCCL group; and batches staged ahead on the upload stream
// (trainer.overlap_uploads) train exactly like synchronous copies (byte-identical predictions
// with synchronous reads; within cluster_test's bounds with one-step-stale reads).
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "choir/config.h"
#include "core/collective.h"
#include "core/fs.h"
#include "gtest/gtest.h"
#include "models/layers.h"
#include "tests/gpu/gpu_test_util.h"
#include "tests/worker/worker_test_util.h"
#include "worker/cluster.h"
#include "worker/internal/dense_exchange.h"
#include "worker/trainer.h"
#if CHOIR_WITH_NCCL
#include "models/cuda/nccl_collective.h"
#endif

namespace choir::worker {
namespace {

using models::Device;
using models::Param;
using models::Tensor;
using choir::testing::FreshSeed;
using choir::testing::RandomTensor;

struct GpuParams {
  std::vector<Param<float>> params;
  std::vector<Tensor<float>> host_values, host_grads;
  std::vector<Param<float>*> all() {
    std::vector<Param<float>*> out;
    for (Param<float>& p : params) out.push_back(&p);
    return out;
  }
};

// Three parameters of odd shapes, random values and gradients, on the GPU (host copies kept).
GpuParams MakeGpuParams(std::mt19937_64* rng) {
  GpuParams g;
  const int shapes[3][2] = {{3, 5}, {1, 7}, {129, 33}};
  g.params.resize(3);
  for (int i = 0; i < 3; ++i) {
    g.host_values.push_back(RandomTensor<float>(shapes[i][0], shapes[i][1], rng));
    g.host_grads.push_back(RandomTensor<float>(shapes[i][0], shapes[i][1], rng));
    g.params[i].value = g.host_values[i].To(Device::kCuda);
    g.params[i].grad = g.host_grads[i].To(Device::kCuda);
  }
  return g;
}

void ExpectExchange(internal::DenseExchange* exchange, GpuParams* g, const std::string& what) {
  SCOPED_TRACE(what);
  // A share below 1, so the whole path runs (pack, scale, sum, unpack) even with one rank.
  absl::StatusOr<double> loss = exchange->AllReduce(0.25f, 2.5);
  ASSERT_TRUE(loss.ok()) << loss.status();
  EXPECT_EQ(*loss, 0.625);
  ASSERT_TRUE(exchange->BroadcastFromWorker0().ok());
  for (size_t i = 0; i < g->params.size(); ++i) {
    const Tensor<float> grad = g->params[i].grad.To(Device::kCpu);
    const Tensor<float> value = g->params[i].value.To(Device::kCpu);
    ASSERT_TRUE(grad.SameShape(g->host_grads[i]));
    for (int64_t k = 0; k < grad.size(); ++k) {
      ASSERT_EQ(grad.data()[k], g->host_grads[i].data()[k] * 0.25f) << "param " << i << ", element " << k;
    }
    ASSERT_EQ(0, std::memcmp(value.data(), g->host_values[i].data(), value.size() * sizeof(float)))
        << "param " << i << ": a lone worker's broadcast changed its values";
  }
}

TEST(GpuDenseExchangeTest, GpuParametersThroughAHostBuffer) {
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  GpuParams g = MakeGpuParams(&rng);
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(1);
  internal::DenseExchange exchange(g.all(), group[0].get(), Device::kCpu);
  ExpectExchange(&exchange, &g, "host buffer");
}

#if CHOIR_WITH_NCCL
TEST(GpuDenseExchangeTest, GpuParametersThroughAnNcclDeviceBuffer) {
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  GpuParams g = MakeGpuParams(&rng);
  std::vector<std::unique_ptr<Collective>> bootstrap = NewInProcessCollectives(1);
  absl::StatusOr<std::unique_ptr<models::cuda::NcclCollective>> nccl =
      models::cuda::NcclCollective::Create(bootstrap[0].get());
  ASSERT_TRUE(nccl.ok()) << nccl.status();
  internal::DenseExchange exchange(g.all(), nccl->get(), Device::kCuda);
  EXPECT_EQ(exchange.buffer_device(), Device::kCuda);
  ExpectExchange(&exchange, &g, "NCCL device buffer");
}
#endif

class GpuClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    testing::Generate(fs_, "/ds", 4000, /*seed=*/9);
  }
  static void TearDownTestSuite() { delete fs_; }
  static JobConfig CudaJob(const std::string& out) {
    JobConfig job = testing::SmallJob("/ds", out, 3);
    job.mutable_trainer()->set_max_steps(6);
    job.mutable_trainer()->set_device("cuda");
    return job;
  }
  static std::string Preds(const std::string& out) {
    absl::StatusOr<std::string> text = fs_->ReadFileToString(out + "/preds.tsv");
    EXPECT_TRUE(text.ok()) << text.status();
    return text.ok() ? *text : std::string();
  }
  static MemFileSystem* fs_;
};
MemFileSystem* GpuClusterTest::fs_ = nullptr;

TEST_F(GpuClusterTest, ACudaWorkerTrainsAloneAndInAClusterAlike) {
  CHOIR_REQUIRE_GPU();
  const absl::StatusOr<TrainResult> alone = TrainAndEvaluate(fs_, CudaJob("/alone"));
  ASSERT_TRUE(alone.ok()) << alone.status();
  std::vector<std::string> modes = {"host"};
  if (CHOIR_WITH_NCCL) modes.push_back("nccl");
  for (const std::string& mode : modes) {
    SCOPED_TRACE(mode);
    JobConfig job = CudaJob("/cluster-" + mode);
    job.mutable_trainer()->set_dense_allreduce(mode);
    ClusterConfig* c = job.mutable_cluster();
    c->set_servers(2);
    c->set_workers(1);
    const absl::StatusOr<TrainResult> clustered = RunLocalCluster(fs_, job);
    ASSERT_TRUE(clustered.ok()) << clustered.status();
    EXPECT_EQ(clustered->steps, alone->steps);
    const std::string expected = Preds("/alone");
    ASSERT_FALSE(expected.empty());
    EXPECT_TRUE(Preds("/cluster-" + mode) == expected) << "predictions differ from the single-process run";
  }
}

// trainer.overlap_uploads stages each batch on the upload stream from pinned memory; the
// kernels read the same bytes as with synchronous copies, so synchronous training is
// bit-identical. With the one-step-stale prefetch (the copies overlap the previous step) whether
// a pull sees the previous step's push is a race in either mode, so there the runs must train
// alike within the bounds of cluster_test's OneStepStaleReadsTrainAsWell.
TEST_F(GpuClusterTest, OverlappedUploadsTrainLikeSynchronousCopies) {
  CHOIR_REQUIRE_GPU();
  for (const std::string model : {"dnn", "din"}) {
    for (int staleness : {0, 1}) {
      SCOPED_TRACE(absl::StrCat(model, ", sparse_staleness ", staleness));
      std::string preds[2];
      TrainResult results[2];
      for (int overlap = 0; overlap < 2; ++overlap) {
        const std::string out = absl::StrCat("/overlap-", model, "-", staleness, "-", overlap);
        JobConfig job = CudaJob(out);
        job.mutable_model()->set_type(model);
        job.mutable_trainer()->set_max_steps(12);
        job.mutable_trainer()->set_sparse_staleness(staleness);
        job.mutable_trainer()->set_overlap_uploads(overlap == 1);
        const absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_EQ(r->steps, 12);
        results[overlap] = *r;
        preds[overlap] = Preds(out);
      }
      ASSERT_FALSE(preds[0].empty());
      if (staleness == 0) {
        EXPECT_TRUE(preds[0] == preds[1]) << "staged uploads changed the predictions";
      } else {
        EXPECT_EQ(results[0].samples, results[1].samples);
        EXPECT_NEAR(results[0].last_loss, results[1].last_loss, 0.01);
        EXPECT_NEAR(results[0].test.overall.auc, results[1].test.overall.auc, 0.02);
      }
    }
  }
}

}  // namespace
}  // namespace choir::worker
