// The binary data files of a checkpoint (docs/checkpoints.md): little-endian, each starting with
// an 8-byte magic and a 32-bit version. Their integrity (size, CRC32C) is the manifest's job
// (checkpoint.h); these decoders still check every length against the bytes, so a file that
// passes the checksum but does not parse is DATA_LOSS naming it, never a crash.
//
//   sparse rows:  "CHSPARS1" u32 version, u64 rows, rows x { u64 key, u32 pushes, u32 n,
//                 n x f32 (the row's values, then its optimizer state) }
//   dense floats: "CHDENSE1" u32 version, u32 tensors, tensors x { u64 n, n x f32 }
//   bundle rows:  "CHBROWS1" (below)    integer table: "CHI64TB1" (below)
#ifndef CHOIR_CHECKPOINT_FILES_H_
#define CHOIR_CHECKPOINT_FILES_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace choir::checkpoint {

// Builds a sparse rows file.
class SparseRowsWriter {
 public:
  SparseRowsWriter();
  void Add(uint64_t key, absl::Span<const float> row, uint32_t pushes);
  uint64_t rows() const { return rows_; }
  // The file's bytes; the writer is then empty again.
  std::string Finish();

 private:
  std::string body_;
  uint64_t rows_ = 0;
};

// What a sparse rows file holds of one row, in the order of SparseTable::ForEachStoredRow.
using RowVisitor =
    absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>;

// The sparse rows file of the rows `for_each_row` hands to its visitor (a table's
// ForEachStoredRow), and their number in `rows` when not null; the first error it returns.
absl::StatusOr<std::string> EncodeSparseRows(
    absl::FunctionRef<absl::Status(RowVisitor visit)> for_each_row, uint64_t* rows = nullptr);

// Calls visit(key, row, pushes) for every row of a sparse rows file; stops at, and returns, the
// first non-OK status. DATA_LOSS naming `what` for a malformed file.
absl::Status ReadSparseRows(
    absl::string_view bytes, const std::string& what,
    absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> row, uint32_t pushes)>
        visit);

std::string EncodeDenseFloats(const std::vector<std::vector<float>>& tensors);
absl::StatusOr<std::vector<std::vector<float>>> DecodeDenseFloats(absl::string_view bytes,
                                                                  const std::string& what);

// --- Serving bundles (worker/bundle.h) ----------------------------------------------------
// CHBROWS1: u32 version, u32 dtype (0 f32, 1 f16), u64 rows, rows x {u64 key, u32 n, n values}.
class BundleRowsWriter {
 public:
  explicit BundleRowsWriter(bool fp16) : fp16_(fp16) {}
  // INVALID_ARGUMENT for a value fp16 cannot hold (|v| > 65504).
  absl::Status Add(uint64_t key, absl::Span<const float> values);
  uint64_t rows() const { return rows_; }
  std::string Finish() const;

 private:
  bool fp16_;
  uint64_t rows_ = 0;
  std::string body_;
};
// Calls visit(key, values) for every row, fp16 widened to float; DATA_LOSS naming `what` for a
// malformed file.
absl::Status ReadBundleRows(absl::string_view bytes, const std::string& what,
                            absl::FunctionRef<absl::Status(uint64_t key, absl::Span<const float> values)> visit);

// CHI64TB1: u32 version, u32 columns, u64 rows, rows x columns int64: a table of integers.
std::string EncodeInt64Table(int columns, const std::vector<int64_t>& values);
// The values, row-major; DATA_LOSS naming `what` when malformed or not `columns` wide.
absl::StatusOr<std::vector<int64_t>> DecodeInt64Table(absl::string_view bytes, int columns,
                                                      const std::string& what);

}  // namespace choir::checkpoint

#endif  // CHOIR_CHECKPOINT_FILES_H_
