#include "models/choirrec_model.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "absl/strings/str_cat.h"
#include "glog/logging.h"

namespace choir::models {
namespace {

// Prefixes every parameter name of `layer` (stable names for checkpoints and debugging).
template <typename T>
void NameParams(const std::string& prefix, Layer<T>* layer) {
  for (Param<T>* p : layer->Params()) p->name = prefix + p->name;
}
template <typename T>
void NameParams(const std::string& prefix, TargetAttention<T>* layer) {
  for (Param<T>* p : layer->Params()) p->name = prefix + p->name;
}

template <typename T>
void Append(std::vector<Param<T>*> more, std::vector<Param<T>*>* out) {
  out->insert(out->end(), more.begin(), more.end());
}

}  // namespace

template <typename T>
absl::StatusOr<std::unique_ptr<ChoirRecModel<T>>> ChoirRecModel<T>::Create(const ModelConfig& config,
                                                                           const ModelShape& shape,
                                                                           uint64_t seed,
                                                                           LayerFactory<T>* factory) {
  if (config.type() != "choirrec") {
    return absl::InvalidArgumentError(absl::StrCat("model.type: '", config.type(), "' is not choirrec"));
  }
  const ChoirRecConfig& c = config.choirrec();
  ActivationKind activation;
  if (!ParseActivationKind(config.activation(), &activation)) {
    return absl::InvalidArgumentError(
        absl::StrCat("model.activation: '", config.activation(), "' (relu, prelu, dice, sigmoid, tanh)"));
  }
  auto sizes = [](const auto& field, std::vector<int> fallback, const char* name) -> absl::StatusOr<std::vector<int>> {
    std::vector<int> out(field.begin(), field.end());
    if (out.empty()) out = std::move(fallback);
    for (int h : out) {
      if (h < 1) return absl::InvalidArgumentError(absl::StrCat(name, ": layer sizes must be >= 1"));
    }
    return out;
  };
  absl::StatusOr<std::vector<int>> hidden = sizes(config.hidden(), {256, 128, 64}, "model.hidden");
  if (!hidden.ok()) return hidden.status();
  absl::StatusOr<std::vector<int>> group_hidden = sizes(c.group_hidden(), {128, 64}, "model.choirrec.group_hidden");
  if (!group_hidden.ok()) return group_hidden.status();
  absl::StatusOr<std::vector<int>> gate_hidden = sizes(c.gate_hidden(), {16}, "model.choirrec.gate_hidden");
  if (!gate_hidden.ok()) return gate_hidden.status();
  absl::StatusOr<std::vector<int>> attention_hidden = sizes(config.attention_hidden(), {36}, "model.attention_hidden");
  if (!attention_hidden.ok()) return attention_hidden.status();
  if (c.fusion_dim() < 1) return absl::InvalidArgumentError("model.choirrec.fusion_dim must be >= 1");
  if (!(c.kd_lambda() >= 0)) return absl::InvalidArgumentError("model.choirrec.kd_lambda must be >= 0");
  if (!(c.kd_margin() >= 0)) return absl::InvalidArgumentError("model.choirrec.kd_margin must be >= 0");
  if (!(c.kd_confidence() >= 0 && c.kd_confidence() < 0.5)) {
    return absl::InvalidArgumentError("model.choirrec.kd_confidence must be in [0, 0.5)");
  }
  if (!(c.aux_loss_weight() >= 0)) return absl::InvalidArgumentError("model.choirrec.aux_loss_weight must be >= 0");
  KdDirection kd_direction;
  if (c.kd_direction() == "individual_to_group") {
    kd_direction = KdDirection::kIndividualToGroup;
  } else if (c.kd_direction() == "group_to_individual") {
    kd_direction = KdDirection::kGroupToIndividual;
  } else {
    return absl::InvalidArgumentError(absl::StrCat("model.choirrec.kd_direction: '", c.kd_direction(),
                                                   "' (individual_to_group or group_to_individual)"));
  }
  MarginForm kd_margin_form;
  if (c.kd_margin_form() == "squared_hinge") {
    kd_margin_form = MarginForm::kSquaredHinge;
  } else if (c.kd_margin_form() == "hinge") {
    kd_margin_form = MarginForm::kHinge;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("model.choirrec.kd_margin_form: '", c.kd_margin_form(), "' (squared_hinge or hinge)"));
  }
  if (shape.num_slots < 1 || shape.embedding_dim < 1) {
    return absl::InvalidArgumentError("model: needs at least one categorical feature and embedding_dim >= 1");
  }
  auto precondition = [](absl::string_view what) {
    return absl::FailedPreconditionError(absl::StrCat("model.type choirrec: ", what));
  };
  if (c.use_group_ids() && shape.group_levels < 1) {
    return precondition("use_group_ids needs the groups table (model.groups.table)");
  }
  if (c.use_attribute_completion() && shape.group_attribute_slots + shape.group_stats < 1) {
    return precondition("use_attribute_completion needs the group priors (model.groups.priors)");
  }
  if (c.use_group_sequence() && shape.group_sequence_targets.empty()) {
    return precondition("use_group_sequence needs group sequences (priors with seq_items and the item field)");
  }
  if (c.use_gates() && shape.activity_features < 1) return precondition("use_gates needs activity features");
  if (shape.group_channel_slots.empty()) {
    return precondition("the group channel needs item/context slots (model.choirrec.group_channel_fields)");
  }
  for (int s : shape.group_channel_slots) {
    if (s < 0 || s >= shape.num_slots) return absl::InvalidArgumentError("model: bad group channel slot");
  }
  for (int s : shape.sequence_targets) {
    if (s < 0 || s >= shape.num_slots) return absl::InvalidArgumentError("model: bad sequence target");
  }
  for (int s : shape.group_sequence_targets) {
    if (s < 0 || s >= shape.num_slots) return absl::InvalidArgumentError("model: bad group sequence target");
  }

