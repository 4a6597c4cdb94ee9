// The NCCL collective (models/cuda/nccl_collective.h) on device memory, bootstrapped through an
// in-process group. One rank on GPU 0 everywhere a GPU is present; two ranks on two GPUs (two
// threads, each with its own device and raw stream) where two GPUs are visible.
#include "models/cuda/nccl_collective.h"

#include <cuda_runtime.h>

#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/collective.h"
#include "gtest/gtest.h"
#include "tests/gpu/gpu_test_util.h"

namespace choir {
namespace {

using models::Device;
using models::Tensor;
using models::cuda::NcclCollective;
using models::cuda::NcclCollectiveOptions;
using testing::FreshSeed;
using testing::RandomTensor;

std::unique_ptr<NcclCollective> MustCreate(Collective* bootstrap,
                                           const NcclCollectiveOptions& options = {}) {
  absl::StatusOr<std::unique_ptr<NcclCollective>> c = NcclCollective::Create(bootstrap, options);
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(c).value() : nullptr;
}

// With one rank the sum is the data itself, bit for bit.
template <typename T>
void ExpectSingleRankAllReduceKeepsTheData(bool wait) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed, ", wait ", wait));
  std::mt19937_64 rng(seed);
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(1);
  NcclCollectiveOptions options;
  options.wait = wait;
  std::unique_ptr<NcclCollective> nccl = MustCreate(group[0].get(), options);
  ASSERT_NE(nccl, nullptr);
  EXPECT_EQ(nccl->rank(), 0);
  EXPECT_EQ(nccl->size(), 1);
  for (int cols : {1, 1000, 65537}) {
    const Tensor<T> host = RandomTensor<T>(3, cols, &rng);
    Tensor<T> dev = host.To(Device::kCuda);
    absl::Status s = nccl->AllReduceSum(dev.data(), dev.size());
    ASSERT_TRUE(s.ok()) << s;
    const Tensor<T> back = dev.To(Device::kCpu);  // synchronises the stream
    ASSERT_EQ(0, std::memcmp(back.data(), host.data(), host.size() * sizeof(T))) << "cols " << cols;
  }
  EXPECT_TRUE(nccl->AllReduceSum(static_cast<T*>(nullptr), 0).ok());
  EXPECT_TRUE(nccl->Barrier().ok());
}

TEST(NcclCollectiveTest, SingleRankAllReduceFloatKeepsTheData) {
  CHOIR_REQUIRE_GPU();
  ExpectSingleRankAllReduceKeepsTheData<float>(/*wait=*/true);
  ExpectSingleRankAllReduceKeepsTheData<float>(/*wait=*/false);
}

TEST(NcclCollectiveTest, SingleRankAllReduceDoubleKeepsTheData) {
  CHOIR_REQUIRE_GPU();
  ExpectSingleRankAllReduceKeepsTheData<double>(/*wait=*/true);
  ExpectSingleRankAllReduceKeepsTheData<double>(/*wait=*/false);
}

TEST(NcclCollectiveTest, SingleRankBroadcastAndBarrier) {
  CHOIR_REQUIRE_GPU();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(1);
  std::unique_ptr<NcclCollective> nccl = MustCreate(group[0].get());
  ASSERT_NE(nccl, nullptr);
  const Tensor<float> host = RandomTensor<float>(7, 129, &rng);
  Tensor<float> dev = host.To(Device::kCuda);
  absl::Status s = nccl->Broadcast(dev.data(), dev.size() * sizeof(float), 0);
  ASSERT_TRUE(s.ok()) << s;
  const Tensor<float> back = dev.To(Device::kCpu);
  EXPECT_EQ(0, std::memcmp(back.data(), host.data(), host.size() * sizeof(float)));
  for (int i = 0; i < 10; ++i) ASSERT_TRUE(nccl->Barrier().ok());
  // An invalid root is refused before anything is queued, and the group stays usable.
  EXPECT_EQ(nccl->Broadcast(dev.data(), 4, 1).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(nccl->Barrier().ok());
}

#define ASSERT_CUDA_OK(expr) ASSERT_EQ(cudaSuccess, (expr)) << #expr

// Rank r's data: multiples of 2^-8, so a sum of two is exact whatever the order.
std::vector<float> RankData(uint64_t seed, int rank, size_t n) {
  std::mt19937_64 rng(seed + 7919 * static_cast<uint64_t>(rank));
  std::uniform_int_distribution<int> u(-4096, 4096);
  std::vector<float> v(n);
  for (float& x : v) x = static_cast<float>(u(rng)) / 256;
  return v;
}

void RunRankOnItsOwnGpu(int rank, Collective* bootstrap, uint64_t seed, size_t n) {
  ASSERT_CUDA_OK(cudaSetDevice(rank));
  cudaStream_t stream = nullptr;
  ASSERT_CUDA_OK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  NcclCollectiveOptions options;
  options.device = rank;
  options.stream = stream;
  options.timeout = absl::Seconds(60);
  std::unique_ptr<NcclCollective> nccl = MustCreate(bootstrap, options);
  ASSERT_NE(nccl, nullptr);

  float* dev = nullptr;
  ASSERT_CUDA_OK(cudaMalloc(&dev, n * sizeof(float)));
  const std::vector<float> mine = RankData(seed, rank, n);
  ASSERT_CUDA_OK(
      cudaMemcpyAsync(dev, mine.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
  absl::Status s = nccl->AllReduceSum(dev, static_cast<int64_t>(n));
  EXPECT_TRUE(s.ok()) << s;
  std::vector<float> sum(n);
  ASSERT_CUDA_OK(
      cudaMemcpyAsync(sum.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  ASSERT_CUDA_OK(cudaStreamSynchronize(stream));
  const std::vector<float> a = RankData(seed, 0, n);
  const std::vector<float> b = RankData(seed, 1, n);
  for (size_t i = 0; i < n; ++i) {
    ASSERT_EQ(sum[i], a[i] + b[i]) << "rank " << rank << ", element " << i;
  }

  // Broadcast from rank 1: rank 0 receives rank 1's data.
  ASSERT_CUDA_OK(
      cudaMemcpyAsync(dev, mine.data(), n * sizeof(float), cudaMemcpyHostToDevice, stream));
  s = nccl->Broadcast(dev, n * sizeof(float), 1);
  EXPECT_TRUE(s.ok()) << s;
  ASSERT_CUDA_OK(
      cudaMemcpyAsync(sum.data(), dev, n * sizeof(float), cudaMemcpyDeviceToHost, stream));
  ASSERT_CUDA_OK(cudaStreamSynchronize(stream));
  EXPECT_EQ(sum, b) << "rank " << rank;

  s = nccl->Barrier();
  EXPECT_TRUE(s.ok()) << s;
  nccl.reset();  // waits for the other rank's destruction
  ASSERT_CUDA_OK(cudaFree(dev));
  ASSERT_CUDA_OK(cudaStreamDestroy(stream));
}

TEST(NcclCollectiveTest, TwoRanksOnTwoGpusSumAndBroadcast) {
  CHOIR_REQUIRE_GPU();
  int devices = 0;
  ASSERT_EQ(cudaSuccess, cudaGetDeviceCount(&devices));
  if (devices < 2) GTEST_SKIP() << "needs 2 GPUs, found " << devices << ": 2-rank test skipped";
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::vector<std::unique_ptr<Collective>> group = NewInProcessCollectives(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] { RunRankOnItsOwnGpu(r, group[r].get(), seed, 100003); });
  }
  for (std::thread& t : threads) t.join();
}

}  // namespace
}  // namespace choir
