// RenderPlots: runs tools/eval/plot_eval.py in a child process (posix_spawn), collecting its
// output through a pipe so that a failure can say why.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "core/status.h"
#include "tools/eval/report.h"

extern char** environ;

namespace choir::eval {
namespace {

// Exit codes of plot_eval.py (see the script).
constexpr int kScriptBadInput = 2;
constexpr int kScriptNoMatplotlib = 3;
constexpr size_t kTailBytes = 2000;

std::string Tail(const std::string& s) {
  return s.size() <= kTailBytes ? s : "..." + s.substr(s.size() - kTailBytes);
}

// Runs argv[0] with `argv`, returning its exit status (as from waitpid) and its merged
// stdout/stderr in `output`. A child still running after `timeout` is killed (SIGKILL) and
// reaped: DEADLINE_EXCEEDED naming it.
absl::StatusOr<int> Spawn(const std::vector<std::string>& args, absl::Duration timeout, std::string* output) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) return ErrnoToStatus(errno, "pipe2", args[0]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
  posix_spawn_file_actions_adddup2(&actions, fds[1], STDERR_FILENO);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(fds[1]);
  if (rc != 0) {
    close(fds[0]);
    return ErrnoToStatus(rc, "posix_spawn", args[0]);
  }
  const auto deadline = std::chrono::steady_clock::now() + absl::ToChronoMilliseconds(timeout);
  char buf[4096];
  bool timed_out = false;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      timed_out = true;
      break;
    }
    pollfd p = {fds[0], POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left.count(), 1 << 30)));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) continue;  // the deadline check above decides
    const ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n > 0) {
      output->append(buf, static_cast<size_t>(n));
      if (output->size() > 4 * kTailBytes) output->erase(0, output->size() - 2 * kTailBytes);
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  close(fds[0]);
  if (timed_out) kill(pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return ErrnoToStatus(errno, "waitpid", args[0]);
  }
  if (timed_out) {
    return absl::DeadlineExceededError(absl::StrCat(args[1], " did not finish within ", absl::FormatDuration(timeout),
                                                    " and was killed; its output: ", Tail(*output)));
  }
  return status;
}

}  // namespace

absl::Status RenderPlots(const std::vector<std::string>& eval_jsons,
                         const std::vector<std::string>& preds_tsvs, const std::string& out_dir,
                         const PlotOptions& options) {
  if (access(options.python.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot draw plots: no Python interpreter at ", options.python,
                     " (install python3 and python3-matplotlib)"));
  }
  if (access(options.script.c_str(), R_OK) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot draw plots: plotting script ", options.script, " is missing"));
  }
  if (eval_jsons.empty() && preds_tsvs.empty()) {
    return absl::InvalidArgumentError("RenderPlots: no eval.json and no preds.tsv given");
  }
  std::vector<std::string> args = {options.python, options.script, "--out_dir", out_dir};
  for (const std::string& e : eval_jsons) {
    args.push_back("--eval");
    args.push_back(e);
  }
  for (const std::string& p : preds_tsvs) {
    args.push_back("--preds");
    args.push_back(p);
  }
  std::string output;
  ASSIGN_OR_RETURN(const int status, Spawn(args, options.timeout, &output));
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return absl::OkStatus();
  const std::string what = absl::StrCat(options.script, ": ", Tail(output));
  if (!WIFEXITED(status)) {
    return absl::InternalError(
        absl::StrCat("plotting script killed by signal ", WTERMSIG(status), ": ", what));
  }
  switch (WEXITSTATUS(status)) {
    case kScriptNoMatplotlib:
      return absl::FailedPreconditionError(
          absl::StrCat("cannot draw plots: matplotlib is not importable by ", options.python,
                       " (apt-get install python3-matplotlib): ", what));
    case kScriptBadInput:
      return absl::InvalidArgumentError(absl::StrCat("plotting failed: ", what));
    default:
      return absl::InternalError(
          absl::StrCat("plotting script exited with ", WEXITSTATUS(status), ": ", what));
  }
}

}  // namespace choir::eval
