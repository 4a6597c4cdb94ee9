// Pieces shared by the transport implementations (core/transport.h); not a public interface.
#ifndef CHOIR_CORE_INTERNAL_TRANSPORT_INTERNAL_H_
#define CHOIR_CORE_INTERNAL_TRANSPORT_INTERNAL_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/transport.h"

namespace choir {
namespace transport_internal {

// The receiving side's check of an incoming header: its version is kProtocolVersion, its
// sender claim equals the transport-level sender `from` and that peer is known. The message
// says which check failed.
absl::Status CheckEnvelope(const transport::Header& header, absl::string_view from,
                           bool from_known);

// Logs the rejection and calls options.on_reject (no lock may be held by the caller).
void Reject(const transport::EndpointOptions& options, absl::string_view from,
            const absl::Status& reason);

// A status from a failed ZeroMQ call: the expression, file:line and zmq_strerror.
// EHOSTUNREACH, EAGAIN and ETERM map to UNAVAILABLE, EINVAL to INVALID_ARGUMENT, EADDRINUSE to
// ALREADY_EXISTS, the rest to INTERNAL.
absl::Status ZmqErrorToStatus(int err, absl::string_view expr, absl::string_view where);

}  // namespace transport_internal
}  // namespace choir

// Converts a ZeroMQ C API return code (-1 and zmq_errno() on failure) at the call site, the
// ZeroMQ member of the family of CHOIR_SYSCALL (core/status.h): returns the status from the
// enclosing function.
#define CHOIR_ZMQ_CALL(expr)                                            \
  do {                                                                  \
    if ((expr) == -1) {                                                 \
      return ::choir::transport_internal::ZmqErrorToStatus(             \
          zmq_errno(), #expr, ::absl::StrCat(__FILE__, ":", __LINE__)); \
    }                                                                   \
  } while (0)

#endif  // CHOIR_CORE_INTERNAL_TRANSPORT_INTERNAL_H_
