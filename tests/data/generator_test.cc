// The synthetic generator: determinism, exact joins, and the properties the design promises
// (heavy-tailed activity, CVR rising with affinity, personas recoverable from behaviour for
// high-activity users, new users only in test).
#include "data/generator.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "data/activity.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

CompiledTaxonomy DefaultTaxonomy() {
  absl::StatusOr<Taxonomy> t = LoadTaxonomy(nullptr, "");
  EXPECT_TRUE(t.ok()) << t.status();
  absl::StatusOr<CompiledTaxonomy> c = CompileTaxonomy(*t);
  EXPECT_TRUE(c.ok()) << c.status();
  return *c;
}

std::vector<RowBlock> ReadSplit(FileSystem* fs, const std::string& dir, const std::string& split) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs, dir);
  EXPECT_TRUE(m.ok()) << m.status();
  absl::StatusOr<SplitInfo> s = FindSplit(*m, split);
  EXPECT_TRUE(s.ok()) << s.status();
  std::vector<RowBlock> blocks;
  ErrorCounter errors;
  absl::Status st = ForEachBlock(fs, SplitPaths(dir, *s), &errors, [&](const RowBlock& b) {
    blocks.push_back(b);
    return absl::OkStatus();
  });
  EXPECT_TRUE(st.ok()) << st;
  return blocks;
}

struct TruthUser {
  int persona;
  bool is_new;
};

std::map<int64_t, TruthUser> ReadTruth(FileSystem* fs, const std::string& dir) {
  absl::StatusOr<std::string> text = fs->ReadFileToString(JoinPath(dir, "truth/users.tsv"));
  EXPECT_TRUE(text.ok()) << text.status();
  std::map<int64_t, TruthUser> out;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    EXPECT_EQ(f.size(), 7u) << line;
    int64_t user = 0;
    int persona = 0, is_new = 0;
    EXPECT_TRUE(absl::SimpleAtoi(f[0], &user) && absl::SimpleAtoi(f[1], &persona) &&
                absl::SimpleAtoi(f[6], &is_new));
    out[user] = {persona, is_new == 1};
  }
  return out;
}

class GeneratorTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    taxonomy_ = new CompiledTaxonomy(DefaultTaxonomy());
    GeneratorOptions options;
    options.users = kUsers;
    options.seed = 7;
    absl::StatusOr<GeneratorReport> r = GenerateDataset(fs_, *taxonomy_, options, "/ds");
    ASSERT_TRUE(r.ok()) << r.status();
    report_ = *r;
  }
  static void TearDownTestSuite() {
    delete fs_;
    delete taxonomy_;
  }

  static constexpr int64_t kUsers = 20000;
  static MemFileSystem* fs_;
  static CompiledTaxonomy* taxonomy_;
  static GeneratorReport report_;
};

MemFileSystem* GeneratorTest::fs_ = nullptr;
CompiledTaxonomy* GeneratorTest::taxonomy_ = nullptr;
GeneratorReport GeneratorTest::report_;

TEST(GeneratorDeterminismTest, SameSeedGivesIdenticalBytesWhateverTheThreadCount) {
  const CompiledTaxonomy tax = DefaultTaxonomy();
  MemFileSystem fs;
  GeneratorOptions a;
  a.users = 1500;
  a.seed = 11;
  a.threads = 1;
  a.users_per_chunk = 500;
  GeneratorOptions b = a;
  b.threads = 3;
  GeneratorOptions c = a;
  c.seed = 12;
  ASSERT_TRUE(GenerateDataset(&fs, tax, a, "/a").ok());
  ASSERT_TRUE(GenerateDataset(&fs, tax, b, "/b").ok());
  ASSERT_TRUE(GenerateDataset(&fs, tax, c, "/c").ok());
  int compared = 0;
  for (const char* file : {"train/part-00000.shard", "test/part-00000.shard", "behaviors/part-00000.shard",
                           "users/part-00000.shard", "items/part-00000.shard", "truth/users.tsv"}) {
    absl::StatusOr<std::string> x = fs.GetContents(JoinPath("/a", file));
    absl::StatusOr<std::string> y = fs.GetContents(JoinPath("/b", file));
    absl::StatusOr<std::string> z = fs.GetContents(JoinPath("/c", file));
    ASSERT_TRUE(x.ok() && y.ok() && z.ok()) << file;
    EXPECT_EQ(*x, *y) << file;
    if (std::string(file) != "items/part-00000.shard") {
      EXPECT_NE(*x, *z) << file;
    }
    ++compared;
  }
  EXPECT_EQ(compared, 6);
}

