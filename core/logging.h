// Logging setup for the `choir` binary and tools. Libraries only log (glog's LOG/VLOG); main()
// calls InitLogging once.
#ifndef CHOIR_CORE_LOGGING_H_
#define CHOIR_CORE_LOGGING_H_

#include <string>

namespace choir {

struct LoggingOptions {
  // Empty (default): log to stderr only. Otherwise also write glog files into this folder.
  std::string log_dir;
  // Minimum severity printed to stderr: 0 INFO (default), 1 WARNING, 2 ERROR.
  int min_stderr_level = 0;
  // glog verbosity for VLOG(n). Default 0.
  int verbosity = 0;
};

// Initialises glog (idempotent) with `argv0` as program name and installs the failure signal
// handler, so a crash prints a stack trace.
void InitLogging(const char* argv0, const LoggingOptions& options);

}  // namespace choir

#endif  // CHOIR_CORE_LOGGING_H_
