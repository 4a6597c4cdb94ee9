#include "models/ranking_model.h"

#include "absl/strings/str_cat.h"

namespace choir::models {

absl::StatusOr<std::unique_ptr<RankingModel>> RankingModel::Create(const ModelConfig& config,
                                                                   const ModelShape& shape,
                                                                   uint64_t seed,
                                                                   LayerFactory<float>* factory) {
  const std::string& type = config.type();
  if (type != "dnn" && type != "din" && type != "dnn+groupid") {
    return absl::InvalidArgumentError(
        absl::StrCat("model.type: '", type, "' is not a single-tower model (dnn, din, dnn+groupid)"));
  }
  ActivationKind activation;
  if (!ParseActivationKind(config.activation(), &activation)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.activation: '", config.activation(), "' (relu, prelu, dice, sigmoid, tanh)"));
  }
  for (int h : config.hidden()) {
    if (h < 1) return absl::InvalidArgumentError("model.hidden: layer sizes must be >= 1");
  }
  for (int h : config.attention_hidden()) {
    if (h < 1) return absl::InvalidArgumentError("model.attention_hidden: layer sizes must be >= 1");
  }
  if (shape.num_slots < 1 || shape.embedding_dim < 1) {
    return absl::InvalidArgumentError("model: needs at least one categorical feature and embedding_dim >= 1");
  }
  ModelShape s = shape;
  if (type != "din") s.sequence_targets.clear();
  if (type != "dnn+groupid") s.group_levels = 0;
  if (type == "dnn+groupid" && s.group_levels < 1) {
    return absl::FailedPreconditionError("model.type dnn+groupid needs the semantic groups (model.groups.table)");
  }
  // Only dnn+groupid's group ids; the rest of the group channel belongs to choirrec.
  s.group_attribute_slots = s.group_stats = s.group_max_seq_len = s.activity_features = 0;
  s.group_sequence_targets.clear();
  s.group_channel_slots.clear();
  if (type == "din" && s.sequence_targets.empty()) {
    return absl::FailedPreconditionError(
        "model.type din needs behaviour sequences (model.sequences, or hist_item/hist_cate in the data)");
  }
  std::unique_ptr<RankingModel> m(new RankingModel(s, factory->device()));
  const int d = s.embedding_dim;
  AttentionOptions att;
  if (config.attention_hidden_size() > 0) {
    att.hidden.assign(config.attention_hidden().begin(), config.attention_hidden().end());
  }
  for (size_t q = 0; q < s.sequence_targets.size(); ++q) {
    const int target = s.sequence_targets[q];
    if (target < 0 || target >= s.num_slots) return absl::InvalidArgumentError("model: bad sequence target");
    m->attention_.push_back(factory->MakeAttention(d, att, seed * 1000003 + 17 * (q + 1)));
  }
  MlpOptions mlp;
  mlp.hidden.assign(config.hidden().begin(), config.hidden().end());
  if (mlp.hidden.empty()) mlp.hidden = {256, 128, 64};
  mlp.activation = activation;
  mlp.out = 1;
  const int in = s.num_slots * d + s.num_dense + static_cast<int>(s.sequence_targets.size()) * d +
                 s.group_levels * d;
  m->tower_ = factory->MakeMlp(in, mlp, seed);
  m->queries_.resize(s.sequence_targets.size());
  m->pooled_.resize(s.sequence_targets.size());
  return m;
}

void RankingModel::Forward(const ModelInputs& host_in, Tensor<float>* logits) {
  const ModelInputs& in = stager_.Stage(device_, shape_, host_in);
  const int d = shape_.embedding_dim;
  std::vector<const Tensor<float>*> parts = {&in.slots};
  if (shape_.num_dense > 0) parts.push_back(&in.dense);
  for (size_t q = 0; q < attention_.size(); ++q) {
    // The query is the target feature's embedding (e.g. the candidate item for hist_item).
    CopyCols(in.slots, shape_.sequence_targets[q] * d, d, &queries_[q]);
    attention_[q]->Forward(queries_[q], in.sequences[q], in.lengths[q], &pooled_[q]);
    parts.push_back(&pooled_[q]);
  }
  if (shape_.group_levels > 0) parts.push_back(&in.group_ids);
  ConcatCols(parts, &tower_in_);
  tower_->Forward(tower_in_, &logits_);
  logits->CopyFrom(logits_);
}

void RankingModel::Backward(const Tensor<float>& dlogits, Tensor<float>* dslots,
                            std::vector<Tensor<float>>* dsequences, Tensor<float>* dgroup_ids) {
  const int d = shape_.embedding_dim;
  tower_->Backward(dlogits, &dtower_in_);
  // Split the tower input's gradient: slots | dense | pooled attention outputs.
  std::vector<int> widths = {shape_.num_slots * d};
  Tensor<float> ddense;
  std::vector<Tensor<float>> dpooled(attention_.size());
  std::vector<Tensor<float>*> outs = {dslots};
  if (shape_.num_dense > 0) {
    widths.push_back(shape_.num_dense);
    outs.push_back(&ddense);
  }
  for (auto& t : dpooled) {
    widths.push_back(d);
    outs.push_back(&t);
  }
  Tensor<float> unused_dgroup_ids;
  if (shape_.group_levels > 0) {
    widths.push_back(shape_.group_levels * d);
    outs.push_back(dgroup_ids != nullptr ? dgroup_ids : &unused_dgroup_ids);
  }
  SplitCols(dtower_in_, widths, outs);
  dsequences->resize(attention_.size());
  Tensor<float> dquery;
  for (size_t q = 0; q < attention_.size(); ++q) {
    attention_[q]->Backward(dpooled[q], &dquery, &(*dsequences)[q]);
    AddToCols(dquery, shape_.sequence_targets[q] * d, dslots);
  }
}

LossStats RankingModel::TrainBackward(absl::Span<const float> labels, absl::Span<const float> weights,
                                      ModelGrads* grads, std::vector<float>* per_sample_bce) {
  LossStats stats;
  stats.loss = stats.bce = BinaryCrossEntropy<float>(logits_, labels, weights, &dlogits_, per_sample_bce);
  ModelGrads* out = device_ == Device::kCpu ? grads : &device_grads_;
  Backward(dlogits_, &out->slots, &out->sequences, shape_.group_levels > 0 ? &out->group_ids : nullptr);
  if (out != grads) CopyModelGrads(*out, grads);
  return stats;
}

std::vector<Param<float>*> RankingModel::Params() {
  std::vector<Param<float>*> params = tower_->Params();
  for (auto& a : attention_) {
    for (Param<float>* p : a->Params()) params.push_back(p);
  }
  return params;
}

std::vector<Tensor<float>*> RankingModel::Buffers() {
  std::vector<Tensor<float>*> buffers = tower_->Buffers();
  for (auto& a : attention_) {
    for (Tensor<float>* b : a->Buffers()) buffers.push_back(b);
  }
  return buffers;
}

void RankingModel::SetTraining(bool training) {
  tower_->SetTraining(training);
  for (auto& a : attention_) a->SetTraining(training);
}

}  // namespace choir::models