TEST(GeneratorTaxonomyTest, BadTaxonomiesAreRejectedNamingTheEntry) {
  absl::StatusOr<Taxonomy> t = LoadTaxonomy(nullptr, "");
  ASSERT_TRUE(t.ok());
  Taxonomy bad = *t;
  bad.mutable_personas(0)->mutable_interests(0)->set_category("Spaceships");
  absl::StatusOr<CompiledTaxonomy> c = CompileTaxonomy(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("Spaceships"), std::string::npos) << c.status();
  bad = *t;
  bad.mutable_personas(1)->clear_age_weights();
  c = CompileTaxonomy(bad);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find(t->personas(1).name()), std::string::npos) << c.status();
}

TEST_F(GeneratorTest, ManifestCountsMatchTheRowsRead) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs_, "/ds");
  ASSERT_TRUE(m.ok());
  for (const char* split : {"train", "test", "behaviors", "users", "items"}) {
    int64_t rows = 0;
    for (const RowBlock& b : ReadSplit(fs_, "/ds", split)) rows += b.num_rows();
    absl::StatusOr<SplitInfo> s = FindSplit(*m, split);
    ASSERT_TRUE(s.ok());
    EXPECT_EQ(rows, s->rows()) << split;
  }
  EXPECT_EQ(m->counters().at("users"), kUsers);
  EXPECT_EQ(m->counters().at("train_rows"), report_.train_rows);
  EXPECT_GT(report_.train_rows, kUsers);
}

TEST_F(GeneratorTest, TimeSplitSeparatesTrainAndTestAndNewUsersAppearOnlyInTest) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs_, "/ds");
  ASSERT_TRUE(m.ok());
  const int64_t split = m->split_time();
  const auto truth = ReadTruth(fs_, "/ds");
  ASSERT_EQ(truth.size(), static_cast<size_t>(kUsers));
  absl::flat_hash_map<int64_t, int> train_users, test_users;
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "train")) {
    for (size_t r = 0; r < b.num_rows(); ++r) {
      ASSERT_LT(b.Int(b.FieldIndex("timestamp"), r), split);
      train_users[b.Int(0, r)]++;
    }
  }
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "test")) {
    for (size_t r = 0; r < b.num_rows(); ++r) {
      ASSERT_GE(b.Int(b.FieldIndex("timestamp"), r), split);
      test_users[b.Int(0, r)]++;
    }
  }
  int new_in_test = 0;
  for (const auto& [user, t] : truth) {
    if (t.is_new) {
      EXPECT_FALSE(train_users.contains(user)) << user;
      EXPECT_TRUE(test_users.contains(user)) << user;
      new_in_test += test_users.contains(user);
    }
  }
  EXPECT_GT(new_in_test, kUsers / 50);  // ~5% new users
}

