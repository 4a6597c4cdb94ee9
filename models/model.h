// What the trainer drives: a model over dense tensors. The trainer pulls embedding rows from
// the EmbeddingStore, gathers them into ModelInputs, calls Forward, then TrainBackward (loss of
// the last Forward and every gradient), and pushes the input gradients back as sparse updates.
// Layers come from a LayerFactory, so a CUDA backend changes nothing here: a model whose factory
// is on the GPU stages the (host) inputs there, keeps every activation there, and hands back
// logits and input gradients on the device of the caller's tensors (host by default).
//
// T is float for training and double for the finite-difference tests.
#ifndef CHOIR_MODELS_MODEL_H_
#define CHOIR_MODELS_MODEL_H_

#include <cstdint>
#include <vector>

#include "absl/types/span.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models {

// What the inputs look like.
struct ModelShape {
  int num_slots = 0;      // categorical features, each an embedding of embedding_dim
  int embedding_dim = 16;
  int num_dense = 0;      // dense features
  int max_seq_len = 30;   // padded length of every sequence
  // For each behaviour sequence (din, choirrec): the slot of its target feature (the query).
  std::vector<int> sequence_targets;
  // The group channel (choirrec; dnn+groupid reads only group_levels).
  int group_levels = 0;            // group-id embeddings, one per level
  int group_attribute_slots = 0;   // attribute-completion embeddings
  int group_stats = 0;             // dense group statistics
  int group_max_seq_len = 0;       // padded length of every group sequence
  std::vector<int> group_sequence_targets;  // per group sequence: the slot of its query
  std::vector<int> group_channel_slots;     // item/context slots the group channel also sees
  int activity_features = 0;       // inputs of the activity gates
};

// One batch of B samples. Group and activity fields are empty for models that do not read
// them (dnn, din).
template <typename T>
struct BasicModelInputs {
  Tensor<T> slots;                        // [B, num_slots * d], slot s at columns [s*d, (s+1)*d)
  Tensor<T> dense;                        // [B, num_dense]
  std::vector<Tensor<T>> sequences;       // per sequence: [B * max_seq_len, d], padded
  std::vector<std::vector<int>> lengths;  // per sequence: B lengths
  // The group channel (choirrec).
  Tensor<T> group_ids;                          // [B, levels * d], level l at [l*d, (l+1)*d)
  Tensor<T> group_attributes;                   // [B, group_attribute_slots * d]
  Tensor<T> group_stats;                        // [B, group_stats]
  std::vector<Tensor<T>> group_sequences;       // per group sequence: [B * group_max_seq_len, d]
  std::vector<std::vector<int>> group_lengths;  // per group sequence: B lengths
  // The activity gates (choirrec): [B, activity_features], and each sample's training-period
  // purchases (the KD gate's theta_act test).
  Tensor<T> activity;
  std::vector<T> purchases;
};

// Gradients of the embedding-valued inputs (what the trainer pushes); same shapes as the
// inputs. Fields of inputs a model does not read are left empty.
template <typename T>
struct BasicModelGrads {
  Tensor<T> slots;
  std::vector<Tensor<T>> sequences;
  Tensor<T> group_ids;
  Tensor<T> group_attributes;
  std::vector<Tensor<T>> group_sequences;
};

// What one training step's loss was made of (batch means).
struct LossStats {
  double loss = 0;          // the optimised total
  double bce = 0;           // BCE of the final prediction (weighted as the loss is)
  double kd = 0;            // mean(L_kd) before lambda (choirrec)
  int64_t kd_active = 0;    // samples whose KD gate was open (choirrec)
  double mean_a_fuse = 0;   // batch mean of the fusion gate (choirrec)
  double mean_a_kd = 0;     // batch mean of the KD gate weight (choirrec)
};

