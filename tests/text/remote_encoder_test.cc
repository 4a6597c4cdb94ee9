// The embeddings-endpoint client: response parsing (order, missing/duplicate indices, widths,
// non-finite values, garbage), the request it sends, and its retry policy against a scripted
// fake HttpClient (transient failures retried with backoff, refusals and garbage not).
#include "models/text/remote_encoder.h"

#include <cmath>
#include <mutex>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace choir {
namespace {

TEST(ParseEmbeddingsResponseTest, OrdersRowsByIndexAndNormalisesThem) {
  absl::StatusOr<EmbeddingMatrix> m = ParseEmbeddingsResponse(
      R"({"object":"list","data":[{"object":"embedding","index":1,"embedding":[0,2]},
          {"object":"embedding","index":0,"embedding":[3,4]}],"model":"m","usage":{}})",
      2);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->rows, 2);
  EXPECT_EQ(m->dim, 2);
  EXPECT_EQ(m->values, (std::vector<float>{0.6f, 0.8f, 0.0f, 1.0f}));
}

TEST(ParseEmbeddingsResponseTest, ZeroRowStaysZero) {
  absl::StatusOr<EmbeddingMatrix> m = ParseEmbeddingsResponse(R"({"data":[{"index":0,"embedding":[0,0,0]}]})", 1);
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, (std::vector<float>{0, 0, 0}));
}

TEST(ParseEmbeddingsResponseTest, RefusesMalformedResponsesSayingWhatIsWrong) {
  const struct {
    const char* body;
    const char* says;
  } cases[] = {
      {"<html>Bad gateway</html>", "not JSON"},
      {"", "not JSON"},
      {R"({"data":[{"index":0,"embedding":[NaN,1]},{"index":1,"embedding":[1,1]}]})", "not JSON"},
      {R"([1,2])", "no \"data\" array"},
      {R"({"error":"x"})", "no \"data\" array"},
      {R"({"data":[]})", "empty \"data\""},
      {R"({"data":[{"index":0,"embedding":[1,1]}]})", "1 embeddings for 2 inputs"},
      {R"({"data":[{"embedding":[1,1]},{"index":1,"embedding":[1,1]}]})", "data[0] has no integer \"index\""},
      {R"({"data":[{"index":"0","embedding":[1,1]},{"index":1,"embedding":[1,1]}]})", "no integer \"index\""},
      {R"({"data":[{"index":1,"embedding":[1,1]},{"index":1,"embedding":[1,1]}]})", "index 1 appears twice"},
      {R"({"data":[{"index":0,"embedding":[1,1]},{"index":2,"embedding":[1,1]}]})", "index 2 outside [0, 2)"},
      {R"({"data":[{"index":0,"embedding":[1,1]},{"index":-1,"embedding":[1,1]}]})", "outside"},
      {R"({"data":[{"index":0,"embedding":[1,1]},{"index":1,"embedding":[1,1,1]}]})", "index 1 has width 3 but others 2"},
      {R"({"data":[{"index":0,"embedding":[]},{"index":1,"embedding":[1,1]}]})", "no \"embedding\" array"},
      {R"({"data":[{"index":0},{"index":1,"embedding":[1,1]}]})", "no \"embedding\" array"},
      {R"({"data":[{"index":0,"embedding":[1,null]},{"index":1,"embedding":[1,1]}]})", "value 1 is not a finite number: null"},
      {R"({"data":[{"index":0,"embedding":[1,"2"]},{"index":1,"embedding":[1,1]}]})", "not a finite number"},
      {R"({"data":[{"index":0,"embedding":[1,1e39]},{"index":1,"embedding":[1,1]}]})", "not a finite number"},
  };
  for (const auto& c : cases) {
    const absl::StatusOr<EmbeddingMatrix> m = ParseEmbeddingsResponse(c.body, 2);
    EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << c.body;
    EXPECT_TRUE(absl::StrContains(m.status().message(), c.says)) << c.body << " -> " << m.status();
  }
}

TEST(RemoteEmbedderTest, UrlGetsThePathWhenMissing) {
  EXPECT_EQ(EmbeddingsUrl("http://h:8080"), "http://h:8080/v1/embeddings");
  EXPECT_EQ(EmbeddingsUrl("http://h:8080/"), "http://h:8080/v1/embeddings");
  EXPECT_EQ(EmbeddingsUrl("http://h:8080/v1"), "http://h:8080/v1/embeddings");
  EXPECT_EQ(EmbeddingsUrl("http://h/v1/embeddings"), "http://h/v1/embeddings");
}

TEST(RemoteEmbedderTest, RequestBodyCarriesModelAndInputsInOrder) {
  const nlohmann::json j = nlohmann::json::parse(EmbeddingsRequestBody("bge", {"a \"q\"", "b\tc"}));
  EXPECT_EQ(j["model"], "bge");
  EXPECT_EQ(j["input"], (std::vector<std::string>{"a \"q\"", "b\tc"}));
  EXPECT_FALSE(nlohmann::json::parse(EmbeddingsRequestBody("", {"a"})).contains("model"));
}

// Answers calls from a script (one entry per call, the last repeated), recording each request.
// Thread-safe.
class ScriptedHttpClient : public HttpClient {
 public:
  explicit ScriptedHttpClient(std::vector<absl::StatusOr<HttpResponse>> script) : script_(std::move(script)) {}

