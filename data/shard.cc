#include "data/shard.h"

#include <zstd.h>

#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/config.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "core/crc32c.h"
#include "core/status.h"
#include "google/protobuf/util/message_differencer.h"

namespace choir::data {
namespace {

// Byte layout constants; docs/shard-format.md is the reference.
constexpr char kFileMagic[] = "CHOIRSHD";    // 8 bytes at offset 0
constexpr char kBlockMagic[] = "BLK1";       // 4 bytes at the start of each block
constexpr char kFooterMagic[] = "CHOIREND";  // the file's last 8 bytes
constexpr size_t kFileMagicLen = 8;
constexpr size_t kBlockMagicLen = 4;
constexpr size_t kFooterMagicLen = 8;
// magic | u32 version | u32 header_len
constexpr size_t kFilePrefixLen = kFileMagicLen + 4 + 4;
// magic | u32 rows | u32 raw_len | u32 stored_len | u32 payload crc | u32 header crc
constexpr size_t kBlockHeaderLen = kBlockMagicLen + 5 * 4;
constexpr size_t kBlockHeaderCrcCovers = kBlockHeaderLen - 4;
// u64 block count | u64 row count | u32 crc | u32 footer_len | magic (after the offsets)
constexpr size_t kFooterFixedLen = 8 + 8 + 4 + 4 + kFooterMagicLen;

// ---- Little-endian fixed-width encoding (portable; memcpy avoids unaligned access UB).

void PutFixed32(std::string* dst, uint32_t v) {
  char buf[4];
  for (int i = 0; i < 4; ++i) buf[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  dst->append(buf, 4);
}

void PutFixed64(std::string* dst, uint64_t v) {
  char buf[8];
  for (int i = 0; i < 8; ++i) buf[i] = static_cast<char>((v >> (8 * i)) & 0xff);
  dst->append(buf, 8);
}

uint32_t GetFixed32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return static_cast<uint32_t>(u[0]) | static_cast<uint32_t>(u[1]) << 8 |
         static_cast<uint32_t>(u[2]) << 16 | static_cast<uint32_t>(u[3]) << 24;
}

uint64_t GetFixed64(const char* p) {
  return static_cast<uint64_t>(GetFixed32(p)) | static_cast<uint64_t>(GetFixed32(p + 4)) << 32;
}

// Appends `n` values of a 4- or 8-byte type in little-endian order.
template <typename T>
void PutArray(std::string* dst, const T* values, size_t n) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "fixed-width values only");
  if (n == 0) return;
#ifdef ABSL_IS_LITTLE_ENDIAN
  dst->append(reinterpret_cast<const char*>(values), n * sizeof(T));
#else
  for (size_t i = 0; i < n; ++i) {
    if constexpr (sizeof(T) == 4) {
      uint32_t u;
      std::memcpy(&u, &values[i], 4);
      PutFixed32(dst, u);
    } else {
      uint64_t u;
      std::memcpy(&u, &values[i], 8);
      PutFixed64(dst, u);
    }
  }
#endif
}

// Copies `n` little-endian values from `src` (which holds n * sizeof(T) bytes) into `out`.
template <typename T>
void GetArray(const char* src, size_t n, std::vector<T>* out) {
  out->resize(n);
  if (n == 0) return;
#ifdef ABSL_IS_LITTLE_ENDIAN
  std::memcpy(out->data(), src, n * sizeof(T));
#else
  for (size_t i = 0; i < n; ++i) {
    if constexpr (sizeof(T) == 4) {
      const uint32_t u = GetFixed32(src + 4 * i);
      std::memcpy(&(*out)[i], &u, 4);
    } else {
      const uint64_t u = GetFixed64(src + 8 * i);
      std::memcpy(&(*out)[i], &u, 8);
    }
  }
#endif
}

// Appends the payload of `rows` (see the layout in docs/shard-format.md) to `dst`.
void EncodePayload(const RowBlock& rows, std::string* dst) {
  for (size_t i = 0; i < rows.num_columns(); ++i) {
    const Column& c = rows.column(static_cast<int>(i));
    if (c.is_list()) PutArray(dst, c.offsets.data(), c.offsets.size());
    if (c.is_int()) {
      PutArray(dst, c.ints.data(), c.ints.size());
    } else {
      PutArray(dst, c.floats.data(), c.floats.size());
    }
  }
}

