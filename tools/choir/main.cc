// choir: one binary for every role and offline step (DESIGN.md section 9).
//
//   choir data gen|convert|inspect ...
//   choir config print [--config FILE] [--set 'a.b=c;...']
//   choir version
// Flags may be written --name=value or --name value; dashes and underscores in flag names are
// the same (--max-bad-rows == --max_bad_rows).
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/string_view.h"
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

// The flags of the commands that read the job file; those that read data also take its error
// budget.
#define JOB_FLAGS " [--config job.pbtxt] [--set 'a.b=c;...']"
#define DATA_JOB_FLAGS JOB_FLAGS " [--max_bad_rows N] [--max_bad_fraction F]"

// Each command's usage names every flag it reads: a flag of choir's own that its usage does not
// name is refused (CheckFlagsApply), so a flag meant for another command is never ignored.
constexpr Command kCommands[] = {
    {"data", "gen", choir::cli::RunDataGen,
     "--out DIR [--users N] [--seed S] [--items N] [--taxonomy FILE] [--threads T] [--no_compress]" JOB_FLAGS},
    {"data", "convert", choir::cli::RunDataConvert,
     "--format aliccp-aitm|aliccp-rechub|taobao-ad|csv --in PATH[,PATH...] --out DIR "
     "[--task cvr|ctr|ctcvr] [--split NAME] [--delimiter C]" DATA_JOB_FLAGS},
    {"data", "inspect", choir::cli::RunDataInspect, "DIR [--json FILE]" DATA_JOB_FLAGS},
    {"groups", "profile", choir::cli::RunGroupsProfile,
     "--data DIR --out profiles.tsv [--llm-endpoint URL --llm-model NAME [--llm-concurrency N] "
     "[--llm-timeout-s S]]" DATA_JOB_FLAGS},
    {"groups", "build", choir::cli::RunGroupsBuild,
     "--emb emb.npy --ids profiles.tsv --out groups.tsv [--levels 3] [--k 256] [--iterations N] [--seed S] "
     "[--data DIR]" JOB_FLAGS},
    {"groups", "assign", choir::cli::RunGroupsAssign,
     "--codebooks groups.tsv.codebooks --emb emb.npy --ids profiles.tsv --out groups.tsv"},
    {"groups", "priors", choir::cli::RunGroupsPriors,
     "--data DIR --groups groups.tsv --out DIR [--top_categories 5] [--items_per_category 2] [--smoothing 20]"},
    {"embed", nullptr, choir::cli::RunEmbed,
     "--in profiles.tsv --out emb.npy [--model DIR (or --model-dir DIR) [--threads T] | --endpoint URL [--endpoint-model NAME] "
     "[--concurrency 4] [--request-timeout-ms 60000] [--max-retries 4] [--retry-backoff-ms 1000]] [--batch 64] "
     "[--cache FILE (<out>.cache)]"},
    {"train", nullptr, choir::cli::RunTrain,
     "[--data DIR] [--out DIR] [--model dnn|din|dnn+groupid|choirrec] "
     "[--groups groups.tsv --priors DIR] [--resume latest|DIR]" DATA_JOB_FLAGS},
    {"eval", nullptr, choir::cli::RunEval, "--checkpoint DIR --out eval.json [--data DIR]"},
    {"export", nullptr, choir::cli::RunExport, "--checkpoint DIR --out BUNDLE [--fp16] [--data DIR] [--force]"},
    {"predict", nullptr, choir::cli::RunPredict,
     "--bundle BUNDLE --in FILE|DIR --out preds.tsv [--split test] [--every_row] [--emb new_users.npy --ids new_users.tsv]"},
    {"report", nullptr, choir::cli::RunReport,
     "--base a/eval.json --run b/eval.json [--plots DIR] [--preds a/preds.tsv,b/preds.tsv]"},
    {"config", "print", choir::cli::RunConfigPrint,
     "[--config job.pbtxt] [--set 'a.b=c;...'] [--max_bad_rows N] [--max_bad_fraction F] [--defaults]"},
};
#undef DATA_JOB_FLAGS
#undef JOB_FLAGS

void PrintUsage(FILE* out) {
  std::fprintf(out, "choir %s: distributed training for ChoirRec\n\nusage:\n", CHOIR_VERSION);
  for (const Command& c : kCommands) {
    std::fprintf(out, "  choir %s%s%s %s\n", c.group, c.name ? " " : "", c.name ? c.name : "", c.usage);
  }
  std::fprintf(out,
               "  choir version\n\nEvery command also takes --log_dir DIR, --verbosity N and --quiet. --set may be "
               "given several times; its overrides apply in order.\n");
}

