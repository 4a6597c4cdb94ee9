// The MPI collective (core/mpi_collective.h). Run under mpirun with 2 or more processes (ctest:
// `mpirun -np 3`, label mpi); every process runs the same tests in the same order.
#include "core/mpi_collective.h"

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

std::unique_ptr<Collective> MustCreate(const MpiCollectiveOptions& options = {}) {
  absl::StatusOr<std::unique_ptr<Collective>> c = NewMpiCollective(options);
  CHECK(c.ok()) << c.status();
  return std::move(c).value();
}

// A seed drawn fresh on rank 0 and shared, so every run draws new data on all ranks.
uint64_t SharedFreshSeed(Collective* c) {
  uint64_t seed = (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}();
  CHECK(c->Broadcast(&seed, sizeof(seed), 0).ok());
  return seed;
}

// Rank r's data: multiples of 2^-8 in [-16, 16], so sums over a few ranks are exact in float
// and in any order: the expected sum does not depend on MPI's reduction order.
template <typename T>
std::vector<T> RankData(uint64_t seed, int rank, int64_t n) {
  std::mt19937_64 rng(seed + 7919 * static_cast<uint64_t>(rank));
  std::uniform_int_distribution<int> u(-4096, 4096);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(u(rng)) / 256;
  return v;
}

template <typename T>
void ExpectSumOfEveryRanksData() {
  MpiCollectiveOptions options;
  options.chunk_bytes = 4096;  // several MPI calls for the larger counts
  std::unique_ptr<Collective> c = MustCreate(options);
  const uint64_t seed = SharedFreshSeed(c.get());
  SCOPED_TRACE(absl::StrCat("seed ", seed, ", rank ", c->rank()));
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{1000}, int64_t{10007}}) {
    std::vector<T> data = RankData<T>(seed, c->rank(), n);
    std::vector<T> expected(n, T{0});
    for (int r = 0; r < c->size(); ++r) {
      std::vector<T> other = RankData<T>(seed, r, n);
      for (int64_t i = 0; i < n; ++i) expected[i] += other[i];
    }
    absl::Status s = c->AllReduceSum(data.data(), n);
    ASSERT_TRUE(s.ok()) << s;
    ASSERT_EQ(data, expected) << "n " << n;
  }
}

TEST(MpiCollectiveTest, GroupIsTheWorld) {
  absl::StatusOr<MpiWorld> world = GetMpiWorld();
  ASSERT_TRUE(world.ok()) << world.status();
  std::unique_ptr<Collective> c = MustCreate();
  EXPECT_EQ(c->rank(), world->rank);
  EXPECT_EQ(c->size(), world->size);
  EXPECT_GE(c->size(), 2) << "run this test under mpirun -np 2 or more";
}

TEST(MpiCollectiveTest, AllReduceSumFloatEqualsTheSumOfEveryRanksData) {
  ExpectSumOfEveryRanksData<float>();
}

TEST(MpiCollectiveTest, AllReduceSumDoubleEqualsTheSumOfEveryRanksData) {
  ExpectSumOfEveryRanksData<double>();
}

TEST(MpiCollectiveTest, BroadcastCopiesTheRootsBytesToEveryRank) {
  MpiCollectiveOptions options;
  options.chunk_bytes = 4096;
  std::unique_ptr<Collective> c = MustCreate(options);
  const uint64_t seed = SharedFreshSeed(c.get());
  SCOPED_TRACE(absl::StrCat("seed ", seed, ", rank ", c->rank()));
  for (int root = 0; root < c->size(); ++root) {
    for (size_t bytes : {size_t{0}, size_t{1}, size_t{10000}}) {
      std::mt19937_64 rng(seed + root);
      std::string expected(bytes, '\0');
      for (char& x : expected) x = static_cast<char>(rng());
      std::string data = c->rank() == root ? expected : std::string(bytes, 'x');
      absl::Status s = c->Broadcast(data.data(), bytes, root);
      ASSERT_TRUE(s.ok()) << s;
      ASSERT_EQ(data, expected) << "root " << root << ", bytes " << bytes;
    }
  }
}

