// choir config print: the effective job configuration after the file and the overrides.
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/config.h"
#include "core/status.h"
#include "gflags/gflags.h"
#include "tools/choir/commands.h"

DEFINE_string(config, "", "Job file (protobuf text format, core/proto/job.proto). Empty: defaults.");
DEFINE_string(set, "", "Overrides of job-file fields: 'a.b=c' or several separated by ';' (or several --set).");
DEFINE_int64(max_bad_rows, -1, "Bad rows tolerated (skip-and-count) before failing: data.max_bad_rows (default: job file, 0).");
DEFINE_bool(defaults, false, "config print: also show every unset setting at its default.");
DEFINE_double(max_bad_fraction, -1, "Or as a fraction of rows read: data.max_bad_fraction (default: job file, 0 = off).");

namespace choir::cli {

std::vector<std::string> ConfigOverrides() {
  std::vector<std::string> out;
  for (absl::string_view s : absl::StrSplit(FLAGS_set, ';', absl::SkipWhitespace())) out.emplace_back(s);
  // The error-budget flags are overrides of the job file's data fields, checked with them.
  if (!gflags::GetCommandLineFlagInfoOrDie("max_bad_rows").is_default) {
    out.push_back(absl::StrCat("data.max_bad_rows=", FLAGS_max_bad_rows));
  }
  if (!gflags::GetCommandLineFlagInfoOrDie("max_bad_fraction").is_default) {
    out.push_back(absl::StrCat("data.max_bad_fraction=", FLAGS_max_bad_fraction));
  }
  return out;
}

std::string ConfigPath() { return FLAGS_config; }

absl::Status CheckUsage(const Args& args, std::initializer_list<RequiredFlag> required, size_t max_positional) {
  for (const RequiredFlag& flag : required) {
    if (flag.value.empty()) return absl::InvalidArgumentError(absl::StrCat("usage: --", flag.name, " is required"));
  }
  if (args.size() > max_positional) {
    return absl::InvalidArgumentError(absl::StrCat("usage: unexpected argument '", args[max_positional],
                                                   "' (flags are written --name value; a yes/no flag --name or --name=false)"));
  }
  return absl::OkStatus();
}

absl::Status PrepareOutputFile(FileSystem* fs, const char* flag, const std::string& path) {
  if (fs->IsDirectory(path)) {
    return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, " is a folder; name the file to write"));
  }
  const std::string parent = Dirname(path);
  if (!parent.empty() && parent != "." && !fs->IsDirectory(parent)) {
    if (fs->Exists(parent)) {
      return absl::InvalidArgumentError(absl::StrCat("--", flag, " ", path, ": ", parent, " is a file, not a folder"));
    }
    RETURN_IF_ERROR(fs->CreateDirs(parent));
  }
  return absl::OkStatus();
}

absl::Status RunConfigPrint(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {}));
  ASSIGN_OR_RETURN(JobConfig config, LoadJobConfig(PosixFileSystem(), ConfigPath(), ConfigOverrides()));
  if (FLAGS_defaults) {
    SetDefaultsExplicitly(&config);
    std::fputs("# Every setting, unset ones at their defaults. An empty list (hidden, sequences, ...) takes\n"
               "# the default its comment in core/proto/job.proto gives.\n",
               stdout);
  }
  std::fputs(ToTextProto(config).c_str(), stdout);
  return absl::OkStatus();
}

}  // namespace choir::cli
