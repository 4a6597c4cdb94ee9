// choir groups profile|build|assign|priors and choir embed.
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/status.h"
#include <cblas.h>

#include <chrono>
#include <thread>

#include "absl/strings/str_split.h"
#include "data/groups/groups_tsv.h"
#include "data/groups/npy.h"
#include "data/groups/priors.h"
#include "data/groups/quality.h"
#include "data/groups/rq_kmeans.h"
#include "data/profile/llm_rewrite.h"
#include "data/profile/profile.h"
#include "gflags/gflags.h"
#include "choir/config.h"
#include "core/http.h"
#include "models/text/embed.h"
#include "models/text/minilm.h"
#include "models/text/remote_encoder.h"
#include "tools/choir/commands.h"

DEFINE_string(llm_endpoint, "",
              "groups profile: rewrite profiles with this OpenAI-compatible chat-completions "
              "endpoint (base URL or .../v1/chat/completions). The API key, if any, is read from "
              "the environment variable CHOIR_LLM_API_KEY.");
DEFINE_string(llm_model, "", "groups profile: model name sent to --llm-endpoint.");
DEFINE_int32(llm_concurrency, 8, "groups profile: concurrent requests to --llm-endpoint.");
DEFINE_int32(llm_timeout_s, 120, "groups profile: timeout of one request, seconds.");

DECLARE_string(model);  // cmd_train.cc; embed reads it as the encoder folder (DESIGN.md 9)
DEFINE_string(model_dir, "",
              "embed: the all-MiniLM-L6-v2 folder (default: $CHOIR_MODEL_CACHE or "
              "<repo>/.cache/models, /all-MiniLM-L6-v2).");
DEFINE_int32(batch, 64, "embed: sentences per batch (one forward pass, one request, one cache append).");
DEFINE_string(endpoint, "",
              "embed: use this OpenAI-compatible embeddings endpoint (base URL or .../v1/embeddings) "
              "instead of the built-in encoder. The API key, if any, is read from the environment "
              "variable CHOIR_EMBED_API_KEY.");
DEFINE_string(endpoint_model, "", "embed: model name sent to --endpoint (left out when empty).");
DEFINE_int32(concurrency, 4, "embed: requests in flight at once to --endpoint.");
DEFINE_int32(request_timeout_ms, 60000, "embed: deadline of one request to --endpoint, milliseconds.");
DEFINE_int32(max_retries, 4,
             "embed: retries of a request to --endpoint after a timeout, connection failure, 5xx or 429.");
DEFINE_int32(retry_backoff_ms, 1000, "embed: first pause before a retry, milliseconds (doubling, at most 30 s).");
DEFINE_string(cache, "",
              "embed: append-only embedding cache that makes reruns resume (default: <out>.cache).");

DEFINE_string(emb, "", "groups build/assign: the users' embeddings (.npy float32 [n, d]); predict: new users' embeddings, placed in groups with the bundle's codebooks.");
DEFINE_string(ids, "", "groups build/assign, predict: profiles.tsv whose rows match --emb (user ids).");
DEFINE_int32(levels, 3, "groups build: RQ-KMeans levels.");
DEFINE_int32(k, 256, "groups build: centroids per level (scaled down with a warning for few users).");
DEFINE_int32(iterations, 20, "groups build: Lloyd iterations per level.");
DEFINE_string(codebooks, "", "groups assign: codebook folder written by groups build.");

DEFINE_string(groups, "", "groups priors, train: groups.tsv written by groups build/assign (for train: overrides model.groups.table).");
DEFINE_int32(top_categories, 5, "groups priors: categories in a group's behaviour sequence.");
DEFINE_int32(items_per_category, 2, "groups priors: head items per category in the sequence.");
DEFINE_double(smoothing, 20, "groups priors: prior strength (in trials) pulling group CTR/CVR to the global rate.");

DECLARE_string(data);
DECLARE_uint64(seed);
DECLARE_string(in);
DECLARE_int32(threads);
DECLARE_string(out);

