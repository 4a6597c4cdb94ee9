#include "core/progress.h"

#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "glog/logging.h"

namespace choir {
namespace {

// A terminal line is redrawn at most this often.
constexpr absl::Duration kTtyInterval = absl::Milliseconds(250);

double Rate(int64_t done, absl::Duration elapsed) {
  const double seconds = absl::ToDoubleSeconds(elapsed);
  return seconds > 0 ? static_cast<double>(done) / seconds : 0.0;
}

}  // namespace

Progress::Progress(std::string what, int64_t total, absl::Duration log_every)
    : what_(std::move(what)),
      total_(total),
      log_every_(log_every),
      tty_(::isatty(STDERR_FILENO) == 1),
      start_(absl::Now()),
      last_print_(start_) {}

Progress::~Progress() {
  absl::MutexLock lock(&mu_);
  PrintLocked(/*final=*/true);
}

void Progress::Add(int64_t n) {
  absl::MutexLock lock(&mu_);
  done_ += n;
  if (absl::Now() - last_print_ >= (tty_ ? kTtyInterval : log_every_)) PrintLocked(false);
}

void Progress::SetDetail(std::string detail) {
  absl::MutexLock lock(&mu_);
  detail_ = std::move(detail);
}

int64_t Progress::done() const {
  absl::MutexLock lock(&mu_);
  return done_;
}

void Progress::PrintLocked(bool final) {
  const absl::Time now = absl::Now();
  last_print_ = now;
  const absl::Duration elapsed = now - start_;
  const double rate = Rate(done_, elapsed);
  std::string line;
  if (final) {
    line = absl::StrFormat("%s: %d in %.1f s (%.0f/s)", what_, done_,
                           absl::ToDoubleSeconds(elapsed), rate);
  } else if (total_ > 0) {
    line = absl::StrFormat("%s: %d/%d (%.1f%%) %.0f/s", what_, done_, total_,
                           100.0 * static_cast<double>(done_) / static_cast<double>(total_), rate);
    if (rate > 0 && done_ < total_) {
      const int64_t eta = static_cast<int64_t>(static_cast<double>(total_ - done_) / rate);
      absl::StrAppendFormat(&line, " ETA %02d:%02d", eta / 60, eta % 60);
    }
  } else {
    line = absl::StrFormat("%s: %d %.0f/s", what_, done_, rate);
  }
  if (!detail_.empty()) absl::StrAppend(&line, ", ", detail_);
  if (tty_) {
    // Redraw in place; "\x1b[K" clears what a longer previous line left behind.
    std::fprintf(stderr, "\r%s\x1b[K%s", line.c_str(), final ? "\n" : "");
    std::fflush(stderr);
  } else {
    LOG(INFO) << line;
  }
}

}  // namespace choir
