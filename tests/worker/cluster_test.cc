// The cluster (worker/cluster.h) in local mode: scheduler, parameter servers and workers as
// threads over the in-process transport and ZeroMQ loopback. Synchronous training with one
// worker equals the single-process trainer step for step (byte-identical predictions); W
// workers equal one process with W times the batch (to float tolerance); a sweep over servers
// and workers; a crashed server is named and stops the job; a dropped request fails with the
// server named; duplicated requests change nothing; checkpoint work that outlasts the deadline
// holds the other workers instead of timing them out; a failed checkpoint fails the job with
// worker 0's error, not the other workers' echo of it.
#include "worker/cluster.h"

#include <chrono>
#include <cmath>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "checkpoint/checkpoint.h"
#include "core/fs.h"
#include "core/transport.h"
#include "gtest/gtest.h"
#include "tests/worker/worker_test_util.h"
#include "ps/feature_key.h"
#include "worker/embedding_store.h"
#include "worker/trainer.h"

namespace choir::worker {
namespace {

using testing::Generate;
using testing::SmallJob;

constexpr int64_t kUsers = 6000;

// The scores of preds.tsv (user_id, label, score, bucket), in file order.
std::vector<double> Scores(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  EXPECT_TRUE(text.ok()) << text.status();
  std::vector<double> scores;
  if (!text.ok()) return scores;
  bool header = true;
  for (absl::string_view line : absl::StrSplit(*text, '\n', absl::SkipEmpty())) {
    if (header) {
      header = false;
      continue;
    }
    std::vector<absl::string_view> cols = absl::StrSplit(line, '\t');
    double s = 0;
    EXPECT_TRUE(cols.size() >= 3 && absl::SimpleAtod(cols[2], &s)) << line;
    scores.push_back(s);
  }
  return scores;
}

JobConfig ClusterJob(const std::string& out, int servers, int workers, const std::string& transport) {
  JobConfig job = SmallJob("/ds", out, 3);
  job.mutable_trainer()->set_max_steps(8);
  ClusterConfig* c = job.mutable_cluster();
  c->set_servers(servers);
  c->set_workers(workers);
  c->set_transport(transport);
  c->set_heartbeat_ms(20);
  c->set_peer_timeout_ms(1000);
  c->set_rpc_deadline_ms(5000);
  return job;
}

class ClusterTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    fs_ = new MemFileSystem();
    Generate(fs_, "/ds", kUsers, /*seed=*/5);
  }
  static void TearDownTestSuite() { delete fs_; }
  static MemFileSystem* fs_;
};
MemFileSystem* ClusterTest::fs_ = nullptr;

TEST_F(ClusterTest, OneWorkerTrainsExactlyLikeTheSingleProcessTrainer) {
  JobConfig local = ClusterJob("/local1", 0, 1, "inproc");
  local.clear_cluster();
  absl::StatusOr<TrainResult> expected = TrainAndEvaluate(fs_, local);
  ASSERT_TRUE(expected.ok()) << expected.status();
  const std::vector<double> want = Scores(fs_, "/local1/preds.tsv");
  ASSERT_FALSE(want.empty());
  for (const char* transport : {"inproc", "zmq"}) {
    for (int servers : {1, 3}) {
      SCOPED_TRACE(absl::StrCat(transport, ", ", servers, " servers"));
      const std::string out = absl::StrCat("/one_", transport, servers);
      absl::StatusOr<TrainResult> got = RunLocalCluster(fs_, ClusterJob(out, servers, 1, transport));
      ASSERT_TRUE(got.ok()) << got.status();
      EXPECT_EQ(got->steps, expected->steps);
      EXPECT_EQ(got->samples, expected->samples);
      EXPECT_EQ(got->last_loss, expected->last_loss);
      EXPECT_EQ(Scores(fs_, out + "/preds.tsv"), want) << "predictions differ from the single-process run";
    }
  }
}

