// The in-process collective group (core/collective.h): every rank a thread of this process.
#include "core/collective.h"

#include <atomic>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

using Ranks = std::vector<std::unique_ptr<Collective>>;

// Runs fn(rank, collective) on one thread per rank and joins them.
void OnEveryRank(const Ranks& ranks, const std::function<void(int, Collective*)>& fn) {
  std::vector<std::thread> threads;
  for (size_t r = 0; r < ranks.size(); ++r) {
    threads.emplace_back([&, r] { fn(static_cast<int>(r), ranks[r].get()); });
  }
  for (std::thread& t : threads) t.join();
}

uint64_t FreshSeed() { return (uint64_t{std::random_device{}()} << 32) ^ std::random_device{}(); }

template <typename T>
std::vector<T> RandomValues(int64_t n, std::mt19937_64* rng) {
  std::uniform_real_distribution<double> u(-1e3, 1e3);
  std::vector<T> v(n);
  for (T& x : v) x = static_cast<T>(u(*rng));
  return v;
}

class CollectiveSizeTest : public ::testing::TestWithParam<int> {};

// Every rank's result equals ((x0 + x1) + x2) + ... formed independently in T, bit for bit.
template <typename T>
void ExpectRankOrderedSumOnEveryRank(int size) {
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed, ", size ", size));
  std::mt19937_64 rng(seed);
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{10007}}) {
    std::vector<std::vector<T>> inputs(size);
    for (auto& in : inputs) in = RandomValues<T>(n, &rng);
    std::vector<T> expected(n);
    for (int64_t i = 0; i < n; ++i) {
      T acc = inputs[0][i];
      for (int r = 1; r < size; ++r) acc += inputs[r][i];
      expected[i] = acc;
    }
    std::vector<std::vector<T>> outputs = inputs;
    Ranks ranks = NewInProcessCollectives(size);
    std::vector<absl::Status> status(size);
    OnEveryRank(ranks,
                [&](int r, Collective* c) { status[r] = c->AllReduceSum(outputs[r].data(), n); });
    for (int r = 0; r < size; ++r) {
      ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
      ASSERT_EQ(0, n == 0 ? 0 : std::memcmp(outputs[r].data(), expected.data(), n * sizeof(T)))
          << "rank " << r << ", n " << n;
    }
  }
}

TEST_P(CollectiveSizeTest, AllReduceSumFloatIsTheRankOrderedSumOnEveryRank) {
  ExpectRankOrderedSumOnEveryRank<float>(GetParam());
}

TEST_P(CollectiveSizeTest, AllReduceSumDoubleIsTheRankOrderedSumOnEveryRank) {
  ExpectRankOrderedSumOnEveryRank<double>(GetParam());
}

TEST_P(CollectiveSizeTest, RankAndSizeNumberTheGroup) {
  Ranks ranks = NewInProcessCollectives(GetParam());
  ASSERT_EQ(ranks.size(), static_cast<size_t>(GetParam()));
  for (int r = 0; r < GetParam(); ++r) {
    EXPECT_EQ(ranks[r]->rank(), r);
    EXPECT_EQ(ranks[r]->size(), GetParam());
  }
}

TEST_P(CollectiveSizeTest, BroadcastCopiesTheRootsBytesToEveryRank) {
  const int size = GetParam();
  const uint64_t seed = FreshSeed();
  SCOPED_TRACE(absl::StrCat("seed ", seed));
  std::mt19937_64 rng(seed);
  Ranks ranks = NewInProcessCollectives(size);
  for (int root = 0; root < size; ++root) {
    for (size_t bytes : {size_t{0}, size_t{1}, size_t{4099}}) {
      std::vector<std::vector<unsigned char>> bufs(size, std::vector<unsigned char>(bytes));
      for (auto& b : bufs) {
        for (auto& x : b) x = static_cast<unsigned char>(rng());
      }
      const std::vector<unsigned char> expected = bufs[root];
      std::vector<absl::Status> status(size);
      OnEveryRank(ranks, [&](int r, Collective* c) {
        status[r] = c->Broadcast(bufs[r].data(), bytes, root);
      });
      for (int r = 0; r < size; ++r) {
        ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
        EXPECT_EQ(bufs[r], expected) << "rank " << r << ", root " << root << ", bytes " << bytes;
      }
    }
  }
}

