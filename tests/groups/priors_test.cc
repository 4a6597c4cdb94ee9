#include "data/groups/priors.h"

#include <map>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "data/dataset.h"
#include "data/generator.h"
#include "data/groups/groups_tsv.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace choir::groups {
namespace {

using data::DatasetManifest;
using data::MakeField;
using data::RowBlock;
using data::Schema;
using data::SplitInfo;
using data::SplitWriter;

constexpr char kDir[] = "/data";
constexpr int64_t kSplit = 1000;

Schema UsersSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", data::INT64, data::USER_ID);
  *s.add_fields() = MakeField("gender", data::INT64);
  *s.add_fields() = MakeField("age_bucket", data::INT64);
  *s.add_fields() = MakeField("city_tier", data::INT64);
  return s;
}
Schema TrainSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", data::INT64, data::USER_ID);
  *s.add_fields() = MakeField("click", data::INT64, data::LABEL_CLICK);
  *s.add_fields() = MakeField("conversion", data::INT64, data::LABEL_CONVERSION);
  return s;
}
Schema BehaviorsSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", data::INT64, data::USER_ID);
  *s.add_fields() = MakeField("item_id", data::INT64, data::ITEM_ID);
  *s.add_fields() = MakeField("item_category", data::INT64);
  *s.add_fields() = MakeField("timestamp", data::INT64, data::TIMESTAMP);
  *s.add_fields() = MakeField("type", data::INT64);
  return s;
}

void AddRow(RowBlock* b, const std::vector<int64_t>& values) {
  for (size_t i = 0; i < values.size(); ++i) b->AppendInt(static_cast<int>(i), values[i]);
  b->FinishRow();
}

// groups.tsv (2 levels): u1, u2 -> 1-1; u3 -> 1-2; u4, u5 -> 2-1 (u5 not in the dataset).
void WriteHandCase(MemFileSystem* fs) {
  DatasetManifest manifest;
  manifest.set_split_time(kSplit);
  SplitWriter users(fs, kDir, "users", UsersSchema());
  RowBlock u(UsersSchema());
  AddRow(&u, {1, 1, 3, 0});
  AddRow(&u, {2, 2, 3, 0});
  AddRow(&u, {3, 2, 0, 0});
  AddRow(&u, {4, 0, 0, 0});
  AddRow(&u, {99, 1, 1, 1});  // not grouped
  ASSERT_TRUE(users.Write(u).ok());

  SplitWriter train(fs, kDir, "train", TrainSchema());
  RowBlock t(TrainSchema());
  // u1: 10 impressions, 4 clicks, 1 conversion; u2: 5, 1, 1; u3: 3, 0, 0; u99: 2, 0, 0.
  for (int i = 0; i < 10; ++i) AddRow(&t, {1, i < 4 ? 1 : 0, i < 1 ? 1 : 0});
  for (int i = 0; i < 5; ++i) AddRow(&t, {2, i < 1 ? 1 : 0, i < 1 ? 1 : 0});
  for (int i = 0; i < 3; ++i) AddRow(&t, {3, 0, 0});
  for (int i = 0; i < 2; ++i) AddRow(&t, {99, 0, 0});
  ASSERT_TRUE(train.Write(t).ok());

  SplitWriter behaviors(fs, kDir, "behaviors", BehaviorsSchema());
  RowBlock b(BehaviorsSchema());
  // Group 1-1: category 10: item 100 x3 (mean t 200), 101 x2 (mean 100), 102 x1 (t 10);
  // category 20: 200 x2 (mean 600), 201 x2 (mean 30); category 30: 300 x4 (t 1).
  AddRow(&b, {1, 100, 10, 100, 2});
  AddRow(&b, {2, 100, 10, 200, 2});
  AddRow(&b, {1, 100, 10, 300, 2});
  AddRow(&b, {1, 101, 10, 50, 2});
  AddRow(&b, {2, 101, 10, 150, 2});
  AddRow(&b, {2, 102, 10, 10, 2});
  AddRow(&b, {1, 200, 20, 500, 2});
  AddRow(&b, {2, 200, 20, 700, 2});
  AddRow(&b, {1, 201, 20, 20, 2});
  AddRow(&b, {1, 201, 20, 40, 2});
  for (int i = 0; i < 4; ++i) AddRow(&b, {2, 300, 30, 1, 2});
  // Not counted: clicks, purchases at or after the split, purchases of ungrouped users.
  for (int i = 0; i < 10; ++i) AddRow(&b, {1, 999, 10, 1, 1});
  for (int i = 0; i < 5; ++i) AddRow(&b, {2, 102, 10, 2000, 2});
  AddRow(&b, {2, 102, 10, kSplit, 2});
  for (int i = 0; i < 10; ++i) AddRow(&b, {99, 500, 50, 1, 2});
  // Group 1-2: u3 buys 300 (category 30) at t 900.
  AddRow(&b, {3, 300, 30, 900, 2});
  ASSERT_TRUE(behaviors.Write(b).ok());

  for (SplitWriter* w : {&users, &train, &behaviors}) {
    absl::StatusOr<SplitInfo> info = w->Finish();
    ASSERT_TRUE(info.ok()) << info.status();
    *manifest.add_splits() = *info;
  }
  ASSERT_TRUE(data::WriteManifest(fs, kDir, manifest).ok());
  ASSERT_TRUE(WriteGroupsTsv(fs, "/groups.tsv", {1, 2, 3, 4, 5},
                             {1, 1, 1, 1, 1, 2, 2, 1, 2, 1}, 2)
                  .ok());
}