// The job's admission and eviction fields (trainer.sparse_admit_min_count, sparse_ttl_steps,
// sparse_capacity) apply where the rows live: a one-server cluster trains byte for byte like
// the single-process trainer with the same fields (and not like one without them), and the
// rows three servers end with obey the job's capacity per slot, each server holding its share.
TEST_F(ClusterTest, AdmissionAndEvictionFromTheJobApplyOnTheServers) {
  auto limited = [](JobConfig job) {
    TrainerConfig* tc = job.mutable_trainer();
    tc->set_sparse_admit_min_count(2);
    tc->set_sparse_ttl_steps(3);
    tc->set_sparse_capacity(96);
    return job;
  };
  JobConfig local = limited(ClusterJob("/limits_local", 0, 1, "inproc"));
  local.clear_cluster();
  ASSERT_TRUE(TrainAndEvaluate(fs_, local).ok());
  JobConfig plain = ClusterJob("/limits_plain", 0, 1, "inproc");
  plain.clear_cluster();
  ASSERT_TRUE(TrainAndEvaluate(fs_, plain).ok());
  const std::vector<double> want = Scores(fs_, "/limits_local/preds.tsv");
  EXPECT_NE(want, Scores(fs_, "/limits_plain/preds.tsv")) << "the limits changed nothing";
  ASSERT_TRUE(RunLocalCluster(fs_, limited(ClusterJob("/limits_one", 1, 1, "inproc"))).ok());
  EXPECT_EQ(Scores(fs_, "/limits_one/preds.tsv"), want);

  ASSERT_TRUE(RunLocalCluster(fs_, limited(ClusterJob("/limits_three", 3, 2, "inproc"))).ok());
  absl::StatusOr<std::string> latest = checkpoint::FindLatest(fs_, "/limits_three/checkpoint");
  ASSERT_TRUE(latest.ok()) << latest.status();
  absl::StatusOr<checkpoint::Reader> reader = checkpoint::Reader::Open(fs_, *latest);
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::map<uint32_t, int64_t> rows_per_slot;
  std::vector<std::map<uint32_t, int64_t>> per_server;
  for (const std::string& name : SparseRowsFiles(*reader)) {
    per_server.emplace_back();
    ASSERT_TRUE(ForEachCheckpointRow(*reader, name, [&](uint64_t key, absl::Span<const float>, uint32_t) {
                  ++rows_per_slot[SlotOf(key)];
                  ++per_server.back()[SlotOf(key)];
                  return absl::OkStatus();
                }).ok());
  }
  ASSERT_EQ(per_server.size(), 3u);
  int64_t most = 0;
  for (const auto& [slot, rows] : rows_per_slot) {
    EXPECT_LE(rows, 96) << "slot " << slot;
    most = std::max(most, rows);
  }
  EXPECT_GE(most, 90) << "no slot reached the capacity: the test does not exercise it";
  for (int s = 0; s < 3; ++s) {
    for (const auto& [slot, rows] : per_server[s]) EXPECT_LE(rows, 32) << "server " << s << ", slot " << slot;
  }
}

