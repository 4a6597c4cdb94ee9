// Reading delimited text (CSV/TSV) for the converters: a line reader over a memory-mapped file
// and a field splitter with RFC 4180-style double-quote quoting.
//
// Limits, on purpose: a record is one physical line (a quoted field cannot span lines; an
// open quote at the end of the line is an error), and the splitter never trims whitespace.
#ifndef CHOIR_DATA_CSV_H_
#define CHOIR_DATA_CSV_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/fs.h"

namespace choir::data {

// Yields the lines of a file one by one, without their terminator ("\n" or "\r\n"). A last
// line without a terminator is yielded too; a UTF-8 byte-order mark at the start is skipped.
// Not thread-safe.
class LineReader {
 public:
  // Maps `path` read-only; the error names the path.
  static absl::StatusOr<std::unique_ptr<LineReader>> Open(FileSystem* fs, const std::string& path);

  // Sets `*line` to the next line and returns true, or returns false at the end of the file.
  // The view stays valid for the reader's lifetime.
  bool Next(absl::string_view* line);
  // 1-based number of the line last returned by Next() (0 before the first call).
  int64_t line_number() const { return line_number_; }
  // Bytes consumed so far and in total.
  uint64_t offset() const { return pos_; }
  uint64_t size() const { return data_.size(); }
  const std::string& path() const { return path_; }

 private:
  LineReader(std::string path, std::unique_ptr<ReadOnlyRegion> region);

  std::string path_;
  std::unique_ptr<ReadOnlyRegion> region_;
  absl::string_view data_;
  uint64_t pos_ = 0;
  int64_t line_number_ = 0;
};

// Splits one line into fields at `delimiter`. A field that starts with '"' is quoted: it ends
// at the next lone '"', a doubled quote ("") inside it stands for one '"', and the delimiter
// may appear inside. A quote inside an unquoted field is kept as is. Reuses its buffers, so
// splitting millions of lines allocates little.
class CsvSplitter {
 public:
  explicit CsvSplitter(char delimiter) : delimiter_(delimiter) {}

  // Splits `line`. INVALID_ARGUMENT ("unterminated quote ...", "unexpected character after
  // closing quote ...") with the 1-based column. The fields stay valid until the next Split()
  // and while `line`'s bytes live. An empty line has one empty field.
  absl::Status Split(absl::string_view line);
  const std::vector<absl::string_view>& fields() const { return fields_; }

 private:
  const char delimiter_;
  std::vector<absl::string_view> fields_;
  std::string scratch_;  // unescaped quoted fields; reserved so it never reallocates mid-line
};

}  // namespace choir::data

#endif  // CHOIR_DATA_CSV_H_