  ModelShape s = shape;
  if (!c.use_group_ids()) s.group_levels = 0;
  if (!c.use_attribute_completion()) s.group_attribute_slots = s.group_stats = 0;
  if (!c.use_group_sequence()) {
    s.group_sequence_targets.clear();
    s.group_max_seq_len = 0;
  }
  if (!c.use_gates()) s.activity_features = 0;
  std::unique_ptr<ChoirRecModel<T>> m(new ChoirRecModel<T>(s, c, kd_direction, kd_margin_form, factory->device()));
  const int d = s.embedding_dim;
  auto layer_seed = [seed](int part, int index) { return seed * 1000003 + 7919 * part + 31 * index + 1; };

  AttentionOptions att;
  att.hidden = *attention_hidden;
  for (size_t q = 0; q < s.sequence_targets.size(); ++q) {
    m->attention_.push_back(factory->MakeAttention(d, att, layer_seed(1, q)));
    NameParams(absl::StrCat("ind.att", q, "."), m->attention_.back().get());
  }
  for (size_t q = 0; q < s.group_sequence_targets.size(); ++q) {
    m->group_attention_.push_back(factory->MakeAttention(d, att, layer_seed(2, q)));
    NameParams(absl::StrCat("grp.att", q, "."), m->group_attention_.back().get());
  }
  // Linear + activation, as a one-layer Mlp.
  auto dense_layer = [&](int in, int out, ActivationKind act, uint64_t layer_seed_value) {
    MlpOptions o;
    o.out = out;
    o.output_activation = act;
    return factory->MakeMlp(in, o, layer_seed_value);
  };
  auto tower = [&](int in, const std::vector<int>& widths, uint64_t layer_seed_value) {
    MlpOptions o;
    o.hidden.assign(widths.begin(), widths.end());
    o.out = 1;
    o.activation = activation;
    return factory->MakeMlp(in, o, layer_seed_value);
  };

  const int h0 = hidden->front();
  const int ind_in = s.num_slots * d + s.num_dense + static_cast<int>(s.sequence_targets.size()) * d;
  m->ind_bottom_ = dense_layer(ind_in, h0, activation, layer_seed(3, 0));
  NameParams("ind.bottom.", m->ind_bottom_.get());
  m->ind_top_ = tower(h0, std::vector<int>(hidden->begin() + 1, hidden->end()), layer_seed(3, 1));
  NameParams("ind.top.", m->ind_top_.get());

