// Error handling for Choir.
//
// Error policy (after gloo): recoverable errors -- bad bytes from a file, a peer or a user,
// a failed system call -- are returned as absl::Status / absl::StatusOr<T> with the code that
// says what happened (INVALID_ARGUMENT, NOT_FOUND, DATA_LOSS, UNAVAILABLE, DEADLINE_EXCEEDED,
// FAILED_PRECONDITION, RESOURCE_EXHAUSTED). A broken invariant inside this process is a bug and
// is asserted with CHECK. Never CHECK on input.
#ifndef CHOIR_CORE_STATUS_H_
#define CHOIR_CORE_STATUS_H_

#include <cerrno>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

namespace choir {

// Builds a status from errno after a failed system call, naming what was attempted and on
// which path: "open(/x/y): No such file or directory". ENOENT maps to NOT_FOUND, ENOSPC and
// EDQUOT to RESOURCE_EXHAUSTED, EACCES/EPERM to PERMISSION_DENIED, the rest to INTERNAL.
absl::Status ErrnoToStatus(int err, absl::string_view what, absl::string_view path);

// Returns `status` with `context` prepended to its message ("context: message"); OK stays OK.
absl::Status Annotate(const absl::Status& status, absl::string_view context);

namespace status_internal {
inline absl::Status AsStatus(const absl::Status& s) { return s; }
template <typename T>
inline absl::Status AsStatus(const absl::StatusOr<T>& s) {
  return s.status();
}
}  // namespace status_internal

}  // namespace choir

#define CHOIR_STATUS_CONCAT_INNER_(a, b) a##b
#define CHOIR_STATUS_CONCAT_(a, b) CHOIR_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function when `expr` (a Status or StatusOr) is not OK.
#define RETURN_IF_ERROR(expr)                                                       \
  do {                                                                              \
    ::absl::Status choir_status_ = ::choir::status_internal::AsStatus((expr));      \
    if (!choir_status_.ok()) return choir_status_;                                  \
  } while (0)

// ASSIGN_OR_RETURN(auto x, MakeX()); declares/assigns `lhs` from the StatusOr value, or
// returns its error.
#define ASSIGN_OR_RETURN(lhs, expr)                                                   \
  auto CHOIR_STATUS_CONCAT_(choir_statusor_, __LINE__) = (expr);                      \
  if (!CHOIR_STATUS_CONCAT_(choir_statusor_, __LINE__).ok())                          \
    return CHOIR_STATUS_CONCAT_(choir_statusor_, __LINE__).status();                  \
  lhs = std::move(CHOIR_STATUS_CONCAT_(choir_statusor_, __LINE__)).value()

// Converts a C return code of a system call (-1 and errno on failure) at the call site into a
// status that records the expression, file and line. Later, ZeroMQ/MPI/CUDA/NCCL calls get
// sibling macros of the same family.
#define CHOIR_SYSCALL(expr)                                                              \
  do {                                                                                   \
    if ((expr) == -1) {                                                                  \
      return ::choir::ErrnoToStatus(errno, #expr, ::absl::StrCat(__FILE__, ":", __LINE__)); \
    }                                                                                    \
  } while (0)

#endif  // CHOIR_CORE_STATUS_H_
