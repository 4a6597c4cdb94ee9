#include "data/profile/llm_rewrite.h"

#include <algorithm>
#include <atomic>
#include <memory>
#include <thread>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "core/hash.h"
#include "core/http.h"
#include "core/progress.h"
#include "core/status.h"
#include "data/profile/internal/atomic_writer.h"
#include "data/profile/profile.h"
#include "glog/logging.h"
#include "nlohmann/json.hpp"

namespace choir::data {
namespace {

using json = nlohmann::json;

constexpr char kInstruction[] =
    "You write user profiles for a recommender system. The user message holds facts about one "
    "shopper of a Chinese e-commerce site: basic attributes, purchases in the last 7, 30 and 365 "
    "days as `L1 category (leaf category - count - price tier)` where price tier is the user's "
    "price position inside that leaf (0 cheapest, 0.5 median, 1 dearest), and recently browsed "
    "categories. Rewrite them into a concise profile in English with three parts:\n"
    "1. Core identity and life stage: who this person probably is (gender, age, city, family "
    "situation) as far as the facts support it.\n"
    "2. Interests: primary (stable, long-term), secondary, and recent interests.\n"
    "3. Consumption philosophy: price sensitivity and quality preference from the price tiers.\n"
    "Rules: be faithful to the facts and invent nothing they do not support; keep stable "
    "long-term preferences and drop one-off, transient noise; when there are few or no purchases, "
    "still write a usable profile from the attributes and browsing alone and say what is "
    "unknown. Answer with the profile only, as plain text in at most 120 words, without "
    "headings in Markdown.";

std::string StripThink(absl::string_view text) {
  absl::string_view t = absl::StripLeadingAsciiWhitespace(text);
  if (absl::StartsWith(t, "<think>")) {
    const size_t end = t.find("</think>");
    t = end == absl::string_view::npos ? absl::string_view() : t.substr(end + 8);
  }
  return std::string(t);
}

bool Retryable(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kNotFound:
      return false;
    default:
      return true;
  }
}

// ---- chat client over HttpClient ----------------------------------------------------------

class HttpChatClient : public ChatClient {
 public:
  explicit HttpChatClient(CurlChatOptions options)
      : options_(std::move(options)),
        http_(NewCurlHttpClient(CurlHttpOptions{options_.connect_timeout})),
        headers_(BearerAuthHeaders(options_.api_key)) {
    url_ = options_.endpoint;
    while (!url_.empty() && url_.back() == '/') url_.pop_back();
    if (!absl::EndsWith(url_, "/chat/completions")) {
      absl::StrAppend(&url_, absl::EndsWith(url_, "/v1") ? "" : "/v1", "/chat/completions");
    }
  }

  absl::StatusOr<std::string> Complete(const std::string& system, const std::string& user) override {
    const std::string body =
        ChatRequestBody(options_.model, system, user, options_.temperature, options_.max_tokens);
    absl::StatusOr<std::string> response =
        PostJsonForBody(http_.get(), url_, body, headers_, options_.timeout);
    if (!response.ok()) return Annotate(response.status(), "chat endpoint");
    absl::StatusOr<std::string> text = ParseChatResponse(*response);
    if (!text.ok()) return Annotate(text.status(), absl::StrCat("chat endpoint ", url_));
    return text;
  }

 private:
  const CurlChatOptions options_;
  const std::unique_ptr<HttpClient> http_;
  const std::vector<std::string> headers_;
  std::string url_;
};

// ---- cache ---------------------------------------------------------------------------------

// Adds the entries of a JSONL cache file to `cache`; unreadable lines (a torn last line after
// a crash) are skipped and counted.
absl::Status LoadCache(FileSystem* fs, const std::string& path,
                       absl::flat_hash_map<std::string, std::string>* cache) {
  if (!fs->Exists(path)) return absl::OkStatus();
  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> region, fs->MapReadOnly(path));
  int64_t bad = 0;
  for (absl::string_view line : absl::StrSplit(region->data(), '\n', absl::SkipEmpty())) {
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains("key") || !j["key"].is_string() ||
        !j.contains("output") || !j["output"].is_string()) {
      ++bad;
      continue;
    }
    (*cache)[j["key"].get<std::string>()] = j["output"].get<std::string>();
  }
  if (bad > 0) LOG(WARNING) << "rewrite cache " << path << ": skipped " << bad << " unreadable lines";
  return absl::OkStatus();
}

