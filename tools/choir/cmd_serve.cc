// choir export (checkpoint -> serving bundle) and choir predict (bundle + samples -> scores).
#include <algorithm>
#include <chrono>
#include <cstdio>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "checkpoint/checkpoint.h"
#include "core/status.h"
#include "data/convert.h"
#include "data/dataset.h"
#include "data/shard.h"
#include "glog/logging.h"
#include "data/groups/groups_tsv.h"
#include "data/groups/npy.h"
#include "gflags/gflags.h"
#include "tools/choir/commands.h"
#include "tools/eval/report.h"
#include "worker/bundle.h"
#include "worker/predictor.h"

DEFINE_bool(fp16, false, "export: store the sparse rows as fp16 (half the bytes; values rounded to 11 bits).");
DEFINE_bool(force, false, "export: replace a bundle already at --out.");
DEFINE_bool(every_row, false, "predict: score every row, not only the task's (CVR: unclicked impressions too).");
DEFINE_string(bundle, "", "predict: the bundle folder of `choir export`.");

DECLARE_string(in);
DECLARE_string(split);
DECLARE_string(emb);
DECLARE_string(ids);
DECLARE_string(out);
DECLARE_string(data);
DECLARE_string(checkpoint);

namespace choir::cli {
namespace {

// "user_id:INT64:USER_ID, price:FLOAT:FEATURE, ...".
std::string DescribeSchema(const data::Schema& schema) {
  std::vector<std::string> fields;
  for (const data::Field& f : schema.fields()) {
    fields.push_back(absl::StrCat(f.name(), ":", data::FieldType_Name(f.type()), ":", data::FieldRole_Name(f.role())));
  }
  return absl::StrJoin(fields, ", ");
}

// A generic CSV/TSV file (docs/data-formats.md), converted as `choir data convert --format csv`
// does into the folder `tmp`, with the bundle's task and error budget; its shard files. The
// file must have the bundle's columns, label columns included (0 where unknown).
absl::StatusOr<std::vector<std::string>> ConvertGeneric(FileSystem* fs, const std::string& in,
                                                        const worker::Predictor& predictor, const std::string& tmp) {
  data::ConvertOptions options;
  options.format = data::InputFormat::kCsv;
  options.inputs = {in};
  options.split = "test";
  options.out_dir = tmp;
  options.task = predictor.job().task();
  options.budget.max_errors = predictor.job().data().max_bad_rows();
  options.budget.max_fraction = predictor.job().data().max_bad_fraction();
  ASSIGN_OR_RETURN(data::ConvertReport report, data::Convert(fs, options));
  LOG(INFO) << in << ": " << report.rows_written << " rows converted (" << report.rows_rejected << " rejected, "
            << report.rows_dropped << " dropped by the task)";
  ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadManifest(fs, tmp));
  ASSIGN_OR_RETURN(data::SplitInfo split, data::FindSplit(manifest, "test"));
  std::vector<std::string> files = data::SplitPaths(tmp, split);
  if (!files.empty()) {
    ASSIGN_OR_RETURN(std::unique_ptr<data::ShardReader> first, data::ShardReader::Open(fs, files.front()));
    const data::Schema& want = predictor.layout().schema;
    if (first->schema().SerializeAsString() != want.SerializeAsString()) {
      return absl::InvalidArgumentError(absl::StrCat(in, " has the columns ", DescribeSchema(first->schema()),
                                                     "; the bundle's model reads ", DescribeSchema(want)));
    }
  }
  return files;
}

// The shard files --in names: a shard file; a dataset folder (dataset.pbtxt): its split; any
// other folder: its *.shard files, sorted; any other file: a generic CSV/TSV (ConvertGeneric).
absl::StatusOr<std::vector<std::string>> InputFiles(FileSystem* fs, const std::string& in,
                                                    const worker::Predictor& predictor, const std::string& tmp) {
  if (!fs->Exists(in)) return absl::NotFoundError(absl::StrCat("--in ", in, " does not exist"));
  if (!fs->IsDirectory(in)) {
    if (absl::EndsWith(in, ".shard")) return std::vector<std::string>{in};
    return ConvertGeneric(fs, in, predictor, tmp);
  }
  if (fs->Exists(JoinPath(in, data::kManifestName))) {
    ASSIGN_OR_RETURN(data::DatasetManifest manifest, data::ReadManifest(fs, in));
    ASSIGN_OR_RETURN(data::SplitInfo split, data::FindSplit(manifest, FLAGS_split.empty() ? "test" : FLAGS_split));
    return data::SplitPaths(in, split);
  }
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs->ListDir(in));
  std::vector<std::string> files;
  for (const std::string& name : names) {
    if (absl::EndsWith(name, ".shard")) files.push_back(JoinPath(in, name));
  }
  std::sort(files.begin(), files.end());
  if (files.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("--in ", in, " holds no .shard files and no ", data::kManifestName,
                                                   " (give a CSV or TSV file itself, or convert a folder of them "
                                                   "first: choir data convert --format csv)"));
  }
  return files;
}

}  // namespace

