// Checkpoints on a FileSystem (DESIGN.md 7, docs/checkpoints.md).
//
// A checkpoint of step N is the directory ROOT/step-<N, 12 digits> holding data files (the
// sparse rows of each shard, the dense parameters, ...) and MANIFEST.json, written last and
// atomically: the commit point. The manifest names every file with its size and CRC32C, the
// format version, the step and a JSON object of metadata (the job, the trainer's counters),
// and ends with a line "crc32c <hex>" checking the manifest itself.
// A directory without a manifest was cut short while being written: it is never taken as the
// latest, and Prune removes it. One whose manifest is there but unreadable (a damaged or edited
// file, another step) is damaged: FindLatest refuses to pass over it to an older checkpoint. Every read checks the file against the manifest,
// so a truncated file or a flipped byte is DATA_LOSS naming the file.
//
// Files are written durably (synced, then the directory) before the manifest. Several writers
// (the parameter servers of a cluster on a shared file system) may add files to the same
// checkpoint directory; one of them commits.
#ifndef CHOIR_CHECKPOINT_CHECKPOINT_H_
#define CHOIR_CHECKPOINT_CHECKPOINT_H_

#include <cstdint>
#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/fs.h"
#include "nlohmann/json.hpp"

namespace choir::checkpoint {

// The format this build writes and reads; a manifest with another version is rejected.
inline constexpr int kFormatVersion = 1;
inline constexpr char kManifestName[] = "MANIFEST.json";

// ROOT/step-000000000123.
std::string CheckpointDir(const std::string& root, int64_t step);

// What a manifest records of one data file.
struct FileInfo {
  uint64_t bytes = 0;
  uint32_t crc32c = 0;
};

// Writes one file of a checkpoint, durably, and returns what the manifest records of it.
absl::StatusOr<FileInfo> WriteCheckpointFile(FileSystem* fs, const std::string& dir,
                                             const std::string& name, absl::string_view bytes);

class Writer {
 public:
  // Starts the checkpoint of `step` under `root`; an unfinished directory of the same step (no
  // manifest) is cleared first. FAILED_PRECONDITION when that step is already committed.
  static absl::StatusOr<Writer> Begin(FileSystem* fs, const std::string& root, int64_t step);
  // Starts a directory of this layout at exactly `dir`, with manifest format name `format`
  // (e.g. "choir-bundle", a serving bundle) and `step` recorded.
  static absl::StatusOr<Writer> BeginDirectory(FileSystem* fs, const std::string& dir,
                                               int64_t step, const std::string& format);

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }

  // Writes file `name` (a relative path: "dense.bin", "priors/level-1.tsv") and records it.
  absl::Status AddFile(const std::string& name, absl::string_view bytes);
  // Records a file another writer put into dir() with WriteCheckpointFile.
  void AddWrittenFile(const std::string& name, const FileInfo& info) { files_[name] = info; }

  // Writes the manifest with `meta` (a JSON object): the commit point. After an OK return the
  // checkpoint is complete and durable.
  absl::Status Commit(const nlohmann::json& meta);

 private:
  Writer(FileSystem* fs, std::string dir, int64_t step, std::string format)
      : fs_(fs), dir_(std::move(dir)), step_(step), format_(std::move(format)) {}
  FileSystem* fs_;
  std::string dir_;
  int64_t step_;
  std::string format_;
  std::map<std::string, FileInfo> files_;
};

class Reader {
 public:
  // Opens the committed checkpoint in `dir`: NOT_FOUND without a manifest (not a checkpoint,
  // or one cut short), DATA_LOSS for an unreadable manifest, FAILED_PRECONDITION for another
  // format version. `format`: the manifest's format name (another one is DATA_LOSS).
  static absl::StatusOr<Reader> Open(FileSystem* fs, const std::string& dir,
                                     const std::string& format = "choir-checkpoint");

  const std::string& dir() const { return dir_; }
  int64_t step() const { return step_; }
  const nlohmann::json& meta() const { return meta_; }
  // The meta field `key` as a T (std::string, an integer, ...); DATA_LOSS naming the manifest
  // and the field when it is absent or holds another type.
  template <typename T>
  absl::StatusOr<T> Meta(const std::string& key) const;
  // The same, `fallback` when the field is absent.
  template <typename T>
  absl::StatusOr<T> Meta(const std::string& key, T fallback) const {
    return meta_.contains(key) ? Meta<T>(key) : absl::StatusOr<T>(std::move(fallback));
  }
  bool Has(const std::string& name) const { return files_.count(name) > 0; }
  // The data files, sorted by name.
  std::vector<std::string> FileNames() const;

