#include "checkpoint/checkpoint.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "core/crc32c.h"
#include "glog/logging.h"

namespace choir::checkpoint {
namespace {

constexpr char kDirPrefix[] = "step-";
constexpr char kFormatName[] = "choir-checkpoint";
constexpr char kManifestCrcPrefix[] = "crc32c ";

// The step of a directory name "step-000000000123", or -1.
int64_t StepOfName(absl::string_view name) {
  if (!absl::StartsWith(name, kDirPrefix)) return -1;
  int64_t step = -1;
  if (!absl::SimpleAtoi(name.substr(sizeof(kDirPrefix) - 1), &step) || step < 0) return -1;
  return step;
}

// A relative path inside the directory: '/'-separated names, none empty, "." or "..".
absl::Status CheckFileName(const std::string& name) {
  bool bad = name.empty() || name == kManifestName;
  for (absl::string_view part : absl::StrSplit(name, '/')) {
    bad = bad || part.empty() || part == "." || part == "..";
  }
  if (bad) {
    return absl::InvalidArgumentError(absl::StrCat(
        "file name '", name, "' is empty, reserved, absolute or has an empty, '.' or '..' part"));
  }
  return absl::OkStatus();
}

// "checkpoint" for "choir-checkpoint": what errors call a directory of `format`.
std::string KindOf(absl::string_view format) {
  absl::ConsumePrefix(&format, "choir-");
  return std::string(format);
}

// Committed, unfinished (no manifest) and damaged (an unreadable manifest) checkpoint
// directories under `root`, by step.
struct Listing {
  struct Damaged {
    int64_t step;
    std::string dir;
    absl::Status why;
  };
  std::vector<std::pair<int64_t, std::string>> committed, unfinished;
  std::vector<Damaged> damaged;
};

absl::StatusOr<Listing> List(FileSystem* fs, const std::string& root) {
  Listing listing;
  if (!fs->IsDirectory(root)) return listing;
  absl::StatusOr<std::vector<std::string>> names = fs->ListDir(root);
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    const int64_t step = StepOfName(name);
    if (step < 0) continue;
    const std::string dir = JoinPath(root, name);
    if (!fs->IsDirectory(dir)) continue;
    if (!fs->Exists(JoinPath(dir, kManifestName))) {
      listing.unfinished.emplace_back(step, dir);
      continue;
    }
    absl::StatusOr<Reader> reader = Reader::Open(fs, dir);
    if (reader.ok() && reader->step() == step) {
      listing.committed.emplace_back(step, dir);
    } else {
      listing.damaged.push_back(
          {step, dir,
           reader.ok() ? absl::DataLossError(absl::StrCat(dir, "/", kManifestName, " is the manifest of step ",
                                                          reader->step(), ", not ", step))
                       : reader.status()});
    }
  }
  std::sort(listing.committed.begin(), listing.committed.end());
  std::sort(listing.unfinished.begin(), listing.unfinished.end());
  std::sort(listing.damaged.begin(), listing.damaged.end(),
            [](const Listing::Damaged& a, const Listing::Damaged& b) { return a.step < b.step; });
  return listing;
}

}  // namespace

std::string CheckpointDir(const std::string& root, int64_t step) {
  return JoinPath(root, absl::StrFormat("%s%012d", kDirPrefix, step));
}

absl::StatusOr<FileInfo> WriteCheckpointFile(FileSystem* fs, const std::string& dir,
                                             const std::string& name, absl::string_view bytes) {
  if (absl::Status s = CheckFileName(name); !s.ok()) return s;
  const std::string path = JoinPath(dir, name);
  if (absl::StrContains(name, '/')) {
    if (absl::Status s = fs->CreateDirs(Dirname(path)); !s.ok()) return s;
  }
  absl::StatusOr<std::unique_ptr<WritableFile>> file = fs->NewWritableFile(path);
  if (!file.ok()) return file.status();
  absl::Status status = (*file)->Append(bytes);
  if (status.ok()) status = (*file)->Sync();
  absl::Status closed = (*file)->Close();
  if (status.ok()) status = closed;
  if (!status.ok()) {
    return absl::Status(status.code(), absl::StrCat("writing ", path, ": ", status.message()));
  }
  return FileInfo{bytes.size(), crc32c::Value(bytes)};
}

