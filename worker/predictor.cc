#include "worker/predictor.h"

#include <mutex>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "checkpoint/checkpoint.h"
#include "checkpoint/files.h"
#include "core/status.h"
#include "data/groups/rq_kmeans.h"
#include "glog/logging.h"
#include "google/protobuf/text_format.h"
#include "models/layers.h"
#include "ps/sparse_table.h"
#include "worker/bundle.h"
#include "worker/embedding_store.h"
#include "worker/internal/model_setup.h"

namespace choir::worker {
namespace {

// The bundle's sparse rows, read-only. A key without a row reads what the trainer's table would
// give it before any update (InitialValues).
class BundleStore : public EmbeddingStore {
 public:
  explicit BundleStore(TableOptions table) : table_(std::move(table)) {}

  absl::Status Add(uint64_t key, absl::Span<const float> values) {
    if (Dim(key) != static_cast<int>(values.size())) {
      return absl::DataLossError(absl::StrCat("bundle row of key ", key, " (slot ", SlotOf(key), ") has ",
                                              values.size(), " values, the model's slot ", Dim(key)));
    }
    if (!offset_.emplace(key, values_.size()).second) {
      return absl::DataLossError(absl::StrCat("bundle row of key ", key, " appears twice"));
    }
    values_.insert(values_.end(), values.begin(), values.end());
    return absl::OkStatus();
  }
  int64_t rows() const { return static_cast<int64_t>(offset_.size()); }

  absl::Status Pull(absl::Span<const uint64_t> keys, absl::Span<float> out) override {
    size_t at = 0;
    for (uint64_t key : keys) {
      const int dim = Dim(key);
      if (dim == 0 || at + dim > out.size()) {
        return absl::InvalidArgumentError(absl::StrCat("pull of key ", key, ": slot ", SlotOf(key),
                                                       dim == 0 ? " is not the model's" : " overflows the output"));
      }
      auto it = offset_.find(key);
      if (it != offset_.end()) {
        std::copy(values_.begin() + it->second, values_.begin() + it->second + dim, out.begin() + at);
      } else {
        RETURN_IF_ERROR(InitialValues(table_, key, out.subspan(at, dim)));
      }
      at += dim;
    }
    if (at != out.size()) return absl::InvalidArgumentError("pull: output size does not match the keys");
    return absl::OkStatus();
  }
  absl::Status Lookup(absl::Span<const uint64_t> keys, absl::Span<float> out) override { return Pull(keys, out); }
  absl::Status Push(absl::Span<const uint64_t>, absl::Span<const float>) override {
    return absl::FailedPreconditionError("a serving bundle is read-only");
  }
  int Dim(uint64_t key) const override {
    auto it = table_.slots.find(SlotOf(key));
    return it == table_.slots.end() ? 0 : it->second.dim;
  }
  absl::StatusOr<std::map<std::string, checkpoint::FileInfo>> SaveRows(FileSystem*, const std::string&) override {
    return absl::UnimplementedError("a serving bundle is not checkpointed");
  }
  absl::Status LoadRows(const checkpoint::Reader&, uint64_t) override {
    return absl::UnimplementedError("a serving bundle does not restore checkpoints");
  }
  void ResumeAt(uint64_t) override {}