// trainer.sparse_slots limits the slots of the fields it names and no others: capacity 64 on
// user_id (slot 0: the generator's first categorical field, as batch_reader_test checks) over
// two servers; item_id (slot 1) keeps every row. Bad entries are named.
TEST_F(ClusterTest, PerFieldLimitsApplyToTheirSlotsOnly) {
  JobConfig job = ClusterJob("/per_field", 2, 1, "inproc");
  SparseSlotConfig* users = job.mutable_trainer()->add_sparse_slots();
  users->add_fields("user_id");
  users->set_capacity(64);
  ASSERT_TRUE(RunLocalCluster(fs_, job).ok());
  JobConfig plain = ClusterJob("/per_field_plain", 2, 1, "inproc");
  ASSERT_TRUE(RunLocalCluster(fs_, plain).ok());
  auto rows_per_slot = [](const std::string& root) {
    std::map<uint32_t, int64_t> rows;
    absl::StatusOr<std::string> latest = checkpoint::FindLatest(fs_, root);
    EXPECT_TRUE(latest.ok()) << latest.status();
    absl::StatusOr<checkpoint::Reader> reader = checkpoint::Reader::Open(fs_, *latest);
    EXPECT_TRUE(reader.ok()) << reader.status();
    for (const std::string& name : SparseRowsFiles(*reader)) {
      EXPECT_TRUE(ForEachCheckpointRow(*reader, name, [&](uint64_t key, absl::Span<const float>, uint32_t) {
                    ++rows[SlotOf(key)];
                    return absl::OkStatus();
                  }).ok());
    }
    return rows;
  };
  std::map<uint32_t, int64_t> limited = rows_per_slot("/per_field/checkpoint");
  std::map<uint32_t, int64_t> unlimited = rows_per_slot("/per_field_plain/checkpoint");
  EXPECT_GT(unlimited[0], 64);
  EXPECT_LE(limited[0], 64);
  EXPECT_GT(unlimited[1], 64);
  EXPECT_EQ(limited[1], unlimited[1]);

  struct Bad {
    void (*edit)(SparseSlotConfig*);
    std::string message;
  };
  const Bad cases[] = {
      {[](SparseSlotConfig* o) { o->add_fields("nope"); }, "trainer.sparse_slots[1]: 'nope' is not an embedding slot"},
      {[](SparseSlotConfig* o) { o->add_fields("user_id"); }, "'user_id' is named twice"},
      {[](SparseSlotConfig* o) { o->set_capacity(5); }, "trainer.sparse_slots[1]: fields is empty"},
      {[](SparseSlotConfig* o) {
         o->add_fields("item_id");
         o->set_capacity(20);
       },
       "capacity must be 0 or >= 32"},
  };
  for (const Bad& c : cases) {
    JobConfig bad = job;
    c.edit(bad.mutable_trainer()->add_sparse_slots());
    absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
    EXPECT_TRUE(absl::StrContains(r.status().message(), c.message)) << r.status();
  }
}

TEST_F(ClusterTest, WWorkersTrainLikeOneProcessWithWTimesTheBatch) {
  for (int workers : {2, 3}) {
    SCOPED_TRACE(absl::StrCat(workers, " workers"));
    JobConfig local = ClusterJob(absl::StrCat("/global", workers), 0, 1, "inproc");
    local.clear_cluster();
    local.mutable_trainer()->set_batch_size(256 * workers);
    local.mutable_trainer()->set_max_steps(6);
    absl::StatusOr<TrainResult> expected = TrainAndEvaluate(fs_, local);
    ASSERT_TRUE(expected.ok()) << expected.status();
    JobConfig job = ClusterJob(absl::StrCat("/sliced", workers), 2, workers, "inproc");
    job.mutable_trainer()->set_max_steps(6);
    absl::StatusOr<TrainResult> got = RunLocalCluster(fs_, job);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->steps, expected->steps);
    EXPECT_EQ(got->samples, expected->samples);
    EXPECT_NEAR(got->last_loss, expected->last_loss, 1e-5);
    const std::vector<double> want = Scores(fs_, absl::StrCat("/global", workers, "/preds.tsv"));
    const std::vector<double> have = Scores(fs_, absl::StrCat("/sliced", workers, "/preds.tsv"));
    ASSERT_EQ(have.size(), want.size());
    ASSERT_FALSE(want.empty());
    double worst = 0;
    for (size_t i = 0; i < want.size(); ++i) worst = std::max(worst, std::abs(have[i] - want[i]));
    // Float sums in another order (per-slice means scaled and added, sparse gradients summed
    // per worker first) move scores by far less than this; a wrong slice or scale moves them
    // by 1e-2 and more.
    EXPECT_LT(worst, 1e-4) << "largest score difference";
  }
}