// Each impression's sequence is exactly the user's last behaviours before its timestamp.
TEST_F(GeneratorTest, BehaviourSequencesAreTheLatestEventsBeforeTheImpression) {
  struct Ev {
    int64_t ts, item, cate, type;
  };
  absl::flat_hash_map<int64_t, std::vector<Ev>> log;
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "behaviors")) {
    for (size_t r = 0; r < b.num_rows(); ++r) {
      log[b.Int(0, r)].push_back({b.Int(4, r), b.Int(1, r), b.Int(2, r), b.Int(5, r)});
    }
  }
  int checked = 0, nonempty = 0;
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "train")) {
    const int item_c = b.FieldIndex("hist_item"), cate_c = b.FieldIndex("hist_cate"), type_c = b.FieldIndex("hist_type");
    for (size_t r = 0; r < b.num_rows(); r += 7) {
      const int64_t ts = b.Int(b.FieldIndex("timestamp"), r);
      const std::vector<Ev>& events = log[b.Int(0, r)];
      std::vector<Ev> before;
      for (const Ev& e : events) {
        if (e.ts < ts) before.push_back(e);
      }
      const size_t want = std::min<size_t>(30, before.size());
      auto items = b.IntList(item_c, r);
      auto cates = b.IntList(cate_c, r);
      auto types = b.IntList(type_c, r);
      ASSERT_EQ(items.size(), want);
      ASSERT_EQ(cates.size(), want);
      ASSERT_EQ(types.size(), want);
      for (size_t k = 0; k < want; ++k) {
        const Ev& e = before[before.size() - 1 - k];
        ASSERT_EQ(items[k], e.item);
        ASSERT_EQ(cates[k], e.cate);
        ASSERT_EQ(types[k], e.type);
      }
      ++checked;
      nonempty += want > 0;
    }
  }
  EXPECT_GT(checked, 1000);
  EXPECT_GT(nonempty, checked / 2);
}

TEST_F(GeneratorTest, MostUsersAreLowActivityAndFewHighUsersHoldALargeShareOfPurchases) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs_, "/ds");
  ASSERT_TRUE(m.ok());
  ErrorCounter errors;
  absl::StatusOr<ActivityIndex> index = BuildActivityIndex(fs_, "/ds", *m, ActivityBuckets(), &errors);
  ASSERT_TRUE(index.ok()) << index.status();
  std::array<int64_t, kNumBuckets> users{}, purchases{};
  const auto truth = ReadTruth(fs_, "/ds");
  int64_t silent_old_users = 0;  // existing users with no training-period trace at all
  for (const auto& [user, t] : truth) {
    const Bucket b = index->Of(user);
    if (t.is_new) {
      EXPECT_EQ(b, Bucket::kNew) << user;
    }
    silent_old_users += !t.is_new && b == Bucket::kNew;
    users[static_cast<int>(b)]++;
    purchases[static_cast<int>(b)] += std::max<int64_t>(0, index->Purchases(user));
  }
  EXPECT_LT(silent_old_users, kUsers / 200);
  const int64_t known = kUsers - users[static_cast<int>(Bucket::kNew)];
  const int64_t total_purchases = purchases[0] + purchases[1] + purchases[2];
  const double low_share = static_cast<double>(users[0]) / known;
  const double high_user_share = static_cast<double>(users[2]) / known;
  const double high_purchase_share = static_cast<double>(purchases[2]) / total_purchases;
  EXPECT_GE(low_share, 0.60);
  EXPECT_LE(high_user_share, 0.10);
  EXPECT_GT(users[2], 0);
  EXPECT_GE(high_purchase_share, 0.30) << "high users " << users[2] << " hold " << purchases[2] << " of "
                                       << total_purchases;
}

TEST_F(GeneratorTest, ConversionRateRisesWithPersonaItemAffinity) {
  const auto truth = ReadTruth(fs_, "/ds");
  // Clicked train impressions binned by the true persona's interest in the item's leaf.
  std::vector<std::pair<double, int>> samples;
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "train")) {
    const int cate = b.FieldIndex("item_category");
    for (size_t r = 0; r < b.num_rows(); ++r) {
      if (b.Int(b.FieldIndex("click"), r) == 0) continue;
      const int persona = truth.at(b.Int(0, r)).persona;
      samples.push_back({taxonomy_->personas[persona].interest[b.Int(cate, r) - 1],
                         static_cast<int>(b.Int(b.FieldIndex("conversion"), r))});
    }
  }
  ASSERT_GT(samples.size(), 3000u);
  std::sort(samples.begin(), samples.end());
  constexpr int kBins = 3;
  std::vector<double> cvr(kBins);
  for (int k = 0; k < kBins; ++k) {
    const size_t lo = samples.size() * k / kBins, hi = samples.size() * (k + 1) / kBins;
    double conv = 0;
    for (size_t i = lo; i < hi; ++i) conv += samples[i].second;
    cvr[k] = conv / (hi - lo);
  }
  EXPECT_LT(cvr[0], cvr[1]);
  EXPECT_LT(cvr[1], cvr[2]);
  EXPECT_GT(cvr[2], 1.5 * cvr[0]) << cvr[0] << " " << cvr[1] << " " << cvr[2];
}

