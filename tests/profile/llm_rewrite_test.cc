// The language-model rewrite with a fake chat client: answers replace templates, the cache
// makes reruns free, failures and garbage keep the template and are counted, retries and the
// circuit breaker bound the requests; response parsing on real-looking bodies.
#include "data/profile/llm_rewrite.h"

#include <atomic>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "core/fs.h"
#include "gtest/gtest.h"

namespace choir::data {
namespace {

// Answers with `fn(user message)`; counts calls. Thread-safe when fn is.
class FakeChatClient : public ChatClient {
 public:
  explicit FakeChatClient(std::function<absl::StatusOr<std::string>(const std::string&)> fn)
      : fn_(std::move(fn)) {}
  absl::StatusOr<std::string> Complete(const std::string& system, const std::string& user) override {
    ++calls_;
    if (system != DefaultRewriteInstruction()) return absl::InternalError("unexpected instruction");
    return fn_(user);
  }
  int calls() const { return calls_.load(); }

 private:
  std::function<absl::StatusOr<std::string>(const std::string&)> fn_;
  std::atomic<int> calls_{0};
};

constexpr char kIn[] = "/in.tsv";
constexpr char kOut[] = "/out.tsv";
constexpr char kCache[] = "/cache.jsonl";

std::string Input(int users, const std::function<std::string(int)>& text) {
  std::string s;
  for (int u = 1; u <= users; ++u) absl::StrAppend(&s, u, "\t", text(u), "\n");
  return s;
}

std::vector<std::string> Texts(FileSystem* fs) {
  absl::StatusOr<std::string> out = fs->ReadFileToString(kOut);
  EXPECT_TRUE(out.ok()) << out.status();
  std::vector<std::string> texts;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(*out, '\n', absl::SkipEmpty())) {
    std::vector<std::string> f = absl::StrSplit(line, '\t');
    EXPECT_EQ(f.size(), 2u);
    EXPECT_EQ(f[0], std::to_string(++line_no));
    texts.push_back(f.back());
  }
  return texts;
}

RewriteOptions Options() {
  RewriteOptions o;
  o.model = "fake-model";
  o.cache_path = kCache;
  o.batch_size = 4;
  o.concurrency = 3;
  o.max_retries = 2;
  o.initial_backoff = absl::ZeroDuration();
  o.progress = false;
  return o;
}

TEST(RewriteTest, AnswersReplaceTemplatesAndASecondRunIsServedFromTheCache) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, Input(10, [](int u) { return absl::StrCat("template ", u); })).ok());
  FakeChatClient model([](const std::string& user) -> absl::StatusOr<std::string> {
    return absl::StrCat("<think>hmm</think>\nRewritten:\t", user, "\nsecond line");
  });
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->users, 10);
  EXPECT_EQ(r->rewritten, 10);
  EXPECT_EQ(r->cached, 0);
  EXPECT_EQ(r->failed, 0);
  EXPECT_EQ(model.calls(), 10);
  const std::vector<std::string> first = Texts(&fs);
  ASSERT_EQ(first.size(), 10u);
  EXPECT_EQ(first[6], "Rewritten: template 7 second line");
  EXPECT_FALSE(fs.Exists(std::string(kCache) + ".tmp"));

  FakeChatClient unused([](const std::string&) -> absl::StatusOr<std::string> { return "new"; });
  r = RewriteProfiles(&fs, &unused, kIn, kOut, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(unused.calls(), 0);
  EXPECT_EQ(r->cached, 10);
  EXPECT_EQ(r->rewritten, 0);
  EXPECT_EQ(Texts(&fs), first);

  // Another model is another cache key.
  RewriteOptions other = Options();
  other.model = "other-model";
  r = RewriteProfiles(&fs, &unused, kIn, kOut, other);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(unused.calls(), 10);
  EXPECT_EQ(r->cached, 0);
}

TEST(RewriteTest, FailedUsersKeepTheTemplateAreCountedAndRetriedOnTheNextRun) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, Input(9, [](int u) { return absl::StrCat(u % 3 == 0 ? "fail " : "ok ", u); })).ok());
  FakeChatClient model([](const std::string& user) -> absl::StatusOr<std::string> {
    if (absl::StartsWith(user, "fail")) return absl::UnavailableError("model down");
    return absl::StrCat("R ", user);
  });
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->rewritten, 6);
  EXPECT_EQ(r->failed, 3);
  EXPECT_EQ(r->malformed, 0);
  EXPECT_EQ(r->requests, 6 + 3 * 3);  // two retries per failing user
  const std::vector<std::string> texts = Texts(&fs);
  ASSERT_EQ(texts.size(), 9u);
  EXPECT_EQ(texts[2], "fail 3");
  EXPECT_EQ(texts[3], "R ok 4");

  // Only the failed users are asked again.
  FakeChatClient recovered([](const std::string& user) -> absl::StatusOr<std::string> { return absl::StrCat("R ", user); });
  r = RewriteProfiles(&fs, &recovered, kIn, kOut, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(recovered.calls(), 3);
  EXPECT_EQ(r->cached, 6);
  EXPECT_EQ(r->failed, 0);
  EXPECT_EQ(Texts(&fs)[2], "R fail 3");
}

TEST(RewriteTest, GarbageResponsesAreCountedAsMalformed) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, Input(4, [](int u) { return absl::StrCat("t", u); })).ok());
  FakeChatClient model([](const std::string& user) -> absl::StatusOr<std::string> {
    if (user == "t1") return std::string(" \n\t ");
    if (user == "t2") return std::string("<think>only thinking, never answering");
    if (user == "t3") return absl::DataLossError("malformed chat response (not JSON)");
    return std::string("fine");
  });
  RewriteOptions o = Options();
  o.max_retries = 0;
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->failed, 3);
  EXPECT_EQ(r->malformed, 3);
  EXPECT_EQ(r->rewritten, 1);
  EXPECT_EQ(Texts(&fs), (std::vector<std::string>{"t1", "t2", "t3", "fine"}));
}