absl::StatusOr<Writer> Writer::Begin(FileSystem* fs, const std::string& root, int64_t step) {
  if (step < 0) return absl::InvalidArgumentError(absl::StrCat("checkpoint step ", step, " < 0"));
  const std::string dir = CheckpointDir(root, step);
  return BeginDirectory(fs, dir, step, kFormatName);
}

absl::StatusOr<Writer> Writer::BeginDirectory(FileSystem* fs, const std::string& dir, int64_t step,
                                              const std::string& format) {
  const std::string kind = KindOf(format);
  if (fs->Exists(JoinPath(dir, kManifestName))) {
    return absl::FailedPreconditionError(absl::StrCat(kind, " ", dir, " is already committed"));
  }
  if (fs->IsDirectory(dir)) {
    LOG(WARNING) << "clearing the unfinished " << kind << " " << dir;
    if (absl::Status s = fs->DeleteRecursively(dir); !s.ok()) return s;
  }
  if (absl::Status s = fs->CreateDirs(dir); !s.ok()) return s;
  return Writer(fs, dir, step, format);
}

absl::Status Writer::AddFile(const std::string& name, absl::string_view bytes) {
  absl::StatusOr<FileInfo> info = WriteCheckpointFile(fs_, dir_, name, bytes);
  if (!info.ok()) return info.status();
  files_[name] = *info;
  return absl::OkStatus();
}

absl::Status Writer::Commit(const nlohmann::json& meta) {
  if (!meta.is_object()) return absl::InvalidArgumentError("manifest meta must be a JSON object");
  // The data files reach the disk before the manifest names them.
  std::set<std::string> dirs = {dir_};
  for (const auto& [name, info] : files_) dirs.insert(Dirname(JoinPath(dir_, name)));
  for (const std::string& d : dirs) {
    if (absl::Status s = fs_->SyncDir(d); !s.ok()) return s;
  }
  nlohmann::ordered_json manifest;
  manifest["format"] = format_;
  manifest["version"] = kFormatVersion;
  manifest["step"] = step_;
  nlohmann::ordered_json files = nlohmann::ordered_json::array();
  for (const auto& [name, info] : files_) {
    files.push_back({{"name", name}, {"bytes", info.bytes}, {"crc32c", info.crc32c}});
  }
  manifest["files"] = std::move(files);
  manifest["meta"] = meta;
  // The manifest checks itself: its last line is the CRC32C of everything before it.
  const std::string body = manifest.dump(1) + "\n";
  return fs_->WriteStringToFileAtomic(
      JoinPath(dir_, kManifestName),
      absl::StrFormat("%s%s%08x\n", body, kManifestCrcPrefix, crc32c::Value(body)));
}

