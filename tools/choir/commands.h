// Subcommands of the `choir` binary. Each reads its gflags (declared in its own .cc) and its
// positional arguments, and returns a status; main() prints errors and sets the exit code.
#ifndef CHOIR_TOOLS_CHOIR_COMMANDS_H_
#define CHOIR_TOOLS_CHOIR_COMMANDS_H_

#include <initializer_list>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "core/fs.h"

namespace choir::cli {

using Args = std::vector<std::string>;  // positional arguments after the subcommand

absl::Status RunDataGen(const Args& args);
absl::Status RunDataConvert(const Args& args);
absl::Status RunDataInspect(const Args& args);
absl::Status RunConfigPrint(const Args& args);
absl::Status RunTrain(const Args& args);
absl::Status RunEval(const Args& args);
absl::Status RunReport(const Args& args);
absl::Status RunExport(const Args& args);
absl::Status RunPredict(const Args& args);
absl::Status RunGroupsProfile(const Args& args);
absl::Status RunEmbed(const Args& args);
absl::Status RunGroupsBuild(const Args& args);
absl::Status RunGroupsAssign(const Args& args);
absl::Status RunGroupsPriors(const Args& args);

// Flags shared by several commands (defined in cmd_config.cc).
// --set 'a.b=c;d.e=f' (';' separates overrides), then --max_bad_rows / --max_bad_fraction as
// data.max_bad_rows / data.max_bad_fraction when given.
std::vector<std::string> ConfigOverrides();
std::string ConfigPath();                    // --config FILE

// A usage error: INVALID_ARGUMENT "usage: <what>" naming the first flag of `required` ({"out",
// FLAGS_out}, ...) left empty, or the first of `args` beyond `max_positional`. main() prints
// the command's full usage after it and exits with code 2.
struct RequiredFlag {
  const char* name;
  const std::string& value;
};
absl::Status CheckUsage(const Args& args, std::initializer_list<RequiredFlag> required,
                        size_t max_positional = 0);

// Before the work: INVALID_ARGUMENT when the output file `path` (of flag `flag`) is a folder or
// lies under a file; creates its parent folder when missing (it stays if the command then fails).
absl::Status PrepareOutputFile(FileSystem* fs, const char* flag, const std::string& path);

}  // namespace choir::cli

#endif  // CHOIR_TOOLS_CHOIR_COMMANDS_H_
