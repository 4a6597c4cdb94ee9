// choir data gen | convert | inspect.
#include <cstdio>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/config.h"
#include "core/status.h"
#include "data/convert.h"
#include "data/dataset.h"
#include "data/generator.h"
#include "data/inspect.h"
#include "data/taxonomy.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/choir/commands.h"

DEFINE_string(out, "", "Output folder.");
DEFINE_int64(users, 20000, "data gen: number of users (when not given: the job file's generator.users).");
DEFINE_uint64(seed, 1, "data gen: seed (when not given: the job file's generator.seed).");
DEFINE_string(taxonomy, "", "data gen: taxonomy and personas file (default: the built-in one).");
DEFINE_int32(threads, 0, "data gen: generation threads (default: cores - 1; one more compresses and writes); embed: encoder threads (default: cores).");
DEFINE_int64(items, 0, "data gen: catalogue size (default: users / 4, within [2000, 2000000]).");
DEFINE_bool(no_compress, false, "Write shards without zstd.");
DEFINE_string(format, "", "data convert: aliccp-aitm, aliccp-rechub, taobao-ad or csv.");
DEFINE_string(in, "", "data convert: input file(s), comma-separated, or a folder (all its files); predict: a shard file, a folder of shards, a dataset folder or a generic CSV/TSV file.");
DEFINE_string(task, "", "data convert: cvr (drops conversions without click), ctr or ctcvr (default: the job file's task, cvr).");
DEFINE_string(split, "", "data convert: put every input into this split (train, val or test); default: by file name. predict: the split of a dataset folder (default test).");
DEFINE_string(delimiter, "", "data convert --format csv: field delimiter (default by extension).");
DEFINE_string(json, "", "data inspect: also write the report as JSON to this file.");