absl::StatusOr<Reader> Reader::Open(FileSystem* fs, const std::string& dir,
                                    const std::string& format) {
  const std::string kind = KindOf(format);
  const std::string path = JoinPath(dir, kManifestName);
  if (!fs->Exists(path)) {
    return absl::NotFoundError(absl::StrCat(dir, " is not a committed ", kind, ": no ",
                                            kManifestName, " (not a ", kind,
                                            ", or one cut short while being written)"));
  }
  absl::StatusOr<std::string> text = fs->ReadFileToString(path);
  if (!text.ok()) return text.status();
  auto bad = [&](absl::string_view why) {
    return absl::DataLossError(absl::StrCat(path, ": ", why));
  };
  // The last line: "crc32c <8 hex digits>" of everything before it.
  const size_t crc_at = text->rfind(kManifestCrcPrefix);
  uint32_t stored_crc = 0;
  if (crc_at == std::string::npos || crc_at + sizeof(kManifestCrcPrefix) - 1 + 9 != text->size() ||
      (*text)[text->size() - 1] != '\n' ||
      !absl::SimpleHexAtoi(absl::string_view(*text).substr(crc_at + sizeof(kManifestCrcPrefix) - 1, 8),
                           &stored_crc)) {
    return bad("no checksum line at the end (truncated or not written by Choir)");
  }
  const absl::string_view body = absl::string_view(*text).substr(0, crc_at);
  if (crc32c::Value(body) != stored_crc) {
    return bad(absl::StrFormat("corrupt: CRC32C %08x, its checksum line says %08x",
                               crc32c::Value(body), stored_crc));
  }
  nlohmann::json manifest = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (manifest.is_discarded() || !manifest.is_object()) return bad("not a JSON object");
  const std::string found_format =
      manifest.contains("format") && manifest["format"].is_string() ? manifest["format"].get<std::string>() : "";
  if (found_format != format) {
    return bad(absl::StrCat("not a Choir ", kind, " manifest (format '", found_format, "', want '", format, "')"));
  }
  if (!manifest.contains("version") || !manifest["version"].is_number_integer()) {
    return bad("no version");
  }
  const int version = manifest["version"].get<int>();
  if (version != kFormatVersion) {
    return absl::FailedPreconditionError(absl::StrCat(path, ": format version ", version,
                                                      ", this build reads version ",
                                                      kFormatVersion));
  }
  if (!manifest.contains("step") || !manifest["step"].is_number_integer() ||
      !manifest.contains("files") || !manifest["files"].is_array() ||
      !manifest.contains("meta") || !manifest["meta"].is_object()) {
    return bad("missing or mistyped step, files or meta");
  }
  Reader reader;
  reader.fs_ = fs;
  reader.dir_ = dir;
  reader.kind_ = kind;
  reader.step_ = manifest["step"].get<int64_t>();
  reader.meta_ = manifest["meta"];
  for (const nlohmann::json& f : manifest["files"]) {
    if (!f.is_object() || !f.contains("name") || !f["name"].is_string() ||
        !f.contains("bytes") || !f["bytes"].is_number_unsigned() || !f.contains("crc32c") ||
        !f["crc32c"].is_number_unsigned()) {
      return bad("a file entry without name, bytes or crc32c");
    }
    const std::string name = f["name"].get<std::string>();
    if (!CheckFileName(name).ok()) return bad(absl::StrCat("bad file name '", name, "'"));
    reader.files_[name] = FileInfo{f["bytes"].get<uint64_t>(), f["crc32c"].get<uint32_t>()};
  }
  return reader;
}

std::vector<std::string> Reader::FileNames() const {
  std::vector<std::string> names;
  for (const auto& [name, info] : files_) names.push_back(name);
  return names;
}

absl::StatusOr<std::string> Reader::ReadFile(const std::string& name) const {
  auto it = files_.find(name);
  if (it == files_.end()) {
    return absl::NotFoundError(absl::StrCat(kind_, " ", dir_, " has no file ", name));
  }
  const std::string path = JoinPath(dir_, name);
  absl::StatusOr<std::string> bytes = fs_->ReadFileToString(path);
  if (!bytes.ok()) {
    return absl::DataLossError(absl::StrCat(kind_, " file ", path, " listed in the manifest "
                                            "cannot be read: ", bytes.status().message()));
  }
  if (bytes->size() != it->second.bytes) {
    return absl::DataLossError(absl::StrCat(kind_, " file ", path, " has ", bytes->size(),
                                            " bytes, the manifest says ", it->second.bytes,
                                            " (truncated or overwritten)"));
  }
  const uint32_t crc = crc32c::Value(*bytes);
  if (crc != it->second.crc32c) {
    return absl::DataLossError(absl::StrFormat(
        "%s file %s is corrupt: CRC32C %08x, the manifest says %08x", kind_, path, crc,
        it->second.crc32c));
  }
  return bytes;
}

