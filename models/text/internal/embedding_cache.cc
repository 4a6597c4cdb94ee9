#include "models/text/internal/embedding_cache.h"

#include <cstring>
#include <utility>

#include "absl/base/config.h"
#include "absl/strings/str_cat.h"
#include "core/crc32c.h"
#include "core/hash.h"
#include "core/status.h"
#include "glog/logging.h"

namespace choir::text_internal {
namespace {

static_assert(ABSL_IS_LITTLE_ENDIAN, "the embedding cache is written in host order (little-endian)");

// Widths above this are taken for a damaged header.
constexpr uint32_t kMaxDim = 1 << 16;

uint32_t LoadU32(const char* p) {
  uint32_t v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

size_t RecordSize(int dim) { return sizeof(uint64_t) + sizeof(float) * dim + sizeof(uint32_t); }

std::string Header(int dim) {
  std::string h(kEmbeddingCacheMagic, 8);
  const uint32_t version = kEmbeddingCacheVersion, width = static_cast<uint32_t>(dim);
  h.append(reinterpret_cast<const char*>(&version), sizeof(version));
  h.append(reinterpret_cast<const char*>(&width), sizeof(width));
  return h;
}

constexpr char kDeleteHint[] =
    "; delete it to start afresh (a cache only saves re-embedding; nothing else is lost)";

}  // namespace

uint64_t EmbeddingCacheKey(absl::string_view identity, absl::string_view text) {
  return Fnv1a64({identity, text});
}

absl::StatusOr<std::unique_ptr<EmbeddingCache>> EmbeddingCache::Open(FileSystem* fs,
                                                                     const std::string& path) {
  std::unique_ptr<EmbeddingCache> cache(new EmbeddingCache(fs, path));
  RETURN_IF_ERROR(cache->Load());
  return cache;
}

EmbeddingCache::~EmbeddingCache() {
  if (file_ != nullptr) file_->Close().IgnoreError();
}

absl::Status EmbeddingCache::Load() {
  if (!fs_->Exists(path_)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, fs_->MapReadOnly(path_));
  const absl::string_view data = region->data();
  auto invalid = [&](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("embedding cache ", path_, ": ", what, kDeleteHint));
  };
  if (data.size() < kEmbeddingCacheHeaderSize || std::memcmp(data.data(), kEmbeddingCacheMagic, 8) != 0) {
    return invalid("not an embedding cache (bad header)");
  }
  const uint32_t version = LoadU32(data.data() + 8);
  if (version != kEmbeddingCacheVersion) {
    return invalid(absl::StrCat("format version ", version, ", but this choir reads version ",
                                kEmbeddingCacheVersion));
  }
  const uint32_t dim = LoadU32(data.data() + 12);
  if (dim == 0 || dim > kMaxDim) return invalid(absl::StrCat("bad row width ", dim, " in the header"));

  const size_t record = RecordSize(static_cast<int>(dim));
  const size_t records = (data.size() - kEmbeddingCacheHeaderSize) / record;
  auto offset_of = [&](size_t r) { return kEmbeddingCacheHeaderSize + r * record; };
  auto good = [&](size_t r) {
    const char* p = data.data() + offset_of(r);
    return crc32c::Value(p, record - sizeof(uint32_t)) == LoadU32(p + record - sizeof(uint32_t));
  };
  // The valid prefix ends after the last good record; a bad record before it is corruption.
  int64_t last_good = -1;
  for (size_t r = records; r-- > 0;) {
    if (good(r)) {
      last_good = static_cast<int64_t>(r);
      break;
    }
  }
  for (int64_t r = 0; r < last_good; ++r) {
    if (!good(r)) {
      return absl::DataLossError(absl::StrCat("embedding cache ", path_, ": record ", r, " at offset ",
                                              offset_of(r), " fails its checksum (corrupt file)",
                                              kDeleteHint));
    }
  }
  const size_t end = offset_of(static_cast<size_t>(last_good + 1));
  rows_.reserve(static_cast<size_t>(last_good + 1) * dim);
  for (int64_t r = 0; r <= last_good; ++r) {
    const char* p = data.data() + offset_of(r);
    uint64_t key;
    std::memcpy(&key, p, sizeof(key));
    if (!index_.try_emplace(key, static_cast<int64_t>(rows_.size() / dim)).second) continue;
    const size_t at = rows_.size();
    rows_.resize(at + dim);
    std::memcpy(rows_.data() + at, p + sizeof(key), sizeof(float) * dim);
  }
  dim_ = static_cast<int>(dim);
  if (end < data.size()) {
    LOG(WARNING) << "embedding cache " << path_ << ": dropping " << data.size() - end
                 << " bytes at offset " << end
                 << " (records cut short by an interrupted write); their texts are embedded again";
    RETURN_IF_ERROR(fs_->WriteStringToFileAtomic(path_, data.substr(0, end)));
  }
  return absl::OkStatus();
}

const float* EmbeddingCache::Find(uint64_t key) const {
  const auto it = index_.find(key);
  return it == index_.end() ? nullptr : rows_.data() + it->second * dim_;
}

absl::Status EmbeddingCache::Append(const std::vector<uint64_t>& keys, const float* rows, int dim) {
  if (!broken_.ok()) return broken_;
  if (keys.empty()) return absl::OkStatus();
  if (dim <= 0 || static_cast<uint32_t>(dim) > kMaxDim) {
    return absl::InvalidArgumentError(absl::StrCat("embedding cache ", path_, ": bad row width ", dim));
  }
  if (dim_ != 0 && dim != dim_) {
    return absl::InvalidArgumentError(absl::StrCat(
        "embedding cache ", path_, " holds rows of width ", dim_, " but the encoder gives width ", dim,
        " (a cache of another model?); delete it or use another cache file"));
  }
  if (file_ == nullptr) {
    // The header is written whole before any record, so a crash never leaves half a header.
    if (!fs_->Exists(path_)) RETURN_IF_ERROR(fs_->WriteStringToFileAtomic(path_, Header(dim)));
    ASSIGN_OR_RETURN(file_, fs_->NewAppendableFile(path_));
  }
  const size_t record = RecordSize(dim);
  std::string buffer(record * keys.size(), '\0');
  for (size_t i = 0; i < keys.size(); ++i) {
    char* p = buffer.data() + i * record;
    std::memcpy(p, &keys[i], sizeof(uint64_t));
    std::memcpy(p + sizeof(uint64_t), rows + i * dim, sizeof(float) * dim);
    const uint32_t crc = crc32c::Value(p, record - sizeof(uint32_t));
    std::memcpy(p + record - sizeof(uint32_t), &crc, sizeof(crc));
  }
  absl::Status status = file_->Append(buffer);
  if (status.ok()) status = file_->Sync();
  if (!status.ok()) {
    // The file may end in part of a record now; appending after it would misalign what
    // follows, so this cache takes no more rows (the next Open drops the partial record).
    file_->Close().IgnoreError();
    file_.reset();
    broken_ = status;
    return status;
  }
  dim_ = dim;
  for (size_t i = 0; i < keys.size(); ++i) {
    if (!index_.try_emplace(keys[i], static_cast<int64_t>(rows_.size() / dim)).second) continue;
    rows_.insert(rows_.end(), rows + i * dim, rows + (i + 1) * dim);
  }
  return absl::OkStatus();
}

}  // namespace choir::text_internal
