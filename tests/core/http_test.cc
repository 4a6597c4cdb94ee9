// core/http.h: the status-code policy, and the curl client against real sockets on loopback
// (one that refuses, one that never answers, one that answers once).
#include "core/http.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace choir {
namespace {

TEST(HttpStatusTest, MapsStatusCodesToWhatHappened) {
  const struct {
    int http;
    absl::StatusCode code;
  } cases[] = {
      {200, absl::StatusCode::kOk},
      {204, absl::StatusCode::kOk},
      {400, absl::StatusCode::kInvalidArgument},
      {401, absl::StatusCode::kUnauthenticated},
      {403, absl::StatusCode::kPermissionDenied},
      {404, absl::StatusCode::kNotFound},
      {408, absl::StatusCode::kDeadlineExceeded},
      {413, absl::StatusCode::kInvalidArgument},
      {429, absl::StatusCode::kResourceExhausted},
      {500, absl::StatusCode::kUnavailable},
      {503, absl::StatusCode::kUnavailable},
  };
  for (const auto& c : cases) {
    const absl::Status s = HttpStatusToStatus(c.http, "http://h:1/v1/x", "server says no");
    EXPECT_EQ(s.code(), c.code) << c.http;
    if (!s.ok()) {
      EXPECT_TRUE(absl::StrContains(s.message(), "http://h:1/v1/x")) << s;
      EXPECT_TRUE(absl::StrContains(s.message(), absl::StrCat("HTTP ", c.http, ": server says no"))) << s;
    }
  }
  EXPECT_EQ(HttpStatusToStatus(500, "u", std::string(1000, 'x')).message().size(), 300u + 13u);
}

TEST(HttpStatusTest, OnlyTimeoutsConnectionFailuresAndThrottlingAreTransient) {
  EXPECT_TRUE(IsTransientHttpError(absl::DeadlineExceededError("")));
  EXPECT_TRUE(IsTransientHttpError(absl::UnavailableError("")));
  EXPECT_TRUE(IsTransientHttpError(absl::ResourceExhaustedError("")));
  EXPECT_FALSE(IsTransientHttpError(absl::InvalidArgumentError("")));
  EXPECT_FALSE(IsTransientHttpError(absl::UnauthenticatedError("")));
  EXPECT_FALSE(IsTransientHttpError(absl::NotFoundError("")));
  EXPECT_FALSE(IsTransientHttpError(absl::DataLossError("")));
  EXPECT_FALSE(IsTransientHttpError(absl::OkStatus()));
}

TEST(HttpStatusTest, BearerHeaderOnlyWithAKey) {
  EXPECT_TRUE(BearerAuthHeaders("").empty());
  EXPECT_EQ(BearerAuthHeaders("k1"), std::vector<std::string>{"Authorization: Bearer k1"});
}

// A loopback socket listening on a free port; the kernel completes connections to it even
// when nobody calls accept(), so a client that connects then waits for an answer forever.
class Listener {
 public:
  Listener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = 0;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
    EXPECT_EQ(::listen(fd_, 8), 0);
    socklen_t len = sizeof(addr);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
  }
  ~Listener() { ::close(fd_); }
  int fd() const { return fd_; }
  std::string url(absl::string_view path) const { return absl::StrCat("http://127.0.0.1:", port_, path); }

 private:
  int fd_ = -1;
  int port_ = 0;
};

TEST(CurlHttpClientTest, RefusedConnectionIsUnavailableNamingTheUrl) {
  std::unique_ptr<HttpClient> http = NewCurlHttpClient();
  const absl::StatusOr<HttpResponse> r = http->PostJson("http://127.0.0.1:1/v1/embeddings", "{}", {}, absl::Seconds(5));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "http://127.0.0.1:1/v1/embeddings")) << r.status();
}

