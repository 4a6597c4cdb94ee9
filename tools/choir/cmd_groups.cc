// choir groups profile (and, as they land, embed/build/assign/priors).
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "core/config.h"
#include "core/status.h"
#include <cblas.h>

#include <chrono>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_split.h"
#include "core/progress.h"
#include "data/groups/groups_tsv.h"
#include "data/groups/npy.h"
#include "data/groups/priors.h"
#include "data/groups/quality.h"
#include "data/groups/rq_kmeans.h"
#include "data/profile/llm_rewrite.h"
#include "data/profile/profile.h"
#include "gflags/gflags.h"
#include "choir/config.h"
#include "models/text/minilm.h"
#include "tools/choir/commands.h"

DEFINE_string(llm_endpoint, "",
              "groups profile: rewrite profiles with this OpenAI-compatible chat-completions "
              "endpoint (base URL or .../v1/chat/completions). The API key, if any, is read from "
              "the environment variable CHOIR_LLM_API_KEY.");
DEFINE_string(llm_model, "", "groups profile: model name sent to --llm-endpoint.");
DEFINE_int32(llm_concurrency, 8, "groups profile: concurrent requests to --llm-endpoint.");
DEFINE_int32(llm_timeout_s, 120, "groups profile: timeout of one request, seconds.");

DEFINE_string(model_dir, "",
              "embed: the all-MiniLM-L6-v2 folder (default: $CHOIR_MODEL_CACHE or "
              "<repo>/.cache/models, /all-MiniLM-L6-v2).");
DEFINE_int32(batch, 64, "embed: sentences per batch.");

DEFINE_string(emb, "", "groups build/assign: the users' embeddings (.npy float32 [n, d]).");
DEFINE_string(ids, "", "groups build/assign: profiles.tsv whose rows match --emb (user ids).");
DEFINE_int32(levels, 3, "groups build: RQ-KMeans levels.");
DEFINE_int32(k, 256, "groups build: centroids per level (scaled down with a warning for few users).");
DEFINE_int32(iterations, 20, "groups build: Lloyd iterations per level.");
DEFINE_string(codebooks, "", "groups assign: codebook folder written by groups build.");

DEFINE_string(groups, "", "groups priors: groups.tsv written by groups build/assign.");
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
  if (FLAGS_data.empty() || FLAGS_out.empty() || !args.empty()) {
    return absl::InvalidArgumentError(
        "usage: choir groups profile --data DIR --out profiles.tsv [--llm-endpoint URL --llm-model NAME]");
  }
  FileSystem* fs = PosixFileSystem();
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
  return absl::OkStatus();
}

}  // namespace

absl::Status RunGroupsBuild(const Args& args) {
  if (FLAGS_emb.empty() || FLAGS_ids.empty() || FLAGS_out.empty() || !args.empty()) {
    return absl::InvalidArgumentError(
        "usage: choir groups build --emb emb.npy --ids profiles.tsv --out groups.tsv [--levels 3 --k 256] "
        "[--data DIR (quality against truth/)]");
  }
  FileSystem* fs = PosixFileSystem();
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
  if (FLAGS_emb.empty() || FLAGS_ids.empty() || FLAGS_out.empty() || FLAGS_codebooks.empty() || !args.empty()) {
    return absl::InvalidArgumentError(
        "usage: choir groups assign --codebooks groups.tsv.codebooks --emb emb.npy --ids profiles.tsv --out groups.tsv");
  }
  FileSystem* fs = PosixFileSystem();
  ASSIGN_OR_RETURN(groups::Codebooks codebooks, groups::LoadCodebooks(fs, FLAGS_codebooks));
  groups::FloatMatrix emb;
  std::vector<int64_t> ids;
  RETURN_IF_ERROR(LoadEmbeddings(fs, &emb, &ids));
  ASSIGN_OR_RETURN(std::vector<int32_t> codes, groups::AssignRqCodes(codebooks, emb.values.data(), emb.rows, emb.cols));
  RETURN_IF_ERROR(groups::WriteGroupsTsv(fs, FLAGS_out, ids, codes, codebooks.levels()));
  std::printf("assigned %ld users to groups -> %s\n", static_cast<long>(ids.size()), FLAGS_out.c_str());
  return absl::OkStatus();
}

absl::Status RunGroupsPriors(const Args& args) {
  if (FLAGS_data.empty() || FLAGS_groups.empty() || FLAGS_out.empty() || !args.empty()) {
    return absl::InvalidArgumentError("usage: choir groups priors --data DIR --groups groups.tsv --out DIR");
  }
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
  if (FLAGS_in.empty() || FLAGS_out.empty() || !args.empty()) {
    return absl::InvalidArgumentError("usage: choir embed --in profiles.tsv --out emb.npy [--model-dir DIR]");
  }
  FileSystem* fs = PosixFileSystem();
  std::string model_dir = FLAGS_model_dir;
  if (model_dir.empty()) {
    const char* cache = std::getenv("CHOIR_MODEL_CACHE");
    model_dir = JoinPath(cache != nullptr ? std::string(cache) : JoinPath(CHOIR_SOURCE_DIR, ".cache/models"),
                         "all-MiniLM-L6-v2");
  }
  ASSIGN_OR_RETURN(std::unique_ptr<SentenceEncoder> encoder, SentenceEncoder::Load(fs, model_dir));
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
  // Identical profiles (common among sparse users) are encoded once.
  std::vector<std::string> unique;
  std::vector<int64_t> index(texts.size());
  absl::flat_hash_map<std::string, int64_t> seen;
  for (size_t i = 0; i < texts.size(); ++i) {
    auto [it, inserted] = seen.try_emplace(texts[i], unique.size());
    if (inserted) unique.push_back(texts[i]);
    index[i] = it->second;
  }
  const int threads = FLAGS_threads > 0 ? FLAGS_threads : std::max(1u, std::thread::hardware_concurrency());
  if (threads > 1) openblas_set_num_threads(1);  // parallel over batches instead
  const int dim = encoder->dim();
  std::vector<float> unique_emb(unique.size() * dim);
  const auto start = std::chrono::steady_clock::now();
  {
    Progress progress("profiles embedded", unique.size());
    const size_t chunk = static_cast<size_t>(std::max(1, FLAGS_batch)) * threads * 4;
    for (size_t lo = 0; lo < unique.size(); lo += chunk) {
      const size_t hi = std::min(unique.size(), lo + chunk);
      std::vector<std::string> part(unique.begin() + lo, unique.begin() + hi);
      RETURN_IF_ERROR(encoder->Encode(part, FLAGS_batch, threads, unique_emb.data() + lo * dim));
      progress.Add(hi - lo);
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<float> emb(texts.size() * dim);
  for (size_t i = 0; i < texts.size(); ++i) {
    std::copy_n(unique_emb.begin() + index[i] * dim, dim, emb.begin() + i * dim);
  }
  RETURN_IF_ERROR(groups::WriteNpy(fs, FLAGS_out, emb.data(), texts.size(), dim));
  std::printf("embedded %zu profiles (%zu distinct) in %.1f s (%.1f distinct/s, %d threads) -> %s [%zu, %d]\n",
              texts.size(), unique.size(), seconds, unique.size() / std::max(seconds, 1e-9), threads,
              FLAGS_out.c_str(), texts.size(), dim);
  return absl::OkStatus();
}

}  // namespace choir::cli
