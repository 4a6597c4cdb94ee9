// choir config print: the effective job configuration after the file and the overrides.
#include <cstdio>

#include "absl/strings/str_split.h"
#include "core/config.h"
#include "core/status.h"
#include "gflags/gflags.h"
#include "tools/choir/commands.h"

DEFINE_string(config, "", "Job file (protobuf text format, core/proto/job.proto). Empty: defaults.");
DEFINE_string(set, "", "Overrides of job-file fields: 'a.b=c' or several separated by ';'.");

namespace choir::cli {

std::vector<std::string> ConfigOverrides() {
  std::vector<std::string> out;
  for (absl::string_view s : absl::StrSplit(FLAGS_set, ';', absl::SkipWhitespace())) out.emplace_back(s);
  return out;
}

std::string ConfigPath() { return FLAGS_config; }

absl::Status RunConfigPrint(const Args& args) {
  if (!args.empty()) return absl::InvalidArgumentError("usage: choir config print takes no positional arguments");
  ASSIGN_OR_RETURN(JobConfig config, LoadJobConfig(PosixFileSystem(), ConfigPath(), ConfigOverrides()));
  std::fputs(ToTextProto(config).c_str(), stdout);
  return absl::OkStatus();
}

}  // namespace choir::cli