namespace choir::cli {

absl::Status RunGroupsProfile(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"data", FLAGS_data}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  RETURN_IF_ERROR(PrepareOutputFile(fs, "out", FLAGS_out));
  ASSIGN_OR_RETURN(JobConfig job, LoadJobConfig(fs, ConfigPath(), ConfigOverrides()));
  data::ProfileOptions options;
  options.error_budget = ErrorBudget{job.data().max_bad_rows(), job.data().max_bad_fraction()};
  const bool rewrite = !FLAGS_llm_endpoint.empty();
  if (rewrite && FLAGS_llm_model.empty()) {
    return absl::InvalidArgumentError("--llm-endpoint needs --llm-model NAME");
  }
  const std::string template_out = rewrite ? FLAGS_out + ".template.tsv" : FLAGS_out;
  ASSIGN_OR_RETURN(data::ProfileReport r, data::WriteTemplateProfiles(fs, FLAGS_data, template_out, options));
  std::printf("profiles of %ld users (%ld with purchases, %ld with browsing only or more) -> %s\n",
              static_cast<long>(r.users), static_cast<long>(r.users_with_purchases),
              static_cast<long>(r.users_with_browsing), template_out.c_str());
  if (!rewrite) return absl::OkStatus();

  data::CurlChatOptions chat;
  chat.endpoint = FLAGS_llm_endpoint;
  chat.model = FLAGS_llm_model;
  chat.timeout = absl::Seconds(FLAGS_llm_timeout_s);
  if (const char* key = std::getenv("CHOIR_LLM_API_KEY")) chat.api_key = key;
  std::unique_ptr<data::ChatClient> client = data::NewCurlChatClient(chat);
  data::RewriteOptions ro;
  ro.model = FLAGS_llm_model;
  ro.cache_path = FLAGS_out + ".llm-cache.jsonl";
  ro.concurrency = FLAGS_llm_concurrency;
  ASSIGN_OR_RETURN(data::RewriteReport rr, data::RewriteProfiles(fs, client.get(), template_out, FLAGS_out, ro));
  std::printf("rewrote %ld profiles with %s (%ld from the cache, %ld failed and kept their template, "
              "%ld malformed answers) -> %s\n",
              static_cast<long>(rr.rewritten), FLAGS_llm_model.c_str(), static_cast<long>(rr.cached),
              static_cast<long>(rr.failed), static_cast<long>(rr.malformed), FLAGS_out.c_str());
  return absl::OkStatus();
}

