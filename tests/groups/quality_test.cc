// NMI and purity against hand-computed values, codebook statistics, groups.tsv I/O, and the
// full report (with the behaviour-ID baseline) on a small generated dataset.
#include "data/groups/quality.h"

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "core/fs.h"
#include "data/generator.h"
#include "data/groups/groups_tsv.h"
#include "data/taxonomy.h"
#include "gtest/gtest.h"

namespace choir::groups {
namespace {

TEST(NmiTest, IdenticalLabelingsUpToRenamingScoreOne) {
  EXPECT_DOUBLE_EQ(NormalizedMutualInfo({0, 0, 1, 1, 2}, {5, 5, 9, 9, 7}), 1.0);
  EXPECT_DOUBLE_EQ(NormalizedMutualInfo({3, 3, 3}, {1, 1, 1}), 1.0);  // sklearn's convention
  EXPECT_DOUBLE_EQ(NormalizedMutualInfo({}, {}), 1.0);
}

TEST(NmiTest, HandComputedSmallCase) {
  // a = [0,0,1,1], b = [0,0,0,1]: H(a) = ln 2, H(b) = -(3/4 ln 3/4 + 1/4 ln 1/4),
  // I = H(b) - H(b|a) = H(b) - 1/2 ln 2 = 0.21576; NMI = I / ((H(a) + H(b)) / 2) = 0.343711.
  const double ha = std::log(2.0);
  const double hb = -(0.75 * std::log(0.75) + 0.25 * std::log(0.25));
  const double mi = hb - 0.5 * std::log(2.0);
  const double nmi = NormalizedMutualInfo({0, 0, 1, 1}, {0, 0, 0, 1});
  EXPECT_NEAR(nmi, mi / ((ha + hb) / 2), 1e-12);
  EXPECT_NEAR(nmi, 0.343711, 1e-6);
}

TEST(NmiTest, IndependentLabelingsScoreNearZero) {
  std::mt19937_64 rng(1);
  std::vector<int64_t> a, b;
  for (int i = 0; i < 200000; ++i) {
    a.push_back(rng() % 10);
    b.push_back(rng() % 13);
  }
  EXPECT_LT(NormalizedMutualInfo(a, b), 0.002);
  EXPECT_DOUBLE_EQ(NormalizedMutualInfo({0, 1, 2, 3}, {0, 0, 0, 0}), 0.0);
}

TEST(PurityTest, HandComputed) {
  // Cluster 0: labels {a, a, b} -> 2; cluster 1: {b, c} -> 1; cluster 2: {c} -> 1. 4 / 6.
  EXPECT_DOUBLE_EQ(Purity({0, 0, 0, 1, 1, 2}, {1, 1, 2, 2, 3, 3}), 4.0 / 6.0);
  EXPECT_DOUBLE_EQ(Purity({0, 1, 2}, {7, 7, 7}), 1.0);
  EXPECT_DOUBLE_EQ(Purity({}, {}), 0.0);
}

TEST(CodePrefixTest, RowsShareAnIdIffTheyShareThePrefix) {
  const std::vector<int32_t> codes = {1, 2, 1, 3, 2, 2, 1, 2};  // 4 rows x 2 levels
  EXPECT_EQ(CodePrefixIds(codes, 2, 1), (std::vector<int64_t>{0, 0, 1, 0}));
  EXPECT_EQ(CodePrefixIds(codes, 2, 2), (std::vector<int64_t>{0, 1, 2, 0}));
}

TEST(CodebookQualityTest, CountsSizesAndUtilisation) {
  Codebooks cb;
  cb.dim = 1;
  cb.k = {4};
  cb.centroids = {{0.0f, 1.0f, 2.0f, 3.0f}};
  const std::vector<float> x = {0.0f, 0.0f, 0.5f, 1.0f, 3.0f};
  const std::vector<int32_t> codes = {0, 0, 0, 1, 3};
  const std::vector<LevelQuality> q = CodebookQuality(cb, x.data(), 5, codes);
  ASSERT_EQ(q.size(), 1u);
  EXPECT_EQ(q[0].used, 3);
  EXPECT_DOUBLE_EQ(q[0].utilisation, 0.75);
  EXPECT_EQ(q[0].size_min, 1);
  EXPECT_EQ(q[0].size_p50, 1);
  EXPECT_EQ(q[0].size_max, 3);
  EXPECT_EQ(q[0].singletons, 2);
  EXPECT_EQ(q[0].groups, 3);
  EXPECT_DOUBLE_EQ(q[0].reconstruction_error, 0.25 / 5);
}

TEST(GroupsTsvTest, RoundTripsAndRefusesBadLines) {
  MemFileSystem fs;
  ASSERT_TRUE(WriteGroupsTsv(&fs, "/g.tsv", {7, 3}, {1, 2, 3, 4, 5, 6}, 3).ok());
  EXPECT_EQ(*fs.GetContents("/g.tsv"), "user_id\tc1\tc2\tc3\n7\t1\t2\t3\n3\t4\t5\t6\n");
  absl::StatusOr<GroupsTable> t = ReadGroupsTsv(&fs, "/g.tsv");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->levels, 3);
  EXPECT_EQ(t->ids, (std::vector<int64_t>{7, 3}));
  EXPECT_EQ(t->codes, (std::vector<int32_t>{1, 2, 3, 4, 5, 6}));