// Nearest-centroid on behaviour category histograms: centroids from half of the users (by
// their true persona), accuracy on the other half. High-activity users must be recoverable;
// low-activity users are much harder (the problem ChoirRec's semantic groups address).
TEST_F(GeneratorTest, PersonasAreRecoverableFromBehaviourForHighActivityUsers) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs_, "/ds");
  ASSERT_TRUE(m.ok());
  ErrorCounter errors;
  absl::StatusOr<ActivityIndex> index = BuildActivityIndex(fs_, "/ds", *m, ActivityBuckets(), &errors);
  ASSERT_TRUE(index.ok());
  const size_t num_leaves = taxonomy_->leaves.size();
  const size_t num_personas = taxonomy_->personas.size();
  absl::flat_hash_map<int64_t, std::vector<double>> hist;
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "behaviors")) {
    for (size_t r = 0; r < b.num_rows(); ++r) {
      if (b.Int(4, r) >= m->split_time()) continue;
      auto& h = hist[b.Int(0, r)];
      h.resize(num_leaves);
      h[b.Int(2, r) - 1] += b.Int(5, r) == 2 ? 3.0 : 1.0;
    }
  }
  const auto truth = ReadTruth(fs_, "/ds");
  auto normalise = [](std::vector<double> v) {
    double n = 0;
    for (double x : v) n += x * x;
    for (double& x : v) x /= std::sqrt(std::max(n, 1e-12));
    return v;
  };
  auto accuracy = [&](Bucket bucket) {
    std::vector<std::vector<double>> centroid(num_personas, std::vector<double>(num_leaves));
    std::vector<std::pair<int, std::vector<double>>> eval;
    int i = 0;
    for (const auto& [user, t] : truth) {
      if (index->Of(user) != bucket || !hist.contains(user)) continue;
      const std::vector<double> h = normalise(hist[user]);
      if (i++ % 2 == 0) {
        for (size_t l = 0; l < num_leaves; ++l) centroid[t.persona][l] += h[l];
      } else {
        eval.push_back({t.persona, h});
      }
    }
    int correct = 0;
    for (const auto& [persona, h] : eval) {
      int best = 0;
      double best_score = -1;
      for (size_t p = 0; p < num_personas; ++p) {
        const std::vector<double> c = normalise(centroid[p]);
        double dot = 0;
        for (size_t l = 0; l < num_leaves; ++l) dot += c[l] * h[l];
        if (dot > best_score) best_score = dot, best = p;
      }
      correct += best == persona;
    }
    EXPECT_GT(eval.size(), 50u) << BucketName(bucket);
    return static_cast<double>(correct) / eval.size();
  };
  const double high = accuracy(Bucket::kHigh);
  const double low = accuracy(Bucket::kLow);
  EXPECT_GE(high, 0.85) << "chance is " << 1.0 / num_personas;
  EXPECT_LT(low, high - 0.1) << "low-activity users should be harder: " << low << " vs " << high;
}

