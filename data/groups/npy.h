// NumPy .npy files of 2-D float32 arrays: the exchange format for embeddings (`emb.npy`) and
// codebooks. Only what Choir writes and reads: format versions 1.0 and 2.0, dtype '<f4'
// (little-endian float32), C order (fortran_order False), shape (rows, cols). Anything else
// is refused with an error naming the file and what was wrong.
#ifndef CHOIR_DATA_GROUPS_NPY_H_
#define CHOIR_DATA_GROUPS_NPY_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "core/fs.h"

namespace choir::groups {

// A row-major [rows, cols] float32 matrix.
struct FloatMatrix {
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<float> values;  // rows * cols, row-major

  const float* row(int64_t r) const { return values.data() + r * cols; }
};

// Parses the bytes of a .npy file; `path` only names the file in errors. DATA_LOSS for a
// bad magic, a truncated header or data, or trailing bytes; INVALID_ARGUMENT for a dtype
// other than '<f4', Fortran order or a shape that is not 2-D.
absl::StatusOr<FloatMatrix> ParseNpy(absl::string_view bytes, absl::string_view path);
absl::StatusOr<FloatMatrix> ReadNpy(FileSystem* fs, const std::string& path);

// The bytes of a .npy file holding `data` ([rows, cols], row-major): version 1.0, or 2.0 when
// the header would not fit 1.0's 16-bit length (never in practice).
std::string SerializeNpy(const float* data, int64_t rows, int64_t cols);
// Writes `path` atomically (FileSystem::WriteStringToFileAtomic).
absl::Status WriteNpy(FileSystem* fs, const std::string& path, const float* data, int64_t rows,
                      int64_t cols);

}  // namespace choir::groups

#endif  // CHOIR_DATA_GROUPS_NPY_H_
