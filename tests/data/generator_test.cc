// The synthetic generator: determinism, exact joins, and the properties the design promises
// (heavy-tailed activity, CVR rising with affinity, personas recoverable from behaviour for
// high-activity users, new users only in test).
#include "data/generator.h"

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

}  // namespace
}  // namespace choir::data
