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
// Writers write to "<path>.tmp", rename on Close and then sync the directory, so a crashed
// writer never leaves a file that looks complete.
#ifndef CHOIR_DATA_SHARD_H_
#define CHOIR_DATA_SHARD_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
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
  // Writes the footer, syncs and renames "<path>.tmp" to `path`, then syncs the directory so
  // that the rename survives a power loss. An error after the rename (from syncing the
  // directory) leaves the complete file at `path`.
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
  // Largest block payload (its raw_len, before decompression) the reader accepts. A block
  // whose header claims more is DATA_LOSS before anything is allocated for it, so a corrupt or
  // hostile file cannot make each reading thread allocate up to 4 GiB. Default 256 MiB, far
  // above the blocks Choir writes by default (typically a few MiB); raise it to read files
  // written with larger blocks, at the cost of that much memory per reading thread.
  uint64_t max_block_bytes = uint64_t{256} << 20;
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
  // Rows of block `i` from its header (cheap; does not decode the payload). DATA_LOSS when
  // the header is corrupt or its lengths do not fit the file, the options or the row count.
  absl::StatusOr<uint32_t> BlockRows(size_t i) const;

  // Decodes block `i` into `out` (its previous contents are replaced). DATA_LOSS naming the
  // file, block index and offset when the block is corrupt.
  absl::Status ReadBlock(size_t i, RowBlock* out) const;

 private:
  ShardReader() = default;

  // A block header whose checksum and lengths were checked; `stored` views its payload.
  struct BlockInfo {
    uint32_t rows = 0;
    uint32_t raw_len = 0;
    uint32_t payload_crc = 0;
    absl::string_view stored;
  };
  // Checks block `i`'s header: magic, CRC, stored_len against the block's span in the file,
  // raw_len against options_.max_block_bytes, rows (>= 1) against what raw_len can hold.
  absl::StatusOr<BlockInfo> CheckBlockHeader(size_t i) const;

  std::string path_;
  std::unique_ptr<ReadOnlyRegion> region_;
  ShardHeader header_;
  std::vector<uint64_t> block_offsets_;
  uint64_t num_rows_ = 0;
  uint64_t min_row_bytes_ = 0;  // the least payload bytes a row of the schema takes
  ShardReaderOptions options_;
};

// Reads every block of the listed files in order, calling `fn(block)` for each. Inputs are
// rows: good blocks count their rows as good inputs, and files that fail to open and blocks
// that fail to read with DATA_LOSS count the rows they lose as bad inputs against `errors` (a
// block its header's row count, a file its footer's; 1 when that count is unreadable too),
// so that max_errors and max_fraction are in rows. Bad inputs are skipped while within
// budget; otherwise that error is returned. Errors of other codes (a missing file, a newer
// version) and the first error `fn` returns are returned at once.
// threads > 1: that many threads read and decode blocks (checksum, zstd, columns) ahead of `fn`,
// at most threads + 1 blocks; `fn` still runs on the calling thread, block by block in file
// order, and the errors are counted in that order, so the outcome is the same as with 1.
absl::Status ForEachBlock(FileSystem* fs, const std::vector<std::string>& files,
                          ErrorCounter* errors,
                          const std::function<absl::Status(const RowBlock&)>& fn, int threads = 1);

}  // namespace choir::data

#endif  // CHOIR_DATA_SHARD_H_
