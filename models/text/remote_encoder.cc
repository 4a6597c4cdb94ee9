#include "models/text/remote_encoder.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "core/status.h"
#include "nlohmann/json.hpp"

namespace choir {
namespace {

using json = nlohmann::json;

class RemoteEmbedder : public TextEmbedder {
 public:
  RemoteEmbedder(HttpClient* http, RemoteEmbedderOptions options)
      : http_(http),
        options_(std::move(options)),
        url_(EmbeddingsUrl(options_.endpoint)),
        headers_(BearerAuthHeaders(options_.api_key)) {}

  std::string Identity() const override { return absl::StrCat("endpoint:", url_, ":", options_.model); }

  absl::StatusOr<EmbeddingMatrix> Embed(const std::vector<std::string>& texts) override {
    const std::string body = EmbeddingsRequestBody(options_.model, texts);
    absl::Duration backoff = options_.initial_backoff;
    absl::Status last;
    int attempts = 0;
    for (; attempts <= options_.max_retries; ++attempts) {
      if (attempts > 0) {
        absl::SleepFor(backoff);
        backoff = std::min(backoff * 2, options_.max_backoff);
      }
      absl::StatusOr<std::string> response =
          PostJsonForBody(http_, url_, body, headers_, options_.request_timeout);
      if (response.ok()) {
        absl::StatusOr<EmbeddingMatrix> rows =
            ParseEmbeddingsResponse(*response, static_cast<int64_t>(texts.size()));
        if (!rows.ok()) return Annotate(rows.status(), absl::StrCat("embeddings endpoint ", url_));
        return rows;
      }
      last = response.status();
      if (!IsTransientHttpError(last)) {
        ++attempts;
        break;
      }
    }
    return absl::Status(last.code(), absl::StrCat("embeddings endpoint: ", last.message(), " (",
                                                  attempts, attempts == 1 ? " attempt)" : " attempts)"));
  }

 private:
  HttpClient* const http_;
  const RemoteEmbedderOptions options_;
  const std::string url_;
  const std::vector<std::string> headers_;
};

}  // namespace

std::string EmbeddingsUrl(absl::string_view endpoint) {
  std::string url(endpoint);
  while (!url.empty() && url.back() == '/') url.pop_back();
  if (!absl::EndsWith(url, "/embeddings")) {
    absl::StrAppend(&url, absl::EndsWith(url, "/v1") ? "" : "/v1", "/embeddings");
  }
  return url;
}

std::string EmbeddingsRequestBody(absl::string_view model, const std::vector<std::string>& texts) {
  json j;
  if (!model.empty()) j["model"] = std::string(model);
  j["input"] = texts;
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

absl::StatusOr<EmbeddingMatrix> ParseEmbeddingsResponse(absl::string_view body, int64_t expected_rows) {
  auto bad = [&](absl::string_view what) {
    return absl::DataLossError(
        absl::StrCat("malformed embeddings response (", what, "): ", body.substr(0, 200)));
  };
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return bad("not JSON");
  if (!j.is_object() || !j.contains("data") || !j["data"].is_array()) return bad("no \"data\" array");
  const json& data = j["data"];
  if (data.empty()) return bad("empty \"data\"");
  if (static_cast<int64_t>(data.size()) != expected_rows) {
    return bad(absl::StrCat(data.size(), " embeddings for ", expected_rows, " inputs"));
  }
  EmbeddingMatrix m;
  m.rows = expected_rows;
  std::vector<bool> seen(expected_rows, false);
  for (size_t k = 0; k < data.size(); ++k) {
    const json& item = data[k];
    if (!item.is_object() || !item.contains("index") || !item["index"].is_number_integer()) {
      return bad(absl::StrCat("data[", k, "] has no integer \"index\""));
    }
    const int64_t index = item["index"].get<int64_t>();
    if (index < 0 || index >= expected_rows) {
      return bad(absl::StrCat("data[", k, "] has index ", index, " outside [0, ", expected_rows, ")"));
    }
    if (seen[index]) return bad(absl::StrCat("index ", index, " appears twice"));
    seen[index] = true;
    if (!item.contains("embedding") || !item["embedding"].is_array() || item["embedding"].empty()) {
      return bad(absl::StrCat("data[", k, "] has no \"embedding\" array"));
    }
    const json& embedding = item["embedding"];
    if (m.dim == 0) {
      m.dim = static_cast<int>(embedding.size());
      m.values.assign(static_cast<size_t>(expected_rows) * m.dim, 0.0f);
    } else if (static_cast<int>(embedding.size()) != m.dim) {
      return bad(absl::StrCat("index ", index, " has width ", embedding.size(), " but others ", m.dim));
    }
    float* row = m.values.data() + index * m.dim;
    double norm = 0;
    for (int d = 0; d < m.dim; ++d) {
      const json& v = embedding[d];
      const double x = v.is_number() ? v.get<double>() : NAN;
      if (!std::isfinite(x) || std::fabs(x) > std::numeric_limits<float>::max()) {
        return bad(absl::StrCat("index ", index, " value ", d, " is not a finite number: ", v.dump()));
      }
      row[d] = static_cast<float>(x);
      norm += static_cast<double>(x) * x;
    }
    const double inv = 1.0 / std::max(std::sqrt(norm), 1e-12);
    for (int d = 0; d < m.dim; ++d) row[d] = static_cast<float>(row[d] * inv);
  }
  // Every index in [0, expected_rows) was seen: as many items as rows, none repeated.
  return m;
}

absl::StatusOr<std::unique_ptr<TextEmbedder>> NewRemoteEmbedder(HttpClient* http,
                                                                const RemoteEmbedderOptions& options) {
  if (options.endpoint.empty()) return absl::InvalidArgumentError("embeddings endpoint: empty URL");
  if (options.max_retries < 0) {
    return absl::InvalidArgumentError(absl::StrCat("embeddings endpoint: max_retries ", options.max_retries, " < 0"));
  }
  return std::unique_ptr<TextEmbedder>(new RemoteEmbedder(http, options));
}

}  // namespace choir