  const int g0 = group_hidden->front();
  if (c.use_injection()) {
    m->inject_ = dense_layer(h0 + g0, h0, ActivationKind::kIdentity, layer_seed(4, 0));
    NameParams("ind.inject.", m->inject_.get());
  }
  for (int l = 1; l < s.group_levels; ++l) {
    m->fuse_.push_back(dense_layer(2 * d, d, ActivationKind::kTanh, layer_seed(5, l)));
    NameParams(absl::StrCat("grp.fuse", l, "."), m->fuse_.back().get());
  }
  int grp_in = static_cast<int>(s.group_channel_slots.size()) * d + s.group_attribute_slots * d + s.group_stats +
               static_cast<int>(s.group_sequence_targets.size()) * d;
  if (s.group_levels > 0) {
    m->fusion_mlp_ = dense_layer(s.group_levels * d, c.fusion_dim(), activation, layer_seed(5, 0));
    NameParams("grp.fusion.", m->fusion_mlp_.get());
    grp_in += c.fusion_dim();
  }
  m->grp_bottom_ = dense_layer(grp_in, g0, activation, layer_seed(6, 0));
  NameParams("grp.bottom.", m->grp_bottom_.get());
  m->grp_top_ = tower(g0, std::vector<int>(group_hidden->begin() + 1, group_hidden->end()), layer_seed(6, 1));
  NameParams("grp.top.", m->grp_top_.get());
  if (c.use_gates()) {
    MlpOptions o;
    o.hidden = *gate_hidden;
    o.out = 2;
    o.activation = ActivationKind::kRelu;
    o.output_activation = ActivationKind::kSigmoid;
    m->gate_mlp_ = factory->MakeMlp(s.activity_features, o, layer_seed(7, 0));
    NameParams("gate.", m->gate_mlp_.get());
  }
  m->queries_.resize(s.sequence_targets.size());
  m->pooled_.resize(s.sequence_targets.size());
  m->group_queries_.resize(s.group_sequence_targets.size());
  m->group_pooled_.resize(s.group_sequence_targets.size());
  return m;
}

template <typename T>
void ChoirRecModel<T>::ForwardGroup(const BasicModelInputs<T>& in) {
  const int d = shape_.embedding_dim;
  std::vector<const Tensor<T>*> parts;
  if (shape_.group_levels > 0) {
    CHECK_EQ(in.group_ids.cols(), shape_.group_levels * d);
    const int levels = shape_.group_levels;
    levels_.resize(levels);
    fused_.resize(levels);
    fuse_in_.resize(levels);
    for (int l = 0; l < levels; ++l) CopyCols(in.group_ids, l * d, d, &levels_[l]);
    fused_[0] = levels_[0];
    for (int l = 1; l < levels; ++l) {
      ConcatCols<T>({&fused_[l - 1], &levels_[l]}, &fuse_in_[l]);
      fuse_[l - 1]->Forward(fuse_in_[l], &fused_[l]);
    }
    std::vector<const Tensor<T>*> hs;
    for (const Tensor<T>& h : fused_) hs.push_back(&h);
    ConcatCols(hs, &fusion_in_);
    fusion_mlp_->Forward(fusion_in_, &g_id_);
    parts.push_back(&g_id_);
  }
  if (shape_.group_attribute_slots > 0) parts.push_back(&in.group_attributes);
  if (shape_.group_stats > 0) parts.push_back(&in.group_stats);
  for (size_t q = 0; q < group_attention_.size(); ++q) {
    CopyCols(in.slots, shape_.group_sequence_targets[q] * d, d, &group_queries_[q]);
    group_attention_[q]->Forward(group_queries_[q], in.group_sequences[q], in.group_lengths[q], &group_pooled_[q]);
    parts.push_back(&group_pooled_[q]);
  }
  const int items = static_cast<int>(shape_.group_channel_slots.size());
  item_blocks_.resize(items);
  std::vector<const Tensor<T>*> blocks;
  for (int i = 0; i < items; ++i) {
    CopyCols(in.slots, shape_.group_channel_slots[i] * d, d, &item_blocks_[i]);
    blocks.push_back(&item_blocks_[i]);
  }
  ConcatCols(blocks, &item_feats_);
  parts.push_back(&item_feats_);
  ConcatCols(parts, &grp_in_);
  grp_bottom_->Forward(grp_in_, &h_grp_);
  grp_top_->Forward(h_grp_, &z_grp_);
}

