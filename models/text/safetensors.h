// Reader for the .safetensors weight format (Hugging Face): an 8-byte little-endian header
// length N, N bytes of JSON {"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// "__metadata__": {...}}, then the tensor bytes; offsets are relative to the end of the header.
//
// The file is mapped read-only through FileSystem; every offset, length and shape is checked
// against the file before a tensor is handed out, so a truncated or corrupt file gives
// DATA_LOSS (or INVALID_ARGUMENT for a dtype/shape the caller did not expect) naming the file
// and the tensor, never a crash.
#ifndef CHOIR_MODELS_TEXT_SAFETENSORS_H_
#define CHOIR_MODELS_TEXT_SAFETENSORS_H_

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "core/fs.h"

namespace choir {

// One tensor's entry in the header. `begin`/`end` are absolute byte offsets in the file.
struct SafeTensorInfo {
  std::string dtype;  // "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;
  uint64_t end = 0;
};

// An open .safetensors file. Immutable after Open; thread-safe to read.
class SafeTensorsFile {
 public:
  // Maps and validates `path`: header length within the file, JSON well formed, every tensor
  // with a known dtype, a shape whose element count matches its byte range, and a range inside
  // the data section. NOT_FOUND when absent, DATA_LOSS when corrupt.
  static absl::StatusOr<std::unique_ptr<SafeTensorsFile>> Open(FileSystem* fs,
                                                               const std::string& path);

  // Names of all tensors, sorted.
  std::vector<std::string> Names() const;
  bool Has(const std::string& name) const { return tensors_.count(name) > 0; }
  // NOT_FOUND (naming file and tensor) when absent.
  absl::StatusOr<SafeTensorInfo> Info(const std::string& name) const;

  // The tensor converted to float32 (F32 copied, F16/BF16 widened), after checking that its
  // shape equals `expected_shape`. NOT_FOUND when absent, INVALID_ARGUMENT for another shape
  // or a dtype that is not a float type.
  absl::StatusOr<std::vector<float>> ReadFloat(const std::string& name,
                                               const std::vector<int64_t>& expected_shape) const;

  const std::string& path() const { return path_; }

 private:
  SafeTensorsFile() = default;

  std::string path_;
  std::unique_ptr<ReadOnlyRegion> region_;
  std::map<std::string, SafeTensorInfo> tensors_;
};

}  // namespace choir

#endif  // CHOIR_MODELS_TEXT_SAFETENSORS_H_
