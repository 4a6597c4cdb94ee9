// Progress of long work: a single updating line (count, rate, ETA) when stderr is a terminal,
// a plain log line every `log_every` otherwise, so that logs of batch jobs stay readable.
#ifndef CHOIR_CORE_PROGRESS_H_
#define CHOIR_CORE_PROGRESS_H_

#include <cstdint>
#include <string>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace choir {

class Progress {
 public:
  // `what` names the work ("users generated"); `total` 0 when unknown (no ETA shown).
  Progress(std::string what, int64_t total, absl::Duration log_every = absl::Seconds(10));
  // Prints the final line (count, elapsed, average rate).
  ~Progress();

  // Adds `n` done units. Thread-safe; prints at most a few times a second.
  void Add(int64_t n);
  // Sets a short text shown at the end of the line (e.g. "loss 0.3841"). Thread-safe.
  void SetDetail(std::string detail);
  int64_t done() const;

 private:
  void PrintLocked(bool final) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::string what_;
  const int64_t total_;
  const absl::Duration log_every_;
  const bool tty_;
  const absl::Time start_;
  mutable absl::Mutex mu_;
  int64_t done_ ABSL_GUARDED_BY(mu_) = 0;
  std::string detail_ ABSL_GUARDED_BY(mu_);
  absl::Time last_print_ ABSL_GUARDED_BY(mu_);
};

}  // namespace choir

#endif  // CHOIR_CORE_PROGRESS_H_