absl::Status RunExport(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"checkpoint", FLAGS_checkpoint}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  ASSIGN_OR_RETURN(const std::string dir, checkpoint::Resolve(fs, FLAGS_checkpoint, FLAGS_checkpoint));
  worker::ExportOptions options;
  options.fp16 = FLAGS_fp16;
  options.data_dir = FLAGS_data;
  options.overwrite = FLAGS_force;
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(worker::ExportSummary s, worker::ExportBundle(fs, dir, FLAGS_out, options));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%s (step %ld) -> %s in %.1f s: %ld sparse rows (%s, %.1f MB; %ld more at their initial values "
              "left out), %ld users' activity, %.1f MB in all (checkpoint %.1f MB)%s\n",
              dir.c_str(), static_cast<long>(s.step), FLAGS_out.c_str(), seconds, static_cast<long>(s.sparse_rows),
              FLAGS_fp16 ? "fp16" : "fp32", s.sparse_bytes / 1e6, static_cast<long>(s.rows_at_initial_values),
              static_cast<long>(s.known_users),
              s.bundle_bytes / 1e6, s.checkpoint_bytes / 1e6,
              s.codebooks ? "; codebooks included" : "");
  return absl::OkStatus();
}

absl::Status RunPredict(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"bundle", FLAGS_bundle}, {"in", FLAGS_in}, {"out", FLAGS_out}}));
  if (FLAGS_emb.empty() != FLAGS_ids.empty()) {
    return absl::InvalidArgumentError("usage: --emb and --ids go together (new users' embeddings and their ids)");
  }
  FileSystem* fs = PosixFileSystem();
  RETURN_IF_ERROR(PrepareOutputFile(fs, "out", FLAGS_out));
  worker::PredictorOptions options;
  if (!FLAGS_emb.empty()) {
    ASSIGN_OR_RETURN(groups::FloatMatrix emb, groups::ReadNpy(fs, FLAGS_emb));
    ASSIGN_OR_RETURN(options.new_user_ids, groups::ReadUserIds(fs, FLAGS_ids));
    if (static_cast<int64_t>(options.new_user_ids.size()) != emb.rows) {
      return absl::InvalidArgumentError(absl::StrCat(FLAGS_emb, " has ", emb.rows, " rows but ",
                                                     FLAGS_ids, " has ", options.new_user_ids.size(),
                                                     " users; they must match row for row"));
    }
    options.new_user_embeddings = std::move(emb.values);
    options.embedding_dim = static_cast<int>(emb.cols);
  }
  ASSIGN_OR_RETURN(std::unique_ptr<worker::Predictor> predictor, worker::Predictor::Load(fs, FLAGS_bundle, options));
  // A generic CSV/TSV is converted next to the output and the conversion removed afterwards.
  const std::string tmp = FLAGS_out + ".input.tmp";
  if (fs->Exists(tmp)) RETURN_IF_ERROR(fs->DeleteRecursively(tmp));
  absl::Cleanup remove_tmp = [&] {
    if (fs->Exists(tmp)) fs->DeleteRecursively(tmp).IgnoreError();
  };
  ASSIGN_OR_RETURN(std::vector<std::string> files, InputFiles(fs, FLAGS_in, *predictor, tmp));
  const auto start = std::chrono::steady_clock::now();
  ASSIGN_OR_RETURN(std::vector<eval::Prediction> preds, predictor->PredictFiles(fs, files, FLAGS_every_row));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RETURN_IF_ERROR(eval::WritePredictionsTsv(fs, FLAGS_out, preds));
  std::printf("%ld samples of %zu file(s) scored with %s (%s, step %ld) in %.2f s (%.0f samples/s) -> %s\n",
              static_cast<long>(preds.size()), files.size(), FLAGS_bundle.c_str(),
              predictor->job().model().type().c_str(), static_cast<long>(predictor->step()), seconds,
              preds.size() / std::max(seconds, 1e-9), FLAGS_out.c_str());
  return absl::OkStatus();
}

}  // namespace choir::cli
