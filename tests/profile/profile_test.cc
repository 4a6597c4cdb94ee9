// Template profiles: exact text on a hand-built dataset (windows, counts, price tiers,
// browsing, missing attributes), one line per user in order on a generated dataset.
#include "data/profile/profile.h"

#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "data/dataset.h"
#include "data/generator.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

constexpr int64_t kDay = 86400;
constexpr int64_t kSplit = 1000 * kDay;
constexpr char kDir[] = "/d";

constexpr char kTaxonomy[] = R"pb(
categories {
  name: "Mother & Baby"
  leaves { name: "Diapers" }
  leaves { name: "Infant Formula" }
}
categories {
  name: "Food & Groceries"
  leaves { name: "Fresh Fruit" }
}
)pb";

enum Leaf { kDiapers = 1, kFormula = 2, kFruit = 3 };

Schema UsersSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("gender", INT64);
  *s.add_fields() = MakeField("age_bucket", INT64);
  *s.add_fields() = MakeField("city_tier", INT64);
  *s.add_fields() = MakeField("first_seen", INT64, TIMESTAMP);
  return s;
}

Schema ItemsSchema() {
  Schema s;
  *s.add_fields() = MakeField("item_id", INT64, ITEM_ID);
  *s.add_fields() = MakeField("item_category", INT64);
  *s.add_fields() = MakeField("item_price", FLOAT);
  return s;
}

Schema BehaviorsSchema() {
  Schema s;
  *s.add_fields() = MakeField("user_id", INT64, USER_ID);
  *s.add_fields() = MakeField("item_id", INT64, ITEM_ID);
  *s.add_fields() = MakeField("item_category", INT64);
  *s.add_fields() = MakeField("item_price", FLOAT);
  *s.add_fields() = MakeField("timestamp", INT64, TIMESTAMP);
  *s.add_fields() = MakeField("type", INT64);
  return s;
}

struct Behavior {
  int64_t user, leaf;
  float price;
  int64_t days_before_split;  // negative: after the split
  int64_t type;               // 1 click, 2 purchase
};

// Writes a tiny dataset to kDir: four users (ids 30, 10, 40, 20 in that order) and a catalogue
// whose percentiles are exact: Diapers 10..50 (0, .25, .5, .75, 1), Formula 100/200/300
// (0, .5, 1), Fresh Fruit one item (0.5).
void WriteTinyDataset(FileSystem* fs, int64_t split_time = kSplit) {
  ASSERT_TRUE(fs->CreateDirs(kDir).ok());
  ASSERT_TRUE(fs->WriteStringToFileAtomic(JoinPath(kDir, kTaxonomyName), kTaxonomy).ok());
  DatasetManifest manifest;
  manifest.set_split_time(split_time);

  SplitWriter users(fs, kDir, "users", UsersSchema());
  RowBlock u(UsersSchema());
  // id, gender, age, city
  const std::vector<std::array<int64_t, 4>> user_rows = {
      {30, 0, 0, 0}, {10, 2, 2, 2}, {40, 1, 0, 1}, {20, 0, 6, 0}};
  for (const auto& r : user_rows) {
    for (int c = 0; c < 4; ++c) u.AppendInt(c, r[c]);
    u.AppendInt(4, 0);
    u.FinishRow();
  }
  ASSERT_TRUE(users.Write(u).ok());

  SplitWriter items(fs, kDir, "items", ItemsSchema());
  RowBlock it(ItemsSchema());
  const std::vector<std::pair<int64_t, float>> catalogue = {
      {kDiapers, 30}, {kDiapers, 10}, {kDiapers, 50}, {kDiapers, 20}, {kDiapers, 40},
      {kFormula, 200}, {kFormula, 100}, {kFormula, 300}, {kFruit, 5}};
  int64_t item_id = 1;
  for (const auto& [leaf, price] : catalogue) {
    it.AppendInt(0, item_id++);
    it.AppendInt(1, leaf);
    it.AppendFloat(2, price);
    it.FinishRow();
  }
  ASSERT_TRUE(items.Write(it).ok());

  SplitWriter behaviors(fs, kDir, "behaviors", BehaviorsSchema());
  RowBlock b(BehaviorsSchema());
  const std::vector<Behavior> log = {
      {10, kDiapers, 50, 2, 2},    // tier 1.0, in 7/30/365
      {10, kDiapers, 30, 10, 2},   // 0.5, in 30/365
      {10, kDiapers, 10, 100, 2},  // 0.0, in 365
      {10, kFormula, 300, 200, 2}, // 1.0, in 365
      {10, kFormula, 200, 300, 2}, // 0.5, in 365
      {10, kFruit, 5, 20, 2},      // 0.5, in 30/365
      {10, kDiapers, 20, 400, 2},  // older than 365 days: ignored
      {10, kDiapers, 20, -1, 2},   // after the split: ignored
      {10, kFruit, 5, 1, 1},       // browsed
      {10, kFormula, 100, 3, 1},   // browsed twice
      {10, kFormula, 100, 4, 1},
      {10, kDiapers, 10, 40, 1},   // click outside the 30-day browse window
      {40, kDiapers, 10, 5, 1},    // a user who only browsed
      {99, kDiapers, 10, 5, 2},    // not in the users split
  };
  for (const Behavior& e : log) {
    b.AppendInt(0, e.user);
    b.AppendInt(1, 0);
    b.AppendInt(2, e.leaf);
    b.AppendFloat(3, e.price);
    b.AppendInt(4, kSplit - e.days_before_split * kDay);
    b.AppendInt(5, e.type);
    b.FinishRow();
  }
  ASSERT_TRUE(behaviors.Write(b).ok());
  for (SplitWriter* w : {&users, &items, &behaviors}) {
    absl::StatusOr<SplitInfo> info = w->Finish();
    ASSERT_TRUE(info.ok()) << info.status();
    *manifest.add_splits() = *info;
  }
  ASSERT_TRUE(WriteManifest(fs, kDir, manifest).ok());
}