  absl::StatusOr<HttpResponse> PostJson(const std::string& url, absl::string_view body,
                                        const std::vector<std::string>& headers, absl::Duration timeout) override {
    std::lock_guard<std::mutex> lock(mu_);
    urls_.push_back(url);
    bodies_.emplace_back(body);
    headers_ = headers;
    timeout_ = timeout;
    const size_t i = std::min(calls_++, script_.size() - 1);
    return script_[i];
  }
  size_t calls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return calls_;
  }
  std::vector<std::string> urls() const {
    std::lock_guard<std::mutex> lock(mu_);
    return urls_;
  }
  std::vector<std::string> headers() const {
    std::lock_guard<std::mutex> lock(mu_);
    return headers_;
  }
  absl::Duration timeout() const {
    std::lock_guard<std::mutex> lock(mu_);
    return timeout_;
  }

 private:
  const std::vector<absl::StatusOr<HttpResponse>> script_;
  mutable std::mutex mu_;  // std::mutex: visible to TSan (Debian's abseil is not instrumented)
  size_t calls_ = 0;
  std::vector<std::string> urls_;
  std::vector<std::string> bodies_;
  std::vector<std::string> headers_;
  absl::Duration timeout_;
};

constexpr char kTwoRows[] = R"({"data":[{"index":0,"embedding":[1,0]},{"index":1,"embedding":[0,1]}]})";

RemoteEmbedderOptions Options() {
  RemoteEmbedderOptions o;
  o.endpoint = "http://emb:9/";
  o.model = "bge";
  o.api_key = "k";
  o.request_timeout = absl::Milliseconds(250);
  o.max_retries = 3;
  o.initial_backoff = absl::ZeroDuration();  // no pauses in tests
  return o;
}

std::unique_ptr<TextEmbedder> Make(HttpClient* http, const RemoteEmbedderOptions& o = Options()) {
  absl::StatusOr<std::unique_ptr<TextEmbedder>> e = NewRemoteEmbedder(http, o);
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? std::move(e).value() : nullptr;
}

TEST(RemoteEmbedderTest, TransientFailuresAreRetriedUntilSuccess) {
  ScriptedHttpClient http({absl::UnavailableError("http://emb:9/v1/embeddings: Connection refused"),
                           HttpResponse{503, "loading"}, HttpResponse{429, "slow down"},
                           absl::DeadlineExceededError("http://emb:9/v1/embeddings: no answer"),
                           HttpResponse{200, kTwoRows}});
  std::unique_ptr<TextEmbedder> e = Make(&http, [] {
    RemoteEmbedderOptions o = Options();
    o.max_retries = 4;
    return o;
  }());
  absl::StatusOr<EmbeddingMatrix> m = e->Embed({"a", "b"});
  ASSERT_TRUE(m.ok()) << m.status();
  EXPECT_EQ(m->values, (std::vector<float>{1, 0, 0, 1}));
  EXPECT_EQ(http.calls(), 5u);
  EXPECT_EQ(http.urls().front(), "http://emb:9/v1/embeddings");
  EXPECT_EQ(http.headers(), std::vector<std::string>{"Authorization: Bearer k"});
  EXPECT_EQ(http.timeout(), absl::Milliseconds(250));
  EXPECT_EQ(e->Identity(), "endpoint:http://emb:9/v1/embeddings:bge");
}

TEST(RemoteEmbedderTest, RefusedRequestsAreNotRetried) {
  for (const auto& [http_status, code] :
       std::vector<std::pair<int, absl::StatusCode>>{{400, absl::StatusCode::kInvalidArgument},
                                                     {401, absl::StatusCode::kUnauthenticated},
                                                     {403, absl::StatusCode::kPermissionDenied},
                                                     {404, absl::StatusCode::kNotFound}}) {
    ScriptedHttpClient http({HttpResponse{http_status, "no"}, HttpResponse{200, kTwoRows}});
    absl::StatusOr<EmbeddingMatrix> m = Make(&http)->Embed({"a", "b"});
    EXPECT_EQ(m.status().code(), code) << m.status();
    EXPECT_TRUE(absl::StrContains(m.status().message(), "http://emb:9/v1/embeddings")) << m.status();
    EXPECT_TRUE(absl::StrContains(m.status().message(), "(1 attempt)")) << m.status();
    EXPECT_EQ(http.calls(), 1u) << http_status;
  }
}

TEST(RemoteEmbedderTest, TimeoutsAreDeadlineExceededAfterTheRetries) {
  ScriptedHttpClient http({absl::DeadlineExceededError("http://emb:9/v1/embeddings: no answer within 250ms")});
  absl::StatusOr<EmbeddingMatrix> m = Make(&http)->Embed({"a", "b"});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDeadlineExceeded) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "embeddings endpoint: http://emb:9/v1/embeddings")) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "(4 attempts)")) << m.status();
  EXPECT_EQ(http.calls(), 4u);  // the first try and max_retries = 3
}

TEST(RemoteEmbedderTest, GarbageIsDataLossNamingTheEndpointAndNotRetried) {
  ScriptedHttpClient http({HttpResponse{200, "Internal proxy page"}, HttpResponse{200, kTwoRows}});
  absl::StatusOr<EmbeddingMatrix> m = Make(&http)->Embed({"a", "b"});
  EXPECT_EQ(m.status().code(), absl::StatusCode::kDataLoss) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "embeddings endpoint http://emb:9/v1/embeddings")) << m.status();
  EXPECT_TRUE(absl::StrContains(m.status().message(), "not JSON")) << m.status();
  EXPECT_EQ(http.calls(), 1u);
}

TEST(RemoteEmbedderTest, RefusesBadOptions) {
  ScriptedHttpClient http({HttpResponse{200, kTwoRows}});
  RemoteEmbedderOptions o = Options();
  o.endpoint = "";
  EXPECT_EQ(NewRemoteEmbedder(&http, o).status().code(), absl::StatusCode::kInvalidArgument);
  o = Options();
  o.max_retries = -1;
  EXPECT_EQ(NewRemoteEmbedder(&http, o).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace choir
