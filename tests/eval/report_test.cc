#include "tools/eval/report.h"

#include <sys/stat.h>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace choir::eval {
namespace {

using data::Bucket;

bool SameDouble(double a, double b) { return (std::isnan(a) && std::isnan(b)) || a == b; }

void ExpectSameMetrics(const Metrics& a, const Metrics& b) {
  EXPECT_TRUE(SameDouble(a.auc, b.auc)) << a.auc << " vs " << b.auc;
  EXPECT_TRUE(SameDouble(a.gauc, b.gauc)) << a.gauc << " vs " << b.gauc;
  EXPECT_TRUE(SameDouble(a.logloss, b.logloss)) << a.logloss << " vs " << b.logloss;
  EXPECT_TRUE(SameDouble(a.calibration, b.calibration));
  EXPECT_EQ(a.samples, b.samples);
  EXPECT_EQ(a.positives, b.positives);
  EXPECT_EQ(a.users, b.users);
  EXPECT_EQ(a.gauc_users, b.gauc_users);
  EXPECT_EQ(a.gauc_samples, b.gauc_samples);
}

EvalReport SampleReport() {
  std::vector<Prediction> preds;
  std::mt19937_64 rng(7);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int i = 0; i < 200; ++i) {
    Prediction p;
    p.user_id = i % 37;
    p.bucket =
        p.user_id % 3 == 0 ? Bucket::kLow : (p.user_id % 3 == 1 ? Bucket::kHigh : Bucket::kNew);
    p.score = uniform(rng);
    p.label = uniform(rng) < p.score ? 1 : 0;
    preds.push_back(p);
  }
  absl::StatusOr<EvalReport> r = Evaluate(preds);
  EXPECT_TRUE(r.ok());
  return *r;
}

TEST(EvalJsonTest, RoundTripsExactlyWithNullForNaN) {
  const EvalReport report = SampleReport();  // bucket mid is empty: NaN metrics
  const std::string json = EvalReportToJson(report);
  EXPECT_NE(json.find("\"mid\": {\n      \"auc\": null"), std::string::npos) << json;
  absl::StatusOr<EvalReport> parsed = ParseEvalJson(json, "eval.json");
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ExpectSameMetrics(parsed->overall, report.overall);
  for (Bucket b : data::kAllBuckets) ExpectSameMetrics(parsed->bucket(b), report.bucket(b));
}

TEST(EvalJsonTest, HasTheDesignLayout) {
  const std::string json = EvalReportToJson(SampleReport());
  const size_t overall = json.find("\"overall\"");
  const size_t buckets = json.find("\"buckets\"");
  ASSERT_NE(overall, std::string::npos);
  ASSERT_NE(buckets, std::string::npos);
  EXPECT_LT(overall, buckets);
  size_t last = buckets;
  for (const char* name : {"\"low\"", "\"mid\"", "\"high\"", "\"new\""}) {
    const size_t at = json.find(name);
    ASSERT_NE(at, std::string::npos) << name;
    EXPECT_GT(at, last) << name;
    last = at;
  }
  for (const char* key : {"\"auc\"", "\"gauc\"", "\"logloss\"", "\"calibration\"", "\"samples\"",
                          "\"users\"", "\"gauc_users\""}) {
    EXPECT_NE(json.find(key), std::string::npos) << key;
  }
}