TEST(CurlHttpClientTest, ServerThatNeverAnswersIsDeadlineExceededAfterTheTimeout) {
  Listener silent;
  std::unique_ptr<HttpClient> http = NewCurlHttpClient();
  const absl::StatusOr<HttpResponse> r = http->PostJson(silent.url("/v1/x"), "{}", {}, absl::Milliseconds(200));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), silent.url("/v1/x"))) << r.status();
}

TEST(CurlHttpClientTest, ReturnsStatusAndBodyAndSendsHeadersAndBody) {
  Listener server;
  std::string request;
  std::thread serve([&] {
    const int conn = ::accept(server.fd(), nullptr, nullptr);
    ASSERT_GE(conn, 0);
    // Read the head, then as many body bytes as Content-Length says.
    char buf[4096];
    size_t body_at = std::string::npos, want = 0;
    while (body_at == std::string::npos || request.size() < body_at + want) {
      const ssize_t n = ::read(conn, buf, sizeof(buf));
      if (n <= 0) break;
      request.append(buf, static_cast<size_t>(n));
      const size_t head_end = request.find("\r\n\r\n");
      if (body_at == std::string::npos && head_end != std::string::npos) {
        body_at = head_end + 4;
        const size_t cl = request.find("Content-Length: ");
        if (cl != std::string::npos && cl < head_end) {
          ASSERT_TRUE(absl::SimpleAtoi(request.substr(cl + 16, request.find("\r\n", cl) - cl - 16), &want));
        }
      }
    }
    const std::string answer = "HTTP/1.1 503 Busy\r\nContent-Length: 9\r\nConnection: close\r\n\r\ntoo busy!";
    ASSERT_EQ(::write(conn, answer.data(), answer.size()), static_cast<ssize_t>(answer.size()));
    ::close(conn);
  });
  std::unique_ptr<HttpClient> http = NewCurlHttpClient();
  const absl::StatusOr<HttpResponse> r =
      http->PostJson(server.url("/v1/embeddings"), R"({"input":["a"]})", BearerAuthHeaders("sekret"), absl::Seconds(10));
  serve.join();
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->status_code, 503);
  EXPECT_EQ(r->body, "too busy!");
  EXPECT_TRUE(absl::StartsWith(request, "POST /v1/embeddings HTTP/1.1\r\n")) << request;
  EXPECT_TRUE(absl::StrContains(request, "Content-Type: application/json\r\n")) << request;
  EXPECT_TRUE(absl::StrContains(request, "Authorization: Bearer sekret\r\n")) << request;
  EXPECT_TRUE(absl::EndsWith(request, "\r\n\r\n{\"input\":[\"a\"]}")) << request;
}

// Answers every call with `response`.
class FixedHttpClient : public HttpClient {
 public:
  explicit FixedHttpClient(absl::StatusOr<HttpResponse> response) : response_(std::move(response)) {}
  absl::StatusOr<HttpResponse> PostJson(const std::string&, absl::string_view, const std::vector<std::string>&,
                                        absl::Duration) override {
    return response_;
  }

 private:
  absl::StatusOr<HttpResponse> response_;
};

TEST(PostJsonForBodyTest, GivesTheBodyOf2xxAndTheMappedErrorOtherwise) {
  FixedHttpClient ok(HttpResponse{200, "fine"});
  EXPECT_EQ(PostJsonForBody(&ok, "u", "{}", {}, absl::Seconds(1)).value(), "fine");
  FixedHttpClient throttled(HttpResponse{429, "slow down"});
  EXPECT_EQ(PostJsonForBody(&throttled, "u", "{}", {}, absl::Seconds(1)).status().code(),
            absl::StatusCode::kResourceExhausted);
  FixedHttpClient down(absl::UnavailableError("u: Connection refused"));
  EXPECT_EQ(PostJsonForBody(&down, "u", "{}", {}, absl::Seconds(1)).status().code(), absl::StatusCode::kUnavailable);
}

}  // namespace
}  // namespace choir
