#include "data/groups/npy.h"

#include <cstring>
#include <limits>

#include "absl/base/config.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/status.h"

namespace choir::groups {
namespace {

static_assert(ABSL_IS_LITTLE_ENDIAN, "npy I/O assumes a little-endian host");

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

uint32_t ReadLe(absl::string_view b, size_t offset, int bytes) {
  uint32_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[offset + i]);
  return v;
}

// The value text after `'key':` in the header dict, up to the next top-level ',' or '}'
// (parentheses nest). NOT_FOUND when the key is absent.
absl::StatusOr<std::string> DictValue(absl::string_view dict, absl::string_view key) {
  const std::string quoted_single = absl::StrCat("'", key, "'");
  const std::string quoted_double = absl::StrCat("\"", key, "\"");
  size_t pos = dict.find(quoted_single);
  size_t key_len = quoted_single.size();
  if (pos == absl::string_view::npos) {
    pos = dict.find(quoted_double);
    key_len = quoted_double.size();
  }
  if (pos == absl::string_view::npos) return absl::NotFoundError(absl::StrCat("no '", key, "'"));
  size_t i = pos + key_len;
  while (i < dict.size() && (dict[i] == ' ' || dict[i] == ':')) ++i;
  int depth = 0;
  size_t start = i;
  for (; i < dict.size(); ++i) {
    const char c = dict[i];
    if (c == '(') ++depth;
    if (c == ')') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
  }
  return std::string(absl::StripAsciiWhitespace(dict.substr(start, i - start)));
}

}  // namespace

absl::StatusOr<FloatMatrix> ParseNpy(absl::string_view bytes, absl::string_view path) {
  auto loss = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path, ": not a valid .npy file: ", what));
  };
  auto bad = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": unsupported .npy array: ", what));
  };
  if (bytes.size() < kMagicLen + 2 || bytes.substr(0, kMagicLen) != absl::string_view(kMagic, kMagicLen)) {
    return loss("bad magic (expected \\x93NUMPY)");
  }
  const int major = static_cast<uint8_t>(bytes[6]);
  int len_bytes = 0;
  if (major == 1) {
    len_bytes = 2;
  } else if (major == 2) {
    len_bytes = 4;
  } else {
    return bad(absl::StrCat("format version ", major, ".", static_cast<uint8_t>(bytes[7]),
                            " (1.0 and 2.0 are read)"));
  }
  const size_t prefix = kMagicLen + 2 + len_bytes;
  if (bytes.size() < prefix) return loss("truncated header");
  const uint64_t header_len = ReadLe(bytes, kMagicLen + 2, len_bytes);
  if (bytes.size() < prefix + header_len) return loss("truncated header");
  const absl::string_view dict = bytes.substr(prefix, header_len);

  absl::StatusOr<std::string> descr = DictValue(dict, "descr");
  if (!descr.ok()) return loss(absl::StrCat("header has no 'descr': ", dict));
  if (*descr != "'<f4'" && *descr != "\"<f4\"") {
    return bad(absl::StrCat("dtype ", *descr, " (expected '<f4', little-endian float32)"));
  }
  absl::StatusOr<std::string> fortran = DictValue(dict, "fortran_order");
  if (!fortran.ok()) return loss(absl::StrCat("header has no 'fortran_order': ", dict));
  if (*fortran != "False") return bad("fortran_order True (expected C order)");
  absl::StatusOr<std::string> shape_text = DictValue(dict, "shape");
  if (!shape_text.ok()) return loss(absl::StrCat("header has no 'shape': ", dict));
  absl::string_view shape = *shape_text;
  if (shape.size() < 2 || shape.front() != '(' || shape.back() != ')') {
    return loss(absl::StrCat("bad shape ", shape));
  }
  std::vector<int64_t> dims;
  for (absl::string_view part : absl::StrSplit(shape.substr(1, shape.size() - 2), ',')) {
    part = absl::StripAsciiWhitespace(part);
    if (part.empty()) continue;  // "(5,)"
    int64_t v = 0;
    if (!absl::SimpleAtoi(part, &v) || v < 0) return loss(absl::StrCat("bad shape ", shape));
    dims.push_back(v);
  }
  if (dims.size() != 2) {
    return bad(absl::StrCat("shape ", shape, " has ", dims.size(), " dimensions (expected 2)"));
  }
  FloatMatrix m;
  m.rows = dims[0];
  m.cols = dims[1];
  const uint64_t data_bytes = static_cast<uint64_t>(m.rows) * m.cols * sizeof(float);
  if (m.cols != 0 && static_cast<uint64_t>(m.rows) > std::numeric_limits<uint64_t>::max() / 4 / m.cols) {
    return loss(absl::StrCat("shape ", shape, " overflows"));
  }
  const uint64_t have = bytes.size() - prefix - header_len;
  if (have != data_bytes) {
    return loss(absl::StrCat("shape ", shape, " needs ", data_bytes, " data bytes, file has ",
                             have, have < data_bytes ? " (truncated)" : ""));
  }
  m.values.resize(m.rows * m.cols);
  if (data_bytes > 0) std::memcpy(m.values.data(), bytes.data() + prefix + header_len, data_bytes);
  return m;
}

absl::StatusOr<FloatMatrix> ReadNpy(FileSystem* fs, const std::string& path) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, fs->MapReadOnly(path));
  return ParseNpy(region->data(), path);
}

namespace {

// The header (magic, version, length, padded dict) of a [rows, cols] '<f4' array.
std::string NpyHeader(int64_t rows, int64_t cols) {
  std::string dict = absl::StrCat("{'descr': '<f4', 'fortran_order': False, 'shape': (", rows,
                                  ", ", cols, "), }");
  // Pad with spaces and a final newline so that the data starts at a multiple of 64 bytes.
  const bool v1 = dict.size() + 1 + kMagicLen + 4 <= 65535;
  const size_t prefix = kMagicLen + 2 + (v1 ? 2 : 4);
  const size_t total = (prefix + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - prefix - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string out(kMagic, kMagicLen);
  out.push_back(static_cast<char>(v1 ? 1 : 2));
  out.push_back(0);
  const uint32_t len = static_cast<uint32_t>(dict.size());
  for (int i = 0; i < (v1 ? 2 : 4); ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  return out + dict;
}

absl::string_view DataBytes(const float* data, int64_t rows, int64_t cols) {
  return absl::string_view(reinterpret_cast<const char*>(data),
                           static_cast<size_t>(rows * cols) * sizeof(float));
}

}  // namespace

std::string SerializeNpy(const float* data, int64_t rows, int64_t cols) {
  return absl::StrCat(NpyHeader(rows, cols), DataBytes(data, rows, cols));
}

absl::Status WriteNpy(FileSystem* fs, const std::string& path, const float* data, int64_t rows,
                      int64_t cols) {
  // Streamed to "path.tmp" and renamed, so a large array is not copied into one string.
  const std::string tmp = path + ".tmp";
  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, fs->NewWritableFile(tmp));
  RETURN_IF_ERROR(file->Append(NpyHeader(rows, cols)));
  RETURN_IF_ERROR(file->Append(DataBytes(data, rows, cols)));
  RETURN_IF_ERROR(file->Sync());
  RETURN_IF_ERROR(file->Close());
  RETURN_IF_ERROR(fs->Rename(tmp, path));
  return fs->SyncDir(Dirname(path));
}

}  // namespace choir::groups
