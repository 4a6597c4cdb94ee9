// The serving export and the Predictor (worker/bundle.h, worker/predictor.h): a bundle scores
// the test split as `choir eval` scores the checkpoint it came from, alone; fp16 rows; damaged
// bundles; new users placed in groups through the codebooks.
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint.h"
#include "core/fs.h"
#include "data/dataset.h"
#include "data/groups/groups_tsv.h"
#include "data/groups/priors.h"
#include "data/groups/rq_kmeans.h"
#include "gtest/gtest.h"
#include "tools/eval/report.h"
#include "ps/feature_key.h"
#include "tests/worker/worker_test_util.h"
#include "worker/batch_reader.h"
#include "worker/bundle.h"
#include "worker/predictor.h"
#include "worker/trainer.h"

namespace choir::worker {
namespace {

using testing::Generate;

constexpr int64_t kUsers = 5000;
constexpr int kEmbDim = 6;

std::string Read(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::string> s = fs->ReadFileToString(path);
  EXPECT_TRUE(s.ok()) << s.status();
  return s.ok() ? *s : std::string();
}

std::string CheckpointOf(const std::string& type) { return absl::StrCat("/out/", type, "/checkpoint/step-000000000012"); }

class ServingTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    Generate(fs_, "/ds", kUsers, /*seed=*/5);
    // Profile embeddings: a random vector per user; RQ-KMeans codes and codebooks from them. The
    // last 100 users are left out of groups.tsv: the "new" users.
    std::mt19937 rng(7);
    std::normal_distribution<float> normal;
    embeddings_ = new std::vector<float>(kUsers * kEmbDim);
    for (float& v : *embeddings_) v = normal(rng);
    groups::RqKMeansOptions rq;
    rq.levels = 3;
    rq.k = 4;
    absl::StatusOr<groups::Codebooks> books = groups::TrainRqKMeans(embeddings_->data(), kUsers, kEmbDim, rq);
    ASSERT_TRUE(books.ok()) << books.status();
    const int64_t grouped = kUsers - 100;
    absl::StatusOr<std::vector<int32_t>> codes = groups::AssignRqCodes(*books, embeddings_->data(), grouped, kEmbDim);
    ASSERT_TRUE(codes.ok());
    std::vector<int64_t> ids;
    for (int64_t u = 1; u <= grouped; ++u) ids.push_back(u);  // row u - 1 is user u
    ASSERT_TRUE(fs_->CreateDirs("/g").ok());
    ASSERT_TRUE(groups::WriteGroupsTsv(fs_, "/g/groups.tsv", ids, *codes, 3).ok());
    ASSERT_TRUE(groups::SaveCodebooks(fs_, "/g/groups.tsv.codebooks", *books).ok());
    absl::StatusOr<groups::PriorsReport> priors =
        groups::WriteGroupPriors(fs_, "/ds", "/g/groups.tsv", "/g/priors", groups::PriorsOptions{});
    ASSERT_TRUE(priors.ok()) << priors.status();
    for (const std::string type : {"choirrec", "din"}) {
      absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, Job(type));
      ASSERT_TRUE(r.ok()) << r.status();
      ASSERT_EQ(r->steps, 12);
    }
  }
  static void TearDownTestSuite() {
    delete fs_;
    delete embeddings_;
  }

  static JobConfig Job(const std::string& type) {
    JobConfig job = testing::SmallJob("/ds", absl::StrCat("/out/", type), 1);
    ModelConfig* model = job.mutable_model();
    model->set_type(type);
    SequenceTarget* seq = model->add_sequences();
    seq->set_sequence("hist_cate");
    seq->set_target("item_category");
    model->mutable_groups()->set_table("/g/groups.tsv");
    model->mutable_groups()->set_priors("/g/priors");
    model->mutable_choirrec()->add_group_hidden(16);
    job.mutable_trainer()->set_max_steps(12);
    return job;
  }

  static std::vector<std::string> TestFiles() {
    absl::StatusOr<data::DatasetManifest> m = data::ReadManifest(fs_, "/ds");
    EXPECT_TRUE(m.ok());
    absl::StatusOr<data::SplitInfo> split = data::FindSplit(*m, "test");
    EXPECT_TRUE(split.ok());
    return data::SplitPaths("/ds", *split);
  }

  // The test split's samples in file order, one per batch.
  static std::unique_ptr<BatchReader> OneByOne(const Predictor& p) {
    BatchReaderOptions options;
    options.batch_size = 1;
    options.shuffle_buffer = 0;
    absl::StatusOr<std::unique_ptr<BatchReader>> reader = BatchReader::Open(fs_, TestFiles(), p.layout(), options);
    EXPECT_TRUE(reader.ok()) << reader.status();
    return reader.ok() ? std::move(*reader) : nullptr;
  }

  static std::unique_ptr<Predictor> Load(const std::string& bundle, const PredictorOptions& options = {}) {
    absl::StatusOr<std::unique_ptr<Predictor>> p = Predictor::Load(fs_, bundle, options);
    EXPECT_TRUE(p.ok()) << p.status();
    return p.ok() ? std::move(*p) : nullptr;
  }

  static void Export(const std::string& type, const std::string& out, bool fp16 = false) {
    ExportOptions options;
    options.fp16 = fp16;
    absl::StatusOr<ExportSummary> s = ExportBundle(fs_, CheckpointOf(type), out, options);
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->step, 12);
    EXPECT_GT(s->sparse_rows, 1000);
    // The rows without their optimizer state and push counts: (12 + 4 d) bytes a row against
    // (16 + 8 d) with Adagrad, d = 8.
    const uint64_t ckpt_rows = Read(fs_, JoinPath(CheckpointOf(type), "sparse-0-of-1.bin")).size();
    EXPECT_LT(s->sparse_bytes, 0.6 * ckpt_rows);
    EXPECT_EQ(s->sparse_bytes, 24 + s->sparse_rows * (12 + (fp16 ? 2 : 4) * 8));
  }

  static MemFileSystem* fs_;
  static std::vector<float>* embeddings_;
};