// Reads a payload with bounds checks on every length; never trusts a count it has not
// checked against the bytes that remain. Errors are messages without location (the caller
// adds file, block and offset).
class PayloadDecoder {
 public:
  explicit PayloadDecoder(absl::string_view payload) : data_(payload) {}

  absl::Status DecodeColumn(const Field& field, size_t rows, Column* c) {
    c->type = field.type();
    c->ints.clear();
    c->floats.clear();
    c->offsets.assign(1, 0);
    size_t values = rows;
    if (c->is_list()) {
      RETURN_IF_ERROR(Take(field, "offsets", rows + 1, &c->offsets));
      if (c->offsets[0] != 0) {
        return Bad(field, absl::StrCat("first list offset is ", c->offsets[0], ", not 0"));
      }
      for (size_t r = 0; r < rows; ++r) {
        if (c->offsets[r + 1] < c->offsets[r]) {
          return Bad(field, absl::StrCat("list offsets decrease at row ", r + 1));
        }
      }
      values = c->offsets[rows];
    }
    if (c->is_int()) return Take(field, "values", values, &c->ints);
    if (c->type == FLOAT || c->type == FLOAT_LIST) return Take(field, "values", values, &c->floats);
    return Bad(field, absl::StrCat("unknown field type ", static_cast<int>(c->type)));
  }

  size_t remaining() const { return data_.size() - pos_; }

 private:
  template <typename T>
  absl::Status Take(const Field& field, const char* what, size_t n, std::vector<T>* out) {
    // n <= 2^32 + 1, so n * 8 cannot overflow size_t on 64-bit hosts; check anyway.
    if (n > remaining() / sizeof(T)) {
      return Bad(field, absl::StrCat(what, " need ", n, " x ", sizeof(T), " bytes at payload byte ",
                                     pos_, " but only ", remaining(), " remain"));
    }
    GetArray(data_.data() + pos_, n, out);
    pos_ += n * sizeof(T);
    return absl::OkStatus();
  }

  static absl::Status Bad(const Field& field, absl::string_view what) {
    return absl::DataLossError(absl::StrCat("column '", field.name(), "': ", what));
  }

  absl::string_view data_;
  size_t pos_ = 0;
};

std::string Hex32(uint32_t v) { return absl::StrFormat("0x%08x", v); }

// Most rows a block header can hold.
constexpr uint64_t kMaxBlockRows = std::numeric_limits<uint32_t>::max();
// A thread's zstd buffer that grew beyond this for one big block is released after it.
constexpr size_t kKeptDecompressBufferBytes = 64 << 20;

// The least payload bytes one row of `schema` takes: a value per scalar column, an offset per
// list column (whose values may be empty).
uint64_t MinRowBytes(const Schema& schema) {
  uint64_t bytes = 0;
  for (const Field& field : schema.fields()) bytes += field.type() == INT64 ? 8 : 4;
  return bytes;
}

// The footer's fixed fields, after its magic, length and CRC were checked.
struct Footer {
  uint64_t start = 0;  // file offset of the footer (of its block offsets)
  uint64_t num_blocks = 0;
  uint64_t num_rows = 0;
};

