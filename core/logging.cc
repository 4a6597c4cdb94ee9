#include "core/logging.h"

#include <csignal>
#include <mutex>

#include "glog/logging.h"

namespace choir {

void InitLogging(const char* argv0, const LoggingOptions& options) {
  // Flags may be changed by a later call; glog itself is initialised once per process.
  if (options.log_dir.empty()) {
    // Everything goes to stderr, so the stderr level is the minimum level logged at all.
    FLAGS_logtostderr = true;
    FLAGS_minloglevel = options.min_stderr_level;
  } else {
    // Files get every level; stderr gets copies from min_stderr_level up (stderrthreshold;
    // alsologtostderr would ignore the threshold).
    FLAGS_logtostderr = false;
    FLAGS_alsologtostderr = false;
    FLAGS_log_dir = options.log_dir;
    FLAGS_minloglevel = 0;
  }
  FLAGS_stderrthreshold = options.min_stderr_level;
  FLAGS_v = options.verbosity;
  static std::once_flag once;
  std::call_once(once, [argv0] {
    google::InitGoogleLogging(argv0);
    google::InstallFailureSignalHandler();
    // SIGTERM asks a process to stop (mpirun tearing a failed job down, Kubernetes evicting a
    // pod): not a crash, so no stack trace that would bury the cause in every rank's log.
    std::signal(SIGTERM, SIG_DFL);
  });
}

}  // namespace choir
