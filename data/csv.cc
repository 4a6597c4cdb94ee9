#include "data/csv.h"

#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/status.h"

namespace choir::data {

LineReader::LineReader(std::string path, std::unique_ptr<ReadOnlyRegion> region)
    : path_(std::move(path)), region_(std::move(region)), data_(region_->data()) {
  constexpr absl::string_view kBom = "\xEF\xBB\xBF";
  if (absl::StartsWith(data_, kBom)) pos_ = kBom.size();
}

absl::StatusOr<std::unique_ptr<LineReader>> LineReader::Open(FileSystem* fs,
                                                             const std::string& path) {
  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> region = fs->MapReadOnly(path);
  if (!region.ok()) return Annotate(region.status(), absl::StrCat("reading ", path));
  return std::unique_ptr<LineReader>(new LineReader(path, *std::move(region)));
}

bool LineReader::Next(absl::string_view* line) {
  if (pos_ >= data_.size()) return false;
  const size_t end = data_.find('\n', pos_);
  size_t stop = end == absl::string_view::npos ? data_.size() : end;
  const size_t start = pos_;
  pos_ = end == absl::string_view::npos ? data_.size() : end + 1;
  if (stop > start && data_[stop - 1] == '\r') --stop;
  *line = data_.substr(start, stop - start);
  ++line_number_;
  return true;
}

absl::Status CsvSplitter::Split(absl::string_view line) {
  fields_.clear();
  scratch_.clear();
  // Unescaped text is never longer than the line, so views into scratch_ stay valid.
  if (scratch_.capacity() < line.size()) scratch_.reserve(line.size());
  size_t pos = 0;
  while (true) {
    if (pos < line.size() && line[pos] == '"') {
      const size_t column = fields_.size() + 1;
      const size_t begin = scratch_.size();
      size_t i = pos + 1;
      bool closed = false;
      while (i < line.size()) {
        if (line[i] == '"') {
          if (i + 1 < line.size() && line[i + 1] == '"') {
            scratch_.push_back('"');
            i += 2;
            continue;
          }
          closed = true;
          ++i;
          break;
        }
        scratch_.push_back(line[i]);
        ++i;
      }
      if (!closed) {
        return absl::InvalidArgumentError(absl::StrCat("unterminated quote in column ", column));
      }
      fields_.push_back(absl::string_view(scratch_).substr(begin, scratch_.size() - begin));
      if (i == line.size()) return absl::OkStatus();
      if (line[i] != delimiter_) {
        return absl::InvalidArgumentError(
            absl::StrCat("unexpected character after closing quote in column ", column));
      }
      pos = i + 1;
      continue;
    }
    const size_t end = line.find(delimiter_, pos);
    if (end == absl::string_view::npos) {
      fields_.push_back(line.substr(pos));
      return absl::OkStatus();
    }
    fields_.push_back(line.substr(pos, end - pos));
    pos = end + 1;
  }
}

}  // namespace choir::data