template <typename T>
class BasicModel {
 public:
  virtual ~BasicModel() = default;
  // logits: [B, 1], the final prediction's logit (p = sigmoid(logit)).
  virtual void Forward(const BasicModelInputs<T>& in, Tensor<T>* logits) = 0;
  // The training loss of the last Forward for `labels` (B values in [0, 1]) with per-sample
  // `weights` (B values, or empty for all 1), and its gradients: parameter gradients
  // ACCUMULATE (zero them between steps), input gradients are overwritten. `per_sample_bce`,
  // when not null, receives each sample's unweighted BCE of the final prediction.
  virtual LossStats TrainBackward(absl::Span<const T> labels, absl::Span<const T> weights,
                                  BasicModelGrads<T>* grads, std::vector<T>* per_sample_bce) = 0;
  // The trainable parameters (stable pointers, stable order).
  virtual std::vector<Param<T>*> Params() = 0;
  // Non-trainable state a checkpoint must keep (Dice's running statistics), stable order.
  virtual std::vector<Tensor<T>*> Buffers() = 0;
  virtual void SetTraining(bool training) = 0;
  // The inputs this model reads (its type and switches applied to the shape it was created
  // with): what the trainer must gather.
  virtual const ModelShape& shape() const = 0;
};

// A batch's inputs on one device. A model on the GPU stages the trainer's host batch once per
// step here (one copy per tensor the model reads, per `shape`); a batch already on that device
// is used in place.
//
// The trainer of a GPU model stages ahead instead, with one stager per batch in flight:
//
//   stager.AwaitUploads();              // the host batch may be refilled (the last copies ran)
//   gather the next batch into `host` (its tensors pinned: PinInputs)
//   stager.StageAsync(device, shape, host);       // copies queued on the upload lane
//   ...
//   model->Forward(stager.Ready(), &logits);      // compute waits for the copies, on the device
//   model->TrainBackward(...);
//   stager.Release();                   // compute reading the staged batch is queued
//
// StageAsync may run on another thread than Ready/Release (calls on one stager are made one at
// a time); its copies wait, on the device, for the compute before the last Release, so they
// never overwrite a batch still being read, and run while later compute works.
template <typename T>
class InputStager {
 public:
  InputStager() = default;
  InputStager(const InputStager&) = delete;
  InputStager& operator=(const InputStager&) = delete;
  ~InputStager() {
    if (uploaded_ == nullptr) return;
    // Copies still in flight (a staged batch never used, after an error) read the caller's host
    // batch and write the device tensors freed below: let them finish first.
    GetDeviceBackend(device_)->SynchronizeEvent(uploaded_);
    for (void* e : {uploaded_, released_, allocated_}) GetDeviceBackend(device_)->DestroyEvent(e);
  }

  const BasicModelInputs<T>& Stage(Device device, const ModelShape& shape,
                                   const BasicModelInputs<T>& in) {
    if (device == Device::kCpu || in.slots.device() == device) return in;
    auto put = [device](const Tensor<T>& from, Tensor<T>* to) {
      to->SetDevice(device);
      to->CopyFrom(from);
    };
    ForEachInput(shape, in, put);
    CopyHostFields(in);
    return staged_;
  }

  // Queues the copies of host batch `in` to `device` (not kCpu) on the upload lane and returns.
  // `in` must stay unchanged until AwaitUploads returns.
  void StageAsync(Device device, const ModelShape& shape, const BasicModelInputs<T>& in) {
    CHECK(device != Device::kCpu) << "StageAsync onto the host";
    CHECK(device_ == Device::kCpu || device_ == device) << "an InputStager serves one device";
    device_ = device;
    DeviceBackend* backend = GetDeviceBackend(device);
    if (uploaded_ == nullptr) {
      uploaded_ = backend->CreateEvent();
      released_ = backend->CreateEvent();
      allocated_ = backend->CreateEvent();
    }
    // Shape the device tensors first. New memory comes from the compute lane's pool (possibly
    // at the old address, or over blocks that compute freed but may still be reading in stream
    // order): the uploads must not write it before its allocation point there. Only when a
    // batch grows.
    bool grew = false;
    ForEachInput(shape, in, [device, &grew](const Tensor<T>& from, Tensor<T>* to) {
      to->SetDevice(device);
      const int64_t before = to->device_capacity();
      to->ResizeUninitialized(from.rows(), from.cols());
      grew |= to->device_capacity() != before;
    });
    if (grew) {
      backend->RecordEvent(allocated_, Lane::kCompute);
      backend->WaitEvent(allocated_, Lane::kUpload);
    }
    backend->WaitEvent(released_, Lane::kUpload);
    ForEachInput(shape, in, [backend](const Tensor<T>& from, Tensor<T>* to) {
      if (from.size() > 0) {
        backend->CopyToDeviceAsync(to->data(), from.data(), static_cast<size_t>(from.size()) * sizeof(T),
                                   Lane::kUpload);
      }
    });
    backend->RecordEvent(uploaded_, Lane::kUpload);
    CopyHostFields(in);
  }