TEST_P(CollectiveSizeTest, BarrierReturnsOnlyAfterEveryRankArrived) {
  const int size = GetParam();
  Ranks ranks = NewInProcessCollectives(size);
  constexpr int kRounds = 50;
  std::vector<std::atomic<int>> arrivals(size);
  OnEveryRank(ranks, [&](int r, Collective* c) {
    for (int round = 1; round <= kRounds; ++round) {
      arrivals[r].store(round);
      ASSERT_TRUE(c->Barrier().ok());
      for (int other = 0; other < size; ++other) {
        // Every rank has entered this round's barrier and cannot pass the next one without us.
        const int seen = arrivals[other].load();
        ASSERT_TRUE(seen == round || seen == round + 1)
            << "rank " << r << " left barrier " << round << " while rank " << other
            << " had arrived at " << seen;
      }
    }
  });
}

TEST_P(CollectiveSizeTest, ManyConsecutiveOperationsStayInStep) {
  const int size = GetParam();
  Ranks ranks = NewInProcessCollectives(size);
  constexpr int kOps = 2000;
  std::vector<int> failures(size, 0);
  OnEveryRank(ranks, [&](int r, Collective* c) {
    for (int op = 0; op < kOps; ++op) {
      switch (op % 4) {
        case 0: {
          float v[3] = {float(r), float(op), 1.0f};
          absl::Status s = c->AllReduceSum(v, 3);
          const float rank_sum = float(size * (size - 1) / 2);
          if (!s.ok() || v[0] != rank_sum || v[1] != float(op) * size || v[2] != float(size)) {
            ++failures[r];
          }
          break;
        }
        case 1: {
          double v = r + 1;
          absl::Status s = c->AllReduceSum(&v, 1);
          if (!s.ok() || v != size * (size + 1) / 2.0) ++failures[r];
          break;
        }
        case 2: {
          int root = op % size;
          int v = r == root ? op : -1;
          absl::Status s = c->Broadcast(&v, sizeof(v), root);
          if (!s.ok() || v != op) ++failures[r];
          break;
        }
        default:
          if (!c->Barrier().ok()) ++failures[r];
      }
    }
  });
  for (int r = 0; r < size; ++r) EXPECT_EQ(failures[r], 0) << "rank " << r;
}

// Sizes 2..4: a mismatch needs two ranks.
class CollectiveMismatchTest : public ::testing::TestWithParam<int> {};

TEST_P(CollectiveMismatchTest, MismatchedCountsGiveInvalidArgumentOnEveryRank) {
  const int size = GetParam();
  Ranks ranks = NewInProcessCollectives(size);
  std::vector<absl::Status> status(size);
  std::vector<std::vector<float>> bufs(size, std::vector<float>(5, 1.0f));
  OnEveryRank(ranks, [&](int r, Collective* c) {
    status[r] = c->AllReduceSum(bufs[r].data(), r == size - 1 ? 5 : 4);
  });
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(status[r].code(), absl::StatusCode::kInvalidArgument)
        << "rank " << r << ": " << status[r];
    EXPECT_EQ(bufs[r], std::vector<float>(5, 1.0f)) << "rank " << r << ": data was touched";
  }
  // Nothing moved, so the group is still usable.
  OnEveryRank(ranks, [&](int r, Collective* c) { status[r] = c->AllReduceSum(bufs[r].data(), 5); });
  for (int r = 0; r < size; ++r) {
    ASSERT_TRUE(status[r].ok()) << "rank " << r << ": " << status[r];
    EXPECT_EQ(bufs[r], std::vector<float>(5, float(size)));
  }
}

TEST_P(CollectiveMismatchTest, DifferentOperationsGiveInvalidArgumentOnEveryRank) {
  const int size = GetParam();
  Ranks ranks = NewInProcessCollectives(size);
  std::vector<absl::Status> status(size);
  OnEveryRank(ranks, [&](int r, Collective* c) {
    double v = 1;
    status[r] = r == 0 ? c->Barrier() : c->AllReduceSum(&v, 1);
  });
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(status[r].code(), absl::StatusCode::kInvalidArgument) << "rank " << r;
    EXPECT_NE(status[r].message().find("Barrier"), absl::string_view::npos) << status[r];
  }
}

