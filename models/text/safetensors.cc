#include "models/text/safetensors.h"

#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace choir {
namespace {

// Largest header we accept; real headers are a few tens of kilobytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Bytes per element, or 0 for an unknown dtype.
size_t DtypeSize(const std::string& dtype) {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL") return 1;
  return 0;
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // Subnormal: normalise.
      exp = 127 - 15 + 1;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      mant &= 0x3ffu;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 0x1f) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof(f));
  return f;
}

std::string ShapeString(const std::vector<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

}  // namespace

absl::StatusOr<std::unique_ptr<SafeTensorsFile>> SafeTensorsFile::Open(FileSystem* fs,
                                                                       const std::string& path) {
  auto region = fs->MapReadOnly(path);
  if (!region.ok()) {
    return absl::Status(region.status().code(),
                        absl::StrCat("safetensors ", path, ": ", region.status().message()));
  }
  auto file = std::unique_ptr<SafeTensorsFile>(new SafeTensorsFile());
  file->path_ = path;
  file->region_ = std::move(region).value();
  const absl::string_view bytes = file->region_->data();
  auto corrupt = [&path](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("safetensors ", path, ": ", what));
  };
  if (bytes.size() < 8) {
    return corrupt(absl::StrCat("file of ", bytes.size(), " bytes is shorter than the 8-byte header length"));
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) {
    header_len = (header_len << 8) | static_cast<uint8_t>(bytes[i]);
  }
  if (header_len > kMaxHeaderBytes || header_len > bytes.size() - 8) {
    return corrupt(absl::StrCat("header length ", header_len, " runs past the end of the ",
                                bytes.size(), "-byte file"));
  }
  const uint64_t data_begin = 8 + header_len;
  const uint64_t data_size = bytes.size() - data_begin;
  nlohmann::json header = nlohmann::json::parse(bytes.substr(8, header_len), nullptr,
                                                /*allow_exceptions=*/false);
  if (header.is_discarded() || !header.is_object()) {
    return corrupt("header is not a JSON object");
  }
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    if (name == "__metadata__") continue;
    const nlohmann::json& entry = it.value();
    auto bad = [&](absl::string_view what) {
      return corrupt(absl::StrCat("tensor '", name, "': ", what));
    };
    if (!entry.is_object() || !entry.contains("dtype") || !entry["dtype"].is_string() ||
        !entry.contains("shape") || !entry["shape"].is_array() ||
        !entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2) {
      return bad("entry needs a string dtype, a shape array and two data_offsets");
    }
    SafeTensorInfo info;
    info.dtype = entry["dtype"].get<std::string>();
    const size_t elem_size = DtypeSize(info.dtype);
    if (elem_size == 0) return bad(absl::StrCat("unknown dtype ", info.dtype));
    uint64_t elements = 1;
    for (const auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape has a non-integer or negative dimension");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && elements > (uint64_t{1} << 62) / dim) return bad("shape overflows");
      elements *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    const auto& offsets = entry["data_offsets"];
    if (!offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
      return bad("data_offsets are not non-negative integers");
    }
    const uint64_t begin = offsets[0].get<uint64_t>();
    const uint64_t end = offsets[1].get<uint64_t>();
    if (begin > end || end > data_size) {
      return bad(absl::StrCat("data_offsets [", begin, ", ", end, ") lie outside the ", data_size,
                              "-byte data section"));
    }
    if (end - begin != elements * elem_size) {
      return bad(absl::StrCat("data_offsets span ", end - begin, " bytes but shape ",
                              ShapeString(info.shape), " of ", info.dtype, " needs ",
                              elements * elem_size));
    }
    info.begin = data_begin + begin;
    info.end = data_begin + end;
    file->tensors_.emplace(name, std::move(info));
  }
  return file;
}

std::vector<std::string> SafeTensorsFile::Names() const {
  std::vector<std::string> names;
  names.reserve(tensors_.size());
  for (const auto& [name, info] : tensors_) names.push_back(name);
  return names;
}

absl::StatusOr<SafeTensorInfo> SafeTensorsFile::Info(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) {
    return absl::NotFoundError(
        absl::StrCat("safetensors ", path_, ": no tensor named '", name, "'"));
  }
  return it->second;
}

absl::StatusOr<std::vector<float>> SafeTensorsFile::ReadFloat(
    const std::string& name, const std::vector<int64_t>& expected_shape) const {
  auto info = Info(name);
  if (!info.ok()) return info.status();
  if (info->shape != expected_shape) {
    return absl::InvalidArgumentError(absl::StrCat(
        "safetensors ", path_, ": tensor '", name, "' has shape ", ShapeString(info->shape),
        ", expected ", ShapeString(expected_shape)));
  }
  const char* src = region_->data().data() + info->begin;
  const size_t bytes = info->end - info->begin;
  std::vector<float> out;
  if (info->dtype == "F32") {
    out.resize(bytes / 4);
    std::memcpy(out.data(), src, bytes);
  } else if (info->dtype == "F16" || info->dtype == "BF16") {
    out.resize(bytes / 2);
    for (size_t i = 0; i < out.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, src + 2 * i, 2);
      if (info->dtype == "F16") {
        out[i] = HalfToFloat(h);
      } else {
        const uint32_t bits = static_cast<uint32_t>(h) << 16;
        std::memcpy(&out[i], &bits, 4);
      }
    }
  } else {
    return absl::InvalidArgumentError(absl::StrCat("safetensors ", path_, ": tensor '", name,
                                                   "' has dtype ", info->dtype,
                                                   ", expected F32, F16 or BF16"));
  }
  return out;
}

}  // namespace choir