TEST_F(ClusterTest, EveryShapeOfClusterTrainsOverBothTransports) {
  for (const char* transport : {"inproc", "zmq"}) {
    for (int servers = 1; servers <= 4; ++servers) {
      for (int workers = 1; workers <= 3; ++workers) {
        SCOPED_TRACE(absl::StrCat(transport, ": ", servers, " servers, ", workers, " workers"));
        const std::string out = absl::StrCat("/sweep_", transport, servers, workers);
        JobConfig job = ClusterJob(out, servers, workers, transport);
        job.mutable_trainer()->set_max_steps(3);
        absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job);
        ASSERT_TRUE(r.ok()) << r.status();
        EXPECT_EQ(r->steps, 3);
        EXPECT_EQ(r->samples, 3 * 256 * workers);
        EXPECT_TRUE(std::isfinite(r->last_loss));
        EXPECT_TRUE(fs_->Exists(out + "/eval.json"));
      }
    }
  }
}

TEST_F(ClusterTest, ACrashedServerIsNamedAndStopsTheJobWithoutHanging) {
  JobConfig job = ClusterJob("/crash", 2, 2, "inproc");
  job.mutable_trainer()->set_max_steps(1000000);
  job.mutable_trainer()->set_epochs(100);
  job.mutable_cluster()->set_rpc_deadline_ms(3000);
  LocalClusterHooks hooks;
  hooks.kill_server = 1;
  hooks.kill_at_step = 3;
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job, hooks);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("server 1"), std::string::npos) << r.status();
  EXPECT_LT(seconds, 30) << "the job took too long to stop";
}

// Checkpoints in a cluster: worker 0 writes the dense state and commits, each server writes
// its rows. A job whose server crashes is resumed from its latest checkpoint and ends exactly
// where an uninterrupted job ends; so does one restored onto a different number of servers.
TEST_F(ClusterTest, AJobResumedAfterAServerCrashEndsLikeAnUninterruptedOne) {
  auto job_for = [](const std::string& out, int servers) {
    JobConfig job = ClusterJob(out, servers, 2, "inproc");
    job.mutable_trainer()->set_max_steps(10);
    job.mutable_trainer()->set_checkpoint_every_steps(4);
    return job;
  };
  absl::StatusOr<TrainResult> full = RunLocalCluster(fs_, job_for("/ck_full", 2));
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->steps, 10);
  for (const char* step : {"step-000000000004", "step-000000000008", "step-000000000010"}) {
    const std::string dir = absl::StrCat("/ck_full/checkpoint/", step);
    EXPECT_TRUE(fs_->Exists(dir + "/MANIFEST.json")) << dir;
    EXPECT_TRUE(fs_->Exists(dir + "/sparse-0-of-2.bin")) << dir;
    EXPECT_TRUE(fs_->Exists(dir + "/sparse-1-of-2.bin")) << dir;
  }

  LocalClusterHooks hooks;
  hooks.kill_server = 1;
  hooks.kill_at_step = 6;
  absl::StatusOr<TrainResult> crashed = RunLocalCluster(fs_, job_for("/ck_crash", 2), hooks);
  ASSERT_FALSE(crashed.ok());
  EXPECT_NE(crashed.status().message().find("server 1"), std::string::npos) << crashed.status();
  ASSERT_TRUE(fs_->Exists("/ck_crash/checkpoint/step-000000000004/MANIFEST.json"));

  JobConfig resumed = job_for("/ck_crash", 2);
  resumed.mutable_trainer()->set_resume("latest");
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, resumed);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 10);
  EXPECT_EQ(Scores(fs_, "/ck_crash/preds.tsv"), Scores(fs_, "/ck_full/preds.tsv"));

  // Restored onto 3 servers (rows re-sharded), and onto the single-process trainer.
  JobConfig three = job_for("/ck_three", 3);
  three.mutable_trainer()->set_resume("/ck_full/checkpoint/step-000000000004");
  r = RunLocalCluster(fs_, three);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(Scores(fs_, "/ck_three/preds.tsv"), Scores(fs_, "/ck_full/preds.tsv"));
  EXPECT_TRUE(fs_->Exists("/ck_three/checkpoint/step-000000000010/sparse-2-of-3.bin"));

  // Two workers' data stream is not one process's: resuming there is refused.
  JobConfig local = job_for("/ck_local", 2);
  local.clear_cluster();
  local.mutable_trainer()->set_resume("/ck_full/checkpoint/step-000000000004");
  absl::StatusOr<TrainResult> refused = TrainAndEvaluate(fs_, local);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_NE(refused.status().message().find("workers"), std::string::npos) << refused.status();

  // A cluster's checkpoint evaluated in one process: the job's own predictions.
  absl::StatusOr<CheckpointEval> e =
      EvaluateCheckpoint(fs_, "/ck_full/checkpoint/step-000000000010", "", "/ck_eval/eval.json");
  ASSERT_TRUE(e.ok()) << e.status();
  EXPECT_EQ(Scores(fs_, "/ck_eval/preds.tsv"), Scores(fs_, "/ck_full/preds.tsv"));
}

