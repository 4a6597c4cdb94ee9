// A TextEmbedder that asks an OpenAI-compatible embeddings server (`POST /v1/embeddings`, as
// served by vLLM, llama.cpp, text-embeddings-inference, Ollama, OpenAI): request
// {"model": M, "input": [texts...]}, response {"data": [{"index": i, "embedding": [...]}, ...]}.
// Rows are ordered by "index" and L2-normalised (as the built-in encoder's are), so the output
// width is the server's. docs/encoder.md has the details.
#ifndef CHOIR_MODELS_TEXT_REMOTE_ENCODER_H_
#define CHOIR_MODELS_TEXT_REMOTE_ENCODER_H_

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "core/http.h"
#include "models/text/text_embedder.h"

namespace choir {

struct RemoteEmbedderOptions {
  // Base URL ("http://localhost:8080") or the full ".../v1/embeddings" URL; the path is
  // appended when missing.
  std::string endpoint;
  // Sent as "model"; left out of the request when empty (servers hosting one model ignore it).
  std::string model;
  // Sent as "Authorization: Bearer KEY" when not empty (main reads it from the environment).
  std::string api_key;
  // Deadline of one request, connecting included. Default 60 s: a batch of 64 long profiles
  // on a busy GPU server.
  absl::Duration request_timeout = absl::Seconds(60);
  // Tries after a transient failure (IsTransientHttpError: timeout, connection failure, 5xx,
  // 429), pausing `initial_backoff`, doubling up to `max_backoff`. A refused request (other
  // 4xx) and a malformed response are not retried. Default 4 retries from 1 s (about 15 s of
  // pauses before giving up).
  int max_retries = 4;
  absl::Duration initial_backoff = absl::Seconds(1);
  absl::Duration max_backoff = absl::Seconds(30);
};

// An embedder over `http` (not owned; must outlive the embedder). Identity
// "endpoint:<full URL>:<model>". Embed's errors name the URL: the last transport or HTTP error
// (core/http.h codes) with the number of attempts, or DATA_LOSS for a malformed response.
// INVALID_ARGUMENT for an empty endpoint or negative retries.
absl::StatusOr<std::unique_ptr<TextEmbedder>> NewRemoteEmbedder(HttpClient* http,
                                                                const RemoteEmbedderOptions& options);

// The full embeddings URL of `endpoint` (see RemoteEmbedderOptions::endpoint).
std::string EmbeddingsUrl(absl::string_view endpoint);

// The JSON body of an embeddings request.
std::string EmbeddingsRequestBody(absl::string_view model, const std::vector<std::string>& texts);

// The rows of a response to a request of `expected_rows` texts, ordered by "index" and
// L2-normalised (a zero row stays zero). DATA_LOSS saying what is wrong when the body is not
// JSON, "data" is missing or empty, an index is missing, repeated or out of range, the widths
// differ, or a value is not a finite number (as a float).
absl::StatusOr<EmbeddingMatrix> ParseEmbeddingsResponse(absl::string_view body, int64_t expected_rows);

}  // namespace choir

#endif  // CHOIR_MODELS_TEXT_REMOTE_ENCODER_H_
