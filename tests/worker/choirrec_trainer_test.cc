// The trainer with the semantic groups: choirrec and dnn+groupid train and evaluate end to end
// on a small synthetic dataset with groups and priors, every ablation trains, the result is a
// function of the seed, and missing group tables are named.
#include <cmath>
#include <string>
#include <vector>

#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "data/activity.h"
#include "data/groups/groups_tsv.h"
#include "data/groups/priors.h"
#include "gtest/gtest.h"
#include "tests/worker/worker_test_util.h"
#include "tools/eval/report.h"
#include "worker/batch_reader.h"
#include "worker/internal/model_setup.h"
#include "worker/local_embedding_store.h"
#include "worker/trainer.h"

namespace choir::worker {
namespace {

using testing::Generate;

constexpr int64_t kUsers = 6000;

class ChoirRecTrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    Generate(fs_, "/ds", kUsers, /*seed=*/5);
    // Three-level codes from the user id (the test needs groups, not good ones); user 0 and
    // ids above kUsers - 100 are left out so that some users have no group.
    std::vector<int64_t> ids;
    std::vector<int32_t> codes;
    for (int64_t u = 1; u <= kUsers - 100; ++u) {
      ids.push_back(u);
      codes.push_back(static_cast<int32_t>(u % 4));
      codes.push_back(static_cast<int32_t>((u / 4) % 3));
      codes.push_back(static_cast<int32_t>((u / 12) % 2));
    }
    ASSERT_TRUE(fs_->CreateDirs("/g").ok());
    ASSERT_TRUE(groups::WriteGroupsTsv(fs_, "/g/groups.tsv", ids, codes, 3).ok());
    absl::StatusOr<groups::PriorsReport> priors =
        groups::WriteGroupPriors(fs_, "/ds", "/g/groups.tsv", "/g/priors", groups::PriorsOptions{});
    ASSERT_TRUE(priors.ok()) << priors.status();
  }
  static void TearDownTestSuite() { delete fs_; }

  static JobConfig Job(const std::string& type, const std::string& out, uint64_t seed = 1) {
    JobConfig job;
    job.set_name("choirrec_trainer_test");
    job.mutable_data()->set_dir("/ds");
    ModelConfig* model = job.mutable_model();
    model->set_type(type);
    model->set_embedding_dim(8);
    model->add_hidden(32);
    model->add_hidden(16);
    SequenceTarget* seq = model->add_sequences();
    seq->set_sequence("hist_cate");
    seq->set_target("item_category");
    model->mutable_groups()->set_table("/g/groups.tsv");
    model->mutable_groups()->set_priors("/g/priors");
    model->mutable_choirrec()->add_group_hidden(16);
    model->mutable_choirrec()->add_group_hidden(8);
    TrainerConfig* tc = job.mutable_trainer();
    tc->set_batch_size(256);
    tc->set_max_steps(12);
    tc->set_shuffle_buffer(4096);
    tc->set_seed(seed);
    tc->set_out_dir(out);
    return job;
  }

  static MemFileSystem* fs_;
};

MemFileSystem* ChoirRecTrainerTest::fs_ = nullptr;

TEST_F(ChoirRecTrainerTest, ChoirRecTrainsAndEvaluatesEveryTestSample) {
  absl::StatusOr<TrainResult> dnn = TrainAndEvaluate(fs_, Job("dnn", "/out/dnn"));
  ASSERT_TRUE(dnn.ok()) << dnn.status();
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, Job("choirrec", "/out/choirrec"));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 12);
  EXPECT_EQ(r->samples, 12 * 256);
  EXPECT_TRUE(std::isfinite(r->last_loss));
  EXPECT_EQ(r->test_samples, dnn->test_samples);
  EXPECT_EQ(r->num_sequences, 3);  // hist_cate, the group items and the group categories
  absl::StatusOr<std::vector<eval::Prediction>> preds =
      eval::ReadPredictionsTsv(fs_, "/out/choirrec/preds.tsv");
  ASSERT_TRUE(preds.ok()) << preds.status();
  ASSERT_EQ(static_cast<int64_t>(preds->size()), r->test_samples);
  for (const eval::Prediction& p : *preds) {
    ASSERT_GT(p.score, 0.0);
    ASSERT_LT(p.score, 1.0);
  }
}