TEST(EvalJsonTest, ParseNamesSourceAndMissingKey) {
  std::string json = EvalReportToJson(SampleReport());
  // Drop gauc_users from the "mid" bucket only.
  const size_t mid = json.find("\"mid\"");
  const size_t key = json.find("\"gauc_users\"", mid);
  json.replace(key, std::string("\"gauc_users\"").size(), "\"renamed\"");
  absl::StatusOr<EvalReport> r = ParseEvalJson(json, "runs/a/eval.json");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("runs/a/eval.json: buckets.mid: missing \"gauc_users\""),
            std::string::npos)
      << r.status();

  r = ParseEvalJson("{not json", "x.json");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("x.json"), std::string::npos);
  r = ParseEvalJson(R"({"overall": {"auc": "high"}})", "y.json");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("\"auc\" is not a number"), std::string::npos);

  // Python's json.dump writes NaN, which is not JSON: the position is named.
  const std::string good = EvalReportToJson(SampleReport());
  std::string nan = good;
  const size_t auc = nan.find("\"auc\": ") + 7;
  nan.replace(auc, nan.find(',', auc) - auc, "NaN");
  r = ParseEvalJson(nan, "py.json");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find(absl::StrCat("py.json: not valid JSON at byte ", auc + 1)), std::string::npos)
      << r.status();
  EXPECT_NE(r.status().message().find("NaN"), std::string::npos) << r.status();
  // A metric no evaluation writes.
  std::string big = good;
  big.replace(auc, big.find(',', auc) - auc, "7.5");
  r = ParseEvalJson(big, "big.json");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("big.json: overall: \"auc\" is 7.5, outside [0, 1]"), std::string::npos)
      << r.status();
}

TEST(EvalJsonTest, WriteAndReadThroughFileSystem) {
  MemFileSystem fs;
  const EvalReport report = SampleReport();
  ASSERT_TRUE(fs.CreateDirs("run").ok());
  ASSERT_TRUE(WriteEvalJson(&fs, "run/eval.json", report).ok());
  absl::StatusOr<EvalReport> back = ReadEvalJson(&fs, "run/eval.json");
  ASSERT_TRUE(back.ok()) << back.status();
  ExpectSameMetrics(back->overall, report.overall);
  EXPECT_EQ(ReadEvalJson(&fs, "absent.json").status().code(), absl::StatusCode::kNotFound);
}

TEST(PredictionsTsvTest, RoundTripsExactly) {
  MemFileSystem fs;
  std::vector<Prediction> preds;
  std::mt19937_64 rng(11);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int i = 0; i < 1000; ++i) {
    Prediction p;
    p.user_id = static_cast<int64_t>(rng()) >> (i % 40);  // negative and huge ids too
    p.label = i % 3 == 0 ? 1 : 0;
    p.score = i % 10 == 0 ? static_cast<double>(static_cast<float>(uniform(rng))) : uniform(rng);
    if (i == 1) p.score = 0.0;
    if (i == 2) p.score = 1.0;
    if (i == 3) p.score = 4.9406564584124654e-324;  // smallest subnormal
    p.bucket = data::kAllBuckets[i % data::kNumBuckets];
    preds.push_back(p);
  }
  ASSERT_TRUE(WritePredictionsTsv(&fs, "preds.tsv", preds).ok());
  absl::StatusOr<std::string> text = fs.GetContents("preds.tsv");
  ASSERT_TRUE(text.ok());
  EXPECT_EQ(text->substr(0, 27), "user_id\tlabel\tscore\tbucket\n");
  EXPECT_FALSE(fs.Exists("preds.tsv.tmp"));
  absl::StatusOr<std::vector<Prediction>> back = ReadPredictionsTsv(&fs, "preds.tsv");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), preds.size());
  for (size_t i = 0; i < preds.size(); ++i) {
    EXPECT_EQ((*back)[i].user_id, preds[i].user_id) << i;
    EXPECT_EQ((*back)[i].label, preds[i].label) << i;
    EXPECT_EQ((*back)[i].score, preds[i].score) << i;
    EXPECT_EQ((*back)[i].bucket, preds[i].bucket) << i;
  }
}

TEST(PredictionsTsvTest, EmptyListWritesOnlyTheHeader) {
  MemFileSystem fs;
  ASSERT_TRUE(WritePredictionsTsv(&fs, "p.tsv", {}).ok());
  absl::StatusOr<std::vector<Prediction>> back = ReadPredictionsTsv(&fs, "p.tsv");
  ASSERT_TRUE(back.ok());
  EXPECT_TRUE(back->empty());
}

TEST(PredictionsTsvTest, ToleratesCrlfAndMissingFinalNewline) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents("p.tsv",
                             "user_id\tlabel\tscore\tbucket\r\n3\t1\t0.25\thigh\r\n"
                             "4\t0\t0.5\tnew")
                  .ok());
  absl::StatusOr<std::vector<Prediction>> back = ReadPredictionsTsv(&fs, "p.tsv");
  ASSERT_TRUE(back.ok()) << back.status();
  ASSERT_EQ(back->size(), 2u);
  EXPECT_EQ((*back)[0].bucket, Bucket::kHigh);
  EXPECT_EQ((*back)[1].score, 0.5);
}