// Worker 0 alone writes the dense state of a checkpoint (the servers their rows) and alone sends
// the rows back to the servers on resume, while the other worker waits at the workers'
// collective. On a disk slow enough, and with restores slow enough, that both outlast the
// collective's timeout (cluster.rpc_deadline_ms), worker 0 holds the other worker instead of
// letting it time out, and the resumed job still ends exactly like the uninterrupted one.
TEST_F(ClusterTest, CheckpointWorkOutlastingTheDeadlineHoldsTheOtherWorker) {
  auto job_for = [](const std::string& out) {
    JobConfig job = ClusterJob(out, 3, 2, "inproc");
    job.mutable_trainer()->set_max_steps(6);
    job.mutable_trainer()->set_checkpoint_every_steps(4);
    job.mutable_cluster()->set_rpc_deadline_ms(1000);
    return job;
  };
  FaultInjectingFileSystem slow(fs_);
  slow.SlowDownSyncs(absl::Milliseconds(400));  // a checkpoint takes several of these
  absl::StatusOr<TrainResult> full = RunLocalCluster(&slow, job_for("/held_full"));
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->steps, 6);
  ASSERT_TRUE(fs_->Exists("/held_full/checkpoint/step-000000000004/MANIFEST.json"));

  // Resuming: worker 0's first request to each server is its restore; each takes 600 ms.
  slow.SlowDownSyncs(absl::ZeroDuration());
  auto faults = std::make_shared<transport::FaultInjector>();
  for (const char* server : {"ps0", "ps1", "ps2"}) {
    faults->DelayNext(server, transport::KIND_REQUEST, absl::Milliseconds(600), 1);
  }
  LocalClusterHooks hooks;
  hooks.wrap_endpoint = [faults](const std::string& role, int index, std::unique_ptr<transport::Endpoint> ep) {
    if (role == "worker" && index == 0) return transport::NewFaultInjectingEndpoint(std::move(ep), faults);
    return ep;
  };
  JobConfig resumed = job_for("/held_resumed");
  resumed.mutable_trainer()->set_resume("/held_full/checkpoint/step-000000000004");
  absl::StatusOr<TrainResult> r = RunLocalCluster(&slow, resumed, hooks);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(faults->stats().delayed, 3u);
  EXPECT_EQ(r->steps, 6);
  EXPECT_EQ(Scores(fs_, "/held_resumed/preds.tsv"), Scores(fs_, "/held_full/preds.tsv"));
}

// When worker 0's checkpoint fails, the worker it holds stops too ("worker 0 failed"), and both
// tell the scheduler. The job's reason, what mpirun shows, must be worker 0's error, the cause,
// even when the other worker's echo reaches the scheduler first: here every message of worker 0
// to the scheduler is held back 150 ms (its heartbeats still arrive well within the timeout).
// Workers whose setups (reading the data) end further apart than a collective's timeout: the
// setup barrier holds the first one, so the job trains instead of timing out at its first
// collective (the broadcast of worker 0's parameters).
TEST_F(ClusterTest, AWorkerWhoseSetupOutlastsTheCollectiveTimeoutIsWaitedFor) {
  JobConfig job = ClusterJob("/slow_setup", 1, 2, "inproc");
  job.mutable_trainer()->set_max_steps(3);
  job.mutable_cluster()->set_rpc_deadline_ms(500);
  LocalClusterHooks hooks;
  hooks.before_setup = [](int index) {
    if (index == 1) absl::SleepFor(absl::Milliseconds(1500));
  };
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job, hooks);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 3);
}