 private:
  const TableOptions table_;
  absl::flat_hash_map<uint64_t, uint64_t> offset_;  // key -> first value in values_
  std::vector<float> values_;
};

// The groups of `options.new_user_ids`, coded with the bundle's codebooks.
absl::StatusOr<AssignedUsers> AssignNewUsers(FileSystem* fs, const std::string& bundle, const checkpoint::Reader& reader,
                                             const PredictorOptions& options) {
  AssignedUsers assigned;
  if (options.new_user_ids.empty()) return assigned;
  if (!reader.Has("groups/codebooks/codebooks.json")) {
    return absl::FailedPreconditionError(absl::StrCat(
        bundle, " has no codebooks (none beside the group table at export): new users cannot be placed in groups"));
  }
  ASSIGN_OR_RETURN(groups::Codebooks books, groups::LoadCodebooks(fs, JoinPath(bundle, "groups/codebooks")));
  const size_t n = options.new_user_ids.size();
  if (options.embedding_dim != books.dim || options.new_user_embeddings.size() != n * books.dim) {
    return absl::InvalidArgumentError(absl::StrCat("new users: ", n, " users with ", options.new_user_embeddings.size(),
                                                   " floats of dimension ", options.embedding_dim,
                                                   "; the bundle's codebooks want dimension ", books.dim));
  }
  if (absl::Status finite = groups::CheckFinite(options.new_user_embeddings.data(), static_cast<int64_t>(n),
                                                books.dim, options.new_user_ids);
      !finite.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("new users' embeddings: ", finite.message()));
  }
  ASSIGN_OR_RETURN(assigned.codes, groups::AssignRqCodes(books, options.new_user_embeddings.data(),
                                                         static_cast<int64_t>(n), books.dim));
  assigned.ids = options.new_user_ids;
  return assigned;
}

}  // namespace

struct Predictor::State {
  JobConfig job;
  int64_t step = 0;
  models::CpuLayerFactory<float> factory;
  internal::ModelSetup setup;
  std::unique_ptr<BundleStore> store;
  std::unique_ptr<internal::SparseBridge> bridge;
  std::mutex mu;  // one Predict at a time: the model and the bridge keep per-call buffers
  models::ModelInputs in;
  models::Tensor<float> logits;
};

Predictor::Predictor(std::unique_ptr<State> state) : state_(std::move(state)) {}
Predictor::~Predictor() = default;

