// Choir's binary shard format: the compact, checksummed, memory-mapped files training reads.
//
// Layout (little-endian; docs/shard-format.md has the full description):
//   file header : magic "CHOIRSHD" | u32 version | u32 header_len | ShardHeader proto | u32 crc
//   blocks      : block header (magic "BLK1", u32 rows, u32 raw_len, u32 stored_len,
//                 u32 payload crc32c, u32 header crc32c) | payload (columns, maybe zstd)
//   footer      : u64 offset of each block ... | u64 block count | u64 row count |
//                 u32 crc32c of the footer | u32 footer_len | magic "CHOIREND"
// A file without its footer is truncated; a block whose checksum disagrees is corrupt; a
// version other than kShardVersion is refused. Each error names the file and byte offset.
// Writers write to "<path>.tmp" and rename on Close, so a crashed writer never leaves a file
// that looks complete.
#ifndef CHOIR_DATA_SHARD_H_
#define CHOIR_DATA_SHARD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/error_budget.h"
#include "core/fs.h"
#include "data/proto/shard.pb.h"
#include "data/row_block.h"

namespace choir::data {

inline constexpr uint32_t kShardVersion = 1;

struct ShardWriterOptions {
  // Block compression. Default zstd: typically 3-6x smaller on ids and sequences, reads
  // cost ~1 GB/s of decompression per core.
  Codec codec = CODEC_ZSTD;
  // zstd level; 1-3 is fast to write, higher trades write speed for size. Default 3.
  int zstd_level = 3;
  // Recorded in the header.
  std::string writer = "choir";
};

class ShardWriter {
 public:
  // Creates "<path>.tmp"; `schema` must pass ValidateSchema.
  static absl::StatusOr<std::unique_ptr<ShardWriter>> Open(FileSystem* fs, const std::string& path,
                                                           const Schema& schema,
                                                           const ShardWriterOptions& options = {});
  // Deletes the temporary file when Close() was not called (an aborted write leaves nothing).
  ~ShardWriter();

  // Writes `rows` as one block (an empty block is skipped). Its schema must equal the file's.
  absl::Status Write(const RowBlock& rows);
  // Writes the footer, syncs and renames "<path>.tmp" to `path`.
  absl::Status Close();

  uint64_t rows_written() const { return rows_; }
  uint64_t bytes_written() const { return offset_; }

 private:
  ShardWriter(FileSystem* fs, std::string path, Schema schema, ShardWriterOptions options,
              std::unique_ptr<WritableFile> file);
  absl::Status AppendRaw(absl::string_view bytes);
  // Closes and deletes the temporary file after a failure; later calls fail.
  void Abort();

  struct Compressor;  // zstd context and output buffer, reused across blocks

  FileSystem* fs_;
  std::string path_;
  Schema schema_;
  ShardWriterOptions options_;
  std::unique_ptr<WritableFile> file_;
  std::vector<uint64_t> block_offsets_;
  uint64_t offset_ = 0;
  uint64_t rows_ = 0;
  bool closed_ = false;
  std::string scratch_;
  std::unique_ptr<Compressor> compressor_;
};

struct ShardReaderOptions {
  // Verify each block's CRC32C before decoding. Default true; turn off only to measure.
  bool verify_checksums = true;
};

// Reads a shard file through a read-only mapping. Open() validates the header and footer;
// ReadBlock() validates and decodes one block. Thread-safe: several threads may read
// different (or the same) blocks at once.
class ShardReader {
 public:
  static absl::StatusOr<std::unique_ptr<ShardReader>> Open(FileSystem* fs, const std::string& path,
                                                           const ShardReaderOptions& options = {});

  const std::string& path() const { return path_; }
  const Schema& schema() const { return header_.schema(); }
  const ShardHeader& header() const { return header_; }
  size_t num_blocks() const { return block_offsets_.size(); }
  uint64_t num_rows() const { return num_rows_; }
  // Rows of block `i` from its header (cheap; does not decode).
  absl::StatusOr<uint32_t> BlockRows(size_t i) const;

  // Decodes block `i` into `out` (its previous contents are replaced). DATA_LOSS naming the
  // file, block index and offset when the block is corrupt.
  absl::Status ReadBlock(size_t i, RowBlock* out) const;

 private:
  ShardReader() = default;

  std::string path_;
  std::unique_ptr<ReadOnlyRegion> region_;
  ShardHeader header_;
  std::vector<uint64_t> block_offsets_;
  uint64_t num_rows_ = 0;
  ShardReaderOptions options_;
};

// Reads every block of the listed files in order, calling `fn(block)` for each. Files that
// fail to open and blocks that fail to read with DATA_LOSS are counted against `errors` (one
// bad input per file or block) and skipped while within budget; otherwise that error is
// returned. Good blocks count their rows as good inputs. Errors of other codes (a missing
// file, a newer version) and the first error `fn` returns are returned at once.
absl::Status ForEachBlock(FileSystem* fs, const std::vector<std::string>& files,
                          ErrorCounter* errors,
                          const std::function<absl::Status(const RowBlock&)>& fn);

}  // namespace choir::data

#endif  // CHOIR_DATA_SHARD_H_