namespace {

// The embeddings and the ids of their rows, checked against each other.
absl::Status LoadEmbeddings(FileSystem* fs, groups::FloatMatrix* emb, std::vector<int64_t>* ids) {
  ASSIGN_OR_RETURN(*emb, groups::ReadNpy(fs, FLAGS_emb));
  ASSIGN_OR_RETURN(*ids, groups::ReadUserIds(fs, FLAGS_ids));
  if (static_cast<int64_t>(ids->size()) != emb->rows) {
    return absl::InvalidArgumentError(absl::StrCat(FLAGS_emb, " has ", emb->rows, " rows but ", FLAGS_ids,
                                                   " has ", ids->size(), " users; they must match row for row"));
  }
  if (absl::Status finite = groups::CheckFinite(emb->values.data(), emb->rows, static_cast<int>(emb->cols), *ids);
      !finite.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(FLAGS_emb, ": ", finite.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGroupsBuild(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"emb", FLAGS_emb}, {"ids", FLAGS_ids}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  RETURN_IF_ERROR(PrepareOutputFile(fs, "out", FLAGS_out));
  ASSIGN_OR_RETURN(JobConfig job, LoadJobConfig(fs, ConfigPath(), ConfigOverrides()));
  groups::FloatMatrix emb;
  std::vector<int64_t> ids;
  RETURN_IF_ERROR(LoadEmbeddings(fs, &emb, &ids));
  groups::RqKMeansOptions options;
  options.levels = FLAGS_levels;
  options.k = FLAGS_k;
  options.iterations = FLAGS_iterations;
  options.seed = FLAGS_seed;
  ASSIGN_OR_RETURN(groups::Codebooks codebooks, groups::TrainRqKMeans(emb.values.data(), emb.rows, emb.cols, options));
  ASSIGN_OR_RETURN(std::vector<int32_t> codes, groups::AssignRqCodes(codebooks, emb.values.data(), emb.rows, emb.cols));
  RETURN_IF_ERROR(groups::WriteGroupsTsv(fs, FLAGS_out, ids, codes, codebooks.levels()));
  const std::string codebook_dir = FLAGS_out + ".codebooks";
  RETURN_IF_ERROR(groups::SaveCodebooks(fs, codebook_dir, codebooks));
  groups::QualityOptions quality;
  quality.dataset_dir = FLAGS_data;
  quality.buckets = job.data().buckets();
  ASSIGN_OR_RETURN(groups::GroupsReport report,
                   groups::BuildGroupsReport(fs, codebooks, emb.values.data(), ids, codes, quality));
  RETURN_IF_ERROR(groups::WriteGroupsReport(fs, FLAGS_out + ".quality", report));
  std::printf("%s", report.ToMarkdown().c_str());
  std::printf("\ngroups of %ld users -> %s; codebooks -> %s/; quality -> %s.quality.{md,json}\n",
              static_cast<long>(ids.size()), FLAGS_out.c_str(), codebook_dir.c_str(), FLAGS_out.c_str());
  return absl::OkStatus();
}

absl::Status RunGroupsAssign(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(
      args, {{"codebooks", FLAGS_codebooks}, {"emb", FLAGS_emb}, {"ids", FLAGS_ids}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  RETURN_IF_ERROR(PrepareOutputFile(fs, "out", FLAGS_out));
  ASSIGN_OR_RETURN(groups::Codebooks codebooks, groups::LoadCodebooks(fs, FLAGS_codebooks));
  groups::FloatMatrix emb;
  std::vector<int64_t> ids;
  RETURN_IF_ERROR(LoadEmbeddings(fs, &emb, &ids));
  absl::StatusOr<std::vector<int32_t>> codes =
      groups::AssignRqCodes(codebooks, emb.values.data(), emb.rows, emb.cols);
  if (!codes.ok()) return Annotate(codes.status(), absl::StrCat(FLAGS_emb, " with the codebooks of ", FLAGS_codebooks));
  RETURN_IF_ERROR(groups::WriteGroupsTsv(fs, FLAGS_out, ids, *codes, codebooks.levels()));
  std::printf("assigned %ld users to groups -> %s\n", static_cast<long>(ids.size()), FLAGS_out.c_str());
  return absl::OkStatus();
}

absl::Status RunGroupsPriors(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"data", FLAGS_data}, {"groups", FLAGS_groups}, {"out", FLAGS_out}}));
  FileSystem* fs = PosixFileSystem();
  groups::PriorsOptions options;
  options.top_categories = FLAGS_top_categories;
  options.items_per_category = FLAGS_items_per_category;
  options.smoothing = FLAGS_smoothing;
  ASSIGN_OR_RETURN(groups::PriorsReport r, groups::WriteGroupPriors(fs, FLAGS_data, FLAGS_groups, FLAGS_out, options));
  std::printf("group priors of %ld users (%ld absent from the dataset) at %d levels -> %s (global CTR %.4f, CVR %.4f)\n",
              static_cast<long>(r.users), static_cast<long>(r.users_absent), r.levels, FLAGS_out.c_str(),
              r.global_ctr, r.global_cvr);
  for (size_t l = 0; l < r.groups_per_level.size(); ++l) {
    std::printf("  level %zu: %ld groups\n", l + 1, static_cast<long>(r.groups_per_level[l]));
  }
  return absl::OkStatus();
}

absl::Status RunEmbed(const Args& args) {
  RETURN_IF_ERROR(CheckUsage(args, {{"in", FLAGS_in}, {"out", FLAGS_out}}));
  // --model DIR is DESIGN.md's name for the encoder folder; --model-dir the same.
  std::string model_dir = FLAGS_model_dir;
  if (!FLAGS_model.empty()) {
    if (!model_dir.empty() && model_dir != FLAGS_model) {
      return absl::InvalidArgumentError("usage: --model and --model-dir both name the encoder folder; give one");
    }
    model_dir = FLAGS_model;
  }
  if (!FLAGS_endpoint.empty() && !model_dir.empty()) {
    return absl::InvalidArgumentError("usage: --endpoint or an encoder folder (--model), not both");
  }
  FileSystem* fs = PosixFileSystem();
  RETURN_IF_ERROR(PrepareOutputFile(fs, "out", FLAGS_out));
  // profiles.tsv: user_id TAB text, one user a line; rows of the output follow its order.
  ASSIGN_OR_RETURN(std::string tsv, fs->ReadFileToString(FLAGS_in));
  std::vector<std::string> texts;
  int64_t line_no = 0;
  for (absl::string_view line : absl::StrSplit(tsv, '\n')) {
    ++line_no;
    if (line.empty()) continue;
    const size_t tab = line.find('\t');
    if (tab == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(FLAGS_in, ":", line_no, ": expected user_id TAB text"));
    }
    texts.emplace_back(line.substr(tab + 1));
  }
  if (texts.empty()) return absl::InvalidArgumentError(absl::StrCat(FLAGS_in, " holds no profiles"));