  ASSERT_TRUE(fs.SetContents("/p.tsv", "user_id\ttext\n5\tlikes tea\n9\tdiapers\n").ok());
  EXPECT_EQ(*ReadUserIds(&fs, "/p.tsv"), (std::vector<int64_t>{5, 9}));
  ASSERT_TRUE(fs.SetContents("/p.tsv", "5\ta\nx\tb\n").ok());
  absl::Status st = ReadUserIds(&fs, "/p.tsv").status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("/p.tsv:2"), std::string::npos) << st;
  ASSERT_TRUE(fs.SetContents("/p.tsv", "5\ta\n5\tb\n").ok());
  EXPECT_EQ(ReadUserIds(&fs, "/p.tsv").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(GroupsReportTest, BehaviourBaselineRunsOnAGeneratedDataset) {
  MemFileSystem fs;
  absl::StatusOr<data::Taxonomy> t = data::LoadTaxonomy(nullptr, "");
  ASSERT_TRUE(t.ok()) << t.status();
  absl::StatusOr<data::CompiledTaxonomy> tax = data::CompileTaxonomy(*t);
  ASSERT_TRUE(tax.ok()) << tax.status();
  data::GeneratorOptions gen;
  gen.users = 2000;
  gen.seed = 3;
  ASSERT_TRUE(data::GenerateDataset(&fs, *tax, gen, "/ds").ok());
  absl::StatusOr<absl::flat_hash_map<int64_t, int64_t>> personas =
      ReadPersonas(&fs, "/ds/truth/users.tsv");
  ASSERT_TRUE(personas.ok()) << personas.status();
  ASSERT_EQ(personas->size(), 2000u);

  // Stand-in embeddings: a noisy one-hot of the persona, so agreement must be high.
  std::vector<int64_t> ids;
  for (const auto& [user, persona] : *personas) ids.push_back(user);
  std::sort(ids.begin(), ids.end());
  const int d = 32;
  std::mt19937_64 rng(1);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  std::vector<float> x(ids.size() * d);
  for (size_t i = 0; i < ids.size(); ++i) {
    for (int j = 0; j < d; ++j) x[i * d + j] = noise(rng);
    x[i * d + personas->at(ids[i])] += 1.0f;
  }
  RqKMeansOptions opt;
  opt.k = 16;
  opt.levels = 2;
  absl::StatusOr<Codebooks> cb = TrainRqKMeans(x.data(), ids.size(), d, opt);
  ASSERT_TRUE(cb.ok()) << cb.status();
  absl::StatusOr<std::vector<int32_t>> codes = AssignRqCodes(*cb, x.data(), ids.size(), d);
  ASSERT_TRUE(codes.ok());

  QualityOptions qopt;
  qopt.dataset_dir = "/ds";
  absl::StatusOr<GroupsReport> report = BuildGroupsReport(&fs, *cb, x.data(), ids, *codes, qopt);
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->users_with_persona, 2000);
  EXPECT_GT(report->low_users, 500);
  ASSERT_EQ(report->agreement.size(), 6u);  // 2 prefixes x {all, low} + baseline {all, low}
  for (const Agreement& a : report->agreement) {
    EXPECT_TRUE(std::isfinite(a.nmi) && std::isfinite(a.purity)) << a.method << a.codes << a.users;
    EXPECT_GE(a.nmi, 0.0);
    EXPECT_LE(a.nmi, 1.0);
    EXPECT_GT(a.purity, 0.0);
  }
  EXPECT_EQ(report->agreement[0].method, "rq-kmeans");
  EXPECT_GT(report->agreement[0].nmi, 0.9);
  EXPECT_EQ(report->agreement[4].method, "behaviour-ids");
  EXPECT_LT(report->agreement[5].nmi, report->agreement[1].nmi);  // low users: IDs say little
  ASSERT_TRUE(WriteGroupsReport(&fs, "/report", *report).ok());
  EXPECT_TRUE(fs.Exists("/report.json"));
  absl::StatusOr<std::string> md = fs.GetContents("/report.md");
  ASSERT_TRUE(md.ok());
  EXPECT_NE(md->find("behaviour-ids"), std::string::npos);
}

}  // namespace
}  // namespace choir::groups