TEST(MpiCollectiveTest, BarriersAndAllReducesStayInStep) {
  std::unique_ptr<Collective> c = MustCreate();
  for (int i = 0; i < 200; ++i) {
    ASSERT_TRUE(c->Barrier().ok());
    double v = i + c->rank();
    ASSERT_TRUE(c->AllReduceSum(&v, 1).ok());
    const int n = c->size();
    ASSERT_EQ(v, double(n) * i + n * (n - 1) / 2.0);
  }
}

TEST(MpiCollectiveTest, MismatchedCallsGiveInvalidArgumentOnEveryRankAndKeepTheGroup) {
  std::unique_ptr<Collective> c = MustCreate();
  const bool last = c->rank() == c->size() - 1;
  std::vector<float> v(4, 1.0f);

  absl::Status s = c->AllReduceSum(v.data(), last ? 4 : 3);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("count from 3 to 4"), absl::string_view::npos) << s;
  EXPECT_EQ(v, std::vector<float>(4, 1.0f)) << "data was touched";

  s = last ? c->Barrier() : c->Broadcast(v.data(), 4, 0);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;

  s = c->AllReduceSum(last ? nullptr : v.data(), 4);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find(last ? "null buffer" : "another rank"), absl::string_view::npos) << s;

  s = c->AllReduceSum(v.data(), 4);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(v, std::vector<float>(4, float(c->size())));
}

TEST(MpiCollectiveTest, GroupOfListedRanksOrdersThemAsListed) {
  std::unique_ptr<Collective> world = MustCreate();
  // Every rank but 0, in reverse world order; rank 0 does not take part.
  MpiCollectiveOptions options;
  for (int r = world->size() - 1; r >= 1; --r) options.ranks.push_back(r);
  if (world->rank() != 0) {
    std::unique_ptr<Collective> c = MustCreate(options);
    EXPECT_EQ(c->size(), world->size() - 1);
    EXPECT_EQ(c->rank(), world->size() - 1 - world->rank());
    double sum = world->rank();
    ASSERT_TRUE(c->AllReduceSum(&sum, 1).ok());
    const int n = world->size();
    EXPECT_EQ(sum, n * (n - 1) / 2.0);
  } else {
    absl::StatusOr<std::unique_ptr<Collective>> c = NewMpiCollective(options);
    EXPECT_EQ(c.status().code(), absl::StatusCode::kInvalidArgument) << c.status();
  }
  ASSERT_TRUE(world->Barrier().ok());
}

TEST(MpiCollectiveTest, MissingRankGivesDeadlineExceeded) {
  std::unique_ptr<Collective> world = MustCreate();
  MpiCollectiveOptions options;
  options.timeout = absl::Milliseconds(300);
  std::unique_ptr<Collective> c = MustCreate(options);
  const bool last = c->rank() == c->size() - 1;
  if (!last) {
    absl::Status s = c->Barrier();
    EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
    EXPECT_NE(s.message().find("did not complete within"), absl::string_view::npos) << s;
    // Broken for good: the next call fails at once.
    EXPECT_EQ(c->Barrier().code(), absl::StatusCode::kDeadlineExceeded);
  }
  ASSERT_TRUE(world->Barrier().ok());
  // The late rank's call matches the operation the others gave up on; it completes, and their
  // requests complete in the background, so their destructors can free the communicator.
  if (last) {
    absl::Status s = c->Barrier();
    EXPECT_TRUE(s.ok()) << s;
  }
  ASSERT_TRUE(world->Barrier().ok());
}

TEST(MpiCollectiveTest, LaunchedByMpirunSeesTheLauncher) { EXPECT_TRUE(LaunchedByMpirun()); }

}  // namespace
}  // namespace choir

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  absl::Status s = choir::MpiInit(&argc, &argv);
  if (!s.ok()) {
    fprintf(stderr, "MpiInit: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  const int result = RUN_ALL_TESTS();
  s = choir::MpiFinalize();
  if (!s.ok()) {
    fprintf(stderr, "MpiFinalize: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return result;
}