template <typename T>
void ChoirRecModel<T>::Forward(const BasicModelInputs<T>& host_in, Tensor<T>* logits) {
  const BasicModelInputs<T>& in = stager_.Stage(device_, shape_, host_in);
  const int d = shape_.embedding_dim;
  batch_ = in.slots.rows();
  ForwardGroup(in);

  std::vector<const Tensor<T>*> parts = {&in.slots};
  if (shape_.num_dense > 0) parts.push_back(&in.dense);
  for (size_t q = 0; q < attention_.size(); ++q) {
    CopyCols(in.slots, shape_.sequence_targets[q] * d, d, &queries_[q]);
    attention_[q]->Forward(queries_[q], in.sequences[q], in.lengths[q], &pooled_[q]);
    parts.push_back(&pooled_[q]);
  }
  ConcatCols(parts, &ind_in_);
  ind_bottom_->Forward(ind_in_, &h_ind_);
  if (inject_ != nullptr) {
    // The group side is read as a constant (stop-gradient): Backward drops its gradient.
    ConcatCols<T>({&h_ind_, &h_grp_}, &inj_in_);
    inject_->Forward(inj_in_, &inj_out_);
    h_ind2_ = h_ind_;
    AddToCols(inj_out_, 0, &h_ind2_);
    ind_top_->Forward(h_ind2_, &z_ind_);
  } else {
    ind_top_->Forward(h_ind_, &z_ind_);
  }
  if (gate_mlp_ != nullptr) {
    CHECK_EQ(in.activity.cols(), shape_.activity_features);
    gate_mlp_->Forward(in.activity, &gates_);
  }
  FuseLogits(Heads(), &z_);
  purchases_ = in.purchases;
  if (purchases_.empty()) purchases_.assign(batch_, T(0));
  CHECK_EQ(static_cast<int>(purchases_.size()), batch_);
  logits->CopyFrom(z_);
}

template <typename T>
Tensor<T> ChoirRecModel<T>::Gate(int which) const {
  Tensor<T> out(batch_, 1, T(0.5));
  if (gate_mlp_ == nullptr) return out;
  const Tensor<T> gates = gates_.To(Device::kCpu);
  for (int b = 0; b < batch_; ++b) out.at(b, 0) = gates.at(b, which);
  return out;
}

template <typename T>
std::vector<int> ChoirRecModel<T>::KdGates() const {
  const Tensor<T> z_teacher = (kd_direction_ == KdDirection::kIndividualToGroup ? z_ind_ : z_grp_).To(Device::kCpu);
  std::vector<int> gates(batch_);
  for (int b = 0; b < batch_; ++b) {
    gates[b] = KdGateOpen<T>(purchases_[b], Sigmoid<T>(z_teacher.at(b, 0)), config_.kd_min_purchases(),
                             config_.kd_confidence(), kd_direction_);
  }
  return gates;
}

template <typename T>
FusionLossOptions ChoirRecModel<T>::LossOptions() const {
  FusionLossOptions o;
  o.aux_weight = config_.aux_loss_weight();
  o.kd_lambda = config_.use_kd() ? config_.kd_lambda() : 0;
  o.kd_margin = config_.kd_margin();
  o.kd_margin_form = kd_margin_form_;
  o.kd_direction = kd_direction_;
  o.kd_confidence = config_.kd_confidence();
  o.kd_min_purchases = config_.kd_min_purchases();
  return o;
}

template <typename T>
LossStats ChoirRecModel<T>::ComputeHeadGrads(absl::Span<const T> labels, absl::Span<const T> weights,
                                             HeadGrads* heads, std::vector<T>* per_sample_bce) const {
  const FusionLoss l = FusionHeadLoss<T>(Heads(), z_, labels, weights, purchases_, LossOptions(), heads, per_sample_bce);
  LossStats stats;
  stats.loss = l.total;
  stats.bce = l.bce;
  stats.kd = l.kd;
  stats.kd_active = l.kd_active;
  stats.mean_a_fuse = l.mean_a_fuse;
  stats.mean_a_kd = l.mean_a_kd;
  return stats;
}

