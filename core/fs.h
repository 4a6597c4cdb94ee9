// The file-system interface every Choir module uses for files (after leveldb's Env).
//
// Three implementations:
//   - PosixFileSystem(): the real one (POSIX I/O, mmap for reads). Thread-safe.
//   - MemFileSystem: in memory, for tests. Thread-safe.
//   - FaultInjectingFileSystem: wraps another and fails chosen operations on purpose
//     (a write that fails after N bytes, a rename that fails, a read that returns flipped
//     bytes), so tests can check that nothing half-written is ever taken for a whole file.
// Paths are plain strings with '/' separators; relative paths are relative to the process's
// working directory (posix) or to the root (mem).
#ifndef CHOIR_CORE_FS_H_
#define CHOIR_CORE_FS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace choir {

// A file open for appending. Not thread-safe; one writer per file.
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual absl::Status Append(absl::string_view data) = 0;
  // Flushes buffered data and makes it durable (fsync on posix).
  virtual absl::Status Sync() = 0;
  // Flushes and closes. Further calls fail. The destructor closes without reporting errors.
  virtual absl::Status Close() = 0;
  virtual const std::string& path() const = 0;
};

// A whole file mapped (or loaded) read-only into memory. data() stays valid for the object's
// lifetime. Thread-safe to read.
class ReadOnlyRegion {
 public:
  virtual ~ReadOnlyRegion() = default;
  virtual absl::string_view data() const = 0;
  virtual const std::string& path() const = 0;
};

class FileSystem {
 public:
  virtual ~FileSystem() = default;

  // Creates (or truncates) `path`. The parent directory must exist.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(
      const std::string& path) = 0;
  // Opens `path` for appending after its current contents, creating it (empty) when absent.
  // The parent directory must exist. For append-only logs that must keep what earlier runs
  // wrote.
  virtual absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(
      const std::string& path) = 0;
  // Maps the whole file read-only (mmap on posix). NOT_FOUND when absent.
  virtual absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapReadOnly(
      const std::string& path) = 0;

  virtual bool Exists(const std::string& path) = 0;
  virtual bool IsDirectory(const std::string& path) = 0;
  virtual absl::StatusOr<uint64_t> FileSize(const std::string& path) = 0;
  // Creates `path` and any missing parents; OK when it already exists as a directory.
  virtual absl::Status CreateDirs(const std::string& path) = 0;
  // Names (not paths) of the entries of a directory, sorted.
  virtual absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) = 0;
  // Atomically replaces `to` by `from` (rename(2)).
  virtual absl::Status Rename(const std::string& from, const std::string& to) = 0;
  virtual absl::Status DeleteFile(const std::string& path) = 0;
  // Removes a directory and everything below it; OK when absent.
  virtual absl::Status DeleteRecursively(const std::string& path) = 0;
  // Makes the entries of directory `dir` durable (fsync of the directory on posix), so that a
  // file created or renamed into it survives a power loss: a rename is only durable once its
  // directory is synced. NOT_FOUND when `dir` is absent.
  virtual absl::Status SyncDir(const std::string& dir) = 0;

  // Convenience helpers built on the calls above.
  absl::StatusOr<std::string> ReadFileToString(const std::string& path);
  // Writes `path` atomically and durably: to "path.tmp", synced, renamed over `path`, then the
  // parent directory synced. After a crash `path` holds the old or the new contents, never a
  // mix; after an OK return it holds the new ones even across a power loss.
  absl::Status WriteStringToFileAtomic(const std::string& path, absl::string_view contents);
};

// The process-wide real file system. Never null; not owned by the caller.
FileSystem* PosixFileSystem();

// Joins path components with '/', without doubling separators.
std::string JoinPath(absl::string_view a, absl::string_view b);
std::string JoinPath(absl::string_view a, absl::string_view b, absl::string_view c);
// The directory part of `path`: "a/b" for "a/b/c", "/" for "/c", "." for "c".
std::string Dirname(absl::string_view path);

