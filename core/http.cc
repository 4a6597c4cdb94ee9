#include "core/http.h"

#include <curl/curl.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>

#include "absl/strings/str_cat.h"

namespace choir {
namespace {

size_t AppendToString(char* data, size_t size, size_t n, void* out) {
  static_cast<std::string*>(out)->append(data, size * n);
  return size * n;
}

// Milliseconds for curl's *_MS options, at least 1 (0 would mean "no timeout").
long CurlMillis(absl::Duration d) {
  return static_cast<long>(std::max<int64_t>(1, absl::ToInt64Milliseconds(d)));
}

class CurlHttpClient : public HttpClient {
 public:
  explicit CurlHttpClient(CurlHttpOptions options) : options_(options) {}

  absl::StatusOr<HttpResponse> PostJson(const std::string& url, absl::string_view body,
                                        const std::vector<std::string>& headers,
                                        absl::Duration timeout) override {
    std::unique_ptr<CURL, void (*)(CURL*)> h(curl_easy_init(), curl_easy_cleanup);
    if (h == nullptr) return absl::InternalError(absl::StrCat(url, ": curl_easy_init failed"));
    curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
    for (const std::string& header : headers) list = curl_slist_append(list, header.c_str());
    std::unique_ptr<curl_slist, void (*)(curl_slist*)> list_guard(list, curl_slist_free_all);
    HttpResponse response;
    curl_easy_setopt(h.get(), CURLOPT_URL, url.c_str());
    curl_easy_setopt(h.get(), CURLOPT_HTTPHEADER, list);
    curl_easy_setopt(h.get(), CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(h.get(), CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
    curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, AppendToString);
    curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &response.body);
    curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, CurlMillis(timeout));
    curl_easy_setopt(h.get(), CURLOPT_CONNECTTIMEOUT_MS,
                     CurlMillis(std::min(timeout, options_.connect_timeout)));
    curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);  // thread-safe timeouts
    const CURLcode rc = curl_easy_perform(h.get());
    switch (rc) {
      case CURLE_OK:
        break;
      case CURLE_OPERATION_TIMEDOUT:
        return absl::DeadlineExceededError(
            absl::StrCat(url, ": no answer within ", absl::FormatDuration(timeout)));
      case CURLE_URL_MALFORMAT:
      case CURLE_UNSUPPORTED_PROTOCOL:
        return absl::InvalidArgumentError(absl::StrCat(url, ": ", curl_easy_strerror(rc)));
      default:
        return absl::UnavailableError(absl::StrCat(url, ": ", curl_easy_strerror(rc)));
    }
    long code = 0;
    curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &code);
    response.status_code = static_cast<int>(code);
    return response;
  }

 private:
  const CurlHttpOptions options_;
};

}  // namespace

std::unique_ptr<HttpClient> NewCurlHttpClient(const CurlHttpOptions& options) {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  return std::make_unique<CurlHttpClient>(options);
}

absl::Status HttpStatusToStatus(int status_code, absl::string_view url, absl::string_view body) {
  if (status_code >= 200 && status_code < 300) return absl::OkStatus();
  const std::string msg = absl::StrCat(url, ": HTTP ", status_code, ": ", body.substr(0, 300));
  if (status_code == 408) return absl::DeadlineExceededError(msg);
  if (status_code == 429) return absl::ResourceExhaustedError(msg);
  if (status_code >= 500) return absl::UnavailableError(msg);
  if (status_code == 401) return absl::UnauthenticatedError(msg);
  if (status_code == 403) return absl::PermissionDeniedError(msg);
  if (status_code == 404) return absl::NotFoundError(msg);
  return absl::InvalidArgumentError(msg);
}

absl::StatusOr<std::string> PostJsonForBody(HttpClient* client, const std::string& url,
                                            absl::string_view body,
                                            const std::vector<std::string>& headers,
                                            absl::Duration timeout) {
  absl::StatusOr<HttpResponse> response = client->PostJson(url, body, headers, timeout);
  if (!response.ok()) return response.status();
  absl::Status status = HttpStatusToStatus(response->status_code, url, response->body);
  if (!status.ok()) return status;
  return std::move(response->body);
}

bool IsTransientHttpError(const absl::Status& status) {
  switch (status.code()) {
    case absl::StatusCode::kDeadlineExceeded:
    case absl::StatusCode::kUnavailable:
    case absl::StatusCode::kResourceExhausted:
      return true;
    default:
      return false;
  }
}

std::vector<std::string> BearerAuthHeaders(absl::string_view api_key) {
  if (api_key.empty()) return {};
  return {absl::StrCat("Authorization: Bearer ", api_key)};
}

}  // namespace choir
