#include "checkpoint/files.h"

#include <cstring>

#include "absl/strings/str_cat.h"

namespace choir::checkpoint {
namespace {

constexpr char kSparseMagic[] = "CHSPARS1";
constexpr char kDenseMagic[] = "CHDENSE1";
constexpr uint32_t kFilesVersion = 1;
static_assert(sizeof(float) == 4, "checkpoints store IEEE-754 binary32");

template <typename T>
void Put(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (x86-64, aarch64)
  out->append(bytes, sizeof(T));
}

// Bounds-checked reads over a file's bytes.
class Cursor {
 public:
  Cursor(absl::string_view bytes, const std::string& what) : rest_(bytes), what_(what) {}

  template <typename T>
  absl::Status Get(T* value, absl::string_view field) {
    if (rest_.size() < sizeof(T)) return Truncated(field);
    std::memcpy(value, rest_.data(), sizeof(T));
    rest_.remove_prefix(sizeof(T));
    return absl::OkStatus();
  }
  // `n` floats at the cursor, copied into `out`.
  absl::Status GetFloats(uint64_t n, std::vector<float>* out, absl::string_view field) {
    if (n > rest_.size() / sizeof(float)) return Truncated(field);
    out->resize(n);
    std::memcpy(out->data(), rest_.data(), n * sizeof(float));
    rest_.remove_prefix(n * sizeof(float));
    return absl::OkStatus();
  }
  absl::Status Header(const char* magic) {
    if (rest_.size() < 8 || rest_.substr(0, 8) != absl::string_view(magic, 8)) {
      return Error(absl::StrCat("does not start with ", magic));
    }
    rest_.remove_prefix(8);
    uint32_t version = 0;
    if (absl::Status s = Get(&version, "version"); !s.ok()) return s;
    if (version != kFilesVersion) {
      return Error(absl::StrCat("version ", version, ", this build reads ", kFilesVersion));
    }
    return absl::OkStatus();
  }
  absl::Status End() {
    if (!rest_.empty()) return Error(absl::StrCat(rest_.size(), " bytes after the last record"));
    return absl::OkStatus();
  }
  absl::Status Error(absl::string_view why) const {
    return absl::DataLossError(absl::StrCat(what_, ": ", why));
  }

 private:
  absl::Status Truncated(absl::string_view field) const {
    return Error(absl::StrCat("ends inside ", field));
  }
  absl::string_view rest_;
  const std::string& what_;
};

}  // namespace

SparseRowsWriter::SparseRowsWriter() = default;

void SparseRowsWriter::Add(uint64_t key, absl::Span<const float> row, uint32_t pushes) {
  Put(&body_, key);
  Put(&body_, pushes);
  Put(&body_, static_cast<uint32_t>(row.size()));
  body_.append(reinterpret_cast<const char*>(row.data()), row.size() * sizeof(float));
  ++rows_;
}

std::string SparseRowsWriter::Finish() {
  std::string out(kSparseMagic, 8);
  Put(&out, kFilesVersion);
  Put(&out, rows_);
  out += body_;
  body_.clear();
  rows_ = 0;
  return out;
}

absl::StatusOr<std::string> EncodeSparseRows(
    absl::FunctionRef<absl::Status(RowVisitor visit)> for_each_row, uint64_t* rows) {
  SparseRowsWriter writer;
  absl::Status status = for_each_row([&](uint64_t key, absl::Span<const float> row, uint32_t pushes) {
    writer.Add(key, row, pushes);
    return absl::OkStatus();
  });
  if (!status.ok()) return status;
  if (rows != nullptr) *rows = writer.rows();
  return writer.Finish();
}

absl::Status ReadSparseRows(
    absl::string_view bytes, const std::string& what,
    absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>
        visit) {
  Cursor cursor(bytes, what);
  if (absl::Status s = cursor.Header(kSparseMagic); !s.ok()) return s;
  uint64_t rows = 0;
  if (absl::Status s = cursor.Get(&rows, "the row count"); !s.ok()) return s;
  std::vector<float> row;
  for (uint64_t r = 0; r < rows; ++r) {
    uint64_t key = 0;
    uint32_t pushes = 0, n = 0;
    const std::string field = absl::StrCat("row ", r);
    absl::Status s = cursor.Get(&key, field);
    if (s.ok()) s = cursor.Get(&pushes, field);
    if (s.ok()) s = cursor.Get(&n, field);
    if (s.ok()) s = cursor.GetFloats(n, &row, field);
    if (s.ok()) s = visit(key, row, pushes);
    if (!s.ok()) return s;
  }
  return cursor.End();
}

std::string EncodeDenseFloats(const std::vector<std::vector<float>>& tensors) {
  std::string out(kDenseMagic, 8);
  Put(&out, kFilesVersion);
  Put(&out, static_cast<uint32_t>(tensors.size()));
  for (const std::vector<float>& t : tensors) {
    Put(&out, static_cast<uint64_t>(t.size()));
    out.append(reinterpret_cast<const char*>(t.data()), t.size() * sizeof(float));
  }
  return out;
}

absl::StatusOr<std::vector<std::vector<float>>> DecodeDenseFloats(absl::string_view bytes,
                                                                  const std::string& what) {
  Cursor cursor(bytes, what);
  if (absl::Status s = cursor.Header(kDenseMagic); !s.ok()) return s;
  uint32_t count = 0;
  if (absl::Status s = cursor.Get(&count, "the tensor count"); !s.ok()) return s;
  std::vector<std::vector<float>> tensors(count);
  for (uint32_t i = 0; i < count; ++i) {
    uint64_t n = 0;
    const std::string field = absl::StrCat("tensor ", i);
    absl::Status s = cursor.Get(&n, field);
    if (s.ok()) s = cursor.GetFloats(n, &tensors[i], field);
    if (!s.ok()) return s;
  }
  if (absl::Status s = cursor.End(); !s.ok()) return s;
  return tensors;
}

}  // namespace choir::checkpoint