TEST(RewriteTest, RefusedRequestsAreNotRetried) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, Input(2, [](int u) { return absl::StrCat("t", u); })).ok());
  FakeChatClient model([](const std::string&) -> absl::StatusOr<std::string> {
    return absl::InvalidArgumentError("HTTP 400");
  });
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, Options());
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(model.calls(), 2);
  EXPECT_EQ(r->failed, 2);
}

TEST(RewriteTest, ADeadEndpointStopsBeingAskedAfterConsecutiveFailures) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, Input(20, [](int u) { return absl::StrCat("t", u); })).ok());
  FakeChatClient model([](const std::string&) -> absl::StatusOr<std::string> {
    return absl::DeadlineExceededError("timeout");
  });
  RewriteOptions o = Options();
  o.concurrency = 1;
  o.max_consecutive_failures = 3;
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(model.calls(), 3 * 3);
  EXPECT_EQ(r->failed, 20);
  EXPECT_EQ(r->skipped, 17);
  EXPECT_EQ(Texts(&fs).size(), 20u);
}

TEST(RewriteTest, EntriesOfAnInterruptedRunAreRecoveredAndTornLinesSkipped) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, Input(2, [](int u) { return absl::StrCat("t", u); })).ok());
  const RewriteOptions o = Options();
  const std::string key = RewriteCacheKey(o.model, o.instruction, "t1");
  ASSERT_TRUE(fs.SetContents(std::string(kCache) + ".tmp",
                             absl::StrCat("{\"key\":\"", key, "\",\"user_id\":\"1\",\"output\":\"cached one\"}\n",
                                          "{\"key\":\"abc\",\"outp"))
                  .ok());
  FakeChatClient model([](const std::string& user) -> absl::StatusOr<std::string> { return absl::StrCat("R ", user); });
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(model.calls(), 1);
  EXPECT_EQ(Texts(&fs), (std::vector<std::string>{"cached one", "R t2"}));
  absl::StatusOr<std::string> cache = fs.ReadFileToString(kCache);
  ASSERT_TRUE(cache.ok());
  EXPECT_EQ(std::count(cache->begin(), cache->end(), '\n'), 2);
}

TEST(RewriteTest, MalformedInputLineIsInvalidArgument) {
  MemFileSystem fs;
  ASSERT_TRUE(fs.SetContents(kIn, "1\tok\nno tab here\n").ok());
  FakeChatClient model([](const std::string&) -> absl::StatusOr<std::string> { return "x"; });
  absl::StatusOr<RewriteReport> r = RewriteProfiles(&fs, &model, kIn, kOut, Options());
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(absl::StrContains(r.status().message(), "in.tsv:2")) << r.status();
  EXPECT_FALSE(fs.Exists(kOut));
}

TEST(ChatResponseTest, ParsesContentAndRefusesGarbage) {
  absl::StatusOr<std::string> ok = ParseChatResponse(
      R"({"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"<think>a</think>\nA young\tparent."}}]})");
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, "A young parent.");
  for (const char* body : {"not json", "{}", R"({"choices":[]})", R"({"choices":[{"message":{}}]})",
                           R"({"choices":[{"message":{"content":"  "}}]})", R"({"choices":[{"message":{"content":7}}]})"}) {
    EXPECT_EQ(ParseChatResponse(body).status().code(), absl::StatusCode::kDataLoss) << body;
  }
}

TEST(ChatResponseTest, RequestBodyCarriesModelAndBothMessages) {
  const std::string body = ChatRequestBody("qwen", "sys", "user \"quoted\"", 0.2, 100);
  EXPECT_TRUE(absl::StrContains(body, R"("model":"qwen")")) << body;
  EXPECT_TRUE(absl::StrContains(body, R"({"content":"sys","role":"system"})")) << body;
  EXPECT_TRUE(absl::StrContains(body, R"({"content":"user \"quoted\"","role":"user"})")) << body;
  EXPECT_TRUE(absl::StrContains(body, R"("max_tokens":100)")) << body;
}

TEST(ChatResponseTest, CacheKeyDependsOnEveryPart) {
  const std::string k = RewriteCacheKey("m", "i", "t");
  EXPECT_EQ(k.size(), 16u);
  EXPECT_EQ(k, RewriteCacheKey("m", "i", "t"));
  EXPECT_NE(k, RewriteCacheKey("m2", "i", "t"));
  EXPECT_NE(k, RewriteCacheKey("m", "i2", "t"));
  EXPECT_NE(k, RewriteCacheKey("m", "i", "t2"));
  EXPECT_NE(RewriteCacheKey("ab", "", "t"), RewriteCacheKey("a", "b", "t"));
}

TEST(CurlChatClientTest, UnreachableEndpointIsUnavailableNamingIt) {
  CurlChatOptions o;
  o.endpoint = "http://127.0.0.1:1";  // nothing listens on port 1
  o.model = "m";
  o.timeout = absl::Seconds(5);
  std::unique_ptr<ChatClient> client = NewCurlChatClient(o);
  absl::StatusOr<std::string> r = client->Complete("s", "u");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
  EXPECT_TRUE(absl::StrContains(r.status().message(), "http://127.0.0.1:1/v1/chat/completions")) << r.status();
}

}  // namespace
}  // namespace choir::data