TEST_F(ChoirRecTrainerTest, SameSeedSameScoresDifferentSeedDifferentScores) {
  ASSERT_TRUE(TrainAndEvaluate(fs_, Job("choirrec", "/seed/a", 3)).ok());
  ASSERT_TRUE(TrainAndEvaluate(fs_, Job("choirrec", "/seed/b", 3)).ok());
  ASSERT_TRUE(TrainAndEvaluate(fs_, Job("choirrec", "/seed/c", 4)).ok());
  absl::StatusOr<std::string> a = fs_->ReadFileToString("/seed/a/preds.tsv");
  absl::StatusOr<std::string> b = fs_->ReadFileToString("/seed/b/preds.tsv");
  absl::StatusOr<std::string> c = fs_->ReadFileToString("/seed/c/preds.tsv");
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
}

TEST_F(ChoirRecTrainerTest, DnnWithGroupIdsTrainsAndDiffersFromDnn) {
  absl::StatusOr<TrainResult> dnn = TrainAndEvaluate(fs_, Job("dnn", "/gid/dnn"));
  absl::StatusOr<TrainResult> gid = TrainAndEvaluate(fs_, Job("dnn+groupid", "/gid/gid"));
  ASSERT_TRUE(dnn.ok()) << dnn.status();
  ASSERT_TRUE(gid.ok()) << gid.status();
  EXPECT_EQ(gid->num_slots, dnn->num_slots);  // the group ids are extra inputs, not schema slots
  EXPECT_NE(*fs_->ReadFileToString("/gid/dnn/preds.tsv"), *fs_->ReadFileToString("/gid/gid/preds.tsv"));
}

TEST_F(ChoirRecTrainerTest, EveryAblationTrains) {
  struct Case {
    const char* name;
    void (ChoirRecConfig::*set)(bool);
  };
  for (const Case& c : {Case{"group_ids", &ChoirRecConfig::set_use_group_ids},
                        Case{"attribute_completion", &ChoirRecConfig::set_use_attribute_completion},
                        Case{"group_sequence", &ChoirRecConfig::set_use_group_sequence},
                        Case{"injection", &ChoirRecConfig::set_use_injection},
                        Case{"gates", &ChoirRecConfig::set_use_gates},
                        Case{"kd", &ChoirRecConfig::set_use_kd}}) {
    JobConfig job = Job("choirrec", std::string("/ablation/") + c.name);
    job.mutable_trainer()->set_max_steps(4);
    (job.mutable_model()->mutable_choirrec()->*c.set)(false);
    absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
    ASSERT_TRUE(r.ok()) << c.name << ": " << r.status();
    EXPECT_TRUE(std::isfinite(r->last_loss)) << c.name;
  }
}

// The job chooses the activity gates' inputs (each named once, taken in the index's order) and
// the KD's direction and margin form (DESIGN.md 1.3, "configurable with a documented default").
TEST_F(ChoirRecTrainerTest, ActivityFeaturesAndDistillationSettingsComeFromTheJob) {
  JobConfig job = Job("choirrec", "/choice/a");
  ChoirRecConfig* c = job.mutable_model()->mutable_choirrec();
  c->add_activity_features("low");
  c->add_activity_features("purchases");
  models::CpuLayerFactory<float> factory;
  absl::StatusOr<internal::JobSetup> setup = internal::SetupJob(fs_, job, &factory);
  ASSERT_TRUE(setup.ok()) << setup.status();
  EXPECT_EQ(setup->shape.activity_features, 2);
  EXPECT_EQ(setup->sources.activity_columns, (std::vector<int>{0, 3}));
  // A batch's activity inputs are those two of the index's four features, user by user.
  absl::StatusOr<std::unique_ptr<EmbeddingStore>> store = NewLocalEmbeddingStore(setup->table);
  ASSERT_TRUE(store.ok()) << store.status();
  BatchReaderOptions ro;
  ro.batch_size = 64;
  absl::StatusOr<std::unique_ptr<BatchReader>> reader = BatchReader::Open(fs_, setup->train_files, setup->layout, ro);
  ASSERT_TRUE(reader.ok()) << reader.status();
  Batch batch;
  ASSERT_TRUE(*(*reader)->Next(&batch));
  internal::SparseBridge bridge(setup->shape, store->get(), setup->sources);
  models::ModelInputs in;
  ASSERT_TRUE(bridge.Gather(batch, &in).ok());
  ASSERT_EQ(in.activity.cols(), 2);
  int low = 0;
  for (int b = 0; b < batch.size; ++b) {
    float all[data::ActivityIndex::kNumActivityFeatures];
    setup->activity->ActivityFeatures(batch.user_ids[b], all);
    EXPECT_EQ(in.activity.at(b, 0), all[0]) << "purchases of sample " << b;
    EXPECT_EQ(in.activity.at(b, 1), all[3]) << "low flag of sample " << b;
    low += all[3] == 1.0f;
  }
  EXPECT_GT(low, 0);
  EXPECT_LT(low, batch.size);

  // It trains, with the group channel teaching through the plain hinge.
  c->set_kd_direction("group_to_individual");
  c->set_kd_margin_form("hinge");
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_TRUE(std::isfinite(r->last_loss));

  for (const char* bad : {"purchase", "clicks,clicks"}) {
    JobConfig b = Job("choirrec", "/choice/bad");
    for (absl::string_view name : absl::StrSplit(bad, ',')) {
      b.mutable_model()->mutable_choirrec()->add_activity_features(std::string(name));
    }
    r = TrainAndEvaluate(fs_, b);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(r.status().message().find("model.choirrec.activity_features"), std::string::npos) << r.status();
  }
  JobConfig b = Job("choirrec", "/choice/bad");
  b.mutable_model()->mutable_choirrec()->set_kd_direction("mutual");
  r = TrainAndEvaluate(fs_, b);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("kd_direction"), std::string::npos) << r.status();
}

