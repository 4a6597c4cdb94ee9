#include <algorithm>

#include "core/fs.h"
#include "core/internal/string_region.h"
#include "core/status.h"
#include "absl/time/clock.h"

namespace choir {

// Passes appends to the base file until the file system's write budget is spent; the append
// that crosses the limit writes its admitted prefix and fails, as a crash mid-write would.
class FaultInjectingWritableFile : public WritableFile {
 public:
  FaultInjectingWritableFile(FaultInjectingFileSystem* fs, std::unique_ptr<WritableFile> base)
      : fs_(fs), base_(std::move(base)) {}

  absl::Status Append(absl::string_view data) override {
    const int64_t size = static_cast<int64_t>(data.size());
    const int64_t admitted = fs_->AdmitWrite(size);
    if (admitted > 0) {
      RETURN_IF_ERROR(base_->Append(data.substr(0, static_cast<size_t>(admitted))));
      written_ += admitted;
    }
    if (admitted < size) {
      return absl::UnavailableError(
          absl::StrCat("injected write failure after ", written_, " bytes: ", path()));
    }
    return absl::OkStatus();
  }
  absl::Status Sync() override {
    fs_->WaitOutSyncDelay();
    return base_->Sync();
  }
  absl::Status Close() override { return base_->Close(); }
  const std::string& path() const override { return base_->path(); }

 private:
  FaultInjectingFileSystem* const fs_;
  const std::unique_ptr<WritableFile> base_;
  int64_t written_ = 0;  // bytes that reached the base file
};

FaultInjectingFileSystem::FaultInjectingFileSystem(FileSystem* base) : base_(base) {}
FaultInjectingFileSystem::~FaultInjectingFileSystem() = default;

void FaultInjectingFileSystem::FailWritesAfterBytes(int64_t bytes) {
  absl::MutexLock lock(&mu_);
  write_budget_ = bytes;
}

void FaultInjectingFileSystem::FailNextRename() {
  absl::MutexLock lock(&mu_);
  fail_next_rename_ = true;
}

void FaultInjectingFileSystem::SlowDownSyncs(absl::Duration delay) {
  absl::MutexLock lock(&mu_);
  sync_delay_ = delay;
}

void FaultInjectingFileSystem::WaitOutSyncDelay() {
  absl::Duration delay;
  {
    absl::MutexLock lock(&mu_);
    delay = sync_delay_;
  }
  if (delay > absl::ZeroDuration()) absl::SleepFor(delay);
}

void FaultInjectingFileSystem::FailNextSyncDir() {
  absl::MutexLock lock(&mu_);
  fail_next_sync_dir_ = true;
}

void FaultInjectingFileSystem::CorruptReadsAtOffset(int64_t offset) {
  absl::MutexLock lock(&mu_);
  corrupt_offset_ = offset;
}

int64_t FaultInjectingFileSystem::faults_injected() const {
  absl::MutexLock lock(&mu_);
  return faults_;
}

int64_t FaultInjectingFileSystem::AdmitWrite(int64_t n) {
  absl::MutexLock lock(&mu_);
  if (write_budget_ < 0) return n;
  const int64_t admitted = std::min(n, write_budget_);
  write_budget_ -= admitted;
  if (admitted < n) ++faults_;
  return admitted;
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::NewWritableFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->NewWritableFile(path));
  return std::unique_ptr<WritableFile>(new FaultInjectingWritableFile(this, std::move(file)));
}

absl::StatusOr<std::unique_ptr<WritableFile>> FaultInjectingFileSystem::NewAppendableFile(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, base_->NewAppendableFile(path));
  return std::unique_ptr<WritableFile>(new FaultInjectingWritableFile(this, std::move(file)));
}

absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> FaultInjectingFileSystem::MapReadOnly(
    const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, base_->MapReadOnly(path));
  absl::MutexLock lock(&mu_);
  const absl::string_view data = region->data();
  if (corrupt_offset_ < 0 || static_cast<uint64_t>(corrupt_offset_) >= data.size()) {
    return region;
  }
  std::string copy(data);
  copy[static_cast<size_t>(corrupt_offset_)] ^= static_cast<char>(0xFF);
  ++faults_;
  return std::unique_ptr<ReadOnlyRegion>(new fs_internal::StringRegion(path, std::move(copy)));
}

bool FaultInjectingFileSystem::Exists(const std::string& path) { return base_->Exists(path); }

bool FaultInjectingFileSystem::IsDirectory(const std::string& path) {
  return base_->IsDirectory(path);
}

absl::StatusOr<uint64_t> FaultInjectingFileSystem::FileSize(const std::string& path) {
  return base_->FileSize(path);
}

absl::Status FaultInjectingFileSystem::CreateDirs(const std::string& path) {
  return base_->CreateDirs(path);
}

absl::StatusOr<std::vector<std::string>> FaultInjectingFileSystem::ListDir(
    const std::string& path) {
  return base_->ListDir(path);
}

absl::Status FaultInjectingFileSystem::Rename(const std::string& from, const std::string& to) {
  {
    absl::MutexLock lock(&mu_);
    if (fail_next_rename_) {
      fail_next_rename_ = false;
      ++faults_;
      return absl::UnavailableError(absl::StrCat("injected rename failure: ", from, " -> ", to));
    }
  }
  return base_->Rename(from, to);
}

absl::Status FaultInjectingFileSystem::DeleteFile(const std::string& path) {
  return base_->DeleteFile(path);
}

absl::Status FaultInjectingFileSystem::DeleteRecursively(const std::string& path) {
  return base_->DeleteRecursively(path);
}

absl::Status FaultInjectingFileSystem::SyncDir(const std::string& dir) {
  WaitOutSyncDelay();
  {
    absl::MutexLock lock(&mu_);
    if (fail_next_sync_dir_) {
      fail_next_sync_dir_ = false;
      ++faults_;
      return absl::UnavailableError(absl::StrCat("injected directory sync failure: ", dir));
    }
  }
  return base_->SyncDir(dir);
}

}  // namespace choir
