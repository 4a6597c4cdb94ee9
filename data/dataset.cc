#include "data/dataset.h"

#include <algorithm>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "core/config.h"
#include "core/status.h"
#include "glog/logging.h"
#include "google/protobuf/text_format.h"

namespace choir::data {

absl::StatusOr<DatasetManifest> ReadManifest(FileSystem* fs, const std::string& dir) {
  const std::string path = JoinPath(dir, kManifestName);
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kNotFound) {
      return absl::NotFoundError(absl::StrCat(dir, ": no ", kManifestName,
                                              " (not a dataset folder, or an incomplete one)"));
    }
    return text.status();
  }
  DatasetManifest manifest;
  RETURN_IF_ERROR(ParseTextProto(*text, path, &manifest));
  if (manifest.format_version() != kDatasetFormatVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": dataset format version ", manifest.format_version(),
                     " is not supported (this build reads version ", kDatasetFormatVersion, ")"));
  }
  return manifest;
}

absl::Status WriteManifest(FileSystem* fs, const std::string& dir, DatasetManifest manifest) {
  manifest.set_format_version(kDatasetFormatVersion);
  std::string text;
  if (!google::protobuf::TextFormat::PrintToString(manifest, &text)) {
    return absl::InternalError(absl::StrCat(dir, ": cannot print the dataset manifest"));
  }
  RETURN_IF_ERROR(fs->CreateDirs(dir));
  return fs->WriteStringToFileAtomic(JoinPath(dir, kManifestName), text);
}

namespace {

absl::Status DeletePath(FileSystem* fs, const std::string& path) {
  if (!fs->Exists(path)) return absl::OkStatus();
  if (fs->IsDirectory(path)) return fs->DeleteRecursively(path);
  return fs->DeleteFile(path);
}

}  // namespace

absl::Status PrepareDatasetDir(FileSystem* fs, const std::string& dir,
                               const std::vector<std::string>& producer_entries) {
  if (!fs->Exists(dir)) {
    return Annotate(fs->CreateDirs(dir), absl::StrCat("creating ", dir));
  }
  if (!fs->IsDirectory(dir)) {
    return absl::FailedPreconditionError(absl::StrCat(dir, " exists and is not a directory"));
  }
  const std::vector<std::string> owned = {kRejectsName, kTruthDir, kTaxonomyName,
                                          absl::StrCat(kManifestName, ".tmp")};
  const std::string manifest_path = JoinPath(dir, kManifestName);
  if (fs->Exists(manifest_path)) {
    absl::StatusOr<DatasetManifest> old = ReadManifest(fs, dir);
    if (!old.ok()) {
      return Annotate(old.status(), absl::StrCat(dir, " holds an unreadable ", kManifestName,
                                                 "; remove the folder or choose another"));
    }
    LOG(INFO) << "replacing the dataset in " << dir;
    RETURN_IF_ERROR(fs->DeleteFile(manifest_path));
    for (const SplitInfo& split : old->splits()) {
      if (split.name().empty() || absl::StrContains(split.name(), '/') || split.name() == "." ||
          split.name() == "..") {
        return absl::DataLossError(
            absl::StrCat(manifest_path, ": bad split name '", split.name(), "'"));
      }
      RETURN_IF_ERROR(DeletePath(fs, JoinPath(dir, split.name())));
    }
    for (const std::string& entry : owned) RETURN_IF_ERROR(DeletePath(fs, JoinPath(dir, entry)));
    return absl::OkStatus();
  }
  ASSIGN_OR_RETURN(std::vector<std::string> entries, fs->ListDir(dir));
  for (const std::string& entry : entries) {
    if (std::find(owned.begin(), owned.end(), entry) == owned.end() &&
        std::find(producer_entries.begin(), producer_entries.end(), entry) ==
            producer_entries.end()) {
      return absl::FailedPreconditionError(
          absl::StrCat(dir, " is not empty and holds no ", kManifestName, " (found '", entry,
                       "'); remove it or choose another output folder"));
    }
  }
  for (const std::string& entry : entries) {
    LOG(INFO) << "removing " << JoinPath(dir, entry) << " left by an interrupted run";
    RETURN_IF_ERROR(DeletePath(fs, JoinPath(dir, entry)));
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitInfo> FindSplit(const DatasetManifest& manifest, absl::string_view name) {
  std::vector<std::string> names;
  for (const SplitInfo& split : manifest.splits()) {
    if (split.name() == name) return split;
    names.push_back(split.name());
  }
  return absl::NotFoundError(
      absl::StrCat("dataset has no split '", name,
                   "' (splits: ", names.empty() ? "none" : absl::StrJoin(names, ", "), ")"));
}

std::vector<std::string> SplitPaths(const std::string& dir, const SplitInfo& split) {
  std::vector<std::string> paths;
  paths.reserve(split.files_size());
  for (const std::string& file : split.files()) paths.push_back(JoinPath(dir, file));
  return paths;
}

SplitWriter::SplitWriter(FileSystem* fs, std::string dir, std::string split, Schema schema,
                         ShardWriterOptions options, int64_t rows_per_file)
    : fs_(fs),
      dir_(std::move(dir)),
      split_(std::move(split)),
      schema_(std::move(schema)),
      options_(std::move(options)),
      rows_per_file_(rows_per_file) {
  info_.set_name(split_);
  info_.set_rows(0);
}

absl::Status SplitWriter::OpenNextFile() {
  RETURN_IF_ERROR(fs_->CreateDirs(JoinPath(dir_, split_)));
  const std::string name = absl::StrFormat("part-%05d.shard", info_.files_size());
  ASSIGN_OR_RETURN(writer_,
                   ShardWriter::Open(fs_, JoinPath(dir_, split_, name), schema_, options_));
  current_file_ = JoinPath(split_, name);
  return absl::OkStatus();
}

absl::Status SplitWriter::CloseFile() {
  absl::Status s = writer_->Close();
  writer_.reset();
  RETURN_IF_ERROR(s);
  info_.add_files(current_file_);
  return absl::OkStatus();
}

absl::Status SplitWriter::Write(const RowBlock& block) {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(JoinPath(dir_, split_), ": Write after Finish"));
  }
  if (block.num_rows() == 0) return absl::OkStatus();
  if (writer_ == nullptr) RETURN_IF_ERROR(OpenNextFile());
  RETURN_IF_ERROR(writer_->Write(block));
  info_.set_rows(info_.rows() + static_cast<int64_t>(block.num_rows()));
  if (static_cast<int64_t>(writer_->rows_written()) >= rows_per_file_) {
    RETURN_IF_ERROR(CloseFile());
  }
  return absl::OkStatus();
}

absl::StatusOr<SplitInfo> SplitWriter::Finish() {
  if (finished_) {
    return absl::FailedPreconditionError(
        absl::StrCat(JoinPath(dir_, split_), ": Finish called twice"));
  }
  finished_ = true;
  // An empty split still gets one (empty) file, so that its schema can be read.
  if (writer_ == nullptr && info_.files_size() == 0) RETURN_IF_ERROR(OpenNextFile());
  if (writer_ != nullptr) RETURN_IF_ERROR(CloseFile());
  return info_;
}

}  // namespace choir::data
