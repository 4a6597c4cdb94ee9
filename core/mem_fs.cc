// MemFileSystem: files and directories in maps under one mutex. Paths are normalised
// ("/a//b/./c" and "a/b/c" name the same file); the root "" always exists. Directories are
// recorded explicitly (CreateDirs, SetContents) so that the tree behaves like a posix one.
#include <mutex>
#include <set>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "core/internal/string_region.h"
#include "core/status.h"

namespace choir {
namespace {

std::string Normalize(absl::string_view path) {
  std::vector<absl::string_view> parts;
  for (absl::string_view part : absl::StrSplit(path, '/', absl::SkipEmpty())) {
    if (part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  return absl::StrJoin(parts, "/");
}

std::string Parent(const std::string& normalized) {
  const size_t slash = normalized.rfind('/');
  return slash == std::string::npos ? std::string() : normalized.substr(0, slash);
}

// True when `path` lies strictly below directory `dir` (both normalised).
bool IsBelow(absl::string_view path, absl::string_view dir) {
  if (dir.empty()) return !path.empty();
  return path.size() > dir.size() && absl::StartsWith(path, dir) && path[dir.size()] == '/';
}

class MemWritableFile : public WritableFile {
 public:
  // `mu` is the file system's mutex, kept alive (with the rest of its state) by this pointer.
  MemWritableFile(std::string path, std::shared_ptr<std::mutex> mu,
                  std::shared_ptr<std::string> contents)
      : path_(std::move(path)), mu_(std::move(mu)), contents_(std::move(contents)) {}

  absl::Status Append(absl::string_view data) override {
    RETURN_IF_ERROR(CheckOpen());
    std::lock_guard<std::mutex> lock(*mu_);
    contents_->append(data.data(), data.size());
    return absl::OkStatus();
  }
  absl::Status Sync() override { return CheckOpen(); }
  absl::Status Close() override {
    RETURN_IF_ERROR(CheckOpen());
    closed_ = true;
    return absl::OkStatus();
  }
  const std::string& path() const override { return path_; }

 private:
  absl::Status CheckOpen() const {
    if (closed_) return absl::FailedPreconditionError(absl::StrCat("file is closed: ", path_));
    return absl::OkStatus();
  }

  const std::string path_;
  const std::shared_ptr<std::mutex> mu_;
  const std::shared_ptr<std::string> contents_;  // guarded by *mu_
  bool closed_ = false;
};

absl::Status NotFound(absl::string_view what, absl::string_view path) {
  return ErrnoToStatus(ENOENT, what, path);
}

}  // namespace

struct MemFileSystem::State {
  // std::mutex (not absl::Mutex) so that ThreadSanitizer sees the locking: Debian's abseil
  // is not built with it, and the cluster tests write files from several threads.
  std::mutex mu;
  // Contents are shared with open writers: a renamed or deleted file keeps receiving the
  // writes of a writer opened before, as an inode would.
  std::map<std::string, std::shared_ptr<std::string>> files;  // guarded by mu
  std::set<std::string> dirs;  // guarded by mu; excluding the root

  bool IsDirLocked(const std::string& p) {  // requires mu
    return p.empty() || dirs.count(p) > 0;
  }

  // The contents of the file at normalised path `p` (`path` as the caller spelled it, for
  // errors): NOT_FOUND when absent, FAILED_PRECONDITION for a directory.
  absl::StatusOr<std::shared_ptr<std::string>> FindFileLocked(const std::string& p,
                                                              const std::string& path,
                                                              absl::string_view what) {
    // requires mu
    auto it = files.find(p);
    if (it != files.end()) return it->second;
    if (IsDirLocked(p)) {
      return absl::FailedPreconditionError(absl::StrCat("is a directory: ", path));
    }
    return NotFound(what, path);
  }
};

MemFileSystem::MemFileSystem() : state_(std::make_shared<State>()) {}
MemFileSystem::~MemFileSystem() = default;

absl::StatusOr<std::unique_ptr<WritableFile>> MemFileSystem::NewWritableFile(
    const std::string& path) {
  const std::string p = Normalize(path);
  auto contents = std::make_shared<std::string>();
  std::lock_guard<std::mutex> lock(state_->mu);
  if (p.empty() || state_->IsDirLocked(p)) return ErrnoToStatus(EISDIR, "open", path);
  if (!state_->IsDirLocked(Parent(p))) return NotFound("open", path);
  state_->files[p] = contents;
  std::shared_ptr<std::mutex> mu(state_, &state_->mu);  // aliasing: owns the whole state
  return std::unique_ptr<WritableFile>(
      new MemWritableFile(path, std::move(mu), std::move(contents)));
}

absl::StatusOr<std::unique_ptr<WritableFile>> MemFileSystem::NewAppendableFile(
    const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  if (p.empty() || state_->IsDirLocked(p)) return ErrnoToStatus(EISDIR, "open", path);
  if (!state_->IsDirLocked(Parent(p))) return NotFound("open", path);
  std::shared_ptr<std::string>& contents = state_->files[p];
  if (contents == nullptr) contents = std::make_shared<std::string>();
  std::shared_ptr<std::mutex> mu(state_, &state_->mu);  // aliasing: owns the whole state
  return std::unique_ptr<WritableFile>(new MemWritableFile(path, std::move(mu), contents));
}

absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MemFileSystem::MapReadOnly(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::string contents, GetContents(path));
  return std::unique_ptr<ReadOnlyRegion>(new fs_internal::StringRegion(path, std::move(contents)));
}

bool MemFileSystem::Exists(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->files.count(p) > 0 || state_->IsDirLocked(p);
}

bool MemFileSystem::IsDirectory(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  return state_->IsDirLocked(p);
}

absl::StatusOr<uint64_t> MemFileSystem::FileSize(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  ASSIGN_OR_RETURN(std::shared_ptr<std::string> contents, state_->FindFileLocked(p, path, "stat"));
  return static_cast<uint64_t>(contents->size());
}

absl::Status MemFileSystem::CreateDirs(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("CreateDirs: empty path");
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  // Check every prefix first so that a failure creates nothing.
  for (std::string dir = p; !dir.empty(); dir = Parent(dir)) {
    if (state_->files.count(dir) > 0) return ErrnoToStatus(ENOTDIR, "mkdir", dir);
  }
  for (std::string dir = p; !dir.empty(); dir = Parent(dir)) state_->dirs.insert(dir);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<std::string>> MemFileSystem::ListDir(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->IsDirLocked(p)) {
    if (state_->files.count(p) > 0) return ErrnoToStatus(ENOTDIR, "opendir", path);
    return NotFound("opendir", path);
  }
  // Direct children only: entries below `p` whose remaining name has no '/'.
  std::set<std::string> names;
  const size_t skip = p.empty() ? 0 : p.size() + 1;
  auto add_children = [&](const auto& sorted, auto key) {
    for (auto it = sorted.lower_bound(p); it != sorted.end(); ++it) {
      const std::string& entry = key(*it);
      if (!p.empty() && !absl::StartsWith(entry, p)) break;
      if (!IsBelow(entry, p)) continue;
      absl::string_view rest = absl::string_view(entry).substr(skip);
      if (rest.find('/') == absl::string_view::npos) names.emplace(rest);
    }
  };
  add_children(state_->files, [](const auto& kv) -> const std::string& { return kv.first; });
  add_children(state_->dirs, [](const std::string& d) -> const std::string& { return d; });
  return std::vector<std::string>(names.begin(), names.end());
}

absl::Status MemFileSystem::Rename(const std::string& from, const std::string& to) {
  const std::string f = Normalize(from);
  const std::string t = Normalize(to);
  const std::string what = absl::StrCat(from, " -> ", to);
  std::lock_guard<std::mutex> lock(state_->mu);
  if (!state_->IsDirLocked(Parent(t))) return NotFound("rename", what);
  auto it = state_->files.find(f);
  if (it != state_->files.end()) {
    if (state_->IsDirLocked(t)) return ErrnoToStatus(EISDIR, "rename", what);
    std::shared_ptr<std::string> contents = it->second;
    state_->files.erase(it);
    state_->files[t] = std::move(contents);
    return absl::OkStatus();
  }
  if (f.empty() || !state_->IsDirLocked(f)) return NotFound("rename", what);
  // Directory: `to` must not be a file or a non-empty directory, nor lie below `from`.
  if (f == t) return absl::OkStatus();
  if (IsBelow(t, f)) return ErrnoToStatus(EINVAL, "rename", what);
  if (state_->files.count(t) > 0) return ErrnoToStatus(ENOTDIR, "rename", what);
  for (const auto& [name, unused] : state_->files) {
    if (IsBelow(name, t)) return ErrnoToStatus(ENOTEMPTY, "rename", what);
  }
  for (const std::string& dir : state_->dirs) {
    if (IsBelow(dir, t)) return ErrnoToStatus(ENOTEMPTY, "rename", what);
  }
  auto moved = [&](const std::string& name) { return t + name.substr(f.size()); };
  std::map<std::string, std::shared_ptr<std::string>> files;
  for (auto& [name, contents] : state_->files) {
    files[IsBelow(name, f) ? moved(name) : name] = std::move(contents);
  }
  std::set<std::string> dirs;
  for (const std::string& dir : state_->dirs) {
    dirs.insert(dir == f || IsBelow(dir, f) ? moved(dir) : dir);
  }
  state_->files = std::move(files);
  state_->dirs = std::move(dirs);
  return absl::OkStatus();
}

absl::Status MemFileSystem::DeleteFile(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->files.erase(p) > 0) return absl::OkStatus();
  if (state_->IsDirLocked(p)) return ErrnoToStatus(EISDIR, "unlink", path);
  return NotFound("unlink", path);
}

absl::Status MemFileSystem::DeleteRecursively(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  for (auto it = state_->files.begin(); it != state_->files.end();) {
    it = (it->first == p || IsBelow(it->first, p)) ? state_->files.erase(it) : std::next(it);
  }
  for (auto it = state_->dirs.begin(); it != state_->dirs.end();) {
    it = (*it == p || IsBelow(*it, p)) ? state_->dirs.erase(it) : std::next(it);
  }
  return absl::OkStatus();
}

absl::Status MemFileSystem::SyncDir(const std::string& dir) {
  // Nothing to make durable; only the existence checks of the posix call remain.
  const std::string p = Normalize(dir);
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->IsDirLocked(p)) return absl::OkStatus();
  if (state_->files.count(p) > 0) return ErrnoToStatus(ENOTDIR, "open", dir);
  return NotFound("open", dir);
}

absl::StatusOr<std::string> MemFileSystem::GetContents(const std::string& path) {
  const std::string p = Normalize(path);
  std::lock_guard<std::mutex> lock(state_->mu);
  ASSIGN_OR_RETURN(std::shared_ptr<std::string> contents, state_->FindFileLocked(p, path, "open"));
  return *contents;
}

absl::Status MemFileSystem::SetContents(const std::string& path, std::string contents) {
  const std::string p = Normalize(path);
  if (p.empty()) return ErrnoToStatus(EISDIR, "open", path);
  RETURN_IF_ERROR(CreateDirs(Parent(p).empty() ? "/" : Parent(p)));
  std::lock_guard<std::mutex> lock(state_->mu);
  if (state_->IsDirLocked(p)) return ErrnoToStatus(EISDIR, "open", path);
  state_->files[p] = std::make_shared<std::string>(std::move(contents));
  return absl::OkStatus();
}

}  // namespace choir
