// GroupFeatures: per-user group ids, attributes, statistics and sequences from groups.tsv and
// the group priors; the no-group row; every malformed input refused with the file and line.
#include "worker/group_features.h"

#include <cmath>
#include <map>
#include <ostream>
#include <string>
#include <vector>

#include "absl/strings/str_replace.h"
#include "core/fs.h"
#include "data/dataset.h"
#include "data/groups/groups_tsv.h"
#include "data/groups/priors.h"
#include "data/row_block.h"
#include "data/shard.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace choir::worker {
namespace {

using ::testing::HasSubstr;

std::vector<int64_t> Vec(absl::Span<const int64_t> s) { return {s.begin(), s.end()}; }

float Log1p(double x) { return static_cast<float>(std::log1p(x)); }

// Two levels. Level-1 groups "2" (id 1) and "10" (id 2): numeric, not string, prefix order.
// Users 10, 11 -> 2-1; 12 -> 2-3; 13 -> 10-0. Rates are exact in binary.
constexpr char kGroupsTsv[] =
    "user_id\tc1\tc2\n"
    "10\t2\t1\n"
    "11\t2\t1\n"
    "12\t2\t3\n"
    "13\t10\t0\n";
constexpr char kLevel1[] =
    "group\tmembers\tgender\tage_bucket\tcity_tier\timpressions\tclicks\tconversions\tctr\tcvr\t"
    "seq_items\tseq_categories\n"
    "2\t3\t1\t3\t2\t18\t5\t2\t0.25\t0.375\t101|300|100\t10|30|10\n"
    "10\t1\t0\t0\t0\t0\t0\t0\t0.125\t0.0625\t\t\n";
constexpr char kLevel2[] =
    "group\tmembers\tgender\tage_bucket\tcity_tier\timpressions\tclicks\tconversions\tctr\tcvr\t"
    "seq_items\tseq_categories\n"
    "2-1\t2\t2\t4\t1\t15\t5\t2\t0.3125\t0.5\t201|101\t20|10\n"
    "2-3\t1\t1\t0\t3\t3\t0\t0\t0.15625\t0.25\t300\t30\n"
    "10-0\t1\t0\t0\t0\t0\t0\t0\t0.125\t0.0625\t\t\n";
constexpr char kPriorsJson[] =
    R"({"levels": 2, "global": {"ctr": 0.125, "cvr": 0.0625}, "counts": {"users": 4}})";

class GroupFeaturesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files_ = {{"/groups.tsv", kGroupsTsv},
              {"/priors/level-1.tsv", kLevel1},
              {"/priors/level-2.tsv", kLevel2},
              {"/priors/priors.json", kPriorsJson}};
    options_.groups_tsv = "/groups.tsv";
    options_.priors_dir = "/priors";
  }

  absl::StatusOr<std::unique_ptr<GroupFeatures>> Load() {
    EXPECT_TRUE(fs_.CreateDirs("/priors").ok());
    for (const auto& [path, text] : files_) {
      absl::Status s = fs_.WriteStringToFileAtomic(path, text);
      EXPECT_TRUE(s.ok()) << s;
    }
    return GroupFeatures::Load(&fs_, options_);
  }

  MemFileSystem fs_;
  std::map<std::string, std::string> files_;
  GroupFeatureOptions options_;
};