std::vector<std::pair<std::string, std::string>> ReadTsv(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  std::vector<std::pair<std::string, std::string>> rows;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    EXPECT_EQ(f.size(), 2u) << line;
    if (f.size() == 2) rows.emplace_back(f[0], f[1]);
  }
  return rows;
}

TEST(TemplateProfileTest, ExactTextForPurchasesInAllWindowsAndForUsersWithout) {
  MemFileSystem fs;
  WriteTinyDataset(&fs);
  ProfileOptions options;
  options.progress = false;
  absl::StatusOr<ProfileReport> report = WriteTemplateProfiles(&fs, kDir, "/profiles.tsv", options);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->users, 4);
  EXPECT_EQ(report->users_with_purchases, 1);
  EXPECT_EQ(report->users_with_browsing, 2);
  EXPECT_EQ(report->purchases_used, 6);
  EXPECT_EQ(report->clicks_used, 4);
  EXPECT_EQ(report->unknown_user_rows, 1);
  EXPECT_EQ(report->behavior_rows, 14);
  EXPECT_FALSE(fs.Exists("/profiles.tsv.tmp"));

  const auto rows = ReadTsv(&fs, "/profiles.tsv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0].first, "30");
  EXPECT_EQ(rows[0].second, "Gender, age and city unknown. No purchase or browsing history; interests unknown.");
  EXPECT_EQ(rows[1].first, "10");
  EXPECT_EQ(rows[1].second,
            "Female, age 25-29, lives in a tier-2 city. "
            "Purchases in the last 7 days: Mother & Baby (Diapers - 1 - price tier 1.00). "
            "Last 30 days: Mother & Baby (Diapers - 2 - price tier 0.75), "
            "Food & Groceries (Fresh Fruit - 1 - price tier 0.50). "
            "Last 365 days: Mother & Baby (Diapers - 3 - price tier 0.50; Infant Formula - 2 - price tier 0.75), "
            "Food & Groceries (Fresh Fruit - 1 - price tier 0.50). "
            "Recently browsed: Infant Formula, Fresh Fruit.");
  EXPECT_EQ(rows[2].first, "40");
  EXPECT_EQ(rows[2].second, "Male, lives in a tier-1 city. No purchases in the last 365 days. Recently browsed: Diapers.");
  EXPECT_EQ(rows[3].first, "20");
  EXPECT_EQ(rows[3].second, "Age 50+. No purchase or browsing history; interests unknown.");
}

TEST(TemplateProfileTest, LeafLimitSummarisesTheRestAndBrowsingCanBeOff) {
  MemFileSystem fs;
  WriteTinyDataset(&fs);
  ProfileOptions options;
  options.progress = false;
  options.max_leaves_per_window = 1;
  options.max_browsed = 0;
  ASSERT_TRUE(WriteTemplateProfiles(&fs, kDir, "/p.tsv", options).ok());
  const auto rows = ReadTsv(&fs, "/p.tsv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[1].second,
            "Female, age 25-29, lives in a tier-2 city. "
            "Purchases in the last 7 days: Mother & Baby (Diapers - 1 - price tier 1.00). "
            "Last 30 days: Mother & Baby (Diapers - 2 - price tier 0.75), and 1 more category. "
            "Last 365 days: Mother & Baby (Diapers - 3 - price tier 0.50), and 2 more categories.");
  EXPECT_EQ(rows[2].second, "Male, lives in a tier-1 city. No purchase or browsing history; interests unknown.");
}

