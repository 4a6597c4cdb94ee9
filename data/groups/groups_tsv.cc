#include "data/groups/groups_tsv.h"

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace choir::groups {

absl::StatusOr<std::vector<int64_t>> ReadUserIds(FileSystem* fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  std::vector<int64_t> ids;
  absl::flat_hash_set<int64_t> seen;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const absl::string_view first = line.substr(0, line.find('\t'));
    if (line_no == 1 && first == "user_id") continue;
    int64_t id = 0;
    if (!absl::SimpleAtoi(first, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": first field '", first, "' is not a user id"));
    }
    if (!seen.insert(id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ":", line_no, ": user id ", id, " appears twice"));
    }
    ids.push_back(id);
  }
  return ids;
}

absl::Status WriteGroupsTsv(FileSystem* fs, const std::string& path,
                            const std::vector<int64_t>& ids, const std::vector<int32_t>& codes,
                            int levels) {
  if (codes.size() != ids.size() * levels) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", ids.size(), " users but ",
                                                   codes.size(), " codes for ", levels, " levels"));
  }
  std::string out = "user_id";
  for (int l = 0; l < levels; ++l) absl::StrAppend(&out, "\tc", l + 1);
  out.push_back('\n');
  for (size_t i = 0; i < ids.size(); ++i) {
    absl::StrAppend(&out, ids[i]);
    for (int l = 0; l < levels; ++l) absl::StrAppend(&out, "\t", codes[i * levels + l]);
    out.push_back('\n');
  }
  return fs->WriteStringToFileAtomic(path, out);
}

absl::StatusOr<GroupsTable> ReadGroupsTsv(FileSystem* fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::string text, fs->ReadFileToString(path));
  GroupsTable t;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipEmpty())) {
    ++line_no;
    std::vector<absl::string_view> f = absl::StrSplit(line, '\t');
    if (line_no == 1) {
      if (f.empty() || f[0] != "user_id" || f.size() < 2) {
        return absl::DataLossError(absl::StrCat(path, ":1: expected header user_id\\tc1..."));
      }
      t.levels = static_cast<int>(f.size()) - 1;
      continue;
    }
    if (static_cast<int>(f.size()) != t.levels + 1) {
      return absl::DataLossError(absl::StrCat(path, ":", line_no, ": ", f.size() - 1,
                                              " codes, header has ", t.levels));
    }
    int64_t id = 0;
    if (!absl::SimpleAtoi(f[0], &id)) {
      return absl::DataLossError(absl::StrCat(path, ":", line_no, ": bad user id '", f[0], "'"));
    }
    t.ids.push_back(id);
    for (int l = 0; l < t.levels; ++l) {
      int32_t c = 0;
      if (!absl::SimpleAtoi(f[l + 1], &c) || c < 0) {
        return absl::DataLossError(absl::StrCat(path, ":", line_no, ": bad code '", f[l + 1], "'"));
      }
      t.codes.push_back(c);
    }
  }
  if (line_no == 0) return absl::DataLossError(absl::StrCat(path, ": empty file, no header"));
  return t;
}

}  // namespace choir::groups