using Table = std::map<std::string, std::map<std::string, std::string>>;

Table ReadTable(MemFileSystem* fs, const std::string& path) {
  Table table;
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  if (!text.ok()) return table;
  std::vector<std::string> lines = absl::StrSplit(*text, '\n', absl::SkipEmpty());
  EXPECT_FALSE(lines.empty());
  std::vector<std::string> header = absl::StrSplit(lines[0], '\t');
  EXPECT_EQ(lines[0],
            "group\tmembers\tgender\tage_bucket\tcity_tier\timpressions\tclicks\tconversions\t"
            "ctr\tcvr\tseq_items\tseq_categories");
  for (size_t i = 1; i < lines.size(); ++i) {
    std::vector<std::string> fields = absl::StrSplit(lines[i], '\t');
    EXPECT_EQ(fields.size(), header.size()) << lines[i];
    for (size_t f = 0; f < fields.size() && f < header.size(); ++f) {
      table[fields[0]][header[f]] = fields[f];
    }
  }
  return table;
}

double Num(const std::string& s) {
  double v = 0;
  EXPECT_TRUE(absl::SimpleAtod(s, &v)) << s;
  return v;
}

class PriorsHandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteHandCase(&fs_);
    options_.top_categories = 2;
    options_.items_per_category = 2;
    options_.smoothing = 4;
    absl::StatusOr<PriorsReport> report =
        WriteGroupPriors(&fs_, kDir, "/groups.tsv", "/out", options_);
    ASSERT_TRUE(report.ok()) << report.status();
    report_ = *report;
    l1_ = ReadTable(&fs_, "/out/level-1.tsv");
    l2_ = ReadTable(&fs_, "/out/level-2.tsv");
  }
  MemFileSystem fs_;
  PriorsOptions options_;
  PriorsReport report_;
  Table l1_, l2_;
};

TEST_F(PriorsHandTest, ReportCountsAndGlobalRates) {
  EXPECT_EQ(report_.levels, 2);
  EXPECT_EQ(report_.users, 5);
  EXPECT_EQ(report_.users_absent, 1);
  EXPECT_EQ(report_.users_without_train, 2);
  EXPECT_EQ(report_.train_rows, 20);
  EXPECT_EQ(report_.train_clicks, 5);
  EXPECT_EQ(report_.train_conversions, 2);
  EXPECT_DOUBLE_EQ(report_.global_ctr, 0.25);
  EXPECT_DOUBLE_EQ(report_.global_cvr, 0.4);
  EXPECT_EQ(report_.purchases, 15);
  EXPECT_EQ(report_.groups_per_level, (std::vector<int64_t>{2, 3}));
  absl::StatusOr<std::string> json = fs_.ReadFileToString("/out/priors.json");
  ASSERT_TRUE(json.ok());
  nlohmann::json j = nlohmann::json::parse(*json);
  EXPECT_EQ(j["levels"], 2);
  EXPECT_EQ(j["options"]["top_categories"], 2);
  EXPECT_DOUBLE_EQ(j["global"]["ctr"].get<double>(), 0.25);
  EXPECT_EQ(j["counts"]["users_absent"], 1);
}