TEST(PredictionsTsvTest, MalformedLineErrorNamesFileAndLine) {
  MemFileSystem fs;
  const std::string header = "user_id\tlabel\tscore\tbucket\n";
  struct Case {
    std::string contents;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {header + "1\t0\t0.5\tlow\n2\t1\t0.5\n",
       "bad.tsv:3: expected 4 tab-separated columns, got 3"},
      {header + "1\t0\t0.5\tlow\nx\t1\t0.5\tlow\n", "bad.tsv:3: bad user_id"},
      {header + "1\t2\t0.5\tlow\n", "bad.tsv:2: label \"2\" is not 0 or 1"},
      {header + "1\t1\t1.5\tlow\n", "bad.tsv:2: score \"1.5\" is not a number in [0, 1]"},
      {header + "1\t1\tnan\tlow\n", "bad.tsv:2: score"},
      {header + "1\t1\t0.5\tmedium\n", "bad.tsv:2: unknown bucket \"medium\""},
      {header + "\n", "bad.tsv:2: expected 4"},
      {"user\tlabel\tscore\tbucket\n", "bad.tsv:1: expected the header"},
      {"", "bad.tsv: empty file"},
  };
  for (const Case& c : cases) {
    ASSERT_TRUE(fs.SetContents("bad.tsv", c.contents).ok());
    absl::StatusOr<std::vector<Prediction>> r = ReadPredictionsTsv(&fs, "bad.tsv");
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << c.expected;
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos) << r.status();
  }
  EXPECT_EQ(ReadPredictionsTsv(&fs, "absent.tsv").status().code(), absl::StatusCode::kNotFound);
}

TEST(MarkdownTest, TableHasOneRowPerSlice) {
  Metrics m;
  m.auc = 11.0 / 12.0;
  m.gauc = 2.0 / 3.0;
  m.logloss = 0.5;
  m.calibration = 1.2;
  m.samples = 10;
  m.users = 4;
  m.gauc_users = 2;
  m.gauc_samples = 6;
  EvalReport r;
  r.overall = m;
  r.bucket(Bucket::kHigh) = m;
  const std::string table = MarkdownTable(r);
  EXPECT_NE(table.find("| overall | 10 | 4 | 0.9167 | 0.6667 | 2 | 6 | 0.5000 | 1.200 |"),
            std::string::npos)
      << table;
  EXPECT_NE(table.find("| high | 10 | 4 | 0.9167 |"), std::string::npos);
  EXPECT_NE(table.find("| mid | 0 | 0 | n/a | n/a | 0 | 0 | n/a | n/a |"), std::string::npos);
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 2 + 1 + data::kNumBuckets);
}

TEST(CompareTest, PrintsRelativeLiftsPerBucket) {
  EvalReport base;
  EvalReport run;
  base.overall.auc = 0.8;
  run.overall.auc = 0.84;
  base.overall.gauc = 0.6;
  run.overall.gauc = 0.57;
  base.overall.logloss = 0.5;
  run.overall.logloss = 0.45;
  base.overall.gauc_users = 40;
  run.overall.gauc_users = 42;
  base.overall.calibration = 1.02;
  run.overall.calibration = 0.97;
  base.bucket(Bucket::kLow).gauc = 0.5;
  run.bucket(Bucket::kLow).gauc = 0.55;
  EXPECT_NEAR(RelativeLift(0.8, 0.84), 0.05, 1e-15);
  EXPECT_TRUE(std::isnan(RelativeLift(0.0, 0.1)));
  EXPECT_TRUE(std::isnan(RelativeLift(std::nan(""), 0.1)));

  const std::string md = CompareReports(base, run, "base/eval.json", "run/eval.json");
  EXPECT_NE(md.find("`run/eval.json` over base `base/eval.json`"), std::string::npos) << md;
  EXPECT_NE(md.find("| overall | 0 | 0 | 0.8000 | 0.8400 | +5.00% | 0.6000 | 0.5700 | -5.00% | 40 | 42 | "
                    "0.5000 | 0.4500 | -0.0500 | 1.020 | 0.970 |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| low | 0 | 0 | n/a | n/a | n/a | 0.5000 | 0.5500 | +10.00% | 0 | 0 | n/a | n/a | n/a | "
                    "n/a | n/a |"),
            std::string::npos)
      << md;
  EXPECT_NE(md.find("| new |"), std::string::npos);
}