absl::StatusOr<std::unique_ptr<Predictor>> Predictor::Load(FileSystem* fs, const std::string& bundle,
                                                           const PredictorOptions& options) {
  ASSIGN_OR_RETURN(checkpoint::Reader reader, checkpoint::Reader::Open(fs, bundle, kBundleFormat));
  RETURN_IF_ERROR(reader.Verify());
  auto state = std::make_unique<State>();
  state->step = reader.step();
  JobConfig& job = state->job;
  ASSIGN_OR_RETURN(std::string job_text, reader.ReadFile("job.pbtxt"));
  if (!google::protobuf::TextFormat::ParseFromString(job_text, &job)) {
    return absl::DataLossError(absl::StrCat(bundle, "/job.pbtxt does not parse"));
  }
  data::Schema schema;
  ASSIGN_OR_RETURN(std::string schema_text, reader.ReadFile("schema.pbtxt"));
  if (!google::protobuf::TextFormat::ParseFromString(schema_text, &schema)) {
    return absl::DataLossError(absl::StrCat(bundle, "/schema.pbtxt does not parse"));
  }

  auto activity = std::make_unique<data::ActivityIndex>(job.data().buckets(), "bundle");
  {
    ASSIGN_OR_RETURN(std::string bytes, reader.ReadFile("activity.bin"));
    ASSIGN_OR_RETURN(std::vector<int64_t> t,
                     checkpoint::DecodeInt64Table(bytes, 4, JoinPath(bundle, "activity.bin")));
    for (size_t i = 0; i < t.size(); i += 4) {
      activity->SetKnownUser({t[i], t[i + 1], t[i + 2], static_cast<int32_t>(t[i + 3])});
    }
  }
  std::unique_ptr<GroupFeatures> groups;
  if (internal::ReadsGroups(job.model().type())) {
    absl::flat_hash_map<int64_t, OwnCounts> own;
    if (reader.Has("own_counts.bin")) {
      ASSIGN_OR_RETURN(std::string bytes, reader.ReadFile("own_counts.bin"));
      ASSIGN_OR_RETURN(std::vector<int64_t> t,
                       checkpoint::DecodeInt64Table(bytes, 4, JoinPath(bundle, "own_counts.bin")));
      for (size_t i = 0; i < t.size(); i += 4) own[t[i]] = OwnCounts{t[i + 1], t[i + 2], t[i + 3]};
    }
    ASSIGN_OR_RETURN(AssignedUsers assigned, AssignNewUsers(fs, bundle, reader, options));
    ASSIGN_OR_RETURN(groups, internal::LoadGroups(fs, job.model(), &own, JoinPath(bundle, "groups/groups.tsv"),
                                                  JoinPath(bundle, "groups/priors"), &assigned));
  } else if (!options.new_user_ids.empty()) {
    LOG(WARNING) << "model type " << job.model().type() << " reads no groups: the new users' embeddings are unused";
  }
  internal::ModelSetup& setup = state->setup;
  RETURN_IF_ERROR(internal::BuildModel(job, schema, std::move(groups), std::move(activity), &state->factory, &setup));

  ASSIGN_OR_RETURN(std::string dense, reader.ReadFile("dense.bin"));
  ASSIGN_OR_RETURN(std::vector<std::vector<float>> weights,
                   checkpoint::DecodeDenseFloats(dense, JoinPath(bundle, "dense.bin")));
  RETURN_IF_ERROR(internal::SetModelWeights(weights, JoinPath(bundle, "dense.bin"), setup.model.get()));
  setup.model->SetTraining(false);

  state->store = std::make_unique<BundleStore>(setup.table);
  ASSIGN_OR_RETURN(std::string sparse, reader.ReadFile("sparse.bin"));
  RETURN_IF_ERROR(checkpoint::ReadBundleRows(sparse, JoinPath(bundle, "sparse.bin"),
                                             [&](uint64_t key, absl::Span<const float> values) {
                                               return state->store->Add(key, values);
                                             }));
  state->bridge = std::make_unique<internal::SparseBridge>(setup.shape, state->store.get(), setup.sources,
                                                           internal::SparseBridge::Reads::kEvaluation);
  LOG(INFO) << "predictor: " << job.model().type() << " of step " << state->step << " from " << bundle << ", "
            << state->store->rows() << " sparse rows";
  return std::unique_ptr<Predictor>(new Predictor(std::move(state)));
}

const JobConfig& Predictor::job() const { return state_->job; }
const FeatureLayout& Predictor::layout() const { return state_->setup.layout; }
int64_t Predictor::step() const { return state_->step; }
int64_t Predictor::sparse_rows() const { return state_->store->rows(); }

absl::Status Predictor::Predict(const Batch& batch, std::vector<double>* scores) {
  std::lock_guard<std::mutex> lock(state_->mu);
  models::Model* model = state_->setup.model.get();
  model->SetTraining(false);
  RETURN_IF_ERROR(state_->bridge->Gather(batch, &state_->in));
  model->Forward(state_->in, &state_->logits);
  scores->resize(batch.size);
  for (int b = 0; b < batch.size; ++b) (*scores)[b] = models::Sigmoid<double>(state_->logits.at(b, 0));
  return absl::OkStatus();
}

absl::StatusOr<std::vector<eval::Prediction>> Predictor::PredictFiles(FileSystem* fs,
                                                                      const std::vector<std::string>& files,
                                                                      bool every_row) {
  std::lock_guard<std::mutex> lock(state_->mu);
  internal::ModelSetup& setup = state_->setup;
  return internal::PredictFiles(fs, files, setup.layout, state_->job, setup.model.get(), state_->bridge.get(),
                                *setup.activity, every_row);
}

data::Bucket Predictor::BucketOf(int64_t user) const { return state_->setup.activity->Of(user); }

std::vector<int64_t> Predictor::GroupIds(int64_t user) const {
  const GroupFeatures* groups = state_->setup.groups.get();
  return groups == nullptr ? std::vector<int64_t>() : groups->Of(user).ids;
}

}  // namespace choir::worker