template <typename T>
void ChoirRecModel<T>::BackwardGroup(const Tensor<T>& dz_grp, BasicModelGrads<T>* grads) {
  const int d = shape_.embedding_dim;
  Tensor<T> dh_grp, dgrp_in;
  grp_top_->Backward(dz_grp, &dh_grp);
  grp_bottom_->Backward(dh_grp, &dgrp_in);
  // grp_in = [g_id | attributes | stats | group pooled... | item slots]
  std::vector<int> widths;
  std::vector<Tensor<T>*> outs;
  Tensor<T> dg_id, dstats, ditems;
  std::vector<Tensor<T>> dgroup_pooled(group_attention_.size());
  if (shape_.group_levels > 0) {
    widths.push_back(g_id_.cols());
    outs.push_back(&dg_id);
  }
  if (shape_.group_attribute_slots > 0) {
    widths.push_back(shape_.group_attribute_slots * d);
    outs.push_back(&grads->group_attributes);
  }
  if (shape_.group_stats > 0) {
    widths.push_back(shape_.group_stats);
    outs.push_back(&dstats);
  }
  for (Tensor<T>& t : dgroup_pooled) {
    widths.push_back(d);
    outs.push_back(&t);
  }
  widths.push_back(item_feats_.cols());
  outs.push_back(&ditems);
  SplitCols(dgrp_in, widths, outs);

  for (size_t i = 0; i < shape_.group_channel_slots.size(); ++i) {
    Tensor<T> block;
    CopyCols(ditems, static_cast<int>(i) * d, d, &block);
    AddToCols(block, shape_.group_channel_slots[i] * d, &grads->slots);
  }
  grads->group_sequences.resize(group_attention_.size());
  Tensor<T> dquery;
  for (size_t q = 0; q < group_attention_.size(); ++q) {
    group_attention_[q]->Backward(dgroup_pooled[q], &dquery, &grads->group_sequences[q]);
    AddToCols(dquery, shape_.group_sequence_targets[q] * d, &grads->slots);
  }
  if (shape_.group_levels > 0) {
    const int levels = shape_.group_levels;
    Tensor<T> dfusion_in;
    fusion_mlp_->Backward(dg_id, &dfusion_in);
    // dfused[l]: the gradient reaching h_l, from the fusion MLP and from level l + 1.
    std::vector<Tensor<T>> dfused(levels);
    std::vector<Tensor<T>*> fused_outs;
    for (Tensor<T>& t : dfused) fused_outs.push_back(&t);
    SplitCols(dfusion_in, std::vector<int>(levels, d), fused_outs);
    std::vector<Tensor<T>> dlevels(levels);
    Tensor<T> dcat, dprev;
    for (int l = levels - 1; l >= 1; --l) {
      fuse_[l - 1]->Backward(dfused[l], &dcat);
      SplitCols<T>(dcat, {d, d}, {&dprev, &dlevels[l]});
      AddToCols(dprev, 0, &dfused[l - 1]);
    }
    dlevels[0] = dfused[0];
    std::vector<const Tensor<T>*> level_grads;
    for (const Tensor<T>& t : dlevels) level_grads.push_back(&t);
    ConcatCols(level_grads, &grads->group_ids);
  }
}

template <typename T>
void ChoirRecModel<T>::BackwardFromHeads(const HeadGrads& heads, BasicModelGrads<T>* grads) {
  const int d = shape_.embedding_dim;
  Tensor<T> dz_ind, dz_grp, dgates;
  FusionBackward(Heads(), heads, &dz_ind, &dz_grp, &dgates);
  if (gate_mlp_ != nullptr) gate_mlp_->Backward(dgates, nullptr);

  // Individual channel; overwrites grads->slots and grads->sequences.
  Tensor<T> dh, dind_in;
  ind_top_->Backward(dz_ind, &dh);
  if (inject_ != nullptr) {
    Tensor<T> dinj_in, dh_from_inject;
    inject_->Backward(dh, &dinj_in);
    // Stop-gradient: the h_grp half of the injection's input gradient is dropped.
    SplitCols<T>(dinj_in, {h_ind_.cols(), h_grp_.cols()}, {&dh_from_inject, nullptr});
    AddToCols(dh_from_inject, 0, &dh);
  }
  ind_bottom_->Backward(dh, &dind_in);
  std::vector<int> widths = {shape_.num_slots * d};
  std::vector<Tensor<T>*> outs = {&grads->slots};
  if (shape_.num_dense > 0) {
    widths.push_back(shape_.num_dense);
    outs.push_back(nullptr);
  }
  std::vector<Tensor<T>> dpooled(attention_.size());
  for (Tensor<T>& t : dpooled) {
    widths.push_back(d);
    outs.push_back(&t);
  }
  SplitCols(dind_in, widths, outs);
  grads->sequences.resize(attention_.size());
  Tensor<T> dquery;
  for (size_t q = 0; q < attention_.size(); ++q) {
    attention_[q]->Backward(dpooled[q], &dquery, &grads->sequences[q]);
    AddToCols(dquery, shape_.sequence_targets[q] * d, &grads->slots);
  }
  BackwardGroup(dz_grp, grads);
}

