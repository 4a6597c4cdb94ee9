// Feature admission (SlotConfig::admit_min_count) and eviction (ttl_steps, capacity) in
// SparseTable, and their counters (SparseTable::stats).
#include <algorithm>
#include <memory>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "ps/feature_key.h"
#include "ps/internal/sparse_optimizer.h"
#include "ps/sparse_table.h"

namespace choir {
namespace {

constexpr uint32_t kSlot = 3;
constexpr uint64_t kSeed = 11;

std::unique_ptr<SparseTable> MakeTable(SlotConfig config, int num_shards = 1) {
  TableOptions options;
  options.seed = kSeed;
  options.num_shards = num_shards;
  options.slots[kSlot] = config;
  absl::StatusOr<std::unique_ptr<SparseTable>> table = SparseTable::Create(options);
  EXPECT_TRUE(table.ok()) << table.status();
  return *std::move(table);
}

std::vector<float> Pull(SparseTable& table, const std::vector<uint64_t>& keys) {
  size_t n = 0;
  for (uint64_t key : keys) n += static_cast<size_t>(table.Dim(key));
  std::vector<float> out(n, -7.0f);
  absl::Status status = table.Pull(keys, absl::MakeSpan(out));
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

void Push(SparseTable& table, const std::vector<uint64_t>& keys, float g) {
  size_t n = 0;
  for (uint64_t key : keys) n += static_cast<size_t>(table.Dim(key));
  absl::Status status = table.Push(keys, std::vector<float>(n, g));
  EXPECT_TRUE(status.ok()) << status;
}

std::vector<float> InitRow(uint64_t key, const SlotConfig& config) {
  std::vector<float> row(config.dim);
  for (int j = 0; j < config.dim; ++j) {
    row[j] = ps_internal::InitValue(key, ps_internal::InitSeedMix(kSeed), j, config.init_scale);
  }
  return row;
}

// ---------------------------------------------------------------------------------------------
// Admission

// A slot whose rows are ledgers: dim 1, SGD with lr 1 and zero initial rows, so a row holds
// minus the sum of its gradients and a pull tells whether it survived (non-zero) or was
// recreated (zeros); at most `capacity` rows.
SlotConfig LedgerSlot(int64_t capacity) {
  SlotConfig config;
  config.dim = 1;
  config.optimizer = OptimizerKind::kSgd;
  config.learning_rate = 1.0f;
  config.init_scale = 0;
  config.capacity = capacity;
  return config;
}

TEST(AdmissionTest, AKeyIsStoredAtItsNthPushAndItsGradientsUntilThenAreDropped) {
  SlotConfig config;
  config.dim = 4;
  config.admit_min_count = 3;
  auto table = MakeTable(config, 4);
  const uint64_t key = FeatureKey(kSlot, 42);
  const std::vector<float> zeros(4, 0.0f);

  // Pulls neither store nor count.
  EXPECT_EQ(Pull(*table, {key}), zeros);
  EXPECT_EQ(Pull(*table, {key}), zeros);
  EXPECT_EQ(table->stats().total.unadmitted, 0u);
  for (int push = 1; push <= 2; ++push) {
    Push(*table, {key}, 1.0f);
    EXPECT_EQ(Pull(*table, {key}), zeros) << "after push " << push;
    const TableStats stats = table->stats();
    EXPECT_EQ(stats.total.rows, 0u);
    EXPECT_EQ(stats.total.unadmitted, 1u);
    EXPECT_EQ(table->size(), 0u);
  }
  // The third push admits the key: its row holds the deterministic initial values (the
  // gradient of the admitting push is dropped too).
  Push(*table, {key}, 1.0f);
  EXPECT_EQ(Pull(*table, {key}), InitRow(key, config));
  TableStats stats = table->stats();
  EXPECT_EQ(stats.total.rows, 1u);
  EXPECT_EQ(stats.total.admitted, 1u);
  EXPECT_EQ(stats.total.unadmitted, 0u);
  EXPECT_EQ(stats.slots.at(kSlot).admitted, 1u);

  // From the fourth push on, gradients apply: exactly one Adagrad step from the initial row.
  Push(*table, {key}, 0.5f);
  auto reference = MakeTable(SlotConfig{config.dim});
  Push(*reference, {key}, 0.5f);
  EXPECT_EQ(Pull(*table, {key}), Pull(*reference, {key}));
}

TEST(AdmissionTest, OtherSlotsAdmitAtOnceAndCountersArePerKey) {
  TableOptions options;
  options.seed = kSeed;
  SlotConfig gated;
  gated.dim = 2;
  gated.admit_min_count = 2;
  SlotConfig open;
  open.dim = 2;
  options.slots = {{1, gated}, {2, open}};
  auto table = *SparseTable::Create(options);
  const uint64_t a = FeatureKey(1, 1), b = FeatureKey(1, 2), c = FeatureKey(2, 1);
  Push(*table, {a, b, c}, 1.0f);
  TableStats stats = table->stats();
  EXPECT_EQ(stats.slots.at(1).unadmitted, 2u);
  EXPECT_EQ(stats.slots.at(1).rows, 0u);
  EXPECT_EQ(stats.slots.at(2).rows, 1u) << "admit_min_count 0: a row at once";
  Push(*table, {a}, 1.0f);
  stats = table->stats();
  EXPECT_EQ(stats.slots.at(1).unadmitted, 1u);
  EXPECT_EQ(stats.slots.at(1).rows, 1u);
  EXPECT_EQ(stats.total.rows, 2u);
  EXPECT_EQ(Pull(*table, {b}), std::vector<float>(2, 0.0f));
}

// Keys pushed once and never again lose their counter after ttl_steps: the counters are
// bounded by the keys seen in the last ttl_steps steps, not by every key ever seen.
TEST(AdmissionTest, CountersOfKeysNotSeenForTtlStepsExpire) {
  SlotConfig config;
  config.dim = 2;
  config.admit_min_count = 5;
  config.ttl_steps = 2;
  auto table = MakeTable(config, 1);
  std::vector<uint64_t> old_keys, new_keys;
  for (int i = 0; i < 1100; ++i) old_keys.push_back(FeatureKey(kSlot, i));
  for (int i = 0; i < 1100; ++i) new_keys.push_back(FeatureKey(kSlot, 10000 + i));
  Push(*table, old_keys, 1.0f);  // step 0
  EXPECT_EQ(table->stats().total.unadmitted, 1100u);
  for (int i = 0; i < 3; ++i) Push(*table, {}, 0.0f);  // steps 1..3
  Push(*table, new_keys, 1.0f);  // step 4: the counters swept once they double
  const TableStats stats = table->stats();
  EXPECT_EQ(stats.total.unadmitted_expired, 1100u);
  EXPECT_EQ(stats.total.unadmitted, 1100u);
  EXPECT_EQ(stats.total.rows, 0u);
}

// ---------------------------------------------------------------------------------------------
// TTL

// A row touched at step s (by a pull while step() == s, or by push s) is evicted by the first
// push that leaves it untouched for ttl_steps whole steps: when step() > s + ttl_steps.
TEST(TtlTest, ARowUntouchedForTtlStepsIsEvictedAtExactlyThatStep) {
  for (int shards : {1, 4}) {
    SlotConfig config;
    config.dim = 2;
    config.optimizer = OptimizerKind::kSgd;
    config.learning_rate = 1.0f;
    config.ttl_steps = 2;
    auto table = MakeTable(config, shards);
    const uint64_t idle = FeatureKey(kSlot, 1), busy = FeatureKey(kSlot, 2),
                   late = FeatureKey(kSlot, 3);
    Push(*table, {idle}, 1.0f);  // step 0 touches idle (row = init - 1)
    EXPECT_EQ(table->step(), 1u);
    Push(*table, {busy}, 1.0f);  // step 1: idle untouched for 1 step
    Pull(*table, {late});        // touches late at step 2
    EXPECT_EQ(table->stats().total.rows, 3u) << shards << " shards";
    Push(*table, {busy}, 1.0f);  // step 2: idle untouched for 2 steps: evicted
    TableStats stats = table->stats();
    EXPECT_EQ(stats.total.rows, 2u) << shards << " shards";
    EXPECT_EQ(stats.total.evicted_ttl, 1u);
    Push(*table, {busy}, 1.0f);  // step 3: late untouched for 1 step
    EXPECT_EQ(table->stats().total.rows, 2u);
    Push(*table, {busy}, 1.0f);  // step 4: late untouched for 2 steps: evicted
    stats = table->stats();
    EXPECT_EQ(stats.total.rows, 1u);
    EXPECT_EQ(stats.total.evicted_ttl, 2u);
    EXPECT_EQ(stats.step, 5u);
    // An evicted row comes back with its initial values (its update is gone).
    EXPECT_EQ(Pull(*table, {idle}), InitRow(idle, config));
    stats = table->stats();
    EXPECT_EQ(stats.total.admitted, 4u);
    EXPECT_EQ(stats.total.rows,
              stats.total.admitted - stats.total.evicted_ttl - stats.total.evicted_capacity);
  }
}

TEST(TtlTest, PullsKeepARowAlive) {
  SlotConfig config;
  config.dim = 2;
  config.ttl_steps = 1;
  auto table = MakeTable(config, 2);
  const uint64_t key = FeatureKey(kSlot, 9);
  Pull(*table, {key});
  for (int step = 0; step < 10; ++step) {
    Push(*table, {}, 0.0f);
    Pull(*table, {key});
  }
  EXPECT_EQ(table->stats().total.evicted_ttl, 0u);
  Push(*table, {}, 0.0f);  // the step of the last pull
  EXPECT_EQ(table->stats().total.evicted_ttl, 0u);
  Push(*table, {}, 0.0f);  // a whole step without a touch
  EXPECT_EQ(table->stats().total.evicted_ttl, 1u);
  EXPECT_EQ(table->size(), 0u);
}

std::vector<float> Lookup(const SparseTable& table, const std::vector<uint64_t>& keys) {
  size_t n = 0;
  for (uint64_t key : keys) n += static_cast<size_t>(table.Dim(key));
  std::vector<float> out(n, -7.0f);
  absl::Status status = table.Lookup(keys, absl::MakeSpan(out));
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

// Lookup (evaluation's read) gives what Pull would, and changes nothing: no row created, no
// admission counted, no recency refreshed.
TEST(LookupTest, ReadsWhatPullWouldWithoutCreatingOrTouchingRows) {
  SlotConfig config;
  config.dim = 3;
  auto table = MakeTable(config, 4);
  const uint64_t stored = FeatureKey(kSlot, 1), unseen = FeatureKey(kSlot, 2);
  Push(*table, {stored}, 0.5f);
  const std::vector<float> row = Pull(*table, {stored});
  EXPECT_EQ(Lookup(*table, {unseen, stored}),
            [&] {
              std::vector<float> want = InitRow(unseen, config);
              want.insert(want.end(), row.begin(), row.end());
              return want;
            }());
  EXPECT_EQ(table->size(), 1u);
  EXPECT_EQ(table->stats().total.admitted, 1u);
  EXPECT_EQ(Pull(*table, {unseen}), InitRow(unseen, config));  // what a pull then creates
  // Errors as Pull's, before anything is read.
  std::vector<float> out(2);
  EXPECT_EQ(table->Lookup({stored}, absl::MakeSpan(out)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table->Lookup({FeatureKey(kSlot + 1, 1)}, absl::MakeSpan(out)).code(),
            absl::StatusCode::kInvalidArgument);

  // A slot with admission: a key not admitted reads zeros, and a lookup does not count.
  SlotConfig admit = config;
  admit.admit_min_count = 2;
  auto counted = MakeTable(admit, 1);
  const uint64_t key = FeatureKey(kSlot, 5);
  Push(*counted, {key}, 1.0f);
  EXPECT_EQ(Lookup(*counted, {key}), std::vector<float>(3, 0.0f));
  EXPECT_EQ(counted->size(), 0u);
  EXPECT_EQ(counted->stats().total.unadmitted, 1u);
  Push(*counted, {key}, 1.0f);  // the second push admits it at its initial values
  EXPECT_EQ(Lookup(*counted, {key}), InitRow(key, admit));
}

TEST(LookupTest, LookupsDoNotKeepARowAliveOrChangeTheEvictionOrder) {
  SlotConfig config;
  config.dim = 1;
  config.ttl_steps = 1;
  auto table = MakeTable(config, 1);
  const uint64_t key = FeatureKey(kSlot, 9);
  Pull(*table, {key});
  Push(*table, {}, 0.0f);
  Lookup(*table, {key});
  Push(*table, {}, 0.0f);
  Lookup(*table, {key});
  Push(*table, {}, 0.0f);  // two whole steps with lookups only: evicted, as without them
  EXPECT_EQ(table->stats().total.evicted_ttl, 1u);

  auto full = MakeTable(LedgerSlot(2), 1);
  const uint64_t a = FeatureKey(kSlot, 1), b = FeatureKey(kSlot, 2), c = FeatureKey(kSlot, 3);
  ASSERT_TRUE(full->Push({a, b}, {1.0f, 2.0f}).ok());  // recency: a b
  EXPECT_EQ(Lookup(*full, {a, c}), (std::vector<float>{-1.0f, 0.0f}));  // still a b, no row for c
  EXPECT_EQ(full->stats().total.evicted_capacity, 0u);
  ASSERT_TRUE(full->Push({c}, {3.0f}).ok());  // evicts a, the oldest despite its lookup
  EXPECT_EQ(Lookup(*full, {a, b, c}), (std::vector<float>{0.0f, -2.0f, -3.0f}));
}

// ---------------------------------------------------------------------------------------------
// Capacity

// Ledger rows (LedgerSlot): a pull tells whether a row survived or was recreated.
TEST(CapacityTest, TheLeastRecentlyTouchedRowIsEvictedFirst) {
  const SlotConfig config = LedgerSlot(3);
  auto table = MakeTable(config, 1);
  const uint64_t a = FeatureKey(kSlot, 1), b = FeatureKey(kSlot, 2), c = FeatureKey(kSlot, 3),
                 d = FeatureKey(kSlot, 4);
  ASSERT_TRUE(table->Push({a, b, c}, {1.0f, 2.0f, 3.0f}).ok());  // recency: a b c
  EXPECT_EQ(Pull(*table, {a}), std::vector<float>{-1.0f});       // b c a
  EXPECT_EQ(Pull(*table, {d}), std::vector<float>{0.0f});        // evicts b: c a d
  TableStats stats = table->stats();
  EXPECT_EQ(stats.total.rows, 3u);
  EXPECT_EQ(stats.total.evicted_capacity, 1u);
  EXPECT_EQ(Pull(*table, {c}), std::vector<float>{-3.0f});  // a d c
  EXPECT_EQ(Pull(*table, {a}), std::vector<float>{-1.0f});  // d c a
  EXPECT_EQ(Pull(*table, {b}), std::vector<float>{0.0f});   // b recreated, evicts d: c a b
  ASSERT_TRUE(table->Push({d}, {4.0f}).ok());               // evicts c: a b d
  EXPECT_EQ(Pull(*table, {a, b, d}), (std::vector<float>{-1.0f, 0.0f, -4.0f}));
  EXPECT_EQ(Pull(*table, {c}), std::vector<float>{0.0f});  // evicts a (oldest of a b d)
  stats = table->stats();
  EXPECT_EQ(stats.total.evicted_capacity, 4u);
  EXPECT_EQ(stats.total.admitted, 7u);
  EXPECT_EQ(stats.total.rows, 3u);
  EXPECT_EQ(Pull(*table, {b, d, c}), (std::vector<float>{0.0f, -4.0f, 0.0f}));
}

// One call that evicts rows while reading others: Pull and Push look rows up ahead of use, and
// an eviction moves the table's last row into the evicted one's place. Keys looked up before
// the eviction must still read their own rows.
TEST(CapacityTest, EvictionInsideACallDoesNotMixUpTheRowsLookedUpAhead) {
  const SlotConfig config = LedgerSlot(8);
  auto table = MakeTable(config, 1);
  std::vector<uint64_t> old_keys;
  std::vector<float> grads;
  for (int i = 0; i < 8; ++i) {
    old_keys.push_back(FeatureKey(kSlot, 100 + i));
    grads.push_back(static_cast<float>(i + 1));
  }
  ASSERT_TRUE(table->Push(old_keys, grads).ok());  // rows -1..-8, recency 100..107
  // New keys first: each creation evicts the oldest row (100, 101, ...) and moves the last row
  // (107, 106, ...) into its index, after 105..107 were looked up.
  const uint64_t n0 = FeatureKey(kSlot, 1), n1 = FeatureKey(kSlot, 2);
  EXPECT_EQ(Pull(*table, {n0, n1, old_keys[5], old_keys[6], old_keys[7]}),
            (std::vector<float>{0.0f, 0.0f, -6.0f, -7.0f, -8.0f}));
  EXPECT_EQ(table->stats().total.evicted_capacity, 2u);
  // The same through Push: the updates land on the right rows.
  const uint64_t n2 = FeatureKey(kSlot, 3);
  ASSERT_TRUE(table->Push({n2, old_keys[7], old_keys[6]}, {0.5f, 10.0f, 20.0f}).ok());
  EXPECT_EQ(Pull(*table, {old_keys[6], old_keys[7], n2}),
            (std::vector<float>{-27.0f, -18.0f, -0.5f}));
  EXPECT_EQ(table->stats().total.evicted_capacity, 3u);
  EXPECT_EQ(table->size(), 8u);
}

// The same key twice in one call: the second occurrence reads the row the first created.
TEST(CapacityTest, ADuplicatedNewKeyInOneCallReadsOneRow) {
  SlotConfig config;
  config.dim = 2;
  auto table = MakeTable(config, 1);
  const uint64_t k = FeatureKey(kSlot, 9);
  const std::vector<float> out = Pull(*table, {k, k, k});
  EXPECT_EQ(std::vector<float>(out.begin(), out.begin() + 2), InitRow(k, config));
  EXPECT_EQ(std::vector<float>(out.begin() + 2, out.begin() + 4), InitRow(k, config));
  EXPECT_EQ(table->size(), 1u);
}

TEST(CapacityTest, CapacityIsSplitOverShardsAndNeverExceeded) {
  SlotConfig config;
  config.dim = 4;
  config.capacity = 100;  // 16 shards: 4 with 7 rows, 12 with 6
  auto table = MakeTable(config, 16);
  std::vector<uint64_t> keys;
  for (int i = 0; i < 5000; ++i) keys.push_back(FeatureKey(kSlot, i));
  for (size_t i = 0; i < keys.size(); i += 250) {
    const std::vector<uint64_t> part(keys.begin() + i, keys.begin() + i + 250);
    Pull(*table, part);
    EXPECT_LE(table->size(), 100u);
  }
  const TableStats stats = table->stats();
  EXPECT_EQ(stats.total.rows, 100u) << "every shard saw more keys than its share";
  EXPECT_EQ(stats.total.evicted_capacity, 4900u);
  EXPECT_EQ(stats.total.admitted, 5000u);
}

TEST(CapacityTest, InvalidLimitsAreRejected) {
  TableOptions options;
  options.num_shards = 16;
  options.slots[1].capacity = 8;
  absl::Status status = ValidateTableOptions(options);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
  EXPECT_NE(status.message().find("num_shards"), absl::string_view::npos) << status;
  options.slots[1].capacity = 16;
  EXPECT_TRUE(ValidateTableOptions(options).ok());
  options.slots[1].ttl_steps = -1;
  EXPECT_EQ(ValidateTableOptions(options).code(), absl::StatusCode::kInvalidArgument);
  options.slots[1].ttl_steps = 0;
  options.slots[1].admit_min_count = 70000;
  EXPECT_EQ(ValidateTableOptions(options).code(), absl::StatusCode::kInvalidArgument);
}

// Slots that evict keep a 16-byte recency entry per row (last touched step, two links); the
// others do not pay for it.
TEST(EvictionMemoryTest, TheRecencyListCostsSixteenBytesPerRowOnlyWhereEvictionIsOn) {
  SlotConfig plain;
  plain.dim = 16;
  SlotConfig evicting = plain;
  evicting.ttl_steps = 1000;
  auto a = MakeTable(plain, 4);
  auto b = MakeTable(evicting, 4);
  std::vector<uint64_t> keys;
  for (int i = 0; i < 4096; ++i) keys.push_back(FeatureKey(kSlot, i));
  Pull(*a, keys);
  Pull(*b, keys);
  const double extra = (static_cast<double>(b->MemoryBytes()) - a->MemoryBytes()) / keys.size();
  EXPECT_GE(extra, 16.0);
  EXPECT_LE(extra, 16.0 * 1.1);
}

// Threads pull and push overlapping keys of a slot with admission, TTL and capacity (for
// ThreadSanitizer, and for the bookkeeping under churn).
TEST(EvictionConcurrencyTest, CountersStayConsistentUnderConcurrentChurn) {
  SlotConfig config;
  config.dim = 4;
  config.admit_min_count = 2;
  config.ttl_steps = 5;
  config.capacity = 64;
  auto table = MakeTable(config, 4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint64_t> keys;
      for (int r = 0; r < 300; ++r) {
        keys.clear();
        for (int i = 0; i < 20; ++i) keys.push_back(FeatureKey(kSlot, (t * 37 + r * 7 + i) % 400));
        std::vector<float> rows(keys.size() * 4);
        EXPECT_TRUE(table->Pull(keys, absl::MakeSpan(rows)).ok());
        EXPECT_TRUE(table->Push(keys, std::vector<float>(rows.size(), 0.01f)).ok());
        EXPECT_LE(table->size(), 64u);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  const TableStats stats = table->stats();
  EXPECT_EQ(stats.step, 1200u);
  EXPECT_EQ(stats.total.rows,
            stats.total.admitted - stats.total.evicted_ttl - stats.total.evicted_capacity);
  EXPECT_GT(stats.total.evicted_capacity, 0u);
  EXPECT_LE(stats.total.rows, 64u);
  EXPECT_EQ(stats.total.rows, table->size());
}

}  // namespace
}  // namespace choir