MemFileSystem* ServingTest::fs_ = nullptr;
std::vector<float>* ServingTest::embeddings_ = nullptr;

TEST_F(ServingTest, TheBundleAlonePredictsWhatEvalPredictsFromTheCheckpoint) {
  for (const std::string type : {"choirrec", "din"}) {
    SCOPED_TRACE(type);
    const std::string bundle = absl::StrCat("/bundle/", type);
    Export(type, bundle);
    absl::StatusOr<CheckpointEval> e =
        EvaluateCheckpoint(fs_, CheckpointOf(type), "", absl::StrCat("/eval/", type, "/eval.json"));
    ASSERT_TRUE(e.ok()) << e.status();
    std::unique_ptr<Predictor> p = Load(bundle);
    ASSERT_NE(p, nullptr);
    EXPECT_EQ(p->step(), 12);
    absl::StatusOr<std::vector<eval::Prediction>> preds = p->PredictFiles(fs_, TestFiles());
    ASSERT_TRUE(preds.ok()) << preds.status();
    absl::StatusOr<std::vector<eval::Prediction>> want =
        eval::ReadPredictionsTsv(fs_, absl::StrCat("/eval/", type, "/preds.tsv"));
    ASSERT_TRUE(want.ok()) << want.status();
    ASSERT_EQ(preds->size(), want->size());
    ASSERT_EQ(static_cast<int64_t>(preds->size()), e->test_samples);
    double worst = 0;
    for (size_t i = 0; i < preds->size(); ++i) {
      ASSERT_EQ((*preds)[i].user_id, (*want)[i].user_id) << i;
      ASSERT_EQ((*preds)[i].label, (*want)[i].label) << i;
      ASSERT_EQ((*preds)[i].bucket, (*want)[i].bucket) << i;
      worst = std::max(worst, std::fabs((*preds)[i].score - (*want)[i].score));
    }
    EXPECT_LE(worst, 1e-6);
  }
}

