// Training benchmark: samples/s of the local trainer for dnn and din, peak memory, and the
// dense tower's achieved GFLOP/s against an OpenBLAS sgemm peak measured in the same process.
// With --set cluster.servers=N the job runs as a local cluster (a worker, N parameter servers and
// the scheduler as threads; cluster.transport=zmq for ZeroMQ on loopback) instead of on the
// in-process embedding store.
//
//   choir_bench_train --data DIR --model dnn|din|choirrec --threads T [--steps N] [--batch B]
//                     [--config job.pbtxt] [--set 'trainer.device=cuda;...']
// Prints JSON lines (bench, metric, value, unit, ...). tools/bench/run.sh train runs the grid.
#include <sys/resource.h>

#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>
#include <vector>

#include <cblas.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/config.h"
#include "core/fs.h"
#include "core/sysinfo.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"
#include "worker/cluster.h"
#include "worker/trainer.h"

DEFINE_string(data, "", "dataset folder (choir data gen)");
DEFINE_string(model, "dnn", "dnn, din or choirrec (choirrec needs model.groups in --config/--set)");
DEFINE_int32(threads, 1, "OpenBLAS threads (the input pipeline adds one decoding thread)");
DEFINE_int32(steps, 300, "training steps measured");
DEFINE_int32(batch, 1024, "batch size");
DEFINE_string(config, "", "job file (default: the built-in defaults + quickstart's din sequences)");
DEFINE_string(set, "", "overrides 'a.b=c;...' on the job file, e.g. 'trainer.device=cuda' or "
                       "'model.groups.table=groups.tsv;model.groups.priors=DIR' for choirrec");

namespace {

// Best of 3 single-precision 1024^3 matrix products, GFLOP/s.
double SgemmPeakGflops() {
  const int n = 1024;
  std::vector<float> a(n * n, 0.5f), b(n * n, 0.25f), c(n * n);
  double best = 0;
  for (int rep = 0; rep < 3; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a.data(), n, b.data(), n, 0.0f,
                c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, 2.0 * n * n * n / s / 1e9);
  }
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = 1;
  if (FLAGS_data.empty()) {
    std::fprintf(stderr, "usage: choir_bench_train --data DIR --model dnn|din --threads T\n");
    return 2;
  }
  openblas_set_num_threads(FLAGS_threads);
  const double peak = SgemmPeakGflops();

  choir::FileSystem* fs = choir::PosixFileSystem();
  absl::StatusOr<choir::JobConfig> loaded = choir::LoadJobConfig(fs, FLAGS_config, std::vector<std::string>(absl::StrSplit(FLAGS_set, ';', absl::SkipEmpty())));
  if (!loaded.ok()) {
    std::fprintf(stderr, "%s\n", loaded.status().ToString().c_str());
    return 1;
  }
  choir::JobConfig job = *loaded;
  if (FLAGS_config.empty()) {
    auto* seq = job.mutable_model()->add_sequences();
    seq->set_sequence("hist_cate");
    seq->set_target("item_category");
  }
  job.mutable_data()->set_dir(FLAGS_data);
  job.mutable_model()->set_type(FLAGS_model);
  job.mutable_trainer()->set_batch_size(FLAGS_batch);
  job.mutable_trainer()->set_max_steps(FLAGS_steps);
  job.mutable_trainer()->set_epochs(100);  // enough data for max_steps
  char tmpl[] = "/tmp/choir-bench-train.XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return 1;
  job.mutable_trainer()->set_out_dir(tmpl);
  absl::StatusOr<choir::worker::TrainResult> r = choir::worker::RunTrainJob(fs, job);
  fs->DeleteRecursively(tmpl).IgnoreError();
  if (!r.ok()) {
    std::fprintf(stderr, "%s\n", r.status().ToString().c_str());
    return 1;
  }
  // Dense tower FLOPs per sample: forward 2*in*out per linear layer, backward twice that.
  const int d = job.model().embedding_dim();
  std::vector<int> hidden(job.model().hidden().begin(), job.model().hidden().end());
  if (hidden.empty()) hidden = {256, 128, 64};
  hidden.push_back(1);
  const int slots = r->num_slots, dense = r->num_dense, seqs = r->num_sequences;
  int in = slots * d + dense + seqs * d;
  double macs = 0;
  for (int h : hidden) {
    macs += static_cast<double>(in) * h;
    in = h;
  }
  const double tower_flops_per_sample = 6.0 * macs;
  const double samples_per_s = r->samples / r->seconds;
  nlohmann::json ctx = {{"model", FLAGS_model}, {"threads", FLAGS_threads}, {"batch", FLAGS_batch},
                        {"steps", r->steps}, {"samples", r->samples}, {"seconds", r->seconds},
                        {"peak_rss_mb", r->peak_rss_mb}, {"cpu", choir::CpuModel()},
                        {"openblas_core", openblas_get_corename()}, {"sgemm_peak_gflops", peak},
                        {"device", job.trainer().device()}, {"servers", job.cluster().servers()},
                        {"transport", job.cluster().transport()},
                        {"sparse_staleness", job.trainer().sparse_staleness()},
                        {"overlap_uploads", job.trainer().overlap_uploads()}};
  auto emit = [&](const char* metric, double value, const char* unit) {
    nlohmann::json j = ctx;
    j["bench"] = "train";
    j["metric"] = metric;
    j["value"] = value;
    j["unit"] = unit;
    std::printf("%s\n", j.dump().c_str());
  };
  emit("samples_per_s", samples_per_s, "samples/s");
  if (job.trainer().device() == "cpu" && FLAGS_model != "choirrec") {  // the count covers dnn's tower
    emit("tower_gflops", samples_per_s * tower_flops_per_sample / 1e9, "GFLOP/s");
    emit("tower_share_of_sgemm_peak", samples_per_s * tower_flops_per_sample / 1e9 / peak, "fraction");
  }
  return 0;
}
