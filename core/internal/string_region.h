// A ReadOnlyRegion that owns its bytes: the mapping of MemFileSystem and the (corrupted)
// copy that FaultInjectingFileSystem hands out. Private to core/.
#ifndef CHOIR_CORE_INTERNAL_STRING_REGION_H_
#define CHOIR_CORE_INTERNAL_STRING_REGION_H_

#include <string>
#include <utility>

#include "absl/strings/string_view.h"
#include "core/fs.h"

namespace choir::fs_internal {

// A snapshot of a file's bytes; later changes to the file do not show through.
class StringRegion : public ReadOnlyRegion {
 public:
  StringRegion(std::string path, std::string contents)
      : path_(std::move(path)), contents_(std::move(contents)) {}
  absl::string_view data() const override { return contents_; }
  const std::string& path() const override { return path_; }

 private:
  const std::string path_;
  const std::string contents_;
};

}  // namespace choir::fs_internal

#endif  // CHOIR_CORE_INTERNAL_STRING_REGION_H_