  // The bytes of file `name`, checked against the manifest: NOT_FOUND when the manifest does
  // not list it, DATA_LOSS (naming the file) when it is missing, of another size or fails
  // its CRC32C.
  absl::StatusOr<std::string> ReadFile(const std::string& name) const;
  // Reads every file once: OK when the whole checkpoint is intact.
  absl::Status Verify() const;

 private:
  Reader() = default;
  FileSystem* fs_ = nullptr;
  std::string dir_;
  std::string kind_;  // "checkpoint", "bundle": what errors call it
  int64_t step_ = 0;
  nlohmann::json meta_;
  std::map<std::string, FileInfo> files_;
};

namespace internal {
template <typename T>
constexpr const char* MetaTypeName() {
  if constexpr (std::is_same_v<T, std::string>) return "a string";
  if constexpr (std::is_integral_v<T>) return "an integer";
  if constexpr (std::is_floating_point_v<T>) return "a number";
  return "another type";
}
}  // namespace internal

template <typename T>
absl::StatusOr<T> Reader::Meta(const std::string& key) const {
  const auto it = meta_.find(key);
  if (it == meta_.end()) {
    return absl::DataLossError(absl::StrCat(dir_, "/MANIFEST.json: the ", kind_, "'s meta has no \"", key, "\""));
  }
  if constexpr (std::is_integral_v<T> && !std::is_same_v<T, bool>) {
    // nlohmann would convert a float, a bool or an out-of-range integer without a word.
    if (!it->is_number_integer()) {
      return absl::DataLossError(absl::StrCat(dir_, "/MANIFEST.json: the ", kind_, "'s meta \"", key,
                                              "\" holds a JSON ", it->type_name(), ", want an integer"));
    }
    const bool fits = it->is_number_unsigned()
                          ? it->template get<uint64_t>() <= static_cast<uint64_t>(std::numeric_limits<T>::max())
                          : std::is_signed_v<T> && it->template get<int64_t>() >= static_cast<int64_t>(std::numeric_limits<T>::min());
    if (!fits) {
      return absl::DataLossError(absl::StrCat(dir_, "/MANIFEST.json: the ", kind_, "'s meta \"", key, "\" is ",
                                              it->dump(), ", out of range"));
    }
  }
  try {
    return it->template get<T>();
  } catch (const nlohmann::json::exception&) {
    return absl::DataLossError(absl::StrCat(dir_, "/MANIFEST.json: the ", kind_, "'s meta \"", key, "\" holds a JSON ",
                                            it->type_name(), ", want ", internal::MetaTypeName<T>()));
  }
}

// The committed checkpoint with the highest step under `root`. NOT_FOUND when there is none.
// Directories without a manifest are skipped with a warning naming them; a damaged one newer
// than every committed checkpoint is DATA_LOSS naming it and why (resuming from an older one
// instead is the user's choice: name it).
absl::StatusOr<std::string> FindLatest(FileSystem* fs, const std::string& root);

// The checkpoint directories under `root` of a step above `step` that hold a manifest,
// committed or damaged: a run resumed at `step` would reach them and could not overwrite them.
absl::StatusOr<std::vector<std::string>> ManifestsAfter(FileSystem* fs, const std::string& root, int64_t step);

// Resolves what a user names: "latest" -> FindLatest(root); a directory holding a manifest ->
// itself; a directory holding checkpoints -> its latest.
absl::StatusOr<std::string> Resolve(FileSystem* fs, const std::string& spec,
                                    const std::string& root);

// Deletes every checkpoint directory under `root`, committed or not, and returns how many there
// were (a fresh run replacing an earlier run's checkpoints).
absl::StatusOr<int> Clear(FileSystem* fs, const std::string& root);

// Keeps the newest `keep` (>= 1) committed checkpoints under `root`; deletes the older ones and
// every unfinished or damaged directory older than the newest committed one.
absl::Status Prune(FileSystem* fs, const std::string& root, int keep);

}  // namespace choir::checkpoint

#endif  // CHOIR_CHECKPOINT_CHECKPOINT_H_