TEST_F(ServingTest, BatchesOfOneScoreAsBatchesOf4096) {
  Export("choirrec", "/bundle/b1");
  std::unique_ptr<Predictor> p = Load("/bundle/b1");
  ASSERT_NE(p, nullptr);
  absl::StatusOr<std::vector<eval::Prediction>> all = p->PredictFiles(fs_, TestFiles());
  ASSERT_TRUE(all.ok());
  std::unique_ptr<BatchReader> reader = OneByOne(*p);
  Batch batch;
  std::vector<double> scores;
  for (int i = 0; i < 200; ++i) {
    absl::StatusOr<bool> more = reader->Next(&batch);
    ASSERT_TRUE(more.ok() && *more);
    ASSERT_TRUE(p->Predict(batch, &scores).ok());
    ASSERT_EQ(scores.size(), 1u);
    EXPECT_NEAR(scores[0], (*all)[i].score, 1e-6) << i;
  }
}

TEST_F(ServingTest, EveryRowAddsTheUnclickedImpressionsAndKeepsTheClickedOnesScores) {
  Export("choirrec", "/bundle/every");
  std::unique_ptr<Predictor> p = Load("/bundle/every");
  ASSERT_NE(p, nullptr);
  ASSERT_EQ(p->job().task(), TASK_CVR);
  absl::StatusOr<std::vector<eval::Prediction>> clicked = p->PredictFiles(fs_, TestFiles());
  absl::StatusOr<std::vector<eval::Prediction>> every = p->PredictFiles(fs_, TestFiles(), /*every_row=*/true);
  ASSERT_TRUE(clicked.ok() && every.ok());
  EXPECT_GT(every->size(), 2 * clicked->size());  // most impressions are not clicked
  // The clicked rows' predictions are a subsequence of every row's, in order.
  size_t at = 0;
  for (const eval::Prediction& c : *clicked) {
    while (at < every->size() &&
           !((*every)[at].user_id == c.user_id && std::fabs((*every)[at].score - c.score) <= 1e-6)) {
      ++at;
    }
    ASSERT_LT(at, every->size()) << "clicked sample of user " << c.user_id << " not found in order";
    ++at;
  }
}

TEST_F(ServingTest, Fp16RowsHalveTheSparseFileAndMoveScoresLittle) {
  Export("choirrec", "/bundle/f32");
  Export("choirrec", "/bundle/f16", /*fp16=*/true);
  const uint64_t f32 = Read(fs_, "/bundle/f32/sparse.bin").size();
  const uint64_t f16 = Read(fs_, "/bundle/f16/sparse.bin").size();
  EXPECT_LT(f16, f32 * 0.7);
  std::unique_ptr<Predictor> a = Load("/bundle/f32");
  std::unique_ptr<Predictor> b = Load("/bundle/f16");
  ASSERT_TRUE(a && b);
  absl::StatusOr<std::vector<eval::Prediction>> pa = a->PredictFiles(fs_, TestFiles());
  absl::StatusOr<std::vector<eval::Prediction>> pb = b->PredictFiles(fs_, TestFiles());
  ASSERT_TRUE(pa.ok() && pb.ok());
  ASSERT_EQ(pa->size(), pb->size());
  double worst = 0;
  int differ = 0;
  for (size_t i = 0; i < pa->size(); ++i) {
    const double d = std::fabs((*pa)[i].score - (*pb)[i].score);
    worst = std::max(worst, d);
    differ += d > 0;
  }
  EXPECT_LT(worst, 1e-3);
  EXPECT_GT(differ, 0);  // the rows really were rounded
}

