#include "worker/bundle.h"

#include <algorithm>
#include <memory>
#include <vector>


#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"
#include "core/crc32c.h"
#include "core/status.h"
#include "glog/logging.h"
#include "google/protobuf/text_format.h"
#include "models/layers.h"
#include "nlohmann/json.hpp"
#include "ps/feature_key.h"
#include "ps/sparse_table.h"
#include "worker/embedding_store.h"
#include "worker/internal/model_setup.h"

namespace choir::worker {
namespace {

// What a bundle directory holds besides its manifest (top-level names).
constexpr absl::string_view kBundleNames[] = {"job.pbtxt",    "schema.pbtxt",   "dense.bin", "sparse.bin",
                                              "activity.bin", "own_counts.bin", "groups"};

bool IsBundleName(absl::string_view name) {
  return absl::StartsWith(name, checkpoint::kManifestName) ||
         std::find(std::begin(kBundleNames), std::end(kBundleNames), name) != std::end(kBundleNames);
}

// The files of a folder written by `choir groups priors` or SaveCodebooks that the bundle
// carries: the JSON and the per-level files.
absl::StatusOr<std::vector<std::string>> GroupFolderFiles(FileSystem* fs, const std::string& dir,
                                                          const std::string& json_name) {
  ASSIGN_OR_RETURN(std::vector<std::string> names, fs->ListDir(dir));
  std::vector<std::string> out;
  bool has_json = false;
  for (const std::string& name : names) {
    if (name == json_name) has_json = true;
    if (name == json_name || (absl::StartsWith(name, "level-") &&
                              (absl::EndsWith(name, ".tsv") || absl::EndsWith(name, ".npy")))) {
      out.push_back(name);
    }
  }
  if (!has_json) return absl::NotFoundError(absl::StrCat(dir, " has no ", json_name));
  return out;
}

}  // namespace

absl::StatusOr<ExportSummary> ExportBundle(FileSystem* fs, const std::string& checkpoint_dir,
                                           const std::string& out, const ExportOptions& options) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, checkpoint_dir));
  const nlohmann::json& meta = reader.meta();
  ASSIGN_OR_RETURN(const std::string trained_job, reader.Meta<std::string>("job"));
  JobConfig job;
  if (!google::protobuf::TextFormat::ParseFromString(trained_job, &job)) {
    return absl::DataLossError(absl::StrCat(checkpoint_dir, ": the checkpoint's job does not parse"));
  }
  if (!options.data_dir.empty()) job.mutable_data()->set_dir(options.data_dir);
  RETURN_IF_ERROR(internal::CheckCheckpointData(fs, job.data().dir(), !options.data_dir.empty()));
  internal::RunOnCpu(job.mutable_trainer());
  job.clear_cluster();
  job.mutable_trainer()->clear_resume();

  // The model's shape, groups, activity and own counts, exactly as training built them.
  models::CpuLayerFactory<float> factory;
  ASSIGN_OR_RETURN(internal::JobSetup setup, internal::SetupJob(fs, job, &factory));
  // The activity index and the group statistics come from the data given; another dataset than
  // the one trained on is allowed (new users, a later period) but said.
  if (const nlohmann::json& run = meta.contains("run") ? meta["run"] : nlohmann::json();
      run.is_object() && run.contains("data") && run["data"].is_object() && run["data"].contains("fingerprint") &&
      run["data"]["fingerprint"] != internal::DataFingerprint(setup.manifest)) {
    LOG(WARNING) << "exporting with " << job.data().dir()
                 << ", whose train split differs from the data the checkpoint was trained on: the bundle's activity "
                    "index and group statistics come from it";
  }
  const bool has_groups = setup.groups != nullptr;
  if (has_groups && meta.contains("groups_table_crc32c")) {
    ASSIGN_OR_RETURN(const uint32_t trained_crc, reader.Meta<uint32_t>("groups_table_crc32c"));
    ASSIGN_OR_RETURN(std::string table, fs->ReadFileToString(job.model().groups().table()));
    if (crc32c::Value(table) != trained_crc) {
      return absl::FailedPreconditionError(
          absl::StrCat("the group table ", job.model().groups().table(),
                       " is not the one the checkpoint was trained with"));
    }
  }

  // Dense: parameters and buffers of the checkpoint's dense.bin (params, accumulators, buffers).
  ASSIGN_OR_RETURN(std::string dense_bytes, reader.ReadFile("dense.bin"));
  ASSIGN_OR_RETURN(std::vector<std::vector<float>> dense,
                   checkpoint::DecodeDenseFloats(dense_bytes, JoinPath(checkpoint_dir, "dense.bin")));
  const size_t num_params = setup.model->Params().size();
  ASSIGN_OR_RETURN(const size_t num_acc, reader.Meta<size_t>("accumulators", 0));
  if (num_acc > dense.size() || dense.size() - num_acc < num_params) {
    return absl::FailedPreconditionError(absl::StrCat(checkpoint_dir, "/dense.bin holds ", dense.size(),
                                                      " tensors; the job's model has ", num_params,
                                                      " parameters"));
  }
  std::vector<std::vector<float>> weights(dense.begin(), dense.begin() + num_params);
  weights.insert(weights.end(), dense.begin() + num_params + num_acc, dense.end());
  // Checks every count and size against the model before anything is written.
  RETURN_IF_ERROR(internal::SetModelWeights(weights, JoinPath(checkpoint_dir, "dense.bin"), setup.model.get()));

  // Sparse: the values of every stored row (optimizer state and push counts stay behind), except
  // rows still equal to their initial values, which the Predictor recreates for a key it does not
  // hold (rows pulled but never updated, or FTRL rows that L1 keeps at 0 from a 0 start).
  checkpoint::BundleRowsWriter rows(options.fp16);
  int64_t at_initial = 0;
  std::vector<float> initial;
  for (const std::string& name : SparseRowsFiles(reader)) {
    RETURN_IF_ERROR(ForEachCheckpointRow(reader, name, [&](uint64_t key, absl::Span<const float> row, uint32_t) {
      auto slot = setup.table.slots.find(SlotOf(key));
      if (slot == setup.table.slots.end() || row.size() < static_cast<size_t>(slot->second.dim)) {
        return absl::FailedPreconditionError(absl::StrCat("key ", key, " of slot ", SlotOf(key),
                                                          " does not fit the job's sparse table"));
      }
      const absl::Span<const float> values = row.subspan(0, slot->second.dim);
      initial.resize(values.size());
      RETURN_IF_ERROR(InitialValues(setup.table, key, absl::MakeSpan(initial)));
      if (std::equal(values.begin(), values.end(), initial.begin())) {
        ++at_initial;
        return absl::OkStatus();
      }
      return rows.Add(key, values);
    }));
  }

  // --out may hold an unfinished bundle (no manifest) or, with --force, a committed one: nothing
  // else. A folder with any other file, or whose manifest is not a bundle's (a checkpoint, a
  // damaged manifest), is not ours to delete.
  const bool has_manifest = fs->Exists(JoinPath(out, checkpoint::kManifestName));
  if (fs->IsDirectory(out)) {
    ASSIGN_OR_RETURN(std::vector<std::string> names, fs->ListDir(out));
    for (const std::string& name : names) {
      if (!IsBundleName(name)) {
        return absl::FailedPreconditionError(absl::StrCat(
            out, " exists and holds ", name, ", which is not part of a bundle: choose an empty or new --out"));
      }
    }
    if (has_manifest) {
      // A bundle of another format version (FAILED_PRECONDITION) is still a bundle to replace.
      if (absl::StatusOr<checkpoint::Reader> old = checkpoint::Reader::Open(fs, out, kBundleFormat);
          !old.ok() && !absl::IsFailedPrecondition(old.status())) {
        return absl::FailedPreconditionError(
            absl::StrCat(out, " holds a MANIFEST.json that is not a readable bundle's (", old.status().message(),
                         "): it is left alone; choose another --out or delete it yourself"));
      }
    }
  }
  if (has_manifest) {
    if (!options.overwrite) {
      return absl::FailedPreconditionError(absl::StrCat(out, " already holds a bundle (--force replaces it)"));
    }
    LOG(WARNING) << "replacing the bundle " << out;
    // The manifest first: an interrupted replacement leaves an unfinished bundle, never a
    // committed one with files of two exports.
    RETURN_IF_ERROR(fs->DeleteFile(JoinPath(out, checkpoint::kManifestName)));
    RETURN_IF_ERROR(fs->DeleteRecursively(out));
  }
  ASSIGN_OR_RETURN(checkpoint::Writer writer,
                   checkpoint::Writer::BeginDirectory(fs, out, reader.step(), kBundleFormat));
  std::string job_text, schema_text;
  google::protobuf::TextFormat::PrintToString(job, &job_text);
  google::protobuf::TextFormat::PrintToString(setup.schema, &schema_text);
  RETURN_IF_ERROR(writer.AddFile("job.pbtxt", job_text));
  RETURN_IF_ERROR(writer.AddFile("schema.pbtxt", schema_text));
  RETURN_IF_ERROR(writer.AddFile("dense.bin", checkpoint::EncodeDenseFloats(weights)));
  const std::string sparse = rows.Finish();
  RETURN_IF_ERROR(writer.AddFile("sparse.bin", sparse));
  std::vector<int64_t> activity;
  const std::vector<data::ActivityIndex::UserCounts> known = setup.activity->KnownUsers();
  for (const auto& u : known) activity.insert(activity.end(), {u.user, u.purchases, u.clicks, u.active_days});
  RETURN_IF_ERROR(writer.AddFile("activity.bin", checkpoint::EncodeInt64Table(4, activity)));

  ExportSummary summary;
  if (has_groups) {
    if (job.model().type() == "choirrec") {
      std::vector<std::pair<int64_t, OwnCounts>> own(setup.own_counts.begin(), setup.own_counts.end());
      std::sort(own.begin(), own.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
      std::vector<int64_t> values;
      values.reserve(own.size() * 4);
      for (const auto& [user, c] : own) values.insert(values.end(), {user, c.impressions, c.clicks, c.conversions});
      RETURN_IF_ERROR(writer.AddFile("own_counts.bin", checkpoint::EncodeInt64Table(4, values)));
    }
    const GroupsConfig& gc = job.model().groups();
    auto copy = [&](const std::string& from, const std::string& name) -> absl::Status {
      ASSIGN_OR_RETURN(std::string bytes, fs->ReadFileToString(from));
      return writer.AddFile(name, bytes);
    };
    RETURN_IF_ERROR(copy(gc.table(), "groups/groups.tsv"));
    ASSIGN_OR_RETURN(std::vector<std::string> priors, GroupFolderFiles(fs, gc.priors(), "priors.json"));
    for (const std::string& name : priors) RETURN_IF_ERROR(copy(JoinPath(gc.priors(), name), "groups/priors/" + name));
    const std::string codebooks = gc.table() + ".codebooks";
    absl::StatusOr<std::vector<std::string>> books = GroupFolderFiles(fs, codebooks, "codebooks.json");
    if (books.ok()) {
      for (const std::string& name : *books) {
        RETURN_IF_ERROR(copy(JoinPath(codebooks, name), "groups/codebooks/" + name));
      }
      summary.codebooks = true;
    } else {
      LOG(WARNING) << "no codebooks beside " << gc.table() << " (" << books.status().message()
                   << "): the bundle cannot place new users in groups";
    }
  }
  nlohmann::json bundle_meta = {
      {"model_type", job.model().type()},
      {"task", Task_Name(job.task())},
      {"checkpoint", checkpoint_dir},
      {"checkpoint_step", reader.step()},
      {"data_dir", job.data().dir()},
      {"sparse_dtype", options.fp16 ? "f16" : "f32"},
      {"sparse_rows", rows.rows()},
      {"sparse_rows_at_initial_values", at_initial},
      {"embedding_dim", job.model().embedding_dim()},
      {"known_users", known.size()},
      {"groups", has_groups},
      {"codebooks", summary.codebooks},
  };
  RETURN_IF_ERROR(writer.Commit(bundle_meta));

  summary.step = reader.step();
  summary.sparse_rows = static_cast<int64_t>(rows.rows());
  summary.rows_at_initial_values = at_initial;
  summary.known_users = static_cast<int64_t>(known.size());
  summary.sparse_bytes = sparse.size();
  ASSIGN_OR_RETURN(checkpoint::Reader written, checkpoint::Reader::Open(fs, out, kBundleFormat));
  for (const std::string& name : written.FileNames()) {
    ASSIGN_OR_RETURN(uint64_t size, fs->FileSize(JoinPath(out, name)));
    summary.bundle_bytes += size;
  }
  for (const std::string& name : reader.FileNames()) {
    ASSIGN_OR_RETURN(uint64_t size, fs->FileSize(JoinPath(checkpoint_dir, name)));
    summary.checkpoint_bytes += size;
  }
  LOG(INFO) << "bundle of " << checkpoint_dir << " (step " << summary.step << ") written to " << out << ": "
            << summary.sparse_rows << " rows (" << at_initial << " left out at their initial values), "
            << summary.bundle_bytes / 1e6 << " MB (checkpoint "
            << summary.checkpoint_bytes / 1e6 << " MB)";
  return summary;
}

}  // namespace choir::worker