TEST_F(GeneratorTest, LowActivityUsersMissAttributesMoreOften) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs_, "/ds");
  ASSERT_TRUE(m.ok());
  ErrorCounter errors;
  absl::StatusOr<ActivityIndex> index = BuildActivityIndex(fs_, "/ds", *m, ActivityBuckets(), &errors);
  ASSERT_TRUE(index.ok());
  std::array<double, kNumBuckets> missing{}, users{};
  for (const RowBlock& b : ReadSplit(fs_, "/ds", "users")) {
    for (size_t r = 0; r < b.num_rows(); ++r) {
      const int bucket = static_cast<int>(index->Of(b.Int(0, r)));
      users[bucket] += 1;
      missing[bucket] += (b.Int(1, r) == 0) + (b.Int(2, r) == 0) + (b.Int(3, r) == 0);
    }
  }
  EXPECT_GT(missing[0] / users[0], 1.5 * missing[2] / users[2]);
}

// ActivityIndex on hand-made datasets: exact purchases, clicks, active days and gate features.
constexpr int64_t kDay = 86400;
constexpr int64_t kSplitDay = 100;  // split at the start of day 100; window: days 90..99

struct ActivityEvent {
  int64_t user, ts, type;  // type 1 click, 2 purchase
};
struct TrainRow {
  int64_t user, ts, click, conversion;
};

Schema ActivityBehaviorsSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("timestamp", INT64, TIMESTAMP);
  *s.add_fields() = MakeField("type", INT64);
  return s;
}
Schema ActivityTrainSchema(bool with_time) {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("click", INT64, LABEL_CLICK);
  *s.add_fields() = MakeField("conversion", INT64, LABEL_CONVERSION);
  if (with_time) *s.add_fields() = MakeField("timestamp", INT64, TIMESTAMP);
  return s;
}

// Writes /act with a train split and, when `with_log`, a behaviours split; `behaviours` are
// written in two blocks (split in the middle) to cross a block boundary.
void WriteActivityDataset(MemFileSystem* fs, const std::vector<TrainRow>& train, bool train_time,
                          bool with_log, const std::vector<ActivityEvent>& behaviours,
                          int64_t split_time = kSplitDay * kDay) {
  DatasetManifest manifest;
  manifest.set_split_time(split_time);
  SplitWriter t(fs, "/act", "train", ActivityTrainSchema(train_time));
  RowBlock tb(ActivityTrainSchema(train_time));
  for (const TrainRow& i : train) {
    tb.AppendInt(0, i.user);
    tb.AppendInt(1, i.click);
    tb.AppendInt(2, i.conversion);
    if (train_time) tb.AppendInt(3, i.ts);
    tb.FinishRow();
  }
  ASSERT_TRUE(t.Write(tb).ok());
  absl::StatusOr<SplitInfo> info = t.Finish();
  ASSERT_TRUE(info.ok()) << info.status();
  *manifest.add_splits() = *info;
  if (with_log) {
    SplitWriter b(fs, "/act", "behaviors", ActivityBehaviorsSchema());
    for (size_t half = 0; half < 2; ++half) {
      RowBlock bb(ActivityBehaviorsSchema());
      const size_t mid = behaviours.size() / 2;
      for (size_t k = half ? mid : 0; k < (half ? behaviours.size() : mid); ++k) {
        bb.AppendInt(0, behaviours[k].user);
        bb.AppendInt(1, behaviours[k].ts);
        bb.AppendInt(2, behaviours[k].type);
        bb.FinishRow();
      }
      ASSERT_TRUE(b.Write(bb).ok());
    }
    info = b.Finish();
    ASSERT_TRUE(info.ok()) << info.status();
    *manifest.add_splits() = *info;
  }
  ASSERT_TRUE(WriteManifest(fs, "/act", manifest).ok());
}

absl::StatusOr<ActivityIndex> BuildHandIndex(MemFileSystem* fs) {
  absl::StatusOr<DatasetManifest> m = ReadManifest(fs, "/act");
  if (!m.ok()) return m.status();
  ActivityBuckets config;
  config.set_window_days(10);
  ErrorCounter errors;
  return BuildActivityIndex(fs, "/act", *m, config, &errors);
}

