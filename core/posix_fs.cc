// PosixFileSystem: the real file system, on POSIX system calls. Stateless, hence thread-safe.
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "core/fs.h"
#include "core/status.h"

namespace choir {
namespace {

constexpr size_t kWriteBufferSize = 64 << 10;

// Writes all of [data, data + n) to `fd`, retrying on EINTR and short writes.
absl::Status WriteFully(int fd, const char* data, size_t n, const std::string& path) {
  while (n > 0) {
    const ssize_t written = ::write(fd, data, n);
    if (written < 0) {
      if (errno == EINTR) continue;
      return ErrnoToStatus(errno, "write", path);
    }
    data += written;
    n -= static_cast<size_t>(written);
  }
  return absl::OkStatus();
}

// Buffers appends in memory and writes them in large chunks.
class PosixWritableFile : public WritableFile {
 public:
  PosixWritableFile(std::string path, int fd) : path_(std::move(path)), fd_(fd) {
    buffer_.reserve(kWriteBufferSize);
  }
  ~PosixWritableFile() override {
    if (fd_ >= 0) Close().IgnoreError();
  }

  absl::Status Append(absl::string_view data) override {
    RETURN_IF_ERROR(CheckOpen());
    if (buffer_.size() + data.size() <= kWriteBufferSize) {
      buffer_.append(data.data(), data.size());
      return absl::OkStatus();
    }
    RETURN_IF_ERROR(Flush());
    if (data.size() <= kWriteBufferSize) {
      buffer_.append(data.data(), data.size());
      return absl::OkStatus();
    }
    return WriteFully(fd_, data.data(), data.size(), path_);
  }

  absl::Status Sync() override {
    RETURN_IF_ERROR(CheckOpen());
    RETURN_IF_ERROR(Flush());
    if (::fsync(fd_) != 0) return ErrnoToStatus(errno, "fsync", path_);
    return absl::OkStatus();
  }

  absl::Status Close() override {
    RETURN_IF_ERROR(CheckOpen());
    absl::Status status = Flush();
    // The descriptor is released even when the flush failed; retrying close(2) is unsafe.
    if (::close(fd_) != 0 && status.ok()) status = ErrnoToStatus(errno, "close", path_);
    fd_ = -1;
    return status;
  }

  const std::string& path() const override { return path_; }

 private:
  absl::Status CheckOpen() const {
    if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("file is closed: ", path_));
    return absl::OkStatus();
  }
  absl::Status Flush() {
    absl::Status status = WriteFully(fd_, buffer_.data(), buffer_.size(), path_);
    buffer_.clear();
    return status;
  }

  const std::string path_;
  int fd_;  // -1 once closed
  std::string buffer_;
};

class MmapRegion : public ReadOnlyRegion {
 public:
  // `base` may be null when `size` is 0 (nothing mapped).
  MmapRegion(std::string path, void* base, size_t size)
      : path_(std::move(path)), base_(base), size_(size) {}
  ~MmapRegion() override {
    if (base_ != nullptr) ::munmap(base_, size_);
  }
  absl::string_view data() const override {
    return absl::string_view(static_cast<const char*>(base_), size_);
  }
  const std::string& path() const override { return path_; }

 private:
  const std::string path_;
  void* const base_;
  const size_t size_;
};

class PosixFs : public FileSystem {
 public:
  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, "open", path);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return ErrnoToStatus(errno, "open", path);
    return std::unique_ptr<WritableFile>(new PosixWritableFile(path, fd));
  }

  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open", path);
    struct stat st;
    if (::fstat(fd, &st) != 0) {
      absl::Status status = ErrnoToStatus(errno, "fstat", path);
      ::close(fd);
      return status;
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd);
      return absl::FailedPreconditionError(absl::StrCat("is a directory: ", path));
    }
    const size_t size = static_cast<size_t>(st.st_size);
    void* base = nullptr;
    if (size > 0) {
      base = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, fd, 0);
      if (base == MAP_FAILED) {
        absl::Status status = ErrnoToStatus(errno, "mmap", path);
        ::close(fd);
        return status;
      }
    }
    ::close(fd);  // the mapping stays valid without the descriptor
    return std::unique_ptr<ReadOnlyRegion>(new MmapRegion(path, base, size));
  }

  bool Exists(const std::string& path) override { return ::access(path.c_str(), F_OK) == 0; }

  bool IsDirectory(const std::string& path) override {
    struct stat st;
    return ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
  }

  absl::StatusOr<uint64_t> FileSize(const std::string& path) override {
    struct stat st;
    if (::stat(path.c_str(), &st) != 0) return ErrnoToStatus(errno, "stat", path);
    return static_cast<uint64_t>(st.st_size);
  }

  absl::Status CreateDirs(const std::string& path) override {
    if (path.empty()) return absl::InvalidArgumentError("CreateDirs: empty path");
    // Create each prefix ending before a '/', then the full path.
    for (size_t pos = path.find('/', 1);; pos = path.find('/', pos + 1)) {
      const std::string prefix = path.substr(0, pos);
      if (::mkdir(prefix.c_str(), 0755) != 0) {
        if (errno != EEXIST) return ErrnoToStatus(errno, "mkdir", prefix);
        if (!IsDirectory(prefix)) return ErrnoToStatus(ENOTDIR, "mkdir", prefix);
      }
      if (pos == std::string::npos) break;
    }
    return absl::OkStatus();
  }

  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override {
    DIR* dir = ::opendir(path.c_str());
    if (dir == nullptr) return ErrnoToStatus(errno, "opendir", path);
    std::vector<std::string> names;
    errno = 0;
    while (const struct dirent* entry = ::readdir(dir)) {
      const absl::string_view name = entry->d_name;
      if (name != "." && name != "..") names.emplace_back(name);
    }
    const int err = errno;
    ::closedir(dir);
    if (err != 0) return ErrnoToStatus(err, "readdir", path);
    std::sort(names.begin(), names.end());
    return names;
  }

  absl::Status Rename(const std::string& from, const std::string& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return ErrnoToStatus(errno, "rename", absl::StrCat(from, " -> ", to));
    }
    return absl::OkStatus();
  }

  absl::Status DeleteFile(const std::string& path) override {
    if (::unlink(path.c_str()) != 0) return ErrnoToStatus(errno, "unlink", path);
    return absl::OkStatus();
  }

  absl::Status DeleteRecursively(const std::string& path) override {
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT) return absl::OkStatus();
      return ErrnoToStatus(errno, "lstat", path);
    }
    if (!S_ISDIR(st.st_mode)) return DeleteFile(path);  // symlinks are removed, not followed
    ASSIGN_OR_RETURN(std::vector<std::string> names, ListDir(path));
    for (const std::string& name : names) {
      RETURN_IF_ERROR(DeleteRecursively(JoinPath(path, name)));
    }
    if (::rmdir(path.c_str()) != 0) return ErrnoToStatus(errno, "rmdir", path);
    return absl::OkStatus();
  }

  absl::Status SyncDir(const std::string& dir) override {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return ErrnoToStatus(errno, "open", dir);
    absl::Status status;
    if (::fsync(fd) != 0) status = ErrnoToStatus(errno, "fsync", dir);
    ::close(fd);
    return status;
  }
};

}  // namespace

FileSystem* PosixFileSystem() {
  static FileSystem* const fs = new PosixFs;  // never destroyed, usable during shutdown
  return fs;
}

}  // namespace choir