TEST_F(ClusterTest, AFailedCheckpointFailsTheJobWithWorker0sErrorNotItsEcho) {
  JobConfig job = ClusterJob("/ck_fail", 2, 2, "inproc");
  job.mutable_trainer()->set_max_steps(8);
  job.mutable_trainer()->set_checkpoint_every_steps(4);
  FaultInjectingFileSystem faulty(fs_);
  faulty.FailNextRename();
  auto faults = std::make_shared<transport::FaultInjector>();
  faults->DelayNext("scheduler", transport::KIND_REQUEST, absl::Milliseconds(150), 1 << 20);
  LocalClusterHooks hooks;
  hooks.wrap_endpoint = [faults](const std::string& role, int index, std::unique_ptr<transport::Endpoint> ep) {
    if (role == "client" && index == 0) return transport::NewFaultInjectingEndpoint(std::move(ep), faults);
    return ep;
  };
  absl::Status job_status;
  hooks.job_ended = [&job_status](const absl::Status& s) { job_status = s; };
  absl::StatusOr<TrainResult> r = RunLocalCluster(&faulty, job, hooks);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(faulty.faults_injected(), 1);
  EXPECT_NE(r.status().message().find("injected"), std::string::npos) << r.status();
  EXPECT_NE(job_status.message().find("injected"), std::string::npos) << job_status;
  EXPECT_EQ(job_status.message().find("worker 0 failed ("), std::string::npos) << job_status;
  EXPECT_FALSE(fs_->Exists("/ck_fail/checkpoint/step-000000000004/MANIFEST.json"));
}

TEST_F(ClusterTest, AJobWithReweightingResumesExactlyFromTheSchedulersAndWorkersState) {
  // Adaptive weights moving every 3 steps, checkpoints every 4: the checkpoint of step 4 holds
  // one step of statistics of each worker since round 1, and the scheduler's reweighter.
  auto job_for = [](const std::string& out) {
    JobConfig job = ClusterJob(out, 1, 2, "inproc");
    job.mutable_trainer()->set_max_steps(10);
    job.mutable_trainer()->set_checkpoint_every_steps(4);
    ReweightingConfig* rw = job.mutable_trainer()->mutable_reweighting();
    rw->set_policy("adaptive");
    rw->set_eta(1.0);
    rw->set_every_steps(3);
    return job;
  };
  absl::StatusOr<TrainResult> full = RunLocalCluster(fs_, job_for("/rw_full"));
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_EQ(full->steps, 10);
  absl::StatusOr<checkpoint::Reader> ck = checkpoint::Reader::Open(fs_, "/rw_full/checkpoint/step-000000000004");
  ASSERT_TRUE(ck.ok()) << ck.status();
  ASSERT_EQ(ck->meta()["worker_bucket_count"].size(), 2u);
  EXPECT_EQ(ck->meta()["reweighter_updates"], 1);  // round 1, at step 3
  int64_t since_round = 0;
  for (const auto& worker : ck->meta()["worker_bucket_count"]) {
    int64_t n = 0;
    for (const auto& c : worker) n += c.get<int64_t>();
    EXPECT_GT(n, 0);  // each worker's step 4 slice
    since_round += n;
  }
  EXPECT_EQ(since_round, 256 * 2);

  // Without reweighting the predictions differ: the weights matter to the comparison below.
  JobConfig plain = job_for("/rw_plain");
  plain.mutable_trainer()->mutable_reweighting()->set_policy("none");
  ASSERT_TRUE(RunLocalCluster(fs_, plain).ok());
  EXPECT_NE(Scores(fs_, "/rw_plain/preds.tsv"), Scores(fs_, "/rw_full/preds.tsv"));

  JobConfig resumed = job_for("/rw_resumed");
  resumed.mutable_trainer()->set_resume("/rw_full/checkpoint/step-000000000004");
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, resumed);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->steps, 10);
  EXPECT_EQ(Scores(fs_, "/rw_resumed/preds.tsv"), Scores(fs_, "/rw_full/preds.tsv"));
  absl::StatusOr<checkpoint::Reader> a = checkpoint::Reader::Open(fs_, "/rw_resumed/checkpoint/step-000000000010");
  absl::StatusOr<checkpoint::Reader> b = checkpoint::Reader::Open(fs_, "/rw_full/checkpoint/step-000000000010");
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(a->meta()["reweighter_weights"], b->meta()["reweighter_weights"]);
  EXPECT_EQ(a->meta()["reweighter_updates"], 3);
}