TEST_F(GroupFeaturesTest, KnownUsersGetIdsAttributesStatsAndSequenceOfTheirGroups) {
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  const GroupFeatures& g = **f;
  EXPECT_EQ(g.levels(), 2);
  EXPECT_EQ(g.num_groups(0), 2);
  EXPECT_EQ(g.num_groups(1), 3);
  EXPECT_EQ(g.num_stats(), 8);
  EXPECT_EQ(g.users(), 4);
  EXPECT_EQ(g.distinct_rows(), 3);
  EXPECT_EQ(g.attribute_level(), 2);
  EXPECT_EQ(g.sequence_level(), 1);
  EXPECT_EQ(g.global_ctr(), 0.125);
  EXPECT_EQ(g.global_cvr(), 0.0625);

  const GroupRow& u10 = g.Of(10);
  EXPECT_EQ(u10.ids, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(u10.attributes, (std::array<int64_t, 3>{2, 4, 1}));                 // level 2 "2-1"
  EXPECT_EQ(u10.stats, (std::vector<float>{Log1p(18), Log1p(5), 0.25f, 0.375f,  //
                                           Log1p(15), Log1p(5), 0.3125f, 0.5f}));
  EXPECT_EQ(Vec(u10.seq_items), (std::vector<int64_t>{101, 300, 100}));  // level 1 "2"
  EXPECT_EQ(Vec(u10.seq_categories), (std::vector<int64_t>{10, 30, 10}));
  // Members of one full code share one row.
  EXPECT_EQ(&g.Of(11), &u10);

  const GroupRow& u12 = g.Of(12);
  EXPECT_EQ(u12.ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(u12.attributes, (std::array<int64_t, 3>{1, 0, 3}));
  EXPECT_EQ(u12.stats, (std::vector<float>{Log1p(18), Log1p(5), 0.25f, 0.375f,  //
                                           Log1p(3), 0.0f, 0.15625f, 0.25f}));
  EXPECT_EQ(Vec(u12.seq_items), (std::vector<int64_t>{101, 300, 100}));

  const GroupRow& u13 = g.Of(13);
  EXPECT_EQ(u13.ids, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(u13.attributes, (std::array<int64_t, 3>{0, 0, 0}));
  EXPECT_EQ(u13.stats,
            (std::vector<float>{0.0f, 0.0f, 0.125f, 0.0625f, 0.0f, 0.0f, 0.125f, 0.0625f}));
  EXPECT_TRUE(u13.seq_items.empty());
  EXPECT_TRUE(u13.seq_categories.empty());
}

// UserStats leaves the user's own train rows out of its groups (smoothing 20, the default when
// priors.json has no options), then standardises each column over the users.
TEST_F(GroupFeaturesTest, UserStatsLeaveTheUsersOwnRowsOutAndAreStandardised) {
  absl::flat_hash_map<int64_t, OwnCounts> own;
  own[10] = {8, 2, 1};
  own[11] = {7, 3, 1};
  own[12] = {3, 0, 0};
  own[13] = {0, 0, 0};
  options_.own_counts = &own;
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  const GroupFeatures& g = **f;
  auto raw = [&](int64_t user) {
    std::vector<float> out(g.num_stats());
    g.RawUserStats(user, out.data());
    return std::vector<double>(out.begin(), out.end());
  };
  auto expect_near = [](const std::vector<double>& got, const std::vector<double>& want) {
    ASSERT_EQ(got.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6) << "column " << i;
  };
  // User 10 in "2" (18, 5, 2) and "2-1" (15, 5, 2), own (8, 2, 1): peers (10, 3, 1), (7, 3, 1).
  expect_near(raw(10), {std::log1p(10.0), std::log1p(3.0), 5.5 / 30, 2.25 / 23,  //
                        std::log1p(7.0), std::log1p(3.0), 5.5 / 27, 2.25 / 23});
  // User 12 in "2" and "2-3" (3, 0, 0), own (3, 0, 0): its level-2 group has no peer rows.
  expect_near(raw(12), {std::log1p(15.0), std::log1p(5.0), 7.5 / 35, 3.25 / 25,  //
                        0, 0, 0.125, 0.0625});
  // Without peers' rows or without a group: the global rates.
  expect_near(raw(13), {0, 0, 0.125, 0.0625, 0, 0, 0.125, 0.0625});
  expect_near(raw(99), {0, 0, 0.125, 0.0625, 0, 0, 0.125, 0.0625});
  // GroupRow::stats keep the priors' values (every member included).
  EXPECT_EQ(g.Of(10).stats[0], Log1p(18));

  const std::vector<int64_t> users = {10, 11, 12, 13};
  for (int c = 0; c < g.num_stats(); ++c) {
    double sum = 0, sum_sq = 0;
    for (int64_t u : users) {
      std::vector<float> z(g.num_stats());
      g.UserStats(u, z.data());
      EXPECT_NEAR(z[c], (raw(u)[c] - g.stats_mean()[c]) * g.stats_scale()[c], 1e-6);
      sum += z[c];
      sum_sq += double(z[c]) * z[c];
    }
    const double mean = sum / users.size(), var = sum_sq / users.size() - mean * mean;
    EXPECT_NEAR(mean, 0.0, 1e-6) << "column " << c;
    EXPECT_NEAR(var, 1.0, 1e-5) << "column " << c;
  }
}

TEST_F(GroupFeaturesTest, UserStatsUseThePriorsSmoothing) {
  files_["/priors/priors.json"] =
      R"({"levels": 2, "global": {"ctr": 0.125, "cvr": 0.0625}, "options": {"smoothing": 4}})";
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();  // no own counts: whole groups
  ASSERT_TRUE(f.ok()) << f.status();
  std::vector<float> out((*f)->num_stats());
  (*f)->RawUserStats(10, out.data());
  EXPECT_NEAR(out[2], (5 + 4 * 0.125) / (18 + 4), 1e-6);
  EXPECT_NEAR(out[3], (2 + 4 * 0.0625) / (5 + 4), 1e-6);
  files_["/priors/priors.json"] =
      R"({"levels": 2, "global": {"ctr": 0.125, "cvr": 0.0625}, "options": {"smoothing": -1}})";
  f = Load();
  EXPECT_EQ(f.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(f.status().message(), HasSubstr("options.smoothing"));
}

TEST_F(GroupFeaturesTest, UnknownUserGetsTheNoGroupRowWithGlobalRates) {
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  const GroupRow& none = (*f)->Of(99);
  EXPECT_EQ(none.ids, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(none.attributes, (std::array<int64_t, 3>{0, 0, 0}));
  EXPECT_EQ(none.stats,
            (std::vector<float>{0.0f, 0.0f, 0.125f, 0.0625f, 0.0f, 0.0f, 0.125f, 0.0625f}));
  EXPECT_TRUE(none.seq_items.empty());
  EXPECT_TRUE(none.seq_categories.empty());
  EXPECT_EQ(&(*f)->Of(-5), &none);
}

TEST_F(GroupFeaturesTest, AssignedUsersJoinTheGroupsOfTheirCodesDownToTheFirstUnknownPrefix) {
  // 20: a known tuple (2, 3); 21: level-1 group 2 but no training user had 2-7; 22: no group 5
  // at all; 10 is in groups.tsv and keeps its groups.
  AssignedUsers assigned;
  assigned.ids = {20, 21, 22, 10};
  assigned.codes = {2, 3, 2, 7, 5, 0, 10, 0};
  options_.assigned = &assigned;
  options_.sequence_level = 1;
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  const GroupFeatures& g = **f;
  EXPECT_EQ(g.Of(20).ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(g.Of(21).ids, (std::vector<int64_t>{1, 0}));
  EXPECT_EQ(Vec(g.Of(21).seq_items), (std::vector<int64_t>{101, 300, 100}));  // level 1's sequence
  EXPECT_EQ(g.Of(21).stats[4 + 2], 0.125f);                                   // level 2: global CTR
  EXPECT_EQ(g.Of(22).ids, (std::vector<int64_t>{0, 0}));
  EXPECT_EQ(g.Of(10).ids, (std::vector<int64_t>{1, 1}));
  // Standardisation is over groups.tsv's users only: the same as without assigned users.
  options_.assigned = nullptr;
  absl::StatusOr<std::unique_ptr<GroupFeatures>> plain = Load();
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(g.stats_mean(), (*plain)->stats_mean());
  EXPECT_EQ(g.stats_scale(), (*plain)->stats_scale());
  // Codes of the wrong width are refused.
  assigned.codes.pop_back();
  options_.assigned = &assigned;
  EXPECT_EQ(Load().status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(GroupFeaturesTest, LevelsAreClampedAndSelectAttributesAndSequence) {
  options_.attribute_level = 1;
  options_.sequence_level = 7;  // clamped to 2
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->attribute_level(), 1);
  EXPECT_EQ((*f)->sequence_level(), 2);
  const GroupRow& u12 = (*f)->Of(12);
  EXPECT_EQ(u12.attributes, (std::array<int64_t, 3>{1, 3, 2}));  // level 1 "2"
  EXPECT_EQ(Vec(u12.seq_items), (std::vector<int64_t>{300}));    // level 2 "2-3"
  EXPECT_EQ(Vec(u12.seq_categories), (std::vector<int64_t>{30}));
  EXPECT_EQ(Vec((*f)->Of(10).seq_items), (std::vector<int64_t>{201, 101}));

  options_.attribute_level = -3;  // clamped to 1
  options_.sequence_level = 0;    // clamped to 1
  f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->attribute_level(), 1);
  EXPECT_EQ((*f)->sequence_level(), 1);
}

TEST_F(GroupFeaturesTest, UnusedLevelRowsKeepIdsDense) {
  // A group of the priors that no user of groups.tsv belongs to still takes its id.
  files_["/priors/level-2.tsv"] =
      absl::StrReplaceAll(kLevel2, {{"2-3\t", "2-2\t1\t0\t0\t0\t0\t0\t0\t0.5\t0.5\t\t\n2-3\t"}});
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ((*f)->num_groups(1), 4);
  EXPECT_EQ((*f)->Of(12).ids, (std::vector<int64_t>{1, 3}));
  EXPECT_EQ((*f)->Of(13).ids, (std::vector<int64_t>{2, 4}));
}

struct BadCase {
  const char* name;
  const char* file;  // the file to change
  const char* from;  // replaced by `to` in it (from "" replaces the whole file)
  const char* to;
  absl::StatusCode code;
  const char* message;  // a fragment of the error
};

void PrintTo(const BadCase& c, std::ostream* os) { *os << c.name; }

class GroupFeaturesBadInputTest : public GroupFeaturesTest,
                                  public ::testing::WithParamInterface<BadCase> {};

TEST_P(GroupFeaturesBadInputTest, IsRefusedNamingTheFileAndLine) {
  const BadCase& c = GetParam();
  std::string& text = files_[c.file];
  if (c.from[0] == '\0') {
    text = c.to;
  } else {
    ASSERT_NE(text.find(c.from), std::string::npos) << c.from;
    text = absl::StrReplaceAll(text, {{c.from, c.to}});
  }
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), c.code) << f.status();
  EXPECT_THAT(std::string(f.status().message()), HasSubstr(c.message));
}

constexpr absl::StatusCode kDataLoss = absl::StatusCode::kDataLoss;
constexpr absl::StatusCode kInvalid = absl::StatusCode::kInvalidArgument;

INSTANTIATE_TEST_SUITE_P(
    AllCases, GroupFeaturesBadInputTest,
    ::testing::Values(
        BadCase{"LevelHeader", "/priors/level-1.tsv", "\tcvr\t", "\tcvr2\t", kDataLoss,
                "/priors/level-1.tsv:1: expected the header"},
        BadCase{"LevelColumnCount", "/priors/level-2.tsv", "2-3\t1\t1\t0\t3\t", "2-3\t1\t1\t0\t",
                kDataLoss, "/priors/level-2.tsv:3: 11 columns"},
        BadCase{"NonNumericCount", "/priors/level-2.tsv", "\t15\t5\t", "\t15\tfive\t", kDataLoss,
                "/priors/level-2.tsv:2: column 7 'five'"},
        BadCase{"NegativeCount", "/priors/level-1.tsv", "\t18\t", "\t-18\t", kDataLoss,
                "/priors/level-1.tsv:2: column 6 '-18'"},
        BadCase{"NonNumericRate", "/priors/level-1.tsv", "0.375", "x", kDataLoss,
                "/priors/level-1.tsv:2: column 10 'x'"},
        BadCase{"NonFiniteRate", "/priors/level-1.tsv", "0.375", "nan", kDataLoss,
                "/priors/level-1.tsv:2: column 10 'nan'"},
        BadCase{"MisalignedSequence", "/priors/level-1.tsv", "10|30|10", "10|30", kDataLoss,
                "/priors/level-1.tsv:2: 3 seq_items but 2 seq_categories"},
        BadCase{"NonNumericSequence", "/priors/level-2.tsv", "201|101", "201|x", kDataLoss,
                "/priors/level-2.tsv:2: seq_items or seq_categories"},
        BadCase{"PrefixOfWrongLength", "/priors/level-2.tsv", "2-3\t", "2-3-1\t", kDataLoss,
                "/priors/level-2.tsv:3: group '2-3-1' is not a prefix of 2 codes"},
        BadCase{"BadPrefix", "/priors/level-2.tsv", "2-3\t", "2-x\t", kDataLoss,
                "/priors/level-2.tsv:3: bad group '2-x'"},
        BadCase{"UnsortedRows", "/priors/level-2.tsv", "2-3\t", "2-0\t", kDataLoss,
                "/priors/level-2.tsv:3: group '2-0' does not follow '2-1'"},
        BadCase{"DuplicateRows", "/priors/level-1.tsv", "10\t1\t", "2\t1\t", kDataLoss,
                "/priors/level-1.tsv:3: group '2' does not follow '2'"},
        BadCase{"EmptyLevelFile", "/priors/level-2.tsv", "", "", kDataLoss,
                "/priors/level-2.tsv: empty file"},
        BadCase{"PrefixMissingAtFinestLevel", "/priors/level-2.tsv",
                "2-3\t1\t1\t0\t3\t3\t0\t0\t0.15625\t0.25\t300\t30\n", "", kInvalid,
                "/groups.tsv:4: group '2-3' of user 12 has no row in /priors/level-2.tsv"},
        BadCase{"PrefixMissingAtCoarseLevel", "/priors/level-1.tsv",
                "10\t1\t0\t0\t0\t0\t0\t0\t0.125\t0.0625\t\t\n", "", kInvalid,
                "/groups.tsv:5: group '10' of user 13 has no row in /priors/level-1.tsv"},
        BadCase{"GroupsTsvColumnCount", "/groups.tsv", "12\t2\t3\n", "12\t2\n", kDataLoss,
                "/groups.tsv:4: 1 codes, header has 2"},
        BadCase{"GroupsTsvHeader", "/groups.tsv", "user_id\t", "user\t", kDataLoss,
                "/groups.tsv:1: expected header"},
        BadCase{"GroupsTsvNonNumericCode", "/groups.tsv", "12\t2\t3\n", "12\t2\tx\n", kDataLoss,
                "/groups.tsv:4: bad code 'x'"},
        BadCase{"GroupsTsvDuplicateUser", "/groups.tsv", "12\t2\t3\n", "10\t2\t3\n", kInvalid,
                "/groups.tsv:4: user 10 appears twice"},
        BadCase{"MoreLevelsInGroupsTsv", "/groups.tsv", "", "user_id\tc1\tc2\tc3\n10\t2\t1\t0\n",
                kInvalid, "/groups.tsv has 3 levels but /priors/priors.json has 2"},
        BadCase{"MoreLevelsInPriorsJson", "/priors/priors.json", "\"levels\": 2", "\"levels\": 1",
                kInvalid, "/groups.tsv has 2 levels but /priors/priors.json has 1"},
        BadCase{"PriorsJsonNotJson", "/priors/priors.json", "", "{levels", kDataLoss,
                "/priors/priors.json: not a JSON object"},
        BadCase{"PriorsJsonWithoutLevels", "/priors/priors.json", "\"levels\": 2",
                "\"levels\": \"2\"", kDataLoss, "/priors/priors.json: needs an integer 'levels'"},
        BadCase{"PriorsJsonWithoutGlobalRates", "/priors/priors.json", "\"cvr\"", "\"cvr_\"",
                kDataLoss, "/priors/priors.json: needs numbers 'global.ctr' and 'global.cvr'"}),
    [](const ::testing::TestParamInfo<BadCase>& info) { return std::string(info.param.name); });

TEST_F(GroupFeaturesTest, MissingLevelFileIsNamed) {
  ASSERT_TRUE(Load().ok());
  ASSERT_TRUE(fs_.DeleteFile("/priors/level-2.tsv").ok());
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = GroupFeatures::Load(&fs_, options_);
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound) << f.status();
  EXPECT_THAT(std::string(f.status().message()), HasSubstr("/priors/level-2.tsv"));
}

TEST_F(GroupFeaturesTest, EmptyPathsAreInvalidArguments) {
  options_.priors_dir = "";
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = Load();
  ASSERT_FALSE(f.ok());
  EXPECT_EQ(f.status().code(), absl::StatusCode::kInvalidArgument);
}

// End to end: the tables groups::WriteGroupPriors writes for a hand-made dataset (the one of
// tests/groups/priors_test.cc, whose expected values are derived there).
data::Schema UsersSchema() {
  data::Schema s;
  *s.add_fields() = data::MakeField("user_id", data::INT64, data::USER_ID);
  *s.add_fields() = data::MakeField("gender", data::INT64);
  *s.add_fields() = data::MakeField("age_bucket", data::INT64);
  *s.add_fields() = data::MakeField("city_tier", data::INT64);
  return s;
}
data::Schema TrainSchema() {
  data::Schema s;
  *s.add_fields() = data::MakeField("user_id", data::INT64, data::USER_ID);
  *s.add_fields() = data::MakeField("click", data::INT64, data::LABEL_CLICK);
  *s.add_fields() = data::MakeField("conversion", data::INT64, data::LABEL_CONVERSION);
  return s;
}
data::Schema BehaviorsSchema() {
  data::Schema s;
  *s.add_fields() = data::MakeField("user_id", data::INT64, data::USER_ID);
  *s.add_fields() = data::MakeField("item_id", data::INT64, data::ITEM_ID);
  *s.add_fields() = data::MakeField("item_category", data::INT64);
  *s.add_fields() = data::MakeField("timestamp", data::INT64, data::TIMESTAMP);
  *s.add_fields() = data::MakeField("type", data::INT64);
  return s;
}

void AddRow(data::RowBlock* b, const std::vector<int64_t>& values) {
  for (size_t i = 0; i < values.size(); ++i) b->AppendInt(static_cast<int>(i), values[i]);
  b->FinishRow();
}

// groups.tsv (2 levels): u1, u2 -> 1-1; u3 -> 1-2; u4, u5 -> 2-1 (u5 not in the dataset).
void WriteHandDataset(MemFileSystem* fs, const std::string& dir) {
  constexpr int64_t kSplit = 1000;
  data::DatasetManifest manifest;
  manifest.set_split_time(kSplit);
  data::SplitWriter users(fs, dir, "users", UsersSchema());
  data::RowBlock u(UsersSchema());
  AddRow(&u, {1, 1, 3, 0});
  AddRow(&u, {2, 2, 3, 0});
  AddRow(&u, {3, 2, 0, 0});
  AddRow(&u, {4, 0, 0, 0});
  AddRow(&u, {99, 1, 1, 1});  // not grouped
  ASSERT_TRUE(users.Write(u).ok());

  data::SplitWriter train(fs, dir, "train", TrainSchema());
  data::RowBlock t(TrainSchema());
  // u1: 10 impressions, 4 clicks, 1 conversion; u2: 5, 1, 1; u3: 3, 0, 0; u99: 2, 0, 0.
  for (int i = 0; i < 10; ++i) AddRow(&t, {1, i < 4 ? 1 : 0, i < 1 ? 1 : 0});
  for (int i = 0; i < 5; ++i) AddRow(&t, {2, i < 1 ? 1 : 0, i < 1 ? 1 : 0});
  for (int i = 0; i < 3; ++i) AddRow(&t, {3, 0, 0});
  for (int i = 0; i < 2; ++i) AddRow(&t, {99, 0, 0});
  ASSERT_TRUE(train.Write(t).ok());

  data::SplitWriter behaviors(fs, dir, "behaviors", BehaviorsSchema());
  data::RowBlock b(BehaviorsSchema());
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
  for (int i = 0; i < 10; ++i) AddRow(&b, {1, 999, 10, 1, 1});
  for (int i = 0; i < 5; ++i) AddRow(&b, {2, 102, 10, 2000, 2});
  AddRow(&b, {3, 300, 30, 900, 2});
  ASSERT_TRUE(behaviors.Write(b).ok());

  for (data::SplitWriter* w : {&users, &train, &behaviors}) {
    absl::StatusOr<data::SplitInfo> info = w->Finish();
    ASSERT_TRUE(info.ok()) << info.status();
    *manifest.add_splits() = *info;
  }
  ASSERT_TRUE(data::WriteManifest(fs, dir, manifest).ok());
}

TEST(GroupFeaturesEndToEndTest, ReadsWhatWriteGroupPriorsWrote) {
  MemFileSystem fs;
  WriteHandDataset(&fs, "/data");
  ASSERT_TRUE(
      groups::WriteGroupsTsv(&fs, "/groups.tsv", {1, 2, 3, 4, 5}, {1, 1, 1, 1, 1, 2, 2, 1, 2, 1}, 2)
          .ok());
  groups::PriorsOptions priors;
  priors.top_categories = 2;
  priors.items_per_category = 2;
  priors.smoothing = 4;
  absl::StatusOr<groups::PriorsReport> report =
      groups::WriteGroupPriors(&fs, "/data", "/groups.tsv", "/priors", priors);
  ASSERT_TRUE(report.ok()) << report.status();

  GroupFeatureOptions options;
  options.groups_tsv = "/groups.tsv";
  options.priors_dir = "/priors";
  absl::StatusOr<std::unique_ptr<GroupFeatures>> f = GroupFeatures::Load(&fs, options);
  ASSERT_TRUE(f.ok()) << f.status();
  const GroupFeatures& g = **f;
  EXPECT_EQ(g.levels(), 2);
  EXPECT_EQ(g.num_groups(0), 2);
  EXPECT_EQ(g.num_groups(1), 3);
  EXPECT_EQ(g.users(), 5);
  EXPECT_EQ(g.global_ctr(), 0.25);
  EXPECT_EQ(g.global_cvr(), 0.4);

  // Rates went through "%.10g" text: compared within 1e-7.
  auto expect_stats = [](const GroupRow& row, const std::vector<double>& want) {
    ASSERT_EQ(row.stats.size(), want.size());
    for (size_t i = 0; i < want.size(); ++i) EXPECT_NEAR(row.stats[i], want[i], 1e-7) << i;
  };
  const GroupRow& u1 = g.Of(1);
  EXPECT_EQ(u1.ids, (std::vector<int64_t>{1, 1}));
  EXPECT_EQ(u1.attributes, (std::array<int64_t, 3>{1, 3, 0}));           // "1-1"
  expect_stats(u1, {std::log1p(18.0), std::log1p(5.0), 6.0 / 22.0, 0.4,  //
                    std::log1p(15.0), std::log1p(5.0), 6.0 / 19.0, 0.4});
  EXPECT_EQ(Vec(u1.seq_items), (std::vector<int64_t>{101, 300, 100}));  // level 1 "1"
  EXPECT_EQ(Vec(u1.seq_categories), (std::vector<int64_t>{10, 30, 10}));
  EXPECT_EQ(&g.Of(2), &u1);

  const GroupRow& u3 = g.Of(3);
  EXPECT_EQ(u3.ids, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(u3.attributes, (std::array<int64_t, 3>{2, 0, 0}));           // "1-2"
  expect_stats(u3, {std::log1p(18.0), std::log1p(5.0), 6.0 / 22.0, 0.4,  //
                    std::log1p(3.0), 0.0, 1.0 / 7.0, 0.4});

  // u5 is grouped but absent from the dataset: its group "2-1" has no data.
  const GroupRow& u5 = g.Of(5);
  EXPECT_EQ(u5.ids, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(u5.attributes, (std::array<int64_t, 3>{0, 0, 0}));
  expect_stats(u5, {0, 0, 0.25, 0.4, 0, 0, 0.25, 0.4});
  EXPECT_TRUE(u5.seq_items.empty());

  // u99 is in the dataset but not grouped.
  const GroupRow& u99 = g.Of(99);
  EXPECT_EQ(u99.ids, (std::vector<int64_t>{0, 0}));
  expect_stats(u99, {0, 0, 0.25, 0.4, 0, 0, 0.25, 0.4});
}

}  // namespace
}  // namespace choir::worker