// In-memory file system for tests. Directories are implicit for files but CreateDirs records
// empty ones too. Nothing is lost in a crash, so SyncDir only checks that the directory exists.
// Files behave like inodes: a writer keeps appending to the file it opened even after that file
// is renamed (the new name sees the appends) or deleted (nobody sees them), and a mapped region
// is a snapshot that later writes, renames and deletes do not change.
class MemFileSystem : public FileSystem {
 public:
  MemFileSystem();
  ~MemFileSystem() override;

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override;
  bool Exists(const std::string& path) override;
  bool IsDirectory(const std::string& path) override;
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override;
  absl::Status CreateDirs(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status DeleteFile(const std::string& path) override;
  absl::Status DeleteRecursively(const std::string& path) override;
  absl::Status SyncDir(const std::string& dir) override;

  // Test access to the raw bytes of a file (e.g. to truncate or corrupt it).
  absl::StatusOr<std::string> GetContents(const std::string& path);
  absl::Status SetContents(const std::string& path, std::string contents);

 private:
  struct State;
  std::shared_ptr<State> state_;  // shared with open WritableFiles
};

// Wraps `base` (not owned) and injects faults. Each knob is one-shot or persistent as
// documented; all are off by default. Thread-safe.
class FaultInjectingFileSystem : public FileSystem {
 public:
  explicit FaultInjectingFileSystem(FileSystem* base);
  ~FaultInjectingFileSystem() override;

  // Appends fail with an I/O error (UNAVAILABLE "injected") once `bytes` more bytes have been
  // written in total across files; the bytes before the limit do reach the base file, as in a
  // crash mid-write. Negative disables.
  void FailWritesAfterBytes(int64_t bytes);
  // The next Rename fails (and does nothing). One-shot.
  void FailNextRename();
  // The next SyncDir fails (UNAVAILABLE "injected"), as after an I/O error on the directory;
  // other calls pass through to the base. One-shot.
  void FailNextSyncDir();
  // From now on every file Sync and SyncDir waits `delay` before passing through, as on a slow
  // or busy disk. Zero disables.
  void SlowDownSyncs(absl::Duration delay);
  // Regions mapped from now on have the byte at `offset` XOR-ed with 0xFF (a flipped byte as
  // from bad media). Negative disables.
  void CorruptReadsAtOffset(int64_t offset);
  // Number of faults injected so far.
  int64_t faults_injected() const;

  absl::StatusOr<std::unique_ptr<WritableFile>> NewWritableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<WritableFile>> NewAppendableFile(const std::string& path) override;
  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> MapReadOnly(const std::string& path) override;
  bool Exists(const std::string& path) override;
  bool IsDirectory(const std::string& path) override;
  absl::StatusOr<uint64_t> FileSize(const std::string& path) override;
  absl::Status CreateDirs(const std::string& path) override;
  absl::StatusOr<std::vector<std::string>> ListDir(const std::string& path) override;
  absl::Status Rename(const std::string& from, const std::string& to) override;
  absl::Status DeleteFile(const std::string& path) override;
  absl::Status DeleteRecursively(const std::string& path) override;
  absl::Status SyncDir(const std::string& dir) override;

 private:
  friend class FaultInjectingWritableFile;
  // Returns how many of `n` bytes may still be written before the injected failure.
  int64_t AdmitWrite(int64_t n);
  // Sleeps for SlowDownSyncs's delay.
  void WaitOutSyncDelay();

  FileSystem* const base_;
  mutable absl::Mutex mu_;
  int64_t write_budget_ ABSL_GUARDED_BY(mu_) = -1;
  bool fail_next_rename_ ABSL_GUARDED_BY(mu_) = false;
  bool fail_next_sync_dir_ ABSL_GUARDED_BY(mu_) = false;
  absl::Duration sync_delay_ ABSL_GUARDED_BY(mu_);
  int64_t corrupt_offset_ ABSL_GUARDED_BY(mu_) = -1;
  int64_t faults_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace choir

#endif  // CHOIR_CORE_FS_H_
