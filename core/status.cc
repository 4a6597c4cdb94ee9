#include "core/status.h"

#include <cstring>

namespace choir {

absl::Status ErrnoToStatus(int err, absl::string_view what, absl::string_view path) {
  // strerror_r has two incompatible signatures; strerror is fine here since the message is
  // copied immediately and glibc's strerror is thread-safe for known codes.
  std::string message = absl::StrCat(what, "(", path, "): ", std::strerror(err));
  switch (err) {
    case ENOENT:
      return absl::NotFoundError(message);
    case ENOSPC:
    case EDQUOT:
      return absl::ResourceExhaustedError(message);
    case EACCES:
    case EPERM:
      return absl::PermissionDeniedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::Status Annotate(const absl::Status& status, absl::string_view context) {
  if (status.ok()) return status;
  absl::Status annotated(status.code(), absl::StrCat(context, ": ", status.message()));
  status.ForEachPayload([&](absl::string_view type_url, const absl::Cord& payload) {
    annotated.SetPayload(type_url, payload);
  });
  return annotated;
}

}  // namespace choir
