// The text files around semantic groups: user ids in (profiles.tsv) and codes out
// (groups.tsv).
#ifndef CHOIR_DATA_GROUPS_GROUPS_TSV_H_
#define CHOIR_DATA_GROUPS_GROUPS_TSV_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"

namespace choir::groups {

// The user ids of a TSV file whose first column is the user id (profiles.tsv: "user_id TAB
// text"), in file order; row i of the embeddings belongs to id i. A first line whose first
// field is "user_id" is a header and skipped; empty lines are skipped. INVALID_ARGUMENT naming
// file:line for a first field that is not an integer, or for a duplicated id.
absl::StatusOr<std::vector<int64_t>> ReadUserIds(FileSystem* fs, const std::string& path);

// Writes groups.tsv atomically: a header "user_id\tc1\t...\tcL", then one line per user,
// "user_id TAB c1 TAB ... TAB cL", in the order of `ids`. `codes` is [ids.size(), levels].
absl::Status WriteGroupsTsv(FileSystem* fs, const std::string& path,
                            const std::vector<int64_t>& ids, const std::vector<int32_t>& codes,
                            int levels);

// Reads what WriteGroupsTsv wrote: ids and codes ([ids, levels]). DATA_LOSS naming file:line
// for a malformed line or a line with another number of codes than the header.
struct GroupsTable {
  int levels = 0;
  std::vector<int64_t> ids;
  std::vector<int32_t> codes;
};
absl::StatusOr<GroupsTable> ReadGroupsTsv(FileSystem* fs, const std::string& path);

}  // namespace choir::groups

#endif  // CHOIR_DATA_GROUPS_GROUPS_TSV_H_
