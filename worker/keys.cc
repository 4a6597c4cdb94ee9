#include "worker/keys.h"

#include <algorithm>
#include <cstring>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace choir {
namespace {

// Float offset of every unique row, plus the total, for rows of widths `unique_dims`.
std::vector<size_t> Offsets(absl::Span<const int> unique_dims) {
  std::vector<size_t> offsets(unique_dims.size() + 1, 0);
  for (size_t u = 0; u < unique_dims.size(); ++u) offsets[u + 1] = offsets[u] + unique_dims[u];
  return offsets;
}

absl::Status CheckIndices(absl::Span<const uint32_t> index_of_each, size_t num_unique) {
  for (size_t i = 0; i < index_of_each.size(); ++i) {
    if (index_of_each[i] >= num_unique) {
      return absl::InvalidArgumentError(absl::StrCat("index_of_each[", i, "] = ",
                                                     index_of_each[i], ", only ", num_unique,
                                                     " unique keys"));
    }
  }
  return absl::OkStatus();
}

absl::Status SizeError(absl::string_view what, size_t got, size_t want) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " has ", got, " floats, want ", want));
}

}  // namespace

void DedupKeys(absl::Span<const uint64_t> keys, std::vector<uint64_t>* unique,
               std::vector<uint32_t>* index_of_each) {
  unique->clear();
  index_of_each->resize(keys.size());
  absl::flat_hash_map<uint64_t, uint32_t> position;
  position.reserve(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    auto [it, inserted] = position.try_emplace(keys[i], static_cast<uint32_t>(unique->size()));
    if (inserted) unique->push_back(keys[i]);
    (*index_of_each)[i] = it->second;
  }
}

absl::Status GatherRows(absl::Span<const uint32_t> index_of_each, int dim,
                        absl::Span<const float> unique_rows, absl::Span<float> out) {
  if (dim < 0 || unique_rows.size() % std::max(dim, 1) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("unique_rows has ", unique_rows.size(), " floats, not rows of ", dim));
  }
  if (out.size() != index_of_each.size() * dim) {
    return SizeError("out", out.size(), index_of_each.size() * dim);
  }
  const size_t num_unique = dim == 0 ? 0 : unique_rows.size() / dim;
  if (dim > 0) {
    absl::Status s = CheckIndices(index_of_each, num_unique);
    if (!s.ok()) return s;
  }
  for (size_t i = 0; i < index_of_each.size(); ++i) {
    std::memcpy(out.data() + i * dim, unique_rows.data() + size_t{index_of_each[i]} * dim,
                dim * sizeof(float));
  }
  return absl::OkStatus();
}

absl::Status GatherRows(absl::Span<const uint32_t> index_of_each,
                        absl::Span<const int> unique_dims, absl::Span<const float> unique_rows,
                        absl::Span<float> out) {
  absl::Status s = CheckIndices(index_of_each, unique_dims.size());
  if (!s.ok()) return s;
  const std::vector<size_t> offsets = Offsets(unique_dims);
  if (unique_rows.size() != offsets.back()) {
    return SizeError("unique_rows", unique_rows.size(), offsets.back());
  }
  size_t want = 0;
  for (uint32_t u : index_of_each) want += unique_dims[u];
  if (out.size() != want) return SizeError("out", out.size(), want);
  size_t pos = 0;
  for (uint32_t u : index_of_each) {
    std::memcpy(out.data() + pos, unique_rows.data() + offsets[u],
                unique_dims[u] * sizeof(float));
    pos += unique_dims[u];
  }
  return absl::OkStatus();
}

absl::Status SumDuplicateGrads(absl::Span<const uint32_t> index_of_each, int dim,
                               absl::Span<const float> grads_of_each,
                               absl::Span<float> grads_of_unique) {
  if (dim < 0 || grads_of_unique.size() % std::max(dim, 1) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "grads_of_unique has ", grads_of_unique.size(), " floats, not rows of ", dim));
  }
  if (grads_of_each.size() != index_of_each.size() * dim) {
    return SizeError("grads_of_each", grads_of_each.size(), index_of_each.size() * dim);
  }
  if (dim > 0) {
    absl::Status s = CheckIndices(index_of_each, grads_of_unique.size() / dim);
    if (!s.ok()) return s;
  }
  std::fill(grads_of_unique.begin(), grads_of_unique.end(), 0.0f);
  for (size_t i = 0; i < index_of_each.size(); ++i) {
    float* dst = grads_of_unique.data() + size_t{index_of_each[i]} * dim;
    const float* src = grads_of_each.data() + i * dim;
    for (int j = 0; j < dim; ++j) dst[j] += src[j];
  }
  return absl::OkStatus();
}

absl::Status SumDuplicateGrads(absl::Span<const uint32_t> index_of_each,
                               absl::Span<const int> unique_dims,
                               absl::Span<const float> grads_of_each,
                               absl::Span<float> grads_of_unique) {
  absl::Status s = CheckIndices(index_of_each, unique_dims.size());
  if (!s.ok()) return s;
  const std::vector<size_t> offsets = Offsets(unique_dims);
  if (grads_of_unique.size() != offsets.back()) {
    return SizeError("grads_of_unique", grads_of_unique.size(), offsets.back());
  }
  size_t want = 0;
  for (uint32_t u : index_of_each) want += unique_dims[u];
  if (grads_of_each.size() != want) return SizeError("grads_of_each", grads_of_each.size(), want);
  std::fill(grads_of_unique.begin(), grads_of_unique.end(), 0.0f);
  size_t pos = 0;
  for (uint32_t u : index_of_each) {
    float* dst = grads_of_unique.data() + offsets[u];
    for (int j = 0; j < unique_dims[u]; ++j) dst[j] += grads_of_each[pos + j];
    pos += unique_dims[u];
  }
  return absl::OkStatus();
}

}  // namespace choir
