#include "models/text/embed.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <mutex>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "core/progress.h"
#include "core/status.h"
#include "models/text/internal/embedding_cache.h"

namespace choir {
namespace {

using text_internal::EmbeddingCache;
using text_internal::EmbeddingCacheKey;

// What the workers share, all guarded by `mu`. Rows land in `values` at their distinct text's
// position, so the result does not depend on the order in which batches finish. A std::mutex,
// not absl::Mutex: Debian's abseil is built without ThreadSanitizer, which then cannot see
// absl::Mutex's ordering (see ps/internal/tsan_mutex_lock.h); pthread mutexes it sees.
struct Shared {
  std::mutex mu;
  absl::Status error;  // the first failure; no batch starts after it
  int dim = 0;
  std::vector<float> values;  // distinct x dim, once dim is known
  int64_t embedded = 0;
};

}  // namespace

absl::StatusOr<EmbeddingMatrix> EmbedTexts(FileSystem* fs, TextEmbedder* embedder,
                                           const std::vector<std::string>& texts,
                                           const EmbedOptions& options, EmbedReport* report) {
  if (options.batch_size < 1 || options.parallelism < 1) {
    return absl::InvalidArgumentError(absl::StrCat("embed: batch_size (", options.batch_size,
                                                   ") and parallelism (", options.parallelism,
                                                   ") must be positive"));
  }
  EmbedReport local;
  EmbedReport& r = report != nullptr ? *report : local;
  r = EmbedReport();
  r.texts = static_cast<int64_t>(texts.size());

  // Identical texts (common among sparse users) are embedded once.
  std::vector<const std::string*> distinct;
  std::vector<int64_t> distinct_of(texts.size());
  {
    absl::flat_hash_map<absl::string_view, int64_t> seen;
    for (size_t i = 0; i < texts.size(); ++i) {
      auto [it, inserted] = seen.try_emplace(texts[i], static_cast<int64_t>(distinct.size()));
      if (inserted) distinct.push_back(&texts[i]);
      distinct_of[i] = it->second;
    }
  }
  r.distinct = static_cast<int64_t>(distinct.size());

  std::unique_ptr<EmbeddingCache> cache;
  if (!options.cache_path.empty()) {
    ASSIGN_OR_RETURN(cache, EmbeddingCache::Open(fs, options.cache_path));
  }
  const std::string identity = embedder->Identity();
  const int cache_dim = cache != nullptr ? cache->dim() : 0;
  Shared shared;
  std::vector<uint64_t> keys(distinct.size());
  std::vector<int64_t> todo;  // distinct texts to embed
  {
    std::lock_guard<std::mutex> lock(shared.mu);
    shared.dim = cache_dim;
    shared.values.resize(distinct.size() * static_cast<size_t>(cache_dim));
    for (size_t d = 0; d < distinct.size(); ++d) {
      keys[d] = EmbeddingCacheKey(identity, *distinct[d]);
      const float* row = cache != nullptr ? cache->Find(keys[d]) : nullptr;
      if (row != nullptr) {
        std::copy_n(row, cache_dim, shared.values.begin() + d * cache_dim);
        ++r.cached;
      } else {
        todo.push_back(static_cast<int64_t>(d));
      }
    }
  }

  const size_t batch = static_cast<size_t>(options.batch_size);
  const size_t batches = (todo.size() + batch - 1) / batch;
  std::unique_ptr<Progress> progress;
  if (options.progress && !todo.empty()) {
    progress = std::make_unique<Progress>("profiles embedded", static_cast<int64_t>(todo.size()));
  }
  std::atomic<size_t> next{0};
  auto work = [&]() {
    std::vector<std::string> part;
    std::vector<uint64_t> part_keys;
    for (;;) {
      {
        std::lock_guard<std::mutex> lock(shared.mu);
        if (!shared.error.ok()) return;
      }
      const size_t b = next.fetch_add(1);
      if (b >= batches) return;
      const size_t lo = b * batch, hi = std::min(todo.size(), lo + batch);
      part.clear();
      part_keys.clear();
      for (size_t k = lo; k < hi; ++k) {
        part.push_back(*distinct[todo[k]]);
        part_keys.push_back(keys[todo[k]]);
      }
      absl::StatusOr<EmbeddingMatrix> m = embedder->Embed(part);

      // A batch that finished is kept even when another has failed meanwhile.
      std::lock_guard<std::mutex> lock(shared.mu);
      auto fail = [&](absl::Status s) {
        if (shared.error.ok()) shared.error = std::move(s);
      };
      if (!m.ok()) return fail(m.status());
      if (m->rows != static_cast<int64_t>(part.size()) || m->dim <= 0 ||
          m->values.size() != part.size() * static_cast<size_t>(m->dim)) {
        return fail(absl::InternalError(absl::StrCat("embedder ", identity, " returned ", m->rows, " rows of width ",
                                                     m->dim, " for ", part.size(), " texts")));
      }
      if (shared.dim == 0) {
        shared.dim = m->dim;
        shared.values.resize(distinct.size() * static_cast<size_t>(m->dim));
      } else if (m->dim != shared.dim) {
        return fail(absl::InvalidArgumentError(
            cache_dim != 0
                ? absl::StrCat("embedding cache ", options.cache_path, " holds rows of width ", cache_dim,
                               " but ", identity, " gives width ", m->dim,
                               " (a cache of another model?); delete it or use another cache file")
                : absl::StrCat(identity, " gave rows of width ", m->dim, " after rows of width ", shared.dim)));
      }
      for (size_t k = lo; k < hi; ++k) {
        std::copy_n(m->values.begin() + (k - lo) * m->dim, m->dim, shared.values.begin() + todo[k] * m->dim);
      }
      if (cache != nullptr) {
        absl::Status saved = cache->Append(part_keys, m->values.data(), m->dim);
        if (!saved.ok()) return fail(std::move(saved));
      }
      shared.embedded += static_cast<int64_t>(part.size());
      if (progress != nullptr) progress->Add(static_cast<int64_t>(part.size()));
    }
  };
  const size_t workers = std::min<size_t>(options.parallelism, batches);
  std::vector<std::thread> pool;
  for (size_t t = 1; t < workers; ++t) pool.emplace_back(work);
  if (workers > 0) work();
  for (std::thread& t : pool) t.join();
  progress.reset();

  std::lock_guard<std::mutex> lock(shared.mu);
  r.embedded = shared.embedded;
  if (!shared.error.ok()) {
    const int64_t done = r.cached + r.embedded;
    std::string where;
    if (cache == nullptr) {
      where = absl::StrCat("; ", r.embedded, " of ", r.distinct, " distinct texts were embedded but are lost (no cache)");
    } else if (done == 0) {
      where = absl::StrCat("; none of the ", r.distinct, " distinct texts is embedded yet");
    } else {
      where = absl::StrCat("; ", done, " of ", r.distinct, " distinct texts are embedded and saved in ",
                           options.cache_path, ": rerun the same command to resume from there");
    }
    return absl::Status(shared.error.code(), absl::StrCat(shared.error.message(), where));
  }
  EmbeddingMatrix out;
  out.rows = static_cast<int64_t>(texts.size());
  out.dim = texts.empty() ? 0 : shared.dim;
  out.values.resize(texts.size() * static_cast<size_t>(out.dim));
  for (size_t i = 0; i < texts.size(); ++i) {
    std::copy_n(shared.values.begin() + distinct_of[i] * out.dim, out.dim, out.values.begin() + i * out.dim);
  }
  return out;
}

}  // namespace choir