TEST_F(PriorsHandTest, MajorityVotesIgnoreMissingAndBreakTiesToSmallest) {
  // 1-1: gender {1, 2} tie -> 1; age {3, 3} -> 3; city all missing -> 0.
  EXPECT_EQ(l2_["1-1"]["gender"], "1");
  EXPECT_EQ(l2_["1-1"]["age_bucket"], "3");
  EXPECT_EQ(l2_["1-1"]["city_tier"], "0");
  EXPECT_EQ(l2_["1-2"]["gender"], "2");
  EXPECT_EQ(l2_["1-2"]["age_bucket"], "0");
  // 2-1: u4 all missing, u5 absent.
  EXPECT_EQ(l2_["2-1"]["gender"], "0");
  EXPECT_EQ(l2_["2-1"]["members"], "2");
  // Level 1 "1": gender {1, 2, 2} -> 2.
  EXPECT_EQ(l1_["1"]["gender"], "2");
  EXPECT_EQ(l1_["1"]["age_bucket"], "3");
}

TEST_F(PriorsHandTest, SmoothedRatesAreExact) {
  EXPECT_EQ(l2_["1-1"]["impressions"], "15");
  EXPECT_EQ(l2_["1-1"]["clicks"], "5");
  EXPECT_EQ(l2_["1-1"]["conversions"], "2");
  EXPECT_NEAR(Num(l2_["1-1"]["ctr"]), 6.0 / 19.0, 1e-9);  // (5 + 4 * 0.25) / (15 + 4)
  EXPECT_NEAR(Num(l2_["1-1"]["cvr"]), 0.4, 1e-9);         // (2 + 4 * 0.4) / (5 + 4)
  EXPECT_NEAR(Num(l2_["1-2"]["ctr"]), 1.0 / 7.0, 1e-9);   // (0 + 1) / (3 + 4)
  EXPECT_NEAR(Num(l2_["1-2"]["cvr"]), 0.4, 1e-9);         // (0 + 1.6) / (0 + 4)
  EXPECT_NEAR(Num(l2_["2-1"]["ctr"]), 0.25, 1e-9);        // no data: the global rate
  EXPECT_NEAR(Num(l1_["1"]["ctr"]), 6.0 / 22.0, 1e-9);
}

TEST_F(PriorsHandTest, SequenceOrderIsExact) {
  // Top 2 categories of 1-1: 10 (6 purchases), 20 (4, beats 30's 4 by id); head items
  // 100, 101 and 200, 201 (tie on count); ordered by mean time 30, 100, 200, 600.
  EXPECT_EQ(l2_["1-1"]["seq_items"], "201|101|100|200");
  EXPECT_EQ(l2_["1-1"]["seq_categories"], "20|10|10|20");
  EXPECT_EQ(l2_["1-2"]["seq_items"], "300");
  EXPECT_EQ(l2_["1-2"]["seq_categories"], "30");
  EXPECT_EQ(l2_["2-1"]["seq_items"], "");
  // Level 1 "1": categories 10 (6), 30 (5); 300's mean time (4 * 1 + 900) / 5 = 180.8.
  EXPECT_EQ(l1_["1"]["seq_items"], "101|300|100");
  EXPECT_EQ(l1_["1"]["seq_categories"], "10|30|10");
}

TEST_F(PriorsHandTest, LevelPrefixesAggregateMembers) {
  ASSERT_EQ(l1_.size(), 2u);
  ASSERT_EQ(l2_.size(), 3u);
  EXPECT_EQ(l1_["1"]["members"], "3");
  EXPECT_EQ(l1_["2"]["members"], "2");
  EXPECT_EQ(l2_["1-1"]["members"], "2");
  EXPECT_EQ(l2_["1-2"]["members"], "1");
  EXPECT_EQ(l1_["1"]["impressions"], "18");
  EXPECT_EQ(l1_["1"]["clicks"], "5");
  EXPECT_EQ(l1_["1"]["conversions"], "2");
}