// Reads the footer at the end of `data` (the whole file) without trusting anything before it;
// `min_start` is the earliest offset the footer may start at (the end of the file header).
// The footer may still give block offsets that do not fit the file; the caller checks them.
absl::StatusOr<Footer> ParseFooter(const std::string& path, absl::string_view data,
                                   uint64_t min_start) {
  const char* p = data.data();
  const uint64_t size = data.size();
  if (size < min_start + kFooterFixedLen ||
      std::memcmp(p + size - kFooterMagicLen, kFooterMagic, kFooterMagicLen) != 0) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: no footer (file is ", size, " bytes)"));
  }
  const uint64_t footer_len = GetFixed32(p + size - kFooterMagicLen - 4);
  if (footer_len < kFooterFixedLen || (footer_len - kFooterFixedLen) % 8 != 0 ||
      footer_len > size - min_start) {
    return absl::DataLossError(absl::StrCat(path, ": bad footer length ", footer_len, " at offset ",
                                            size - kFooterMagicLen - 4, " (file is ", size,
                                            " bytes)"));
  }
  Footer footer;
  footer.start = size - footer_len;
  footer.num_blocks = (footer_len - kFooterFixedLen) / 8;
  const char* f = p + footer.start;
  const uint64_t crc_at = footer.start + footer.num_blocks * 8 + 16;
  const uint32_t footer_crc = GetFixed32(p + crc_at);
  const uint32_t footer_actual = crc32c::Value(f, crc_at - footer.start);
  if (footer_crc != footer_actual) {
    return absl::DataLossError(absl::StrCat(path, ": footer checksum mismatch at offset ", crc_at,
                                            " (stored ", Hex32(footer_crc), ", computed ",
                                            Hex32(footer_actual), ")"));
  }
  if (GetFixed64(f + footer.num_blocks * 8) != footer.num_blocks) {
    return absl::DataLossError(absl::StrCat(path, ": footer at offset ", footer.start,
                                            " disagrees with itself on the block count"));
  }
  footer.num_rows = GetFixed64(f + footer.num_blocks * 8 + 8);
  // Each block holds 1 to 2^32-1 rows.
  const uint64_t max_rows_blocks =
      footer.num_rows / kMaxBlockRows + (footer.num_rows % kMaxBlockRows != 0 ? 1 : 0);
  if (footer.num_rows < footer.num_blocks || max_rows_blocks > footer.num_blocks) {
    return absl::DataLossError(absl::StrCat(path, ": footer at offset ", footer.start, " gives ",
                                            footer.num_rows, " rows for ", footer.num_blocks,
                                            " blocks"));
  }
  return footer;
}

// The footer's row count of the shard at `path` when its footer is intact, else 1: what a
// shard that cannot be opened costs the error budget.
int64_t RowsLostWithFile(FileSystem* fs, const std::string& path) {
  absl::StatusOr<std::unique_ptr<ReadOnlyRegion>> region = fs->MapReadOnly(path);
  if (!region.ok()) return 1;
  absl::StatusOr<Footer> footer = ParseFooter(path, (*region)->data(), kFilePrefixLen + 4);
  if (!footer.ok() || footer->num_rows == 0) return 1;
  return static_cast<int64_t>(
      std::min<uint64_t>(footer->num_rows, std::numeric_limits<int64_t>::max()));
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// ShardWriter

struct ShardWriter::Compressor {
  ZSTD_CCtx* ctx = nullptr;
  std::string out;
  ~Compressor() { ZSTD_freeCCtx(ctx); }
};

ShardWriter::ShardWriter(FileSystem* fs, std::string path, Schema schema,
                         ShardWriterOptions options, std::unique_ptr<WritableFile> file)
    : fs_(fs),
      path_(std::move(path)),
      schema_(std::move(schema)),
      options_(std::move(options)),
      file_(std::move(file)) {}

absl::StatusOr<std::unique_ptr<ShardWriter>> ShardWriter::Open(FileSystem* fs,
                                                               const std::string& path,
                                                               const Schema& schema,
                                                               const ShardWriterOptions& options) {
  RETURN_IF_ERROR(Annotate(ValidateSchema(schema), path));
  if (options.codec != CODEC_NONE && options.codec != CODEC_ZSTD) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": unknown codec ", static_cast<int>(options.codec)));
  }
  if (options.codec == CODEC_ZSTD &&
      (options.zstd_level < ZSTD_minCLevel() || options.zstd_level > ZSTD_maxCLevel())) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": zstd level ", options.zstd_level,
                                                   " is outside [", ZSTD_minCLevel(), ", ",
                                                   ZSTD_maxCLevel(), "]"));
  }
  ShardHeader header;
  *header.mutable_schema() = schema;
  header.set_codec(options.codec);
  header.set_writer(options.writer);
  std::string proto;
  if (!header.SerializeToString(&proto)) {
    return absl::InternalError(absl::StrCat(path, ": cannot serialise the shard header"));
  }

  ASSIGN_OR_RETURN(std::unique_ptr<WritableFile> file, fs->NewWritableFile(path + ".tmp"));
  std::unique_ptr<ShardWriter> writer(new ShardWriter(fs, path, schema, options, std::move(file)));
  if (options.codec == CODEC_ZSTD) {
    writer->compressor_ = std::make_unique<Compressor>();
    writer->compressor_->ctx = ZSTD_createCCtx();
    if (writer->compressor_->ctx == nullptr) {
      return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot create a zstd context"));
    }
  }

  std::string bytes(kFileMagic, kFileMagicLen);
  PutFixed32(&bytes, kShardVersion);
  PutFixed32(&bytes, static_cast<uint32_t>(proto.size()));
  bytes += proto;
  PutFixed32(&bytes, crc32c::Value(bytes.data() + kFileMagicLen, bytes.size() - kFileMagicLen));
  RETURN_IF_ERROR(writer->AppendRaw(bytes));
  return writer;
}