// A checkpoint remembers which activity features its gates read: a resume with another subset of
// the same size (the same parameter count) is refused; the same subset in another order is not.
TEST_F(ChoirRecTrainerTest, AResumeWithOtherActivityFeaturesIsRefused) {
  JobConfig job = Job("choirrec", "/act_resume/a");
  job.mutable_trainer()->set_max_steps(4);
  job.mutable_trainer()->set_checkpoint_every_steps(2);
  for (const char* name : {"purchases", "low"}) job.mutable_model()->mutable_choirrec()->add_activity_features(name);
  ASSERT_TRUE(TrainAndEvaluate(fs_, job).ok());
  const std::string step2 = "/act_resume/a/checkpoint/step-000000000002";
  ASSERT_TRUE(fs_->Exists(step2 + "/MANIFEST.json"));

  JobConfig other = Job("choirrec", "/act_resume/b");
  other.mutable_trainer()->set_max_steps(4);
  other.mutable_trainer()->set_resume(step2);
  for (const char* name : {"clicks", "active_days"}) other.mutable_model()->mutable_choirrec()->add_activity_features(name);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, other);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("its activity_features is [\"purchases\",\"low\"]"), std::string::npos)
      << r.status();

  JobConfig same = Job("choirrec", "/act_resume/c");
  same.mutable_trainer()->set_max_steps(4);
  same.mutable_trainer()->set_resume(step2);
  for (const char* name : {"low", "purchases"}) same.mutable_model()->mutable_choirrec()->add_activity_features(name);
  r = TrainAndEvaluate(fs_, same);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 4);
}

TEST_F(ChoirRecTrainerTest, MissingOrBrokenGroupTablesAreNamed) {
  JobConfig job = Job("choirrec", "/bad/a");
  job.mutable_model()->mutable_groups()->clear_table();
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("model.groups.table"), std::string::npos) << r.status();

  job = Job("choirrec", "/bad/b");
  job.mutable_model()->mutable_groups()->set_priors("/nowhere");
  r = TrainAndEvaluate(fs_, job);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/nowhere"), std::string::npos) << r.status();

  ASSERT_TRUE(fs_->CreateDirs("/bad").ok());
  ASSERT_TRUE(fs_->WriteStringToFileAtomic("/bad/groups.tsv", "user_id\tc1\tc2\tc3\n1\t0\t0\n").ok());
  job = Job("dnn+groupid", "/bad/c");
  job.mutable_model()->mutable_groups()->set_table("/bad/groups.tsv");
  r = TrainAndEvaluate(fs_, job);
  EXPECT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("/bad/groups.tsv"), std::string::npos) << r.status();

  job = Job("choirrec", "/bad/d");
  job.mutable_model()->mutable_choirrec()->set_kd_confidence(0.9);
  r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(r.status().message().find("kd_confidence"), std::string::npos) << r.status();

  // Groups of another dataset: none of this one's users is in the table.
  std::vector<int64_t> ids;
  std::vector<int32_t> codes;
  for (int64_t u = 1; u <= 50; ++u) {
    ids.push_back(kUsers * 10 + u);
    codes.insert(codes.end(), {static_cast<int32_t>(u % 2), 0, 0});
  }
  ASSERT_TRUE(groups::WriteGroupsTsv(fs_, "/bad/other.tsv", ids, codes, 3).ok());
  job = Job("dnn+groupid", "/bad/e");
  job.mutable_model()->mutable_groups()->set_table("/bad/other.tsv");
  r = TrainAndEvaluate(fs_, job);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kFailedPrecondition) << r.status();
  EXPECT_NE(r.status().message().find("is in /bad/other.tsv (50 users): the groups belong to another dataset"),
            std::string::npos)
      << r.status();
}

}  // namespace
}  // namespace choir::worker