std::string CacheLine(const std::string& key, absl::string_view user_id, const std::string& output) {
  json j;
  j["key"] = key;
  j["user_id"] = std::string(user_id);
  j["output"] = output;
  return j.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

// One input line.
struct Entry {
  absl::string_view user_id;
  absl::string_view text;
  std::string key;
  std::string output;  // the rewrite, or empty when the template is kept
  bool from_cache = false;
  bool wrote_cache = false;
};

}  // namespace

absl::string_view DefaultRewriteInstruction() { return kInstruction; }

std::string ChatRequestBody(const std::string& model, const std::string& system, const std::string& user,
                            double temperature, int max_tokens) {
  json j;
  j["model"] = model;
  j["messages"] = json::array({{{"role", "system"}, {"content", system}}, {{"role", "user"}, {"content", user}}});
  j["temperature"] = temperature;
  j["max_tokens"] = max_tokens;
  j["stream"] = false;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<std::string> ParseChatResponse(absl::string_view body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(absl::StrCat("malformed chat response (", what,
                                            "): ", body.substr(0, 200)));
  };
  if (j.is_discarded()) return bad("not JSON");
  if (!j.is_object() || !j.contains("choices") || !j["choices"].is_array() || j["choices"].empty()) {
    return bad("no choices");
  }
  const json& choice = j["choices"][0];
  if (!choice.is_object() || !choice.contains("message") || !choice["message"].is_object() ||
      !choice["message"].contains("content") || !choice["message"]["content"].is_string()) {
    return bad("no choices[0].message.content");
  }
  std::string text = SanitizeProfileText(StripThink(choice["message"]["content"].get<std::string>()));
  if (text.empty()) return bad("empty content");
  return text;
}

std::string RewriteCacheKey(absl::string_view model, absl::string_view instruction, absl::string_view text) {
  return absl::StrFormat("%016x", Fnv1a64({model, instruction, text}));
}

std::unique_ptr<ChatClient> NewCurlChatClient(const CurlChatOptions& options) {
  return std::make_unique<HttpChatClient>(options);
}