ShardWriter::~ShardWriter() {
  if (!closed_) Abort();
}

void ShardWriter::Abort() {
  if (file_ != nullptr) {
    file_->Close().IgnoreError();
    file_.reset();
  }
  fs_->DeleteFile(path_ + ".tmp").IgnoreError();
}

absl::Status ShardWriter::AppendRaw(absl::string_view bytes) {
  absl::Status s = file_->Append(bytes);
  if (!s.ok()) {
    Abort();
    return Annotate(s, absl::StrCat(path_, ": writing at byte ", offset_));
  }
  offset_ += bytes.size();
  return absl::OkStatus();
}

absl::Status ShardWriter::Write(const RowBlock& rows) {
  if (closed_ || file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": Write after Close or after a failed write"));
  }
  if (rows.num_rows() == 0) return absl::OkStatus();
  if (!google::protobuf::util::MessageDifferencer::Equals(rows.schema(), schema_)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": block schema differs from the file's: ", rows.schema().ShortDebugString(), " vs ",
        schema_.ShortDebugString()));
  }
  RETURN_IF_ERROR(Annotate(rows.Validate(), absl::StrCat(path_, ": invalid block")));
  if (rows.num_rows() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path_, ": block of ", rows.num_rows(), " rows; at most 2^32-1 per block"));
  }

  scratch_.clear();
  EncodePayload(rows, &scratch_);
  if (scratch_.size() > std::numeric_limits<uint32_t>::max()) {
    return absl::InvalidArgumentError(absl::StrCat(path_, ": block payload of ", scratch_.size(),
                                                   " bytes; at most 4 GiB, write smaller blocks"));
  }
  absl::string_view stored = scratch_;
  if (options_.codec == CODEC_ZSTD) {
    std::string& out = compressor_->out;
    out.resize(ZSTD_compressBound(scratch_.size()));
    const size_t n = ZSTD_compressCCtx(compressor_->ctx, out.data(), out.size(), scratch_.data(),
                                       scratch_.size(), options_.zstd_level);
    if (ZSTD_isError(n)) {
      return absl::InternalError(
          absl::StrCat(path_, ": zstd compression failed: ", ZSTD_getErrorName(n)));
    }
    if (n > std::numeric_limits<uint32_t>::max()) {
      return absl::InvalidArgumentError(absl::StrCat(path_, ": compressed block too large"));
    }
    stored = absl::string_view(out.data(), n);
  }

  std::string header(kBlockMagic, kBlockMagicLen);
  PutFixed32(&header, static_cast<uint32_t>(rows.num_rows()));
  PutFixed32(&header, static_cast<uint32_t>(scratch_.size()));
  PutFixed32(&header, static_cast<uint32_t>(stored.size()));
  PutFixed32(&header, crc32c::Value(stored));
  PutFixed32(&header, crc32c::Value(header.data(), kBlockHeaderCrcCovers));

  const uint64_t block_offset = offset_;
  RETURN_IF_ERROR(AppendRaw(header));
  RETURN_IF_ERROR(AppendRaw(stored));
  block_offsets_.push_back(block_offset);
  rows_ += rows.num_rows();
  return absl::OkStatus();
}

absl::Status ShardWriter::Close() {
  if (closed_ || file_ == nullptr) {
    return absl::FailedPreconditionError(
        absl::StrCat(path_, ": Close after Close or after a failed write"));
  }
  std::string footer;
  for (uint64_t off : block_offsets_) PutFixed64(&footer, off);
  PutFixed64(&footer, block_offsets_.size());
  PutFixed64(&footer, rows_);
  PutFixed32(&footer, crc32c::Value(footer));
  PutFixed32(&footer, static_cast<uint32_t>(footer.size() + 4 + kFooterMagicLen));
  footer.append(kFooterMagic, kFooterMagicLen);
  RETURN_IF_ERROR(AppendRaw(footer));

  const std::string tmp = path_ + ".tmp";
  absl::Status s = file_->Sync();
  if (s.ok()) s = file_->Close();
  if (s.ok()) s = fs_->Rename(tmp, path_);
  if (!s.ok()) {
    Abort();
    return Annotate(s, absl::StrCat(path_, ": finishing the shard"));
  }
  file_.reset();
  closed_ = true;
  // The file is complete at `path_`; syncing its directory makes the rename durable.
  return Annotate(fs_->SyncDir(Dirname(path_)), absl::StrCat(path_, ": syncing its directory"));
}