int64_t At(int64_t day, int64_t second = 0) { return day * kDay + second; }

// User 1 (in log order): before the window a purchase; in it clicks on days 90, 92, 99 (last
// second before the split) and purchases on days 90, 95, 95; after the split a purchase and a
// click. User 2: a click before the window only. User 3: train rows only. User 4: 20 purchases
// on days 91 and 93 (high).
std::vector<ActivityEvent> HandLog() {
  std::vector<ActivityEvent> log = {{1, At(80), 2},         {1, At(90), 1},      {1, At(90, 100), 2},
                         {1, At(92, 5), 1},      {1, At(95), 2},      {1, At(95, 7), 2},
                         {1, At(99, kDay - 1), 1}, {1, At(100), 2},   {1, At(105), 1},
                         {2, At(50), 1}};
  for (int i = 0; i < 20; ++i) log.push_back({4, At(i < 10 ? 91 : 93, i), 2});
  return log;
}
// With a log, train labels do not count: user 3's clicked and converted row adds nothing.
std::vector<TrainRow> HandTrain() { return {{3, At(95), 1, 1}, {1, At(96), 1, 0}, {4, At(97), 0, 0}}; }

void ExpectHandLogCounts(const ActivityIndex& index) {
  EXPECT_EQ(index.source(), "behaviors");
  EXPECT_EQ(index.known_users(), 4);
  EXPECT_EQ(index.Purchases(1), 3);
  EXPECT_EQ(index.Clicks(1), 3);
  EXPECT_EQ(index.ActiveDays(1), 4);  // 90, 92, 95, 99
  EXPECT_EQ(index.Of(1), Bucket::kMid);
  for (int64_t user : {2, 3}) {
    EXPECT_EQ(index.Purchases(user), 0) << user;
    EXPECT_EQ(index.Clicks(user), 0) << user;
    EXPECT_EQ(index.ActiveDays(user), 0) << user;
    EXPECT_EQ(index.Of(user), Bucket::kLow) << user;
  }
  EXPECT_EQ(index.Purchases(4), 20);
  EXPECT_EQ(index.Clicks(4), 0);
  EXPECT_EQ(index.ActiveDays(4), 2);
  EXPECT_EQ(index.Of(4), Bucket::kHigh);
  EXPECT_EQ(index.Purchases(9), -1);
  EXPECT_EQ(index.Clicks(9), 0);
  EXPECT_EQ(index.ActiveDays(9), 0);

  float f[ActivityIndex::kNumActivityFeatures];
  index.ActivityFeatures(1, f);
  EXPECT_EQ(std::vector<float>(f, f + 4),
            (std::vector<float>{static_cast<float>(std::log1p(3.0)),
                                static_cast<float>(std::log1p(3.0)),
                                static_cast<float>(std::log1p(4.0)), 0.0f}));
  index.ActivityFeatures(2, f);
  EXPECT_EQ(std::vector<float>(f, f + 4), (std::vector<float>{0.0f, 0.0f, 0.0f, 1.0f}));
  index.ActivityFeatures(4, f);
  EXPECT_EQ(std::vector<float>(f, f + 4),
            (std::vector<float>{static_cast<float>(std::log1p(20.0)), 0.0f,
                                static_cast<float>(std::log1p(2.0)), 0.0f}));
  index.ActivityFeatures(9, f);  // unknown: new
  EXPECT_EQ(std::vector<float>(f, f + 4), (std::vector<float>{0.0f, 0.0f, 0.0f, 1.0f}));
}

TEST(ActivityIndexTest, CountsPurchasesClicksAndActiveDaysOfTheWindowFromTheLog) {
  MemFileSystem fs;
  WriteActivityDataset(&fs, HandTrain(), /*train_time=*/true, /*with_log=*/true, HandLog());
  absl::StatusOr<ActivityIndex> index = BuildHandIndex(&fs);
  ASSERT_TRUE(index.ok()) << index.status();
  ExpectHandLogCounts(*index);
}

