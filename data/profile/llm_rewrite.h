// Optional language-model rewrite of template profiles (DESIGN.md 1.1): each user's template
// text is sent with a fixed instruction to an OpenAI-compatible chat-completions endpoint and
// the answer replaces it. Results are cached in a JSONL file keyed by a hash of (model,
// instruction, input text), so a rerun only asks for users whose input changed. A user whose
// request fails keeps the template text and is counted. docs/profiles.md has the details.
#ifndef CHOIR_DATA_PROFILE_LLM_REWRITE_H_
#define CHOIR_DATA_PROFILE_LLM_REWRITE_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/fs.h"

namespace choir::data {

// One chat completion: a system and a user message in, the assistant's text out.
// Implementations must be thread-safe (RewriteProfiles calls Complete from several threads).
// Errors: DEADLINE_EXCEEDED on a timeout, UNAVAILABLE / RESOURCE_EXHAUSTED for a transient
// server or network failure (retried), DATA_LOSS for a malformed response, INVALID_ARGUMENT /
// UNAUTHENTICATED / PERMISSION_DENIED / NOT_FOUND for a request the server refuses (not
// retried).
class ChatClient {
 public:
  virtual ~ChatClient() = default;
  virtual absl::StatusOr<std::string> Complete(const std::string& system, const std::string& user) = 0;
};

struct CurlChatOptions {
  // Base URL ("http://localhost:8000") or the full ".../v1/chat/completions" URL; the path is
  // appended when missing.
  std::string endpoint;
  std::string model;
  // Sent as "Authorization: Bearer KEY" when not empty (read it from the environment in main).
  std::string api_key;
  // Whole-request deadline (connect included). Default 120 s: a 30B model writing a few
  // hundred tokens under load.
  absl::Duration timeout = absl::Seconds(120);
  absl::Duration connect_timeout = absl::Seconds(10);
  // Sampling; low temperature keeps profiles stable across reruns.
  double temperature = 0.2;
  int max_tokens = 512;
};

// A ChatClient over libcurl (one easy handle per call, so calls run in parallel).
std::unique_ptr<ChatClient> NewCurlChatClient(const CurlChatOptions& options);

// Builds the JSON body of a chat-completions request.
std::string ChatRequestBody(const std::string& model, const std::string& system, const std::string& user,
                            double temperature, int max_tokens);
// The assistant text of a chat-completions response body (choices[0].message.content), with
// a leading <think>...</think> block removed. DATA_LOSS naming what is wrong when the body is
// not JSON, has no such field, or the text is empty.
absl::StatusOr<std::string> ParseChatResponse(absl::string_view body);

// The instruction sent as the system message (paper-style, three-part profile).
absl::string_view DefaultRewriteInstruction();

struct RewriteOptions {
  // Recorded in the cache key; must name the model the client uses.
  std::string model;
  // System message. Default: DefaultRewriteInstruction().
  std::string instruction = std::string(DefaultRewriteInstruction());
  // JSONL cache (one {"key","user_id","output"} object a line). Empty: no cache. Entries of
  // an interrupted run ("<cache_path>.tmp") are recovered on the next run.
  std::string cache_path;
  // Users per batch; results are appended to the cache and the output after each batch, so a
  // crash loses at most one batch. Default 64.
  int batch_size = 64;
  // Requests in flight at once. Default 8.
  int concurrency = 8;
  // Tries per user after the first failure, with exponential backoff from `initial_backoff`
  // (doubling, at most `max_backoff`). Default 3 retries from 1 s.
  int max_retries = 3;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(30);
  // After this many users in a row failed, the endpoint is taken for down: the remaining users
  // keep their template text (counted as failed) without further requests. 0: never. Default 64.
  int max_consecutive_failures = 64;
  // Show a progress line. Default true.
  bool progress = true;
};

struct RewriteReport {
  int64_t users = 0;      // lines written
  int64_t cached = 0;     // taken from the cache, no request
  int64_t rewritten = 0;  // answered by the model in this run
  int64_t failed = 0;     // kept the template text (includes malformed and skipped)
  int64_t malformed = 0;  // of the failed: the response was unusable (DATA_LOSS)
  int64_t skipped = 0;    // of the failed: not asked after the endpoint was taken for down
  int64_t requests = 0;   // calls to ChatClient::Complete, retries included
};

// Reads `in_tsv` (`user_id TAB template text` lines, as WriteTemplateProfiles writes) and
// writes `out_tsv` atomically with the same users in the same order, each text replaced by the
// model's rewrite (newlines and tabs turned into spaces) or kept on failure. The cache file is
// replaced atomically at the end with every entry it had plus the new ones.
// Errors: only I/O errors and a malformed input line (INVALID_ARGUMENT naming the line); model
// failures are counted, not returned.
absl::StatusOr<RewriteReport> RewriteProfiles(FileSystem* fs, ChatClient* client,
                                              const std::string& in_tsv, const std::string& out_tsv,
                                              const RewriteOptions& options);

// The cache key of one input: 16 hex digits of a 64-bit FNV-1a hash of model, instruction and
// text (separated by NUL bytes).
std::string RewriteCacheKey(absl::string_view model, absl::string_view instruction,
                            absl::string_view text);

}  // namespace choir::data

#endif  // CHOIR_DATA_PROFILE_LLM_REWRITE_H_