// ---------------------------------------------------------------------------------------------
// ShardReader

absl::StatusOr<std::unique_ptr<ShardReader>> ShardReader::Open(FileSystem* fs,
                                                               const std::string& path,
                                                               const ShardReaderOptions& options) {
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, fs->MapReadOnly(path));
  const absl::string_view data = region->data();
  const char* p = data.data();
  const uint64_t size = data.size();
  auto truncated = [&]() {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: no footer (file is ", size, " bytes)"));
  };

  // Magic and version first: bytes 0-11 keep their meaning in every version.
  const size_t magic_bytes = std::min<uint64_t>(size, kFileMagicLen);
  if (magic_bytes > 0 && std::memcmp(p, kFileMagic, magic_bytes) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, ": not a Choir shard (bad magic at offset 0)"));
  }
  if (size < kFileMagicLen + 4) return truncated();
  const uint32_t version = GetFixed32(p + kFileMagicLen);
  if (version != kShardVersion) {
    return absl::FailedPreconditionError(
        absl::StrCat(path, ": shard version ", version,
                     " is not supported (this build reads version ", kShardVersion, ")"));
  }
  if (size < kFilePrefixLen + 4 + kFooterFixedLen ||
      std::memcmp(p + size - kFooterMagicLen, kFooterMagic, kFooterMagicLen) != 0) {
    return truncated();
  }

  // File header.
  const uint64_t header_len = GetFixed32(p + kFileMagicLen + 4);
  const uint64_t header_end = kFilePrefixLen + header_len + 4;  // first block's offset
  if (header_end + kFooterFixedLen > size || header_len > std::numeric_limits<int>::max()) {
    return absl::DataLossError(absl::StrCat(path, ": header length ", header_len,
                                            " at offset 12 runs past the footer (file is ", size,
                                            " bytes)"));
  }
  const uint32_t header_crc = GetFixed32(p + header_end - 4);
  const uint32_t header_actual = crc32c::Value(p + kFileMagicLen, header_end - 4 - kFileMagicLen);
  if (header_crc != header_actual) {
    return absl::DataLossError(absl::StrCat(path, ": header checksum mismatch at offset ",
                                            header_end - 4, " (stored ", Hex32(header_crc),
                                            ", computed ", Hex32(header_actual), ")"));
  }
  std::unique_ptr<ShardReader> reader(new ShardReader());
  reader->path_ = path;
  reader->options_ = options;
  if (!reader->header_.ParseFromArray(p + kFilePrefixLen, static_cast<int>(header_len))) {
    return absl::DataLossError(
        absl::StrCat(path, ": header at offset ", kFilePrefixLen, " is not a valid ShardHeader"));
  }
  absl::Status schema_ok = ValidateSchema(reader->header_.schema());
  if (!schema_ok.ok()) {
    return absl::DataLossError(absl::StrCat(path, ": bad schema in header: ", schema_ok.message()));
  }
  if (reader->header_.codec() != CODEC_NONE && reader->header_.codec() != CODEC_ZSTD) {
    return absl::DataLossError(absl::StrCat(path, ": unknown codec in header"));
  }

  reader->min_row_bytes_ = MinRowBytes(reader->header_.schema());

  // Footer, read from the end.
  ASSIGN_OR_RETURN(const Footer footer, ParseFooter(path, data, header_end));
  const uint64_t footer_start = footer.start;
  const uint64_t num_blocks = footer.num_blocks;
  // Bound the count by the bytes the blocks occupy before allocating for it.
  if (num_blocks > (footer_start - header_end) / kBlockHeaderLen) {
    return absl::DataLossError(
        absl::StrCat(path, ": footer at offset ", footer_start, " lists ", num_blocks,
                     " blocks but the ", footer_start - header_end, " bytes at offset ", header_end,
                     " hold at most ", (footer_start - header_end) / kBlockHeaderLen));
  }
  reader->num_rows_ = footer.num_rows;
  reader->block_offsets_.resize(num_blocks);
  uint64_t min_offset = header_end;
  for (uint64_t i = 0; i < num_blocks; ++i) {
    const uint64_t off = GetFixed64(p + footer_start + 8 * i);
    // Blocks are contiguous from the end of the header; each needs room for its header.
    if (off < min_offset || (i == 0 && off != header_end) || off > footer_start ||
        footer_start - off < kBlockHeaderLen) {
      return absl::DataLossError(absl::StrCat(path, ": footer gives block ", i, " the offset ", off,
                                              ", outside [", min_offset, ", ", footer_start, ")"));
    }
    reader->block_offsets_[i] = off;
    min_offset = off + kBlockHeaderLen;
  }
  if (num_blocks == 0 && footer_start != header_end) {
    return absl::DataLossError(absl::StrCat(path, ": ", footer_start - header_end,
                                            " stray bytes at offset ", header_end,
                                            " in a file without blocks"));
  }
  reader->region_ = std::move(region);
  return reader;
}