// The name of the flag in `arg` ("--max-bad-rows=3" -> "max_bad_rows", "-quiet" -> "quiet"),
// empty when `arg` is not a flag (a value, "-3", the "--" that ends the flags).
std::string FlagName(const char* arg) {
  const char* p = arg;
  if (*p != '-') return "";
  ++p;
  if (*p == '-') ++p;
  if (!std::isalpha(static_cast<unsigned char>(*p))) return "";
  std::string name(p, std::strcspn(p, "="));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

// Every --name in `usage`, with underscores.
std::set<std::string> UsageFlags(const char* usage) {
  std::set<std::string> names;
  for (const char* p = std::strstr(usage, "--"); p != nullptr; p = std::strstr(p + 2, "--")) {
    std::string name;
    for (const char* q = p + 2; std::isalnum(static_cast<unsigned char>(*q)) || *q == '_' || *q == '-'; ++q) {
      name.push_back(*q == '-' ? '_' : *q);
    }
    if (!name.empty()) names.insert(name);
  }
  return names;
}

// OK unless `args` hold a flag of choir's own (defined in tools/choir/) that `command` does not
// read: gflags's flags are global, and a flag of another command would be accepted and ignored
// (`choir train --seed 7` trained with the job file's seed). glog's and gflags's own flags
// (--log_dir, --v, --help, ...) apply everywhere.
absl::Status CheckFlagsApply(const Command& command, const std::vector<char*>& args) {
  std::set<std::string> allowed = UsageFlags(command.usage);
  allowed.insert({"verbosity", "quiet"});
  for (size_t i = 1; i < args.size(); ++i) {
    if (std::strcmp(args[i], "--") == 0) break;
    std::string name = FlagName(args[i]);
    if (name.empty()) continue;
    gflags::CommandLineFlagInfo info;
    if (!gflags::GetCommandLineFlagInfo(name.c_str(), &info)) {
      // --nofoo sets the boolean --foo to false; other unknown names are gflags's to report.
      if (name.rfind("no", 0) != 0 || !gflags::GetCommandLineFlagInfo(name.substr(2).c_str(), &info)) continue;
      name = name.substr(2);
    }
    if (info.filename.find("tools/choir/") == std::string::npos || allowed.count(name) > 0) continue;
    std::string flags;
    for (const std::string& f : allowed) flags += (flags.empty() ? "--" : ", --") + f;
    return absl::InvalidArgumentError(
        "--" + name + " is not a flag of this command (its flags: " + flags +
        "); a job-file field is set with --set 'section.field=value'");
  }
  return absl::OkStatus();
}

// Several --set flags are applied in order, as one --set of their values joined by ';'
// (gflags alone would keep the last). `merged` holds the joined flag's text.
void MergeRepeatedSet(std::vector<char*>& args, std::string& merged) {
  std::vector<std::string> values;
  std::vector<char*> kept;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string name = i > 0 ? FlagName(args[i]) : "";
    const char* eq = std::strchr(args[i], '=');
    if (name == "set" && eq != nullptr) {
      values.emplace_back(eq + 1);
    } else if (name == "set" && i + 1 < args.size()) {
      values.emplace_back(args[++i]);
    } else {
      kept.push_back(args[i]);
    }
  }
  if (values.size() < 2) return;
  merged = "--set=";
  for (size_t v = 0; v < values.size(); ++v) merged += (v > 0 ? ";" : "") + values[v];
  kept.push_back(merged.data());
  args = std::move(kept);
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
  std::string merged_set;
  MergeRepeatedSet(args, merged_set);
  const std::string command_name =
      std::string(command->group) + (command->name ? std::string(" ") + command->name : "");
  if (const absl::Status applies = CheckFlagsApply(*command, args); !applies.ok()) {
    std::fprintf(stderr, "choir %s: error: %s\nusage: choir %s %s\n", command_name.c_str(),
                 std::string(applies.message()).c_str(), command_name.c_str(), command->usage);
    return 2;
  }
  int n = args.size();
  char** p = args.data();
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
    constexpr absl::string_view kUsage = "usage: ";
    if (status.code() == absl::StatusCode::kInvalidArgument && absl::StartsWith(status.message(), kUsage)) {
      // A usage error (CheckUsage): what is wrong, then the command's whole usage.
      std::fprintf(stderr, "choir %s: error: %s\nusage: choir %s %s\n", command_name.c_str(),
                   std::string(status.message().substr(kUsage.size())).c_str(), command_name.c_str(),
                   command->usage);
      return 2;
    }
    std::fprintf(stderr, "choir %s: error: %s\n", command_name.c_str(), status.ToString().c_str());
    return 1;
  }
  return 0;
}