TEST_F(ServingTest, AFlippedByteInAnyBundleFileIsDataLossNamingIt) {
  Export("choirrec", "/bundle/good");
  absl::StatusOr<checkpoint::Reader> reader = checkpoint::Reader::Open(fs_, "/bundle/good", kBundleFormat);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<std::string> names = reader->FileNames();
  EXPECT_TRUE(reader->Has("groups/codebooks/codebooks.json"));
  EXPECT_TRUE(reader->Has("groups/priors/level-3.tsv"));
  EXPECT_TRUE(reader->Has("own_counts.bin"));
  names.push_back(checkpoint::kManifestName);
  int n = 0;
  for (const std::string& name : names) {
    SCOPED_TRACE(name);
    const std::string dir = absl::StrCat("/bundle/flip", n++);
    for (const std::string& other : names) {
      ASSERT_TRUE(fs_->SetContents(JoinPath(dir, other), Read(fs_, JoinPath("/bundle/good", other))).ok());
    }
    std::string bytes = Read(fs_, JoinPath(dir, name));
    bytes[bytes.size() / 2] ^= 0x04;
    ASSERT_TRUE(fs_->SetContents(JoinPath(dir, name), bytes).ok());
    absl::StatusOr<std::unique_ptr<Predictor>> p = Predictor::Load(fs_, dir);
    ASSERT_FALSE(p.ok());
    EXPECT_EQ(p.status().code(), absl::StatusCode::kDataLoss) << p.status();
    EXPECT_TRUE(absl::StrContains(p.status().message(), JoinPath(dir, name))) << p.status();
  }
  // A bundle cut short (no manifest) is not a bundle; a checkpoint is not one either.
  ASSERT_TRUE(fs_->DeleteFile("/bundle/flip0/MANIFEST.json").ok());
  EXPECT_EQ(Predictor::Load(fs_, "/bundle/flip0").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Predictor::Load(fs_, CheckpointOf("din")).status().code(), absl::StatusCode::kDataLoss);
}

