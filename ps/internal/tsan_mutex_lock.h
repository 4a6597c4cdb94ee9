// TsanMutexLock: absl::MutexLock that also tells ThreadSanitizer about the lock.
//
// Debian's abseil is prebuilt without TSan, and Choir's TSan build undefines
// __SANITIZE_THREAD__ (cmake/ChoirHelpers.cmake), so absl::Mutex's futex-based locking is
// invisible to TSan and every access guarded by it is reported as a race. Under
// CHOIR_TSAN_ANNOTATE_LOCKS (set by ps/CMakeLists.txt when CHOIR_SANITIZE=thread) this lock
// adds the happens-before edges a mutex gives: acquire after locking, release before
// unlocking. It hides no real race: accesses outside the lock stay unordered. Elsewhere it is
// exactly absl::MutexLock.
#ifndef CHOIR_PS_INTERNAL_TSAN_MUTEX_LOCK_H_
#define CHOIR_PS_INTERNAL_TSAN_MUTEX_LOCK_H_

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

#if CHOIR_TSAN_ANNOTATE_LOCKS
#include <sanitizer/tsan_interface.h>
#endif

namespace choir {
namespace ps_internal {

class ABSL_SCOPED_LOCKABLE TsanMutexLock {
 public:
  explicit TsanMutexLock(absl::Mutex* mu) ABSL_EXCLUSIVE_LOCK_FUNCTION(mu) : mu_(mu) {
    mu_->Lock();
#if CHOIR_TSAN_ANNOTATE_LOCKS
    __tsan_acquire(mu_);
#endif
  }
  ~TsanMutexLock() ABSL_UNLOCK_FUNCTION() {
#if CHOIR_TSAN_ANNOTATE_LOCKS
    __tsan_release(mu_);
#endif
    mu_->Unlock();
  }

  TsanMutexLock(const TsanMutexLock&) = delete;
  TsanMutexLock& operator=(const TsanMutexLock&) = delete;

 private:
  absl::Mutex* const mu_;
};

}  // namespace ps_internal
}  // namespace choir

#endif  // CHOIR_PS_INTERNAL_TSAN_MUTEX_LOCK_H_