TEST(ActivityIndexTest, ActiveDaysAreExactWhenTheLogIsNotInTimeOrder) {
  std::vector<ActivityEvent> log = HandLog();
  std::reverse(log.begin(), log.end());  // every user's rows newest first
  std::swap(log[0], log[log.size() / 2]);  // and users interleaved
  MemFileSystem fs;
  WriteActivityDataset(&fs, HandTrain(), /*train_time=*/true, /*with_log=*/true, log);
  absl::StatusOr<ActivityIndex> index = BuildHandIndex(&fs);
  ASSERT_TRUE(index.ok()) << index.status();
  ExpectHandLogCounts(*index);
}

TEST(ActivityIndexTest, WithoutALogCountsTrainConversionsClicksAndDays) {
  // User 1: days 91 (click + conversion), 91 (click), 93, 85 (click + conversion, before the
  // window: neither counts, nor its day). User 2, out of time order: days 99, 92, 99 (click).
  const std::vector<TrainRow> train = {{1, At(91), 1, 1},  {1, At(91, 50), 1, 0}, {1, At(93), 0, 0},
                                  {1, At(85), 1, 1},  {2, At(99), 0, 0},     {2, At(92), 0, 0},
                                  {2, At(99, 9), 1, 0}};
  MemFileSystem fs;
  WriteActivityDataset(&fs, train, /*train_time=*/true, /*with_log=*/false, {});
  absl::StatusOr<ActivityIndex> index = BuildHandIndex(&fs);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->source(), "train conversions");
  EXPECT_EQ(index->Purchases(1), 1);
  EXPECT_EQ(index->Clicks(1), 2);
  EXPECT_EQ(index->ActiveDays(1), 2);
  EXPECT_EQ(index->Purchases(2), 0);
  EXPECT_EQ(index->Clicks(2), 1);
  EXPECT_EQ(index->ActiveDays(2), 2);
  float f[ActivityIndex::kNumActivityFeatures];
  index->ActivityFeatures(1, f);
  EXPECT_EQ(std::vector<float>(f, f + 4),
            (std::vector<float>{static_cast<float>(std::log1p(1.0)),
                                static_cast<float>(std::log1p(2.0)),
                                static_cast<float>(std::log1p(2.0)), 1.0f}));
}

// A converted dataset records no split time (0): every train conversion and click counts, and
// no day does, whatever the rows' timestamps.
TEST(ActivityIndexTest, WithoutASplitTimeEveryTrainConversionCountsAndNoDay) {
  const std::vector<TrainRow> train = {{1, At(91), 1, 1}, {1, At(85), 1, 1}, {1, At(3000), 1, 1},
                                       {2, At(99), 1, 0}};
  MemFileSystem fs;
  WriteActivityDataset(&fs, train, /*train_time=*/true, /*with_log=*/false, {}, /*split_time=*/0);
  absl::StatusOr<ActivityIndex> index = BuildHandIndex(&fs);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->Purchases(1), 3);
  EXPECT_EQ(index->Clicks(1), 3);
  EXPECT_EQ(index->ActiveDays(1), 0);
  EXPECT_EQ(index->Of(1), Bucket::kMid);
  EXPECT_EQ(index->Purchases(2), 0);
  EXPECT_EQ(index->Clicks(2), 1);
}

TEST(ActivityIndexTest, WithoutALogOrTrainTimestampsActiveDaysAreZero) {
  MemFileSystem fs;
  WriteActivityDataset(&fs, {{1, 0, 1, 1}, {1, 0, 1, 0}}, /*train_time=*/false,
                       /*with_log=*/false, {});
  absl::StatusOr<ActivityIndex> index = BuildHandIndex(&fs);
  ASSERT_TRUE(index.ok()) << index.status();
  EXPECT_EQ(index->Purchases(1), 1);
  EXPECT_EQ(index->Clicks(1), 2);
  EXPECT_EQ(index->ActiveDays(1), 0);
}

}  // namespace
}  // namespace choir::data