TEST_P(CollectiveSizeTest, InvalidRootOrCountGivesInvalidArgumentOnEveryRank) {
  const int size = GetParam();
  Ranks ranks = NewInProcessCollectives(size);
  std::vector<absl::Status> bad_root(size), bad_count(size), bad_buffer(size);
  OnEveryRank(ranks, [&](int r, Collective* c) {
    int v = 0;
    bad_root[r] = c->Broadcast(&v, sizeof(v), size);
    float f = 0;
    bad_count[r] = c->AllReduceSum(&f, -1);
    bad_buffer[r] = c->AllReduceSum(static_cast<float*>(nullptr), 1);
  });
  for (int r = 0; r < size; ++r) {
    EXPECT_EQ(bad_root[r].code(), absl::StatusCode::kInvalidArgument) << bad_root[r];
    EXPECT_EQ(bad_count[r].code(), absl::StatusCode::kInvalidArgument) << bad_count[r];
    EXPECT_EQ(bad_buffer[r].code(), absl::StatusCode::kInvalidArgument) << bad_buffer[r];
  }
}

std::string SizeName(const ::testing::TestParamInfo<int>& info) {
  return absl::StrCat("size", info.param);
}
INSTANTIATE_TEST_SUITE_P(Sizes, CollectiveSizeTest, ::testing::Range(1, 5), SizeName);
INSTANTIATE_TEST_SUITE_P(Sizes, CollectiveMismatchTest, ::testing::Range(2, 5), SizeName);

TEST(InProcessCollectiveTest, MissingRankGivesDeadlineExceededNamingIt) {
  InProcessCollectiveOptions options;
  options.timeout = absl::Milliseconds(100);
  Ranks ranks = NewInProcessCollectives(3, options);
  std::vector<absl::Status> status(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r) {
    threads.emplace_back([&, r] {
      float v = 1;
      status[r] = ranks[r]->AllReduceSum(&v, 1);
    });
  }
  for (std::thread& t : threads) t.join();
  for (int r = 0; r < 2; ++r) {
    EXPECT_EQ(status[r].code(), absl::StatusCode::kDeadlineExceeded) << status[r];
    EXPECT_NE(status[r].message().find("rank(s) 2 of 3 did not arrive"), absl::string_view::npos)
        << status[r];
  }
  // The group is broken: the late rank, and everyone after, fails at once with the same error.
  float v = 1;
  absl::Status late = ranks[2]->AllReduceSum(&v, 1);
  EXPECT_EQ(late.code(), absl::StatusCode::kDeadlineExceeded) << late;
  EXPECT_EQ(ranks[0]->Barrier().code(), absl::StatusCode::kDeadlineExceeded);
}

TEST(InProcessCollectiveTest, DestroyedRankMakesTheOthersFailWithUnavailableNamingIt) {
  InProcessCollectiveOptions options;
  options.timeout = absl::InfiniteDuration();  // the departure, not a timeout, must end the wait
  Ranks ranks = NewInProcessCollectives(3, options);
  absl::Status waiting;
  std::thread t([&] { waiting = ranks[0]->Barrier(); });
  ranks[1].reset();
  t.join();
  EXPECT_EQ(waiting.code(), absl::StatusCode::kUnavailable) << waiting;
  EXPECT_NE(waiting.message().find("rank 1 of 3 left"), absl::string_view::npos) << waiting;
  EXPECT_EQ(ranks[2]->Barrier().code(), absl::StatusCode::kUnavailable);
}

TEST(InProcessCollectiveTest, SingleRankOperationsCompleteAlone) {
  Ranks ranks = NewInProcessCollectives(1, {absl::InfiniteDuration()});
  double v[2] = {1.5, -2.0};
  ASSERT_TRUE(ranks[0]->AllReduceSum(v, 2).ok());
  EXPECT_EQ(v[0], 1.5);
  EXPECT_EQ(v[1], -2.0);
  char bytes[3] = {'a', 'b', 'c'};
  ASSERT_TRUE(ranks[0]->Broadcast(bytes, 3, 0).ok());
  EXPECT_EQ(std::string(bytes, 3), "abc");
  EXPECT_TRUE(ranks[0]->Barrier().ok());
}

}  // namespace
}  // namespace choir