TEST_F(ClusterTest, ADroppedRequestFailsTheStepWithADeadlineNamingAServer) {
  JobConfig job = ClusterJob("/dropped", 2, 2, "inproc");
  job.mutable_cluster()->set_rpc_deadline_ms(1000);
  auto faults = std::make_shared<transport::FaultInjector>();
  faults->DropNext("ps1", transport::KIND_REQUEST, 1);
  LocalClusterHooks hooks;
  hooks.wrap_endpoint = [faults](const std::string& role, int index, std::unique_ptr<transport::Endpoint> ep) {
    if (role == "worker" && index == 1) return transport::NewFaultInjectingEndpoint(std::move(ep), faults);
    return ep;
  };
  const auto start = std::chrono::steady_clock::now();
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job, hooks);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_FALSE(r.ok());
  // Worker 1's pull from ps1 times out; worker 0's push of the same step, waiting on the
  // server for worker 1's, times out at about the same moment: either names its server.
  EXPECT_TRUE(absl::IsDeadlineExceeded(r.status())) << r.status();
  EXPECT_NE(r.status().message().find("parameter server"), std::string::npos) << r.status();
  EXPECT_EQ(faults->stats().dropped, 1u);
  EXPECT_LT(seconds, 20) << "the job took too long to stop";
}

TEST_F(ClusterTest, DuplicatedRequestsChangeNothing) {
  JobConfig clean = ClusterJob("/clean", 2, 2, "inproc");
  ASSERT_TRUE(RunLocalCluster(fs_, clean).ok());
  JobConfig job = ClusterJob("/duplicated", 2, 2, "inproc");
  auto faults = std::make_shared<transport::FaultInjector>();
  for (const char* server : {"ps0", "ps1"}) faults->DuplicateNext(server, transport::KIND_REQUEST, 1000);
  LocalClusterHooks hooks;
  hooks.wrap_endpoint = [faults](const std::string& role, int index, std::unique_ptr<transport::Endpoint> ep) {
    if (role == "worker" && index == 0) return transport::NewFaultInjectingEndpoint(std::move(ep), faults);
    return ep;
  };
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job, hooks);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_GT(faults->stats().duplicated, 10u);
  EXPECT_EQ(Scores(fs_, "/duplicated/preds.tsv"), Scores(fs_, "/clean/preds.tsv"));
}