absl::StatusOr<ShardReader::BlockInfo> ShardReader::CheckBlockHeader(size_t i) const {
  if (i >= block_offsets_.size()) {
    return absl::OutOfRangeError(absl::StrCat(path_, ": block ", i, " out of range (file has ",
                                              block_offsets_.size(), " blocks)"));
  }
  const absl::string_view data = region_->data();
  const uint64_t off = block_offsets_[i];
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat(path_, ": block ", i, " at offset ", off, ": ", what));
  };
  // Open() guarantees that the block header lies before the next block (or the footer).
  const char* h = data.data() + off;
  if (std::memcmp(h, kBlockMagic, kBlockMagicLen) != 0) return bad("bad block magic");
  const uint32_t stored_crc = GetFixed32(h + kBlockHeaderCrcCovers);
  const uint32_t actual_crc = crc32c::Value(h, kBlockHeaderCrcCovers);
  if (stored_crc != actual_crc) {
    return bad(absl::StrCat("block header checksum mismatch (stored ", Hex32(stored_crc),
                            ", computed ", Hex32(actual_crc), ")"));
  }
  BlockInfo block;
  block.rows = GetFixed32(h + kBlockMagicLen);
  block.raw_len = GetFixed32(h + kBlockMagicLen + 4);
  const uint32_t stored_len = GetFixed32(h + kBlockMagicLen + 8);
  block.payload_crc = GetFixed32(h + kBlockMagicLen + 12);

  // The lengths passed the CRC but are still only claims: check each against the file and the
  // options before anything is allocated for it.
  const uint64_t limit = i + 1 < block_offsets_.size()
                             ? block_offsets_[i + 1]
                             : data.size() - (kFooterFixedLen + 8 * block_offsets_.size());
  const uint64_t span = limit - off - kBlockHeaderLen;
  if (stored_len != span) {
    return bad(
        absl::StrCat("payload length ", stored_len, " but the block spans ", span, " bytes"));
  }
  if (block.raw_len > options_.max_block_bytes) {
    return bad(absl::StrCat("raw payload length ", block.raw_len, " exceeds the reader's limit of ",
                            options_.max_block_bytes,
                            " bytes (ShardReaderOptions::max_block_bytes)"));
  }
  if (header_.codec() == CODEC_NONE && block.raw_len != stored_len) {
    return bad(absl::StrCat("raw length ", block.raw_len, " differs from stored length ",
                            stored_len, " in an uncompressed block"));
  }
  if (block.rows == 0) return bad("block header gives 0 rows");
  if (min_row_bytes_ > 0 && block.rows > block.raw_len / min_row_bytes_) {
    return bad(absl::StrCat("block header gives ", block.rows, " rows but a payload of ",
                            block.raw_len, " bytes holds at most ",
                            block.raw_len / min_row_bytes_));
  }
  block.stored = data.substr(off + kBlockHeaderLen, stored_len);
  return block;
}

absl::StatusOr<uint32_t> ShardReader::BlockRows(size_t i) const {
  ASSIGN_OR_RETURN(const BlockInfo block, CheckBlockHeader(i));
  return block.rows;
}