namespace choir::cli {
namespace {

// True when the flag was on the command line (then it wins over the job file).
bool FlagGiven(const char* name) { return !gflags::GetCommandLineFlagInfoOrDie(name).is_default; }

// Generation threads: one core is left for the thread that compresses and writes (measured:
// on 2 cores, 1 generator + 1 writer is as fast as 2 + 1).
int GenThreads() {
  if (FLAGS_threads > 0) return FLAGS_threads;
  return std::clamp<int>(static_cast<int>(std::thread::hardware_concurrency()) - 1, 1, 8);
}

// data.max_bad_rows / max_bad_fraction, which --max_bad_rows / --max_bad_fraction override.
ErrorBudget Budget(const JobConfig& config) {
  ErrorBudget budget;
  budget.max_errors = config.data().max_bad_rows();
  budget.max_fraction = config.data().max_bad_fraction();
  return budget;
}

absl::StatusOr<Task> ParseTask(absl::string_view name) {
  if (name == "cvr") return TASK_CVR;
  if (name == "ctr") return TASK_CTR;
  if (name == "ctcvr") return TASK_CTCVR;
  return absl::InvalidArgumentError(absl::StrCat("--task must be cvr, ctr or ctcvr, not '", name, "'"));
}

}  // namespace

absl::Status RunDataGen(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  ASSIGN_OR_RETURN(JobConfig config, LoadJobConfig(fs, ConfigPath(), ConfigOverrides()));
  data::GeneratorOptions options;
  options.users = FlagGiven("users") ? FLAGS_users : config.generator().users();
  options.seed = FlagGiven("seed") ? FLAGS_seed : config.generator().seed();
  options.items = FLAGS_items;
  options.threads = GenThreads();
  if (FLAGS_no_compress) options.shard.codec = data::CODEC_NONE;
  const std::string taxonomy_path = !FLAGS_taxonomy.empty() ? FLAGS_taxonomy : config.generator().taxonomy();
  ASSIGN_OR_RETURN(data::Taxonomy taxonomy, data::LoadTaxonomy(fs, taxonomy_path));
  ASSIGN_OR_RETURN(data::CompiledTaxonomy compiled, data::CompileTaxonomy(taxonomy));
  RETURN_IF_ERROR(fs->CreateDirs(FLAGS_out));
  LOG(INFO) << "generating " << options.users << " users (seed " << options.seed << ", "
            << compiled.leaves.size() << " leaf categories, " << compiled.personas.size()
            << " personas, " << options.threads << " threads) into " << FLAGS_out;
  ASSIGN_OR_RETURN(data::GeneratorReport r, data::GenerateDataset(fs, compiled, options, FLAGS_out));
  std::printf("generated %s: %ld users (%ld new), %ld items, %ld behaviours, %ld train and %ld test impressions\n",
              FLAGS_out.c_str(), static_cast<long>(r.users), static_cast<long>(r.new_users),
              static_cast<long>(r.items), static_cast<long>(r.behavior_rows), static_cast<long>(r.train_rows),
              static_cast<long>(r.test_rows));
  return absl::OkStatus();
}

absl::Status RunDataConvert(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"format", FLAGS_format}, {"in", FLAGS_in}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  ASSIGN_OR_RETURN(JobConfig config, LoadJobConfig(fs, ConfigPath(), ConfigOverrides()));
  data::ConvertOptions options;
  ASSIGN_OR_RETURN(options.format, data::ParseInputFormat(FLAGS_format));
  if (FLAGS_task.empty()) {
    options.task = config.task();
  } else {
    ASSIGN_OR_RETURN(options.task, ParseTask(FLAGS_task));
  }
  for (absl::string_view in : absl::StrSplit(FLAGS_in, ',', absl::SkipEmpty())) {
    const std::string path(in);
    if (fs->IsDirectory(path)) {
      ASSIGN_OR_RETURN(std::vector<std::string> names, fs->ListDir(path));
      for (const std::string& name : names) {
        if (!fs->IsDirectory(JoinPath(path, name))) options.inputs.push_back(JoinPath(path, name));
      }
    } else {
      options.inputs.push_back(path);
    }
  }
  if (options.inputs.empty()) return absl::InvalidArgumentError(absl::StrCat("--in ", FLAGS_in, ": no input files"));
  options.out_dir = FLAGS_out;
  options.split = FLAGS_split;
  options.budget = Budget(config);
  if (FLAGS_delimiter.size() > 1 && FLAGS_delimiter != "\\t" && FLAGS_delimiter != "tab") {
    return absl::InvalidArgumentError("--delimiter must be one character (or 'tab')");
  }
  if (!FLAGS_delimiter.empty()) options.delimiter = FLAGS_delimiter.size() == 1 ? FLAGS_delimiter[0] : '\t';
  ASSIGN_OR_RETURN(data::ConvertReport r, data::Convert(fs, options));
  std::printf("converted %ld rows into %s: %ld written, %ld dropped (conversion without click), %ld rejected\n",
              static_cast<long>(r.rows_read), FLAGS_out.c_str(), static_cast<long>(r.rows_written),
              static_cast<long>(r.rows_dropped), static_cast<long>(r.rows_rejected));
  for (const std::string& m : r.reject_messages) std::printf("  rejected: %s\n", m.c_str());
  return absl::OkStatus();
}

absl::Status RunDataInspect(const Args& args) {
  if (args.empty()) return absl::InvalidArgumentError("usage: the dataset folder DIR is required");
  RETURN_IF_ERROR(CheckUsage(args, {}, /*max_positional=*/1));
  FileSystem* fs = PosixFileSystem();
  if (!FLAGS_json.empty()) RETURN_IF_ERROR(PrepareOutputFile(fs, "json", FLAGS_json));
  ASSIGN_OR_RETURN(JobConfig config, LoadJobConfig(fs, ConfigPath(), ConfigOverrides()));
  ASSIGN_OR_RETURN(data::InspectReport report,
                   data::InspectDataset(fs, args[0], config.data().buckets(), Budget(config)));
  std::fputs(data::FormatInspectReport(report).c_str(), stdout);
  if (!FLAGS_json.empty()) {
    RETURN_IF_ERROR(fs->WriteStringToFileAtomic(FLAGS_json, data::InspectReportToJson(report)));
  }
  return absl::OkStatus();
}

}  // namespace choir::cli