  EmbedOptions options;
  options.cache_path = FLAGS_cache.empty() ? FLAGS_out + ".cache" : FLAGS_cache;
  options.batch_size = FLAGS_batch;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<TextEmbedder> embedder;
  std::string source;
  if (!FLAGS_endpoint.empty()) {
    RemoteEmbedderOptions remote;
    remote.endpoint = FLAGS_endpoint;
    remote.model = FLAGS_endpoint_model;
    if (const char* key = std::getenv("CHOIR_EMBED_API_KEY")) remote.api_key = key;
    remote.request_timeout = absl::Milliseconds(FLAGS_request_timeout_ms);
    remote.max_retries = FLAGS_max_retries;
    remote.initial_backoff = absl::Milliseconds(FLAGS_retry_backoff_ms);
    http = NewCurlHttpClient();
    ASSIGN_OR_RETURN(embedder, NewRemoteEmbedder(http.get(), remote));
    options.parallelism = FLAGS_concurrency;
    source = EmbeddingsUrl(FLAGS_endpoint);
  } else {
    if (model_dir.empty()) {
      const char* cache = std::getenv("CHOIR_MODEL_CACHE");
      model_dir = JoinPath(cache != nullptr ? std::string(cache) : JoinPath(CHOIR_SOURCE_DIR, ".cache/models"),
                           "all-MiniLM-L6-v2");
    }
    ASSIGN_OR_RETURN(embedder, SentenceEncoder::Load(fs, model_dir));
    options.parallelism = FLAGS_threads > 0 ? FLAGS_threads : std::max(1u, std::thread::hardware_concurrency());
    if (options.parallelism > 1) openblas_set_num_threads(1);  // parallel over batches instead
    source = model_dir;
  }
  const auto start = std::chrono::steady_clock::now();
  EmbedReport report;
  ASSIGN_OR_RETURN(EmbeddingMatrix emb, EmbedTexts(fs, embedder.get(), texts, options, &report));
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  RETURN_IF_ERROR(groups::WriteNpy(fs, FLAGS_out, emb.values.data(), emb.rows, emb.dim));
  std::printf("embedded %ld profiles (%ld distinct: %ld from the cache %s, %ld new from %s in %.1f s, "
              "%.1f/s, %d in parallel) -> %s [%ld, %d]\n",
              static_cast<long>(report.texts), static_cast<long>(report.distinct), static_cast<long>(report.cached),
              options.cache_path.c_str(), static_cast<long>(report.embedded), source.c_str(), seconds,
              report.embedded / std::max(seconds, 1e-9), options.parallelism, FLAGS_out.c_str(),
              static_cast<long>(emb.rows), emb.dim);
  return absl::OkStatus();
}

}  // namespace choir::cli
