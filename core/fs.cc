#include "core/fs.h"

#include "core/status.h"

namespace choir {

absl::StatusOr<std::string> FileSystem::ReadFileToString(const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, MapReadOnly(path));
  return std::string(region->data());
}

absl::Status FileSystem::WriteStringToFileAtomic(const std::string& path,
                                                 absl::string_view contents) {
  const std::string tmp = path + ".tmp";
  absl::Status status = [&]() -> absl::Status {
    ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, NewWritableFile(tmp));
    RETURN_IF_ERROR(file->Append(contents));
    RETURN_IF_ERROR(file->Sync());
    RETURN_IF_ERROR(file->Close());
    return Rename(tmp, path);
  }();
  // The new contents are in place; the directory sync makes the rename itself durable.
  if (status.ok()) return SyncDir(Dirname(path));
  if (!status.ok()) {
    // Best effort: do not leave a half-written temporary behind. The destination is untouched.
    DeleteFile(tmp).IgnoreError();
  }
  return status;
}

std::string JoinPath(absl::string_view a, absl::string_view b) {
  if (a.empty()) return std::string(b);
  if (b.empty()) return std::string(a);
  const bool a_slash = a.back() == '/';
  const bool b_slash = b.front() == '/';
  if (a_slash && b_slash) return absl::StrCat(a, b.substr(1));
  if (a_slash || b_slash) return absl::StrCat(a, b);
  return absl::StrCat(a, "/", b);
}

std::string JoinPath(absl::string_view a, absl::string_view b, absl::string_view c) {
  return JoinPath(JoinPath(a, b), c);
}

std::string Dirname(absl::string_view path) {
  const size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  if (slash == 0) return "/";
  return std::string(path.substr(0, slash));
}

}  // namespace choir