TEST_F(ServingTest, NewUsersArePlacedInGroupsThroughTheCodebooks) {
  Export("choirrec", "/bundle/new");
  // User 42 is in groups.tsv; users 10^9 and 10^9 + 1 are unknown: the first gets user 42's profile
  // embedding, the second one of the left-out users' (kUsers), coded now.
  const int64_t known = 42, twin = 1000000000, fresh = 1000000001;
  PredictorOptions options;
  options.new_user_ids = {twin, fresh, known};
  options.embedding_dim = kEmbDim;
  options.new_user_embeddings.assign(embeddings_->begin() + (known - 1) * kEmbDim,
                                     embeddings_->begin() + known * kEmbDim);
  options.new_user_embeddings.insert(options.new_user_embeddings.end(),
                                     embeddings_->begin() + (kUsers - 1) * kEmbDim, embeddings_->end());
  options.new_user_embeddings.insert(options.new_user_embeddings.end(),
                                     embeddings_->begin() + (kUsers - 1) * kEmbDim, embeddings_->end());
  std::unique_ptr<Predictor> with = Load("/bundle/new", options);
  std::unique_ptr<Predictor> without = Load("/bundle/new");
  ASSERT_TRUE(with && without);
  const std::vector<int64_t> groups42 = without->GroupIds(known);
  ASSERT_EQ(groups42.size(), 3u);
  for (int64_t id : groups42) EXPECT_GT(id, 0);
  EXPECT_EQ(with->GroupIds(twin), groups42);
  EXPECT_EQ(with->GroupIds(known), groups42);  // a known user keeps its groups
  EXPECT_EQ(without->GroupIds(twin), std::vector<int64_t>(3, 0));
  EXPECT_GT(with->GroupIds(fresh)[0], 0);  // every coarsest group has training users
  EXPECT_EQ(with->BucketOf(twin), data::Bucket::kNew);

  // A sample of the twin scores differently with its groups than without.
  Batch batch;
  ASSERT_TRUE(*OneByOne(*with)->Next(&batch));
  batch.user_ids[0] = twin;
  for (const auto& c : with->layout().categorical) {
    if (c.column == with->layout().user_column) {
      const size_t at = &c - with->layout().categorical.data();
      batch.cat_keys[at] = FeatureKey(c.slot, twin);
    }
  }
  std::vector<double> a, b;
  ASSERT_TRUE(with->Predict(batch, &a).ok());
  ASSERT_TRUE(without->Predict(batch, &b).ok());
  EXPECT_NE(a[0], b[0]);

  // Embeddings of another dimension, or codes asked of a bundle without codebooks, are refused.
  options.embedding_dim = kEmbDim + 1;
  EXPECT_EQ(Predictor::Load(fs_, "/bundle/new", options).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(ServingTest, ExportNeverOverwritesWhatIsNotItsOwn) {
  Export("din", "/bundle/mine");
  ExportOptions options;
  absl::StatusOr<ExportSummary> again = ExportBundle(fs_, CheckpointOf("din"), "/bundle/mine", options);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kFailedPrecondition) << again.status();
  options.overwrite = true;
  EXPECT_TRUE(ExportBundle(fs_, CheckpointOf("din"), "/bundle/mine", options).ok());
  // A bundle of another format version (an older build's) is still a bundle to replace.
  testing::EditManifestMeta(fs_, "/bundle/mine", [](nlohmann::json& m) { m["version"] = 99; }, /*whole=*/true);
  ASSERT_EQ(checkpoint::Reader::Open(fs_, "/bundle/mine", kBundleFormat).status().code(),
            absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<ExportSummary> replaced = ExportBundle(fs_, CheckpointOf("din"), "/bundle/mine", options);
  EXPECT_TRUE(replaced.ok()) << replaced.status();
  ASSERT_TRUE(fs_->SetContents("/precious/notes.txt", "keep me").ok());
  absl::StatusOr<ExportSummary> foreign = ExportBundle(fs_, CheckpointOf("din"), "/precious", options);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition) << foreign.status();
  EXPECT_EQ(Read(fs_, "/precious/notes.txt"), "keep me");

  // Not even with --force, and not when a MANIFEST.json is there: a folder with the user's own
  // files beside one, or a checkpoint (exporting onto the checkpoint read from).
  ASSERT_TRUE(fs_->SetContents("/precious/MANIFEST.json", "{}").ok());
  foreign = ExportBundle(fs_, CheckpointOf("din"), "/precious", options);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition) << foreign.status();
  EXPECT_NE(foreign.status().message().find("notes.txt"), std::string::npos) << foreign.status();
  EXPECT_EQ(Read(fs_, "/precious/notes.txt"), "keep me");
  const std::string manifest = JoinPath(CheckpointOf("din"), "MANIFEST.json");
  const std::string committed = Read(fs_, manifest);
  foreign = ExportBundle(fs_, CheckpointOf("din"), CheckpointOf("din"), options);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition) << foreign.status();
  EXPECT_EQ(Read(fs_, manifest), committed);
  // Only bundle names, but the manifest is a checkpoint's (or damaged): also left alone.
  ASSERT_TRUE(fs_->SetContents("/lookalike/dense.bin", "x").ok());
  ASSERT_TRUE(fs_->SetContents("/lookalike/MANIFEST.json", committed).ok());
  foreign = ExportBundle(fs_, CheckpointOf("din"), "/lookalike", options);
  EXPECT_EQ(foreign.status().code(), absl::StatusCode::kFailedPrecondition) << foreign.status();
  EXPECT_NE(foreign.status().message().find("not a readable bundle"), std::string::npos) << foreign.status();
  EXPECT_EQ(Read(fs_, "/lookalike/dense.bin"), "x");
}

}  // namespace
}  // namespace choir::worker