TEST(PriorsTest, ErrorsNameTheFile) {
  MemFileSystem fs;
  WriteHandCase(&fs);
  absl::StatusOr<PriorsReport> r = WriteGroupPriors(&fs, kDir, "/nope.tsv", "/out", {});
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nope.tsv"), std::string::npos) << r.status();
  PriorsOptions bad;
  bad.smoothing = -1;
  EXPECT_EQ(WriteGroupPriors(&fs, kDir, "/groups.tsv", "/out", bad).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PriorsTest, GeneratedDatasetGivesOneRowPerNonEmptyGroup) {
  MemFileSystem fs;
  absl::StatusOr<data::Taxonomy> t = data::LoadTaxonomy(nullptr, "");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<data::CompiledTaxonomy> taxonomy = data::CompileTaxonomy(*t);
  ASSERT_TRUE(taxonomy.ok()) << taxonomy.status();
  data::GeneratorOptions gen;
  gen.users = 500;
  gen.seed = 3;
  ASSERT_TRUE(data::GenerateDataset(&fs, *taxonomy, gen, "/gen").ok());
  absl::StatusOr<DatasetManifest> m = data::ReadManifest(&fs, "/gen");
  ASSERT_TRUE(m.ok());
  absl::StatusOr<SplitInfo> split = data::FindSplit(*m, "users");
  ASSERT_TRUE(split.ok());
  std::vector<int64_t> ids;
  ErrorCounter errors;
  ASSERT_TRUE(data::ForEachBlock(&fs, data::SplitPaths("/gen", *split), &errors,
                                 [&](const RowBlock& b) {
                                   for (size_t r = 0; r < b.num_rows(); ++r) {
                                     ids.push_back(b.Int(0, r));
                                   }
                                   return absl::OkStatus();
                                 })
                  .ok());
  ASSERT_EQ(ids.size(), 500u);
  ids.push_back(123456789);  // absent from the dataset
  std::vector<int32_t> codes;
  for (size_t i = 0; i < ids.size(); ++i) {
    codes.push_back(static_cast<int32_t>(i % 3));
    codes.push_back(static_cast<int32_t>(i % 5));
  }
  ASSERT_TRUE(WriteGroupsTsv(&fs, "/g.tsv", ids, codes, 2).ok());
  absl::StatusOr<PriorsReport> report = WriteGroupPriors(&fs, "/gen", "/g.tsv", "/p", {});
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->users, 501);
  EXPECT_EQ(report->users_absent, 1);
  EXPECT_GT(report->purchases, 0);
  EXPECT_TRUE(report->has_behaviors);
  EXPECT_EQ(report->groups_per_level, (std::vector<int64_t>{3, 15}));
  Table l1 = ReadTable(&fs, "/p/level-1.tsv");
  Table l2 = ReadTable(&fs, "/p/level-2.tsv");
  EXPECT_EQ(l1.size(), 3u);
  EXPECT_EQ(l2.size(), 15u);
  int64_t members = 0, impressions = 0;
  int with_seq = 0;
  for (auto& [key, row] : l2) {
    members += static_cast<int64_t>(Num(row["members"]));
    impressions += static_cast<int64_t>(Num(row["impressions"]));
    const double ctr = Num(row["ctr"]);
    EXPECT_GT(ctr, 0.0);
    EXPECT_LT(ctr, 1.0);
    if (!row["seq_items"].empty()) {
      ++with_seq;
      std::vector<std::string> items = absl::StrSplit(row["seq_items"], '|');
      std::vector<std::string> cats = absl::StrSplit(row["seq_categories"], '|');
      EXPECT_EQ(items.size(), cats.size());
      EXPECT_LE(items.size(), 10u);
    }
  }
  EXPECT_EQ(members, 501);
  EXPECT_GT(impressions, 0);
  EXPECT_LE(impressions, report->train_rows);
  EXPECT_EQ(with_seq, 15);
}

}  // namespace
}  // namespace choir::groups
