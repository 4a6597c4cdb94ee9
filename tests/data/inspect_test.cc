// choir data inspect: counts agree with the data, buckets partition users and samples, and bad
// input is named or skipped within budget.
#include "data/inspect.h"

#include "core/fs.h"
#include "data/dataset.h"
#include "data/generator.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace choir::data {
namespace {

class InspectTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<Taxonomy> t = LoadTaxonomy(nullptr, "");
    ASSERT_TRUE(t.ok());
    absl::StatusOr<CompiledTaxonomy> c = CompileTaxonomy(*t);
    ASSERT_TRUE(c.ok());
    GeneratorOptions options;
    options.users = 3000;
    options.users_per_chunk = 400;  // several blocks per split
    ASSERT_TRUE(GenerateDataset(&fs_, *c, options, "/ds").ok());
  }
  MemFileSystem fs_;
};

TEST_F(InspectTest, BucketsPartitionUsersAndSamplesOfEachImpressionSplit) {
  absl::StatusOr<InspectReport> r = InspectDataset(&fs_, "/ds", ActivityBuckets(), ErrorBudget());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->bucket_source, "behaviors");
  int with_buckets = 0;
  for (const SplitStats& s : r->splits) {
    if (s.name == "users") {
      EXPECT_EQ(s.users, 3000);
    }
    if (!s.has_buckets) continue;
    ++with_buckets;
    int64_t users = 0, rows = 0, hist_users = 0;
    for (int b = 0; b < kNumBuckets; ++b) users += s.bucket_users[b], rows += s.bucket_rows[b];
    for (int64_t n : s.rows_per_user_hist) hist_users += n;
    EXPECT_EQ(users, s.users) << s.name;
    EXPECT_EQ(rows, s.rows) << s.name;
    EXPECT_EQ(hist_users, s.users) << s.name;
    EXPECT_GT(s.clicks, 0);
    EXPECT_GE(s.clicks, s.conversions_with_click);
    if (s.name == "train") {
      EXPECT_EQ(s.bucket_users[static_cast<int>(Bucket::kNew)], 0);
    }
    if (s.name == "test") {
      EXPECT_GT(s.bucket_users[static_cast<int>(Bucket::kNew)], 0);
    }
  }
  EXPECT_EQ(with_buckets, 2);
  const std::string text = FormatInspectReport(*r);
  EXPECT_NE(text.find("rows per user, split train"), std::string::npos) << text;
  const nlohmann::json j = nlohmann::json::parse(InspectReportToJson(*r));
  EXPECT_EQ(j["splits"]["train"]["rows"].get<int64_t>(), r->counters.at("train_rows"));
}

TEST_F(InspectTest, FolderWithoutManifestIsNamedInTheError) {
  absl::StatusOr<InspectReport> r = InspectDataset(&fs_, "/nothing-here", ActivityBuckets(), ErrorBudget());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nothing-here"), std::string::npos) << r.status();
}

// A corrupt train block is read by the activity pass and by the split pass; its rows must be
// counted as lost exactly once.
TEST_F(InspectTest, CorruptBlockFailsByDefaultAndIsSkippedAndCountedOnceWithinBudget) {
  const std::string file = "/ds/train/part-00000.shard";
  absl::StatusOr<std::string> bytes = fs_.GetContents(file);
  ASSERT_TRUE(bytes.ok());
  std::string corrupt = *bytes;
  corrupt[corrupt.size() / 2] ^= 0x5A;  // inside a block's payload
  ASSERT_TRUE(fs_.SetContents(file, corrupt).ok());
  absl::StatusOr<InspectReport> r = InspectDataset(&fs_, "/ds", ActivityBuckets(), ErrorBudget());
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDataLoss) << r.status();
  EXPECT_NE(r.status().message().find(file), std::string::npos) << r.status();
  ErrorBudget budget;
  budget.max_errors = 1000000;
  r = InspectDataset(&fs_, "/ds", ActivityBuckets(), budget);
  ASSERT_TRUE(r.ok()) << r.status();
  int64_t train_rows_read = -1;
  for (const SplitStats& s : r->splits) {
    if (s.name == "train") train_rows_read = s.rows;
  }
  const int64_t lost = r->counters.at("train_rows") - train_rows_read;
  EXPECT_GT(lost, 0);
  EXPECT_EQ(r->bad_inputs, lost);
}

}  // namespace
}  // namespace choir::data