template <typename T>
LossStats ChoirRecModel<T>::TrainBackward(absl::Span<const T> labels, absl::Span<const T> weights,
                                          BasicModelGrads<T>* grads, std::vector<T>* per_sample_bce) {
  HeadGrads heads;
  const LossStats stats = ComputeHeadGrads(labels, weights, &heads, per_sample_bce);
  BasicModelGrads<T>* out = device_ == Device::kCpu ? grads : &device_grads_;
  BackwardFromHeads(heads, out);
  if (out != grads) CopyModelGrads(*out, grads);
  return stats;
}

template <typename T>
std::vector<Param<T>*> ChoirRecModel<T>::IndividualParams() {
  std::vector<Param<T>*> params;
  for (auto& a : attention_) Append(a->Params(), &params);
  Append(ind_bottom_->Params(), &params);
  if (inject_ != nullptr) Append(inject_->Params(), &params);
  Append(ind_top_->Params(), &params);
  return params;
}

template <typename T>
std::vector<Param<T>*> ChoirRecModel<T>::GroupParams() {
  std::vector<Param<T>*> params;
  for (auto& f : fuse_) Append(f->Params(), &params);
  if (fusion_mlp_ != nullptr) Append(fusion_mlp_->Params(), &params);
  for (auto& a : group_attention_) Append(a->Params(), &params);
  Append(grp_bottom_->Params(), &params);
  Append(grp_top_->Params(), &params);
  return params;
}

template <typename T>
std::vector<Param<T>*> ChoirRecModel<T>::GateParams() {
  return gate_mlp_ != nullptr ? gate_mlp_->Params() : std::vector<Param<T>*>{};
}

template <typename T>
std::vector<Param<T>*> ChoirRecModel<T>::Params() {
  std::vector<Param<T>*> params = IndividualParams();
  Append(GroupParams(), &params);
  Append(GateParams(), &params);
  return params;
}

template <typename T>
std::vector<Tensor<T>*> ChoirRecModel<T>::Buffers() {
  std::vector<Tensor<T>*> buffers;
  auto add = [&buffers](std::vector<Tensor<T>*> more) { buffers.insert(buffers.end(), more.begin(), more.end()); };
  for (auto& a : attention_) add(a->Buffers());
  for (Layer<T>* l : {ind_bottom_.get(), inject_.get(), ind_top_.get()}) {
    if (l != nullptr) add(l->Buffers());
  }
  for (auto& f : fuse_) add(f->Buffers());
  if (fusion_mlp_ != nullptr) add(fusion_mlp_->Buffers());
  for (auto& a : group_attention_) add(a->Buffers());
  for (Layer<T>* l : {grp_bottom_.get(), grp_top_.get(), gate_mlp_.get()}) {
    if (l != nullptr) add(l->Buffers());
  }
  return buffers;
}

template <typename T>
void ChoirRecModel<T>::SetTraining(bool training) {
  for (auto& a : attention_) a->SetTraining(training);
  for (auto& a : group_attention_) a->SetTraining(training);
  for (Layer<T>* l : {ind_bottom_.get(), inject_.get(), ind_top_.get(), fusion_mlp_.get(), grp_bottom_.get(),
                      grp_top_.get(), gate_mlp_.get()}) {
    if (l != nullptr) l->SetTraining(training);
  }
  for (auto& f : fuse_) f->SetTraining(training);
}

template class ChoirRecModel<float>;
template class ChoirRecModel<double>;

}  // namespace choir::models
