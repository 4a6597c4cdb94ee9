// HTTP POST of JSON bodies to model servers (chat completions, embeddings), behind one
// interface so that tests can fake the server and clients share one status-code policy.
//
// Library `choir_http` (libcurl); choir_core itself does not link curl.
#ifndef CHOIR_CORE_HTTP_H_
#define CHOIR_CORE_HTTP_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace choir {

struct HttpResponse {
  int status_code = 0;  // e.g. 200, 404
  std::string body;
};

class HttpClient {
 public:
  virtual ~HttpClient() = default;

  // POSTs `body` with "Content-Type: application/json" and the extra `headers` (each
  // "Name: value") to `url`. The whole exchange, connecting included, must end within
  // `timeout`. Returns the response whatever its HTTP status (see HttpStatusToStatus); an error
  // only when no response arrived: DEADLINE_EXCEEDED when `timeout` passed, UNAVAILABLE when
  // the connection failed (refused, reset, name not resolved), INVALID_ARGUMENT for a URL that
  // cannot be used. Every message names `url`. Thread-safe: calls may run in parallel.
  virtual absl::StatusOr<HttpResponse> PostJson(const std::string& url, absl::string_view body,
                                                const std::vector<std::string>& headers,
                                                absl::Duration timeout) = 0;
};

struct CurlHttpOptions {
  // Cap on connecting (the request's timeout caps it too). Default 10 s.
  absl::Duration connect_timeout = absl::Seconds(10);
};

// An HttpClient over libcurl: one easy handle per call, so calls run in parallel.
std::unique_ptr<HttpClient> NewCurlHttpClient(const CurlHttpOptions& options = {});

// OK for a 2xx status; otherwise the code that says what happened: 408 DEADLINE_EXCEEDED,
// 429 RESOURCE_EXHAUSTED, 5xx UNAVAILABLE, 401 UNAUTHENTICATED, 403 PERMISSION_DENIED,
// 404 NOT_FOUND, any other status INVALID_ARGUMENT. The message reads
// "URL: HTTP CODE: <first 300 bytes of the body>".
absl::Status HttpStatusToStatus(int status_code, absl::string_view url, absl::string_view body);

// PostJson, then HttpStatusToStatus: the body of a 2xx response, or the error.
absl::StatusOr<std::string> PostJsonForBody(HttpClient* client, const std::string& url,
                                            absl::string_view body,
                                            const std::vector<std::string>& headers,
                                            absl::Duration timeout);

// True for the errors of PostJsonForBody worth retrying after a pause: DEADLINE_EXCEEDED,
// UNAVAILABLE (connection failures, 5xx) and RESOURCE_EXHAUSTED (429). A refused request
// (other 4xx) is not.
bool IsTransientHttpError(const absl::Status& status);

// "Authorization: Bearer KEY" for a non-empty key; nothing for an empty one.
std::vector<std::string> BearerAuthHeaders(absl::string_view api_key);

}  // namespace choir

#endif  // CHOIR_CORE_HTTP_H_