absl::StatusOr<RewriteReport> RewriteProfiles(FileSystem* fs, ChatClient* client, const std::string& in_tsv,
                                              const std::string& out_tsv, const RewriteOptions& options) {
  if (options.batch_size < 1 || options.concurrency < 1 || options.max_retries < 0) {
    return absl::InvalidArgumentError("rewrite: batch_size and concurrency must be >= 1, max_retries >= 0");
  }
  absl::flat_hash_map<std::string, std::string> cache;
  std::unique_ptr<profile_internal::AtomicTextWriter> cache_out;
  if (!options.cache_path.empty()) {
    RETURN_IF_ERROR(LoadCache(fs, options.cache_path, &cache));
    RETURN_IF_ERROR(LoadCache(fs, options.cache_path + ".tmp", &cache));  // an interrupted run's
    cache_out = std::make_unique<profile_internal::AtomicTextWriter>(fs, options.cache_path);
    RETURN_IF_ERROR(cache_out->Open());
    for (const auto& [key, output] : cache) RETURN_IF_ERROR(cache_out->Append(CacheLine(key, "", output)));
    RETURN_IF_ERROR(cache_out->SyncTmp());
  }

  ASSIGN_OR_RETURN(std::unique_ptr<ReadOnlyRegion> input, fs->MapReadOnly(in_tsv));
  std::vector<absl::string_view> lines = absl::StrSplit(input->data(), '\n', absl::SkipEmpty());
  profile_internal::AtomicTextWriter out(fs, out_tsv);
  RETURN_IF_ERROR(out.Open());

  RewriteReport report;
  std::atomic<int64_t> requests{0}, consecutive_failures{0};
  std::atomic<bool> tripped{false};
  std::unique_ptr<Progress> progress;
  if (options.progress) progress = std::make_unique<Progress>("profiles rewritten", lines.size());

  // Asks the model for one entry with retries; returns the final status.
  auto ask = [&](Entry* e) -> absl::Status {
    absl::Status last;
    absl::Duration backoff = options.initial_backoff;
    for (int attempt = 0; attempt <= options.max_retries; ++attempt) {
      if (attempt > 0) {
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, options.max_backoff);
      }
      ++requests;
      absl::StatusOr<std::string> answer = client->Complete(options.instruction, std::string(e->text));
      if (answer.ok()) {
        std::string text = SanitizeProfileText(StripThink(*answer));
        if (!text.empty()) {
          e->output = std::move(text);
          return absl::OkStatus();
        }
        answer = absl::DataLossError("malformed chat response (empty content)");
      }
      last = answer.status();
      if (!Retryable(last)) break;
    }
    return last;
  };

  for (size_t first = 0; first < lines.size(); first += options.batch_size) {
    const size_t n = std::min<size_t>(options.batch_size, lines.size() - first);
    std::vector<Entry> batch(n);
    std::vector<Entry*> todo;
    for (size_t i = 0; i < n; ++i) {
      absl::string_view line = absl::StripSuffix(lines[first + i], "\r");
      const size_t tab = line.find('\t');
      if (tab == absl::string_view::npos || tab == 0) {
        return absl::InvalidArgumentError(
            absl::StrCat(in_tsv, ":", first + i + 1, ": expected `user_id TAB text`"));
      }
      Entry& e = batch[i];
      e.user_id = line.substr(0, tab);
      e.text = line.substr(tab + 1);
      e.key = RewriteCacheKey(options.model, options.instruction, e.text);
      const auto it = cache.find(e.key);
      if (it != cache.end()) {
        e.output = it->second;
        e.from_cache = true;
      } else {
        todo.push_back(&e);
      }
    }
    // Workers over `todo`; each keeps counts in its own slot.
    struct Counts {
      int64_t rewritten = 0, failed = 0, malformed = 0, skipped = 0;
    };
    const int threads = std::min<int>(options.concurrency, static_cast<int>(todo.size()));
    std::vector<Counts> counts(std::max(threads, 1));
    std::atomic<size_t> next{0};
    auto work = [&](Counts* c) {
      for (size_t k = next++; k < todo.size(); k = next++) {
        Entry* e = todo[k];
        if (tripped.load()) {
          ++c->failed;
          ++c->skipped;
          continue;
        }
        const absl::Status s = ask(e);
        if (s.ok()) {
          ++c->rewritten;
          consecutive_failures = 0;
          continue;
        }
        ++c->failed;
        if (s.code() == absl::StatusCode::kDataLoss) ++c->malformed;
        LOG_FIRST_N(WARNING, 20) << "rewrite: user " << e->user_id << " keeps the template profile: " << s;
        if (options.max_consecutive_failures > 0 &&
            ++consecutive_failures >= options.max_consecutive_failures && !tripped.exchange(true)) {
          LOG(ERROR) << "rewrite: " << options.max_consecutive_failures
                     << " users in a row failed; the remaining users keep their template profiles. Last error: "
                     << s;
        }
      }
    };
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t) pool.emplace_back(work, &counts[t]);
    work(&counts[0]);
    for (std::thread& th : pool) th.join();
    for (const Counts& c : counts) {
      report.rewritten += c.rewritten;
      report.failed += c.failed;
      report.malformed += c.malformed;
      report.skipped += c.skipped;
    }

    for (Entry& e : batch) {
      const bool have = !e.output.empty();
      if (e.from_cache) ++report.cached;
      RETURN_IF_ERROR(out.Append(absl::StrCat(e.user_id, "\t", have ? e.output : e.text, "\n")));
      if (have && !e.from_cache && cache_out != nullptr && cache.find(e.key) == cache.end()) {
        RETURN_IF_ERROR(cache_out->Append(CacheLine(e.key, e.user_id, e.output)));
        cache.emplace(e.key, e.output);
      }
    }
    if (cache_out != nullptr) RETURN_IF_ERROR(cache_out->SyncTmp());
    if (progress) {
      progress->Add(n);
      progress->SetDetail(absl::StrCat(report.failed, " failed"));
    }
  }
  RETURN_IF_ERROR(out.Commit());
  if (cache_out != nullptr) RETURN_IF_ERROR(cache_out->Commit());
  report.users = static_cast<int64_t>(lines.size());
  report.requests = requests.load();
  LOG(INFO) << "rewrite: " << report.users << " profiles, " << report.cached << " from cache, "
            << report.rewritten << " rewritten, " << report.failed << " kept the template ("
            << report.malformed << " malformed responses, " << report.skipped << " not asked)";
  return report;
}

}  // namespace choir::data