absl::Status ShardReader::ReadBlock(size_t i, RowBlock* out) const {
  out->Clear();
  ASSIGN_OR_RETURN(const BlockInfo block, CheckBlockHeader(i));
  const std::string where =
      absl::StrCat(path_, ": block ", i, " at offset ", block_offsets_[i], ": ");
  const absl::string_view stored = block.stored;
  if (options_.verify_checksums) {
    const uint32_t actual = crc32c::Value(stored);
    if (actual != block.payload_crc) {
      return absl::DataLossError(absl::StrCat(where, "payload checksum mismatch (stored ",
                                              Hex32(block.payload_crc), ", computed ",
                                              Hex32(actual), ")"));
    }
  }

  absl::string_view raw = stored;
  // Decompression buffer, reused by each reading thread; released after a block that made it
  // grow past kKeptDecompressBufferBytes, so that one big block does not pin it forever.
  thread_local std::string decompressed;
  struct TrimOnExit {
    ~TrimOnExit() {
      if (decompressed.capacity() > kKeptDecompressBufferBytes) std::string().swap(decompressed);
    }
  } trim_on_exit;
  if (header_.codec() == CODEC_ZSTD) {
    const unsigned long long content = ZSTD_getFrameContentSize(stored.data(), stored.size());
    if (content != block.raw_len) {
      return absl::DataLossError(absl::StrCat(where, "zstd frame does not hold ", block.raw_len,
                                              " bytes as the block header says"));
    }
    decompressed.resize(block.raw_len);  // at most options_.max_block_bytes
    const size_t n =
        ZSTD_decompress(decompressed.data(), decompressed.size(), stored.data(), stored.size());
    if (ZSTD_isError(n)) {
      return absl::DataLossError(
          absl::StrCat(where, "zstd decompression failed: ", ZSTD_getErrorName(n)));
    }
    if (n != block.raw_len) {
      return absl::DataLossError(
          absl::StrCat(where, "decompressed to ", n, " bytes, expected ", block.raw_len));
    }
    raw = absl::string_view(decompressed.data(), n);
  }

  const Schema& schema = header_.schema();
  if (out->columns_.size() != static_cast<size_t>(schema.fields_size()) ||
      !google::protobuf::util::MessageDifferencer::Equals(out->schema_, schema)) {
    *out = RowBlock(schema);
  }
  PayloadDecoder decoder(raw);
  for (int c = 0; c < schema.fields_size(); ++c) {
    absl::Status s = decoder.DecodeColumn(schema.fields(c), block.rows, &out->columns_[c]);
    if (!s.ok()) {
      out->Clear();
      return absl::DataLossError(absl::StrCat(where, s.message()));
    }
  }
  if (decoder.remaining() != 0) {
    out->Clear();
    return absl::DataLossError(
        absl::StrCat(where, decoder.remaining(), " stray bytes at the end of the payload"));
  }
  out->num_rows_ = block.rows;
  absl::Status valid = out->Validate();
  if (!valid.ok()) {
    out->Clear();
    return absl::DataLossError(absl::StrCat(where, valid.message()));
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------------------------
// ForEachBlock

namespace {

// One block read by a decoder thread of ParallelForEachBlock, committed in file order.
struct BlockJob {
  std::shared_ptr<const ShardReader> reader;
  size_t index = 0;
  bool done = false;  // guarded by the caller's mutex
  absl::Status status;
  int64_t rows = 0;  // good: the block's rows; DATA_LOSS: the rows lost
  RowBlock block;    // reused by the next job that takes this one's place
};

// ForEachBlock with `threads` threads reading and decoding blocks ahead of `fn`. The calling
// thread opens the files, queues each block, and commits the blocks in file order (budget, then
// `fn`), so what `fn` sees and what is counted is ForEachBlock's. At most threads + 1 blocks are
// read ahead; on return (done, an error, or `fn` failing) the threads finish the block in hand
// and the rest of the queue is dropped.
absl::Status ParallelForEachBlock(FileSystem* fs, const std::vector<std::string>& files,
                                  ErrorCounter* errors,
                                  const std::function<absl::Status(const RowBlock&)>& fn,
                                  int threads) {
  std::mutex mu;
  std::condition_variable cv;
  std::deque<BlockJob*> todo;  // queued, not yet taken by a thread
  bool quit = false;
  std::deque<std::unique_ptr<BlockJob>> window;  // queued or read, in file order
  std::vector<std::unique_ptr<BlockJob>> spare;   // committed, their blocks' memory kept
  std::vector<std::thread> pool;
  // Runs before `window` and `spare` are destroyed: no thread touches a job after this.
  absl::Cleanup stop = [&] {
    {
      std::lock_guard<std::mutex> lock(mu);
      quit = true;
      todo.clear();
    }
    cv.notify_all();
    for (std::thread& t : pool) t.join();
  };
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&] {
      std::unique_lock<std::mutex> lock(mu);
      while (true) {
        cv.wait(lock, [&] { return quit || !todo.empty(); });
        if (quit) return;
        BlockJob* job = todo.front();
        todo.pop_front();
        lock.unlock();
        job->status = job->reader->ReadBlock(job->index, &job->block);
        if (job->status.ok()) {
          job->rows = static_cast<int64_t>(job->block.num_rows());
        } else if (job->status.code() == absl::StatusCode::kDataLoss) {
          const absl::StatusOr<uint32_t> rows = job->reader->BlockRows(job->index);
          job->rows = rows.ok() ? *rows : 1;
        }
        lock.lock();
        job->done = true;
        cv.notify_all();
      }
    });
  }
  // Waits for the oldest job, counts it and hands its block to `fn`.
  auto commit_oldest = [&]() -> absl::Status {
    BlockJob* job = window.front().get();
    {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return job->done; });
    }
    if (job->status.ok()) {
      errors->CountGood(job->rows);
      RETURN_IF_ERROR(fn(job->block));
    } else {
      if (job->status.code() != absl::StatusCode::kDataLoss) return job->status;
      RETURN_IF_ERROR(errors->CountBad(job->status, job->rows));
    }
    job->reader.reset();
    spare.push_back(std::move(window.front()));
    window.pop_front();
    return absl::OkStatus();
  };
  const size_t ahead = static_cast<size_t>(threads) + 1;  // every thread busy, one block ready
  for (const std::string& path : files) {
    absl::StatusOr<std::unique_ptr<ShardReader>> opened = ShardReader::Open(fs, path);
    if (!opened.ok()) {
      // Blocks of earlier files come first.
      while (!window.empty()) RETURN_IF_ERROR(commit_oldest());
      if (opened.status().code() != absl::StatusCode::kDataLoss) return opened.status();
      RETURN_IF_ERROR(errors->CountBad(opened.status(), RowsLostWithFile(fs, path)));
      continue;
    }
    std::shared_ptr<const ShardReader> reader = std::move(*opened);
    for (size_t i = 0; i < reader->num_blocks(); ++i) {
      while (window.size() >= ahead) RETURN_IF_ERROR(commit_oldest());
      std::unique_ptr<BlockJob> job;
      if (spare.empty()) {
        job = std::make_unique<BlockJob>();
      } else {
        job = std::move(spare.back());
        spare.pop_back();
      }
      job->reader = reader;
      job->index = i;
      job->done = false;
      job->status = absl::OkStatus();
      job->rows = 0;
      {
        std::lock_guard<std::mutex> lock(mu);
        todo.push_back(job.get());
      }
      cv.notify_all();
      window.push_back(std::move(job));
    }
  }
  while (!window.empty()) RETURN_IF_ERROR(commit_oldest());
  return absl::OkStatus();
}

}  // namespace

