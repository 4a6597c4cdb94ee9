#include "checkpoint/files.h"

#include <cmath>
#include <cstring>
#include <limits>

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
  // `n` values of type T at the cursor, copied into `out`.
  template <typename T>
  absl::Status GetArray(uint64_t n, std::vector<T>* out, absl::string_view field) {
    if (n > rest_.size() / sizeof(T)) return Truncated(field);
    out->resize(n);
    std::memcpy(out->data(), rest_.data(), n * sizeof(T));
    rest_.remove_prefix(n * sizeof(T));
    return absl::OkStatus();
  }
  absl::Status GetFloats(uint64_t n, std::vector<float>* out, absl::string_view field) {
    return GetArray(n, out, field);
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

namespace {

constexpr char kBundleRowsMagic[] = "CHBROWS1";
constexpr char kInt64TableMagic[] = "CHI64TB1";
constexpr uint32_t kF32 = 0, kF16 = 1;

}  // namespace

absl::Status BundleRowsWriter::Add(uint64_t key, absl::Span<const float> values) {
  Put(&body_, key);
  Put(&body_, static_cast<uint32_t>(values.size()));
  if (!fp16_) {
    body_.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(float));
  } else {
    for (float v : values) {
      if (!(std::fabs(v) <= 65504.0f)) {
        return absl::InvalidArgumentError(absl::StrCat("row of key ", key, ": ", v, " does not fit fp16"));
      }
      Put(&body_, static_cast<_Float16>(v));  // round to nearest even
    }
  }
  ++rows_;
  return absl::OkStatus();
}

std::string BundleRowsWriter::Finish() const {
  std::string out(kBundleRowsMagic, 8);
  Put(&out, kFilesVersion);
  Put(&out, fp16_ ? kF16 : kF32);
  Put(&out, rows_);
  out += body_;
  return out;
}

absl::Status ReadBundleRows(absl::string_view bytes, const std::string& what,
                            absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> values)> visit) {
  Cursor in(bytes, what);
  uint32_t dtype = 0;
  uint64_t rows = 0;
  if (absl::Status s = in.Header(kBundleRowsMagic); !s.ok()) return s;
  if (absl::Status s = in.Get(&dtype, "dtype"); !s.ok()) return s;
  if (dtype != kF32 && dtype != kF16) return in.Error(absl::StrCat("unknown dtype ", dtype));
  if (absl::Status s = in.Get(&rows, "row count"); !s.ok()) return s;
  std::vector<float> values;
  std::vector<_Float16> half;
  for (uint64_t r = 0; r < rows; ++r) {
    uint64_t key = 0;
    uint32_t n = 0;
    if (absl::Status s = in.Get(&key, "a row's key"); !s.ok()) return s;
    if (absl::Status s = in.Get(&n, "a row's length"); !s.ok()) return s;
    if (dtype == kF32) {
      if (absl::Status s = in.GetFloats(n, &values, "a row's values"); !s.ok()) return s;
    } else {
      if (absl::Status s = in.GetArray(n, &half, "a row's values"); !s.ok()) return s;
      values.assign(half.begin(), half.end());
    }
    if (absl::Status s = visit(key, values); !s.ok()) return s;
  }
  return in.End();
}

std::string EncodeInt64Table(int columns, const std::vector<int64_t>& values) {
  std::string out(kInt64TableMagic, 8);
  Put(&out, kFilesVersion);
  Put(&out, static_cast<uint32_t>(columns));
  Put(&out, static_cast<uint64_t>(columns > 0 ? values.size() / columns : 0));
  out.append(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(int64_t));
  return out;
}

absl::StatusOr<std::vector<int64_t>> DecodeInt64Table(absl::string_view bytes, int columns,
                                                      const std::string& what) {
  Cursor in(bytes, what);
  uint32_t file_columns = 0;
  uint64_t rows = 0;
  if (absl::Status s = in.Header(kInt64TableMagic); !s.ok()) return s;
  if (absl::Status s = in.Get(&file_columns, "column count"); !s.ok()) return s;
  if (file_columns != static_cast<uint32_t>(columns)) {
    return in.Error(absl::StrCat(file_columns, " columns, want ", columns));
  }
  if (absl::Status s = in.Get(&rows, "row count"); !s.ok()) return s;
  std::vector<int64_t> values;
  if (rows > std::numeric_limits<uint64_t>::max() / (columns + 1)) return in.Error("absurd row count");
  if (absl::Status s = in.GetArray(rows * columns, &values, "the values"); !s.ok()) return s;
  if (absl::Status s = in.End(); !s.ok()) return s;
  return values;
}

}  // namespace choir::checkpoint