  // The batch of the last StageAsync; compute queued from now on waits for its copies.
  const BasicModelInputs<T>& Ready() {
    CHECK(uploaded_ != nullptr) << "Ready before StageAsync";
    GetDeviceBackend(device_)->WaitEvent(uploaded_, Lane::kCompute);
    return staged_;
  }

  // The compute that reads the staged batch has been queued: the next StageAsync's copies wait
  // for it.
  void Release() {
    if (released_ != nullptr) GetDeviceBackend(device_)->RecordEvent(released_, Lane::kCompute);
  }

  // The host waits until the last StageAsync's copies have read the host batch.
  void AwaitUploads() {
    if (uploaded_ != nullptr) GetDeviceBackend(device_)->SynchronizeEvent(uploaded_);
  }

 private:
  // Calls put(host tensor, staged tensor) for every tensor `shape`'s model reads.
  template <typename Put>
  void ForEachInput(const ModelShape& shape, const BasicModelInputs<T>& in, Put&& put) {
    auto put_all = [&put](const std::vector<Tensor<T>>& from, std::vector<Tensor<T>>* to) {
      to->resize(from.size());
      for (size_t i = 0; i < from.size(); ++i) put(from[i], &(*to)[i]);
    };
    put(in.slots, &staged_.slots);
    if (shape.num_dense > 0) put(in.dense, &staged_.dense);
    if (!shape.sequence_targets.empty()) put_all(in.sequences, &staged_.sequences);
    if (shape.group_levels > 0) put(in.group_ids, &staged_.group_ids);
    if (shape.group_attribute_slots > 0) put(in.group_attributes, &staged_.group_attributes);
    if (shape.group_stats > 0) put(in.group_stats, &staged_.group_stats);
    if (!shape.group_sequence_targets.empty()) put_all(in.group_sequences, &staged_.group_sequences);
    if (shape.activity_features > 0) put(in.activity, &staged_.activity);
  }
  void CopyHostFields(const BasicModelInputs<T>& in) {
    staged_.lengths = in.lengths;
    staged_.group_lengths = in.group_lengths;
    staged_.purchases = in.purchases;
  }

  BasicModelInputs<T> staged_;
  Device device_ = Device::kCpu;
  void* uploaded_ = nullptr;   // upload lane: the last StageAsync's copies
  void* released_ = nullptr;   // compute lane: the last Release
  void* allocated_ = nullptr;  // compute lane: device tensors (re)allocated by StageAsync
};

// Pins the host memory of every tensor of `in` for copies to `device` (see Tensor::PinHost);
// a no-op for tensors already pinned.
template <typename T>
void PinInputs(Device device, BasicModelInputs<T>* in) {
  auto pin_all = [device](std::vector<Tensor<T>>* ts) {
    for (Tensor<T>& t : *ts) t.PinHost(device);
  };
  for (Tensor<T>* t : {&in->slots, &in->dense, &in->group_ids, &in->group_attributes, &in->group_stats,
                       &in->activity}) {
    t->PinHost(device);
  }
  pin_all(&in->sequences);
  pin_all(&in->group_sequences);
}

// Copies every gradient of `from` into `to`, each onto the device `to`'s tensor is on (host for
// a default-constructed BasicModelGrads).
template <typename T>
void CopyModelGrads(const BasicModelGrads<T>& from, BasicModelGrads<T>* to) {
  auto put_all = [](const std::vector<Tensor<T>>& f, std::vector<Tensor<T>>* t) {
    t->resize(f.size());
    for (size_t i = 0; i < f.size(); ++i) (*t)[i].CopyFrom(f[i]);
  };
  to->slots.CopyFrom(from.slots);
  put_all(from.sequences, &to->sequences);
  to->group_ids.CopyFrom(from.group_ids);
  to->group_attributes.CopyFrom(from.group_attributes);
  put_all(from.group_sequences, &to->group_sequences);
}

using ModelInputs = BasicModelInputs<float>;
using ModelGrads = BasicModelGrads<float>;
using Model = BasicModel<float>;

}  // namespace choir::models

#endif  // CHOIR_MODELS_MODEL_H_