absl::Status ForEachBlock(FileSystem* fs, const std::vector<std::string>& files,
                          ErrorCounter* errors,
                          const std::function<absl::Status(const RowBlock&)>& fn, int threads) {
  if (threads > 1) return ParallelForEachBlock(fs, files, errors, fn, threads);
  RowBlock block;
  for (const std::string& path : files) {
    absl::StatusOr<std::unique_ptr<ShardReader>> reader = ShardReader::Open(fs, path);
    if (!reader.ok()) {
      if (reader.status().code() != absl::StatusCode::kDataLoss) return reader.status();
      RETURN_IF_ERROR(errors->CountBad(reader.status(), RowsLostWithFile(fs, path)));
      continue;
    }
    for (size_t i = 0; i < (*reader)->num_blocks(); ++i) {
      absl::Status s = (*reader)->ReadBlock(i, &block);
      if (!s.ok()) {
        if (s.code() != absl::StatusCode::kDataLoss) return s;
        // The rows the block held, when its header is intact, are the inputs lost.
        const absl::StatusOr<uint32_t> rows = (*reader)->BlockRows(i);
        RETURN_IF_ERROR(errors->CountBad(s, rows.ok() ? *rows : 1));
        continue;
      }
      errors->CountGood(static_cast<int64_t>(block.num_rows()));
      RETURN_IF_ERROR(fn(block));
    }
  }
  return absl::OkStatus();
}

}  // namespace choir::data