TEST(PlotsTest, MissingInterpreterOrScriptIsFailedPrecondition) {
  PlotOptions no_python;
  no_python.python = "/nonexistent/python3";
  absl::Status s = RenderPlots({"a/eval.json"}, {}, "/tmp/x", no_python);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("/nonexistent/python3"), std::string::npos);

  PlotOptions no_script;
  no_script.script = "/nonexistent/plot_eval.py";
  s = RenderPlots({"a/eval.json"}, {}, "/tmp/x", no_script);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
}

// A plotting process that hangs is killed at the deadline, not waited for forever.
TEST(PlotsTest, AHangingScriptIsKilledAtTheDeadline) {
  const std::string script = ::testing::TempDir() + "/choir_hanging_plot.sh";
  ASSERT_TRUE(PosixFileSystem()->WriteStringToFileAtomic(script, "echo drawing; exec sleep 60\n").ok());
  PlotOptions hang;
  hang.python = "/bin/sh";
  hang.script = script;
  hang.timeout = absl::Milliseconds(300);
  const auto start = std::chrono::steady_clock::now();
  absl::Status s = RenderPlots({"a/eval.json"}, {}, "/tmp/x", hang);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(s.code(), absl::StatusCode::kDeadlineExceeded) << s;
  EXPECT_NE(s.message().find(script), std::string::npos) << s;
  EXPECT_NE(s.message().find("drawing"), std::string::npos) << s;  // the output so far
  EXPECT_LT(seconds, 30.0);
}

bool IsPng(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::string> bytes = fs->ReadFileToString(path);
  return bytes.ok() && bytes->size() > 1000 && bytes->substr(0, 8) == "\x89PNG\r\n\x1a\n";
}

TEST(PlotsTest, DrawsGaucAndCalibrationPngs) {
  std::string dir = ::testing::TempDir() + "/choir_plots_XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  FileSystem* fs = PosixFileSystem();
  const EvalReport report = SampleReport();
  EvalReport better = report;
  better.overall.gauc += 0.01;
  ASSERT_TRUE(fs->CreateDirs(dir + "/baseline").ok());
  ASSERT_TRUE(fs->CreateDirs(dir + "/choirrec").ok());
  ASSERT_TRUE(WriteEvalJson(fs, dir + "/baseline/eval.json", report).ok());
  ASSERT_TRUE(WriteEvalJson(fs, dir + "/choirrec/eval.json", better).ok());
  std::vector<Prediction> preds;
  for (int i = 0; i < 300; ++i) {
    preds.push_back({i % 17, static_cast<float>(i % 4 == 0), (i % 100) / 100.0, Bucket::kLow});
  }
  ASSERT_TRUE(WritePredictionsTsv(fs, dir + "/baseline/preds.tsv", preds).ok());

  absl::Status s =
      RenderPlots({dir + "/baseline/eval.json", "ChoirRec=" + dir + "/choirrec/eval.json"},
                  {dir + "/baseline/preds.tsv"}, dir + "/plots");
  if (s.code() == absl::StatusCode::kFailedPrecondition) {
    GTEST_SKIP() << "plots not drawable here: " << s;
  }
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_TRUE(IsPng(fs, dir + "/plots/" + kGaucPlotName));
  EXPECT_TRUE(IsPng(fs, dir + "/plots/" + kCalibrationPlotName));

  s = RenderPlots({dir + "/absent/eval.json"}, {}, dir + "/plots");
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("absent/eval.json"), std::string::npos) << s;
  ASSERT_TRUE(fs->DeleteRecursively(dir).ok());
}

}  // namespace
}  // namespace choir::eval