TEST(TemplateProfileTest, SplitTimeOptionOverridesTheManifest) {
  MemFileSystem fs;
  WriteTinyDataset(&fs);
  ProfileOptions options;
  options.progress = false;
  // The 2-day-old purchase falls after the split; the 10-day-old one is now exactly 7 days old
  // (windows include their boundary).
  options.split_time = kSplit - 3 * kDay;
  ASSERT_TRUE(WriteTemplateProfiles(&fs, kDir, "/p.tsv", options).ok());
  const auto rows = ReadTsv(&fs, "/p.tsv");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_NE(rows[1].second.find("Purchases in the last 7 days: Mother & Baby (Diapers - 1 - price tier 0.50). "),
            std::string::npos)
      << rows[1].second;
}

TEST(TemplateProfileTest, RefusesADatasetWithoutSplitTime) {
  MemFileSystem fs;
  WriteTinyDataset(&fs, /*split_time=*/0);
  ProfileOptions options;
  options.progress = false;
  absl::StatusOr<ProfileReport> report = WriteTemplateProfiles(&fs, kDir, "/p.tsv", options);
  EXPECT_EQ(report.status().code(), absl::StatusCode::kInvalidArgument) << report.status();
  EXPECT_FALSE(fs.Exists("/p.tsv"));
}

TEST(TemplateProfileTest, MissingTaxonomyIsNotFound) {
  MemFileSystem fs;
  WriteTinyDataset(&fs);
  ASSERT_TRUE(fs.DeleteFile(JoinPath(kDir, kTaxonomyName)).ok());
  ProfileOptions options;
  options.progress = false;
  EXPECT_EQ(WriteTemplateProfiles(&fs, kDir, "/p.tsv", options).status().code(), absl::StatusCode::kNotFound);
}

TEST(TemplateProfileTest, SanitizeTurnsControlCharactersIntoSingleSpaces) {
  EXPECT_EQ(SanitizeProfileText("  a\tb\n\nc\r\n d  "), "a b c d");
  EXPECT_EQ(SanitizeProfileText(""), "");
}

TEST(TemplateProfileTest, GeneratedDatasetGetsOneLinePerUserInUserOrder) {
  MemFileSystem fs;
  absl::StatusOr<Taxonomy> t = LoadTaxonomy(nullptr, "");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<CompiledTaxonomy> taxonomy = CompileTaxonomy(*t);
  ASSERT_TRUE(taxonomy.ok()) << taxonomy.status();
  GeneratorOptions gen;
  gen.users = 500;
  gen.seed = 3;
  ASSERT_TRUE(GenerateDataset(&fs, *taxonomy, gen, "/gen").ok());
  ProfileOptions options;
  options.progress = false;
  absl::StatusOr<ProfileReport> report = WriteTemplateProfiles(&fs, "/gen", "/gen_profiles.tsv", options);
  ASSERT_TRUE(report.ok()) << report.status();

  // The users split's ids, in order.
  absl::StatusOr<DatasetManifest> m = ReadManifest(&fs, "/gen");
  ASSERT_TRUE(m.ok());
  absl::StatusOr<SplitInfo> split = FindSplit(*m, "users");
  ASSERT_TRUE(split.ok());
  std::vector<std::string> ids;
  ErrorCounter errors;
  ASSERT_TRUE(ForEachBlock(&fs, SplitPaths("/gen", *split), &errors, [&](const RowBlock& b) {
                for (size_t r = 0; r < b.num_rows(); ++r) ids.push_back(std::to_string(b.Int(0, r)));
                return absl::OkStatus();
              }).ok());
  ASSERT_EQ(ids.size(), 500u);

  const auto rows = ReadTsv(&fs, "/gen_profiles.tsv");
  ASSERT_EQ(rows.size(), ids.size());
  int with_purchases = 0;
  for (size_t i = 0; i < rows.size(); ++i) {
    EXPECT_EQ(rows[i].first, ids[i]);
    EXPECT_FALSE(rows[i].second.empty());
    EXPECT_EQ(rows[i].second.find('\n'), std::string::npos);
    if (rows[i].second.find("Last 365 days: ") != std::string::npos) ++with_purchases;
  }
  EXPECT_EQ(report->users, 500);
  EXPECT_EQ(with_purchases, report->users_with_purchases);
  EXPECT_GT(report->users_with_purchases, 50);
  EXPECT_LT(report->users_with_purchases, 500);  // most users buy rarely; some not at all
  EXPECT_EQ(report->unknown_user_rows, 0);
}

}  // namespace
}  // namespace choir::data