absl::Status Reader::Verify() const {
  for (const auto& [name, info] : files_) {
    absl::StatusOr<std::string> bytes = ReadFile(name);
    if (!bytes.ok()) return bytes.status();
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> FindLatest(FileSystem* fs, const std::string& root) {
  absl::StatusOr<Listing> listing = List(fs, root);
  if (!listing.ok()) return listing.status();
  for (const auto& [step, dir] : listing->unfinished) {
    if (listing->committed.empty() || step > listing->committed.back().first) {
      LOG(WARNING) << "skipping " << dir << ": no valid " << kManifestName
                   << " (cut short while being written)";
    }
  }
  const int64_t newest = listing->committed.empty() ? -1 : listing->committed.back().first;
  if (!listing->damaged.empty() && listing->damaged.back().step > newest) {
    const Listing::Damaged& d = listing->damaged.back();
    return absl::DataLossError(absl::StrCat(
        "the newest checkpoint under ", root, ", ", d.dir, ", is damaged (", d.why.message(), "); ",
        newest < 0 ? "there is no older one" : absl::StrCat("to resume from the older ", listing->committed.back().second,
                                                             " name it, and move the damaged one away")));
  }
  if (listing->committed.empty()) {
    return absl::NotFoundError(absl::StrCat("no committed checkpoint under ", root));
  }
  return listing->committed.back().second;
}

absl::StatusOr<std::vector<std::string>> ManifestsAfter(FileSystem* fs, const std::string& root, int64_t step) {
  absl::StatusOr<Listing> listing = List(fs, root);
  if (!listing.ok()) return listing.status();
  std::vector<std::pair<int64_t, std::string>> after;
  for (const auto& [s, dir] : listing->committed) {
    if (s > step) after.emplace_back(s, dir);
  }
  for (const Listing::Damaged& d : listing->damaged) {
    if (d.step > step) after.emplace_back(d.step, d.dir);
  }
  std::sort(after.begin(), after.end());
  std::vector<std::string> dirs;
  for (auto& [s, dir] : after) dirs.push_back(std::move(dir));
  return dirs;
}

absl::StatusOr<std::string> Resolve(FileSystem* fs, const std::string& spec,
                                    const std::string& root) {
  if (spec == "latest") return FindLatest(fs, root);
  if (fs->Exists(JoinPath(spec, kManifestName))) return spec;
  if (fs->IsDirectory(spec)) return FindLatest(fs, spec);
  return absl::NotFoundError(absl::StrCat("checkpoint ", spec, " does not exist"));
}

absl::StatusOr<int> Clear(FileSystem* fs, const std::string& root) {
  absl::StatusOr<Listing> listing = List(fs, root);
  if (!listing.ok()) return listing.status();
  int n = 0;
  std::vector<std::pair<int64_t, std::string>> all = listing->committed;
  all.insert(all.end(), listing->unfinished.begin(), listing->unfinished.end());
  for (const Listing::Damaged& d : listing->damaged) all.emplace_back(d.step, d.dir);
  for (const auto& [step, dir] : all) {
    const std::string manifest = JoinPath(dir, kManifestName);
    if (fs->Exists(manifest)) {
      if (absl::Status s = fs->DeleteFile(manifest); !s.ok()) return s;
    }
    if (absl::Status s = fs->DeleteRecursively(dir); !s.ok()) return s;
    ++n;
  }
  return n;
}

absl::Status Prune(FileSystem* fs, const std::string& root, int keep) {
  if (keep < 1) return absl::InvalidArgumentError(absl::StrCat("keep ", keep, " < 1"));
  absl::StatusOr<Listing> listing = List(fs, root);
  if (!listing.ok()) return listing.status();
  const auto& committed = listing->committed;
  std::vector<std::string> doomed;
  for (size_t i = 0; i + keep < committed.size(); ++i) doomed.push_back(committed[i].second);
  if (!committed.empty()) {
    for (const auto& [step, dir] : listing->unfinished) {
      if (step < committed.back().first) doomed.push_back(dir);
    }
    for (const Listing::Damaged& d : listing->damaged) {
      if (d.step < committed.back().first) doomed.push_back(d.dir);
    }
  }
  for (const std::string& dir : doomed) {
    // The manifest goes first, so an interrupted deletion leaves an unfinished directory.
    const std::string manifest = JoinPath(dir, kManifestName);
    if (fs->Exists(manifest)) {
      if (absl::Status s = fs->DeleteFile(manifest); !s.ok()) return s;
    }
    if (absl::Status s = fs->DeleteRecursively(dir); !s.ok()) return s;
  }
  return absl::OkStatus();
}

}  // namespace choir::checkpoint
