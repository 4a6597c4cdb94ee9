// choir: one binary for every role and offline step (DESIGN.md section 9).
//
//   choir data gen|convert|inspect ...
//   choir config print [--config FILE] [--set a.b=c,...]
//   choir version
// Flags may be written --name=value or --name value; dashes and underscores in flag names are
// the same (--max-bad-rows == --max_bad_rows).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "choir/config.h"
#include "core/logging.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "tools/choir/commands.h"

// --log_dir (glog's own flag): also write log files into this folder (default: stderr only).
DEFINE_int32(verbosity, 0, "Verbose logging level (VLOG).");
DEFINE_bool(quiet, false, "Print only warnings and errors on stderr.");

namespace {

struct Command {
  const char* group;
  const char* name;
  absl::Status (*run)(const choir::cli::Args&);
  const char* usage;
};

constexpr Command kCommands[] = {
    {"data", "gen", choir::cli::RunDataGen,
     "--out DIR [--users N] [--seed S] [--taxonomy FILE] [--threads T] [--config FILE]"},
    {"data", "convert", choir::cli::RunDataConvert,
     "--format aliccp-aitm|aliccp-rechub|taobao-ad|csv --in PATH[,PATH...] --out DIR "
     "[--task cvr|ctr|ctcvr] [--split NAME] [--max_bad_rows N] [--max_bad_fraction F] [--delimiter C]"},
    {"data", "inspect", choir::cli::RunDataInspect, "DIR [--json FILE] [--config FILE]"},
    {"groups", "profile", choir::cli::RunGroupsProfile,
     "--data DIR --out profiles.tsv [--llm-endpoint URL --llm-model NAME]"},
    {"groups", "build", choir::cli::RunGroupsBuild,
     "--emb emb.npy --ids profiles.tsv --out groups.tsv [--levels 3] [--k 256] [--seed S] [--data DIR]"},
    {"groups", "assign", choir::cli::RunGroupsAssign,
     "--codebooks groups.tsv.codebooks --emb emb.npy --ids profiles.tsv --out groups.tsv"},
    {"groups", "priors", choir::cli::RunGroupsPriors,
     "--data DIR --groups groups.tsv --out DIR [--top_categories 5] [--items_per_category 2] [--smoothing 20]"},
    {"embed", nullptr, choir::cli::RunEmbed,
     "--in profiles.tsv --out emb.npy [--model-dir DIR [--threads T] | --endpoint URL [--endpoint-model NAME] "
     "[--concurrency 4] [--request-timeout-ms 60000] [--max-retries 4]] [--batch 64] [--cache FILE (<out>.cache)]"},
    {"train", nullptr, choir::cli::RunTrain,
     "--config job.pbtxt [--set 'a.b=c;...'] [--data DIR] [--out DIR] [--model dnn|din|dnn+groupid|choirrec] "
     "[--groups groups.tsv --priors DIR] [--resume latest|DIR]"},
    {"eval", nullptr, choir::cli::RunEval, "--checkpoint DIR --out eval.json [--data DIR]"},
    {"export", nullptr, choir::cli::RunExport, "--checkpoint DIR --out BUNDLE [--fp16] [--data DIR] [--force]"},
    {"predict", nullptr, choir::cli::RunPredict,
     "--bundle BUNDLE --in FILE|DIR --out preds.tsv [--split test] [--every_row] [--emb new_users.npy --ids new_users.tsv]"},
    {"report", nullptr, choir::cli::RunReport,
     "--base a/eval.json --run b/eval.json [--plots DIR] [--preds a/preds.tsv,b/preds.tsv]"},
    {"config", "print", choir::cli::RunConfigPrint, "[--config FILE] [--set 'a.b=c;d.e=f']"},
};

void PrintUsage(FILE* out) {
  std::fprintf(out, "choir %s: distributed training for ChoirRec\n\nusage:\n", CHOIR_VERSION);
  for (const Command& c : kCommands) {
    std::fprintf(out, "  choir %s%s%s %s\n", c.group, c.name ? " " : "", c.name ? c.name : "", c.usage);
  }
  std::fprintf(out,
               "  choir version\n\nCommon flags: --config job.pbtxt, --set 'a.b=c;d.e=f' (job-file "
               "overrides), --log_dir DIR, --verbosity N, --quiet.\n");
}

// gflags wants underscores; accept dashes in flag names too.
void NormalizeFlagNames(std::vector<char*>& args, std::vector<std::string>& storage) {
  storage.reserve(args.size());
  for (char*& a : args) {
    if (std::strncmp(a, "--", 2) != 0) continue;
    std::string s(a);
    const size_t end = std::min(s.find('='), s.size());
    for (size_t i = 2; i < end; ++i) {
      if (s[i] == '-') s[i] = '_';
    }
    storage.push_back(std::move(s));
    a = storage.back().data();
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "help") || !std::strcmp(argv[1], "--help") ||
      !std::strcmp(argv[1], "-h")) {
    PrintUsage(stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "version") || !std::strcmp(argv[1], "--version")) {
    std::printf("choir %s (CUDA %s)\n", CHOIR_VERSION, CHOIR_WITH_CUDA ? "on" : "off");
    return 0;
  }
  const Command* command = nullptr;
  int first_arg = 3;  // after "choir GROUP NAME" (or "choir NAME" for one-word commands)
  for (const Command& c : kCommands) {
    if (std::strcmp(argv[1], c.group) != 0) continue;
    if (c.name == nullptr) {
      command = &c;
      first_arg = 2;
    } else if (argc >= 3 && !std::strcmp(argv[2], c.name)) {
      command = &c;
    }
  }
  if (command == nullptr) {
    std::fprintf(stderr, "choir: unknown command '%s%s%s'\n\n", argv[1], argc >= 3 ? " " : "",
                 argc >= 3 ? argv[2] : "");
    PrintUsage(stderr);
    return 2;
  }

  // Parse the flags after "choir GROUP NAME"; what remains are positional arguments.
  std::vector<char*> args = {argv[0]};
  for (int i = first_arg; i < argc; ++i) args.push_back(argv[i]);
  std::vector<std::string> storage;
  NormalizeFlagNames(args, storage);
  int n = args.size();
  char** p = args.data();
  const std::string command_name =
      std::string(command->group) + (command->name ? std::string(" ") + command->name : "");
  gflags::SetUsageMessage("choir " + command_name + " " + command->usage);
  gflags::ParseCommandLineFlags(&n, &p, /*remove_flags=*/true);

  choir::LoggingOptions logging;
  logging.log_dir = FLAGS_log_dir;
  logging.verbosity = FLAGS_verbosity;
  logging.min_stderr_level = FLAGS_quiet ? 1 : 0;
  choir::InitLogging(argv[0], logging);

  choir::cli::Args positional(p + 1, p + n);
  const absl::Status status = command->run(positional);
  if (!status.ok()) {
    std::fprintf(stderr, "choir %s: error: %s\n", command_name.c_str(), status.ToString().c_str());
    return status.code() == absl::StatusCode::kInvalidArgument && status.message().rfind("usage:", 0) == 0 ? 2 : 1;
  }
  return 0;
}
