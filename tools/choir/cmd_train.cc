// choir train (single process, local cluster or an mpirun rank), choir eval and choir report.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "checkpoint/checkpoint.h"
#include "core/config.h"
#include "core/status.h"
#include "gflags/gflags.h"
#include "tools/choir/commands.h"
#include "tools/eval/report.h"
#include "core/mpi_collective.h"
#include "worker/cluster.h"
#include "worker/trainer.h"

DEFINE_string(data, "", "train, groups profile: dataset folder (for train: overrides data.dir).");
DEFINE_string(model, "", "train: dnn, din, dnn+groupid or choirrec (overrides model.type); embed: the encoder folder (as --model_dir).");
DEFINE_string(priors, "", "train: the group priors folder of `choir groups priors` (overrides model.groups.priors).");
DEFINE_string(resume, "", "train: continue from a checkpoint: latest (the newest under OUT/checkpoint) or a checkpoint directory (overrides trainer.resume).");
DEFINE_string(checkpoint, "", "eval: a checkpoint directory (a step-N folder), or a folder of checkpoints (its latest).");
DEFINE_string(base, "", "report: the baseline's eval.json.");
DEFINE_string(run, "", "report: the compared run's eval.json.");
DEFINE_string(plots, "", "report: write PNG plots (per-bucket GAUC, calibration) into this folder.");
DEFINE_string(preds, "", "report: preds.tsv files (comma-separated) for the calibration plot.");

DECLARE_string(out);
DECLARE_string(groups);

namespace choir::cli {

absl::Status PrintTrainResult(const JobConfig& job, const worker::TrainResult& r);

absl::Status RunTrain(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {}));
  FileSystem* fs = PosixFileSystem();
  ASSIGN_OR_RETURN(JobConfig job, LoadJobConfig(fs, ConfigPath(), ConfigOverrides()));
  if (!FLAGS_data.empty()) job.mutable_data()->set_dir(FLAGS_data);
  if (!FLAGS_out.empty()) job.mutable_trainer()->set_out_dir(FLAGS_out);
  if (!FLAGS_model.empty()) job.mutable_model()->set_type(FLAGS_model);
  if (!FLAGS_groups.empty()) job.mutable_model()->mutable_groups()->set_table(FLAGS_groups);
  if (!FLAGS_priors.empty()) job.mutable_model()->mutable_groups()->set_priors(FLAGS_priors);
  if (!FLAGS_resume.empty()) job.mutable_trainer()->set_resume(FLAGS_resume);
  if (LaunchedByMpirun()) {
    // Under mpirun every rank runs this; MPI carries the bootstrap and the workers' allreduce.
    RETURN_IF_ERROR(MpiInit(nullptr, nullptr));
    absl::StatusOr<worker::TrainResult> r = worker::RunMpiRank(fs, job);
    if (!r.ok()) {
      // MPI_Finalize would wait for every rank, and another may be frozen or may wait for this
      // one (a server that failed before registering holds the scheduler and the workers at the
      // rendezvous): say the error, then end the whole job.
      std::fprintf(stderr, "choir train: error: %s\n", r.status().ToString().c_str());
      MpiAbort(1);
    }
    RETURN_IF_ERROR(MpiFinalize());
    if (r->steps == 0) return absl::OkStatus();  // not worker 0: nothing to print
    job.mutable_cluster()->set_servers(0);        // print as below
    return PrintTrainResult(job, *r);
  }
  ASSIGN_OR_RETURN(worker::TrainResult r, worker::RunTrainJob(fs, job));
  return PrintTrainResult(job, r);
}

absl::Status RunEval(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"checkpoint", FLAGS_checkpoint}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  RETURN_IF_ERROR(PrepareOutputFile(fs, "out", FLAGS_out));
  ASSIGN_OR_RETURN(const std::string dir, checkpoint::Resolve(fs, FLAGS_checkpoint, FLAGS_checkpoint));
  ASSIGN_OR_RETURN(worker::CheckpointEval r, worker::EvaluateCheckpoint(fs, dir, FLAGS_data, FLAGS_out));
  std::printf("%s, step %ld, on %s: test split (%ld samples), written to %s and preds.tsv beside it:\n\n%s",
              dir.c_str(), static_cast<long>(r.step), r.job.data().dir().c_str(),
              static_cast<long>(r.test_samples), FLAGS_out.c_str(), eval::MarkdownTable(r.test).c_str());
  return absl::OkStatus();
}

absl::Status PrintTrainResult(const JobConfig& job, const worker::TrainResult& r) {
  std::printf("%s: %ld steps, %ld samples in %.1f s (%.0f samples/s), final loss %.5f, peak RSS %.0f MB\n",
              job.model().type().c_str(), static_cast<long>(r.steps), static_cast<long>(r.samples), r.seconds,
              (r.samples - r.resumed_samples) / r.seconds, r.last_loss, r.peak_rss_mb);
  if (r.test_samples > 0) {
    std::printf("\ntest split (%ld samples), written to %s/eval.json and preds.tsv:\n\n%s",
                static_cast<long>(r.test_samples), job.trainer().out_dir().c_str(),
                eval::MarkdownTable(r.test).c_str());
  }
  return absl::OkStatus();
}

absl::Status RunReport(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"base", FLAGS_base}, {"run", FLAGS_run}}));
  FileSystem* fs = PosixFileSystem();
  ASSIGN_OR_RETURN(eval::EvalReport base, eval::ReadEvalJson(fs, FLAGS_base));
  ASSIGN_OR_RETURN(eval::EvalReport run, eval::ReadEvalJson(fs, FLAGS_run));
  std::fputs(eval::CompareReports(base, run, FLAGS_base, FLAGS_run).c_str(), stdout);
  if (!FLAGS_plots.empty()) {
    std::vector<std::string> preds;
    for (absl::string_view p : absl::StrSplit(FLAGS_preds, ',', absl::SkipEmpty())) preds.emplace_back(p);
    RETURN_IF_ERROR(fs->CreateDirs(FLAGS_plots));
    RETURN_IF_ERROR(eval::RenderPlots({FLAGS_base, FLAGS_run}, preds, FLAGS_plots));
    std::printf("\nplots written to %s\n", FLAGS_plots.c_str());
  }
  return absl::OkStatus();
}

}  // namespace choir::cli