// trainer.sparse_staleness 1: the next step's rows are pulled while this step computes. Reads
// may then miss one step's update, so results differ slightly from synchronous reads, but the
// model trains the same way (single process and cluster), and the steps are the same.
TEST_F(ClusterTest, OneStepStaleReadsTrainAsWell) {
  JobConfig sync_job = ClusterJob("/stale0", 0, 1, "inproc");
  sync_job.clear_cluster();
  sync_job.mutable_trainer()->set_max_steps(20);
  absl::StatusOr<TrainResult> sync = TrainAndEvaluate(fs_, sync_job);
  ASSERT_TRUE(sync.ok()) << sync.status();
  for (int servers : {0, 2}) {
    SCOPED_TRACE(absl::StrCat(servers, " servers"));
    const std::string out = absl::StrCat("/stale1_", servers);
    JobConfig job = ClusterJob(out, servers, servers > 0 ? 2 : 1, "zmq");
    job.mutable_trainer()->set_max_steps(20);
    job.mutable_trainer()->set_sparse_staleness(1);
    if (servers > 0) job.mutable_trainer()->set_batch_size(128);  // the same global batch
    absl::StatusOr<TrainResult> stale = servers > 0 ? RunLocalCluster(fs_, job) : TrainAndEvaluate(fs_, job);
    ASSERT_TRUE(stale.ok()) << stale.status();
    EXPECT_EQ(stale->steps, sync->steps);
    EXPECT_EQ(stale->samples, sync->samples);
    EXPECT_NEAR(stale->last_loss, sync->last_loss, 0.01);
    EXPECT_NEAR(stale->test.overall.auc, sync->test.overall.auc, 0.02);
  }
  JobConfig bad = ClusterJob("/stale2", 0, 1, "inproc");
  bad.mutable_trainer()->set_sparse_staleness(2);
  absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, bad);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trainer.sparse_staleness"), std::string::npos) << r.status();
}

TEST_F(ClusterTest, BadClusterFieldsAreNamed) {
  JobConfig job = ClusterJob("/bad", 1, 1, "carrier-pigeon");
  absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cluster.transport"), std::string::npos) << r.status();
  job = ClusterJob("/bad", 1, 0, "inproc");
  r = RunLocalCluster(fs_, job);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cluster.workers"), std::string::npos) << r.status();
  job = ClusterJob("/bad", 1, 1, "inproc");
  job.mutable_cluster()->set_checkpoint_deadline_ms(0);
  r = RunLocalCluster(fs_, job);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cluster.checkpoint_deadline_ms"), std::string::npos) << r.status();
  // Several workers need servers: without, `choir train` ran one worker and said nothing.
  job = ClusterJob("/bad", 0, 4, "inproc");
  r = RunTrainJob(fs_, job);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cluster.workers is 4 but cluster.servers is 0"), std::string::npos)
      << r.status();
  job = ClusterJob("/bad", 0, 1, "carrier-pigeon");
  r = RunTrainJob(fs_, job);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("cluster.transport"), std::string::npos) << r.status();
}

// trainer.dense_allreduce is checked before any role starts (and before any GPU is touched).
TEST_F(ClusterTest, BadDenseAllreduceSettingsAreNamed) {
  struct Case {
    std::string device, mode;
    int workers;
    std::string expected;
  };
  const std::vector<Case> cases = {
      {"cpu", "gloo", 1, "trainer.dense_allreduce: 'gloo' (auto, host or nccl)"},
      {"cpu", "nccl", 1, "trainer.device is 'cpu'"},
      {"cuda", "nccl", 2, "needs cluster.workers 1 (it is 2)"},
  };
  for (const Case& c : cases) {
    JobConfig job = ClusterJob("/bad", 1, c.workers, "inproc");
    job.mutable_trainer()->set_device(c.device);
    job.mutable_trainer()->set_dense_allreduce(c.mode);
    const absl::StatusOr<TrainResult> r = RunLocalCluster(fs_, job);
    ASSERT_FALSE(r.ok()) << c.mode;
    EXPECT_TRUE(absl::IsInvalidArgument(r.status())) << r.status();
    EXPECT_NE(r.status().message().find(c.expected), std::string::npos) << r.status();
  }
  // The single-process trainer checks the same fields.
  JobConfig job = SmallJob("/ds", "/bad-local", 3);
  job.mutable_trainer()->set_dense_allreduce("nccl");
  const absl::StatusOr<TrainResult> r = TrainAndEvaluate(fs_, job);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.status().message().find("trainer.dense_allreduce"), std::string::npos) << r.status();
}

}  // namespace
}  // namespace choir::worker
