// AUC and GAUC against scikit-learn: the same predictions go through ComputeMetrics/Evaluate and
// through tests/eval/sklearn_oracle.py (roc_auc_score overall and per user, weighted by the
// user's samples); they must agree to 1e-9. Skips when /usr/bin/python3 lacks scikit-learn.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tools/eval/metrics.h"
#include "tools/eval/report.h"

namespace choir::eval {
namespace {

constexpr char kPython[] = "/usr/bin/python3";
constexpr int kOracleNoSklearn = 3;  // sklearn_oracle.py's exit code
constexpr double kTolerance = 1e-9;

std::string OracleScript() {
  const char* dir = std::getenv("CHOIR_SOURCE_DIR");
  return std::string(dir != nullptr ? dir : CHOIR_SOURCE_DIR) + "/tests/eval/sklearn_oracle.py";
}

// Many users of every kind: single-sample users, single-class users of both classes, users with
// heavy ties (scores rounded to `decimals`), in all four buckets.
std::vector<Prediction> RandomPredictions(uint64_t seed, int users, int decimals) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  std::uniform_int_distribution<int> length(1, 30);
  const double scale = std::pow(10.0, decimals);
  std::vector<Prediction> preds;
  for (int u = 0; u < users; ++u) {
    const int64_t user = static_cast<int64_t>(rng() % 1000000007) - 500000000;
    const data::Bucket bucket = data::kAllBuckets[rng() % data::kNumBuckets];
    const int n = u % 11 == 0 ? 1 : length(rng);
    const double kind = uniform(rng);
    const double rate = kind < 0.1 ? 0.0 : (kind < 0.15 ? 1.0 : uniform(rng));
    const double skill = uniform(rng);
    for (int i = 0; i < n; ++i) {
      Prediction p;
      p.user_id = user;
      p.bucket = bucket;
      p.label = uniform(rng) < rate ? 1 : 0;
      const double noisy = std::clamp(skill * p.label + (1 - skill) * uniform(rng), 0.0, 1.0);
      p.score = decimals > 0 ? std::round(noisy * scale) / scale : noisy;
      preds.push_back(p);
    }
  }
  std::shuffle(preds.begin(), preds.end(), rng);
  return preds;
}

void ExpectClose(const nlohmann::json& oracle, double ours, const std::string& what) {
  if (oracle.is_null()) {
    EXPECT_TRUE(std::isnan(ours)) << what << ": sklearn undefined, ours " << ours;
  } else {
    EXPECT_NEAR(ours, oracle.get<double>(), kTolerance) << what;
  }
}

void ExpectAgrees(const nlohmann::json& oracle, const Metrics& m, const std::string& slice) {
  ExpectClose(oracle.at("auc"), m.auc, slice + " auc");
  ExpectClose(oracle.at("gauc"), m.gauc, slice + " gauc");
  ExpectClose(oracle.at("logloss"), m.logloss, slice + " logloss");
  ExpectClose(oracle.at("calibration"), m.calibration, slice + " calibration");
  EXPECT_EQ(oracle.at("samples").get<int64_t>(), m.samples) << slice;
  EXPECT_EQ(oracle.at("users").get<int64_t>(), m.users) << slice;
  EXPECT_EQ(oracle.at("gauc_users").get<int64_t>(), m.gauc_users) << slice;
}

class SklearnOracleTest : public ::testing::TestWithParam<std::tuple<uint64_t, int, int>> {};

TEST_P(SklearnOracleTest, MetricsAgreeWithScikitLearn) {
  if (access(kPython, X_OK) != 0) GTEST_SKIP() << kPython << " is absent; oracle not run";
  const auto [seed, users, decimals] = GetParam();
  const std::vector<Prediction> preds = RandomPredictions(seed, users, decimals);
  absl::StatusOr<EvalReport> ours = Evaluate(preds);
  ASSERT_TRUE(ours.ok()) << ours.status();
  ASSERT_GT(ours->overall.users, ours->overall.gauc_users);  // exclusions are exercised

  std::string dir = ::testing::TempDir() + "/choir_oracle_XXXXXX";
  ASSERT_NE(mkdtemp(dir.data()), nullptr);
  const std::string tsv = dir + "/preds.tsv";
  ASSERT_TRUE(WritePredictionsTsv(PosixFileSystem(), tsv, preds).ok());

  const std::string command = std::string(kPython) + " '" + OracleScript() + "' '" + tsv + "' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr) << command;
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), pipe)) > 0) output.append(buf, n);
  const int status = pclose(pipe);
  ASSERT_TRUE(PosixFileSystem()->DeleteRecursively(dir).ok());
  ASSERT_TRUE(WIFEXITED(status)) << command;
  if (WEXITSTATUS(status) == kOracleNoSklearn) {
    GTEST_SKIP() << "python3-sklearn is not installed for " << kPython
                 << "; oracle not run: " << output;
  }
  ASSERT_EQ(WEXITSTATUS(status), 0) << command << "\n" << output;

  const nlohmann::json oracle = nlohmann::json::parse(output, nullptr, false);
  ASSERT_FALSE(oracle.is_discarded()) << output;
  ExpectAgrees(oracle.at("overall"), ours->overall, "overall");
  for (data::Bucket b : data::kAllBuckets) {
    ExpectAgrees(oracle.at(data::BucketName(b)), ours->bucket(b), data::BucketName(b));
  }
}

// (seed, users, decimals of the scores; 0 keeps full precision).
INSTANTIATE_TEST_SUITE_P(Seeds, SklearnOracleTest,
                         ::testing::Values(std::make_tuple(1, 2000, 2), std::make_tuple(2, 500, 1),
                                           std::make_tuple(3, 3000, 0), std::make_tuple(4, 40, 2)));

}  // namespace
}  // namespace choir::eval
