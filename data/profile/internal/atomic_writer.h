// A buffered text file written through "<path>.tmp" and renamed into place on Commit(), so a
// reader never sees a half-written file. Not thread-safe.
#ifndef CHOIR_DATA_PROFILE_INTERNAL_ATOMIC_WRITER_H_
#define CHOIR_DATA_PROFILE_INTERNAL_ATOMIC_WRITER_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "core/fs.h"
#include "core/status.h"

namespace choir::data::profile_internal {

class AtomicTextWriter {
 public:
  AtomicTextWriter(FileSystem* fs, std::string path) : fs_(fs), path_(std::move(path)) {}
  // Without a successful Commit() the temporary file is deleted and `path` is untouched.
  ~AtomicTextWriter() {
    if (file_ != nullptr) {
      file_->Close().IgnoreError();
      fs_->DeleteFile(tmp_path()).IgnoreError();
    }
  }
  AtomicTextWriter(const AtomicTextWriter&) = delete;
  AtomicTextWriter& operator=(const AtomicTextWriter&) = delete;

  std::string tmp_path() const { return path_ + ".tmp"; }

  absl::Status Open() {
    ASSIGN_OR_RETURN(file_, fs_->NewWritableFile(tmp_path()));
    return absl::OkStatus();
  }
  absl::Status Append(absl::string_view s) {
    buffer_.append(s.data(), s.size());
    return buffer_.size() < kFlushBytes ? absl::OkStatus() : Flush();
  }
  // Writes the buffer out and syncs the temporary file (a checkpoint that survives a crash).
  absl::Status SyncTmp() {
    RETURN_IF_ERROR(Flush());
    return file_->Sync();
  }
  // Flushes, syncs, closes and renames the temporary file to `path`, then syncs the directory.
  absl::Status Commit() {
    RETURN_IF_ERROR(SyncTmp());
    RETURN_IF_ERROR(file_->Close());
    file_.reset();
    absl::Status s = fs_->Rename(tmp_path(), path_);
    if (!s.ok()) {
      fs_->DeleteFile(tmp_path()).IgnoreError();
      return s;
    }
    return fs_->SyncDir(Dirname(path_));
  }

 private:
  static constexpr size_t kFlushBytes = size_t{1} << 20;

  absl::Status Flush() {
    if (buffer_.empty()) return absl::OkStatus();
    RETURN_IF_ERROR(file_->Append(buffer_));
    buffer_.clear();
    return absl::OkStatus();
  }

  FileSystem* fs_;
  std::string path_;
  std::unique_ptr<WritableFile> file_;
  std::string buffer_;
};

}  // namespace choir::data::profile_internal

#endif  // CHOIR_DATA_PROFILE_INTERNAL_ATOMIC_WRITER_H_
