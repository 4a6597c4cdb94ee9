// GPU benchmark: samples/s of the dnn and ChoirRec dense towers on the CUDA backend (forward,
// loss, backward and the dense Adagrad step) at several batch sizes, the matrix-product FLOP/s
// they achieve against the card's measured cuBLAS peak, and the same step on the CPU layers for
// reference.
//
//   choir_bench_gpu [--models dnn,choirrec] [--batches 1024,4096,16384] [--steps 50] [--precision fp32|tf32|bf16]
//
// Prints JSON lines (bench, metric, value, unit, ...). Two figures per case:
//  - tower: inputs already on the GPU, gradients left there (what the towers cost);
//  - step:  host inputs copied in and input gradients copied back each step (what a worker
//           fed from the embedding store pays without overlap).
// The shape is fixed and printed: 10 slots x 16, 6 dense features, one behaviour sequence of
// 30 (lengths uniform in [0, 30]); ChoirRec adds 3 group levels, 3 attribute slots, 6 group
// statistics, one group sequence of 10, 3 item/context slots in the group channel and 4
// activity features. Layer sizes are the quickstart's.
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/proto/job.pb.h"
#include "core/status.h"
#include "core/sysinfo.h"
#include "gflags/gflags.h"
#include "glog/logging.h"
#include "models/choirrec_model.h"
#include "models/cuda/cuda.h"
#include "models/optimizer.h"
#include "models/ranking_model.h"
#include "nlohmann/json.hpp"

DEFINE_string(models, "dnn,choirrec", "models to run: dnn, din, choirrec");
DEFINE_string(batches, "1024,4096,16384", "batch sizes");
DEFINE_int32(steps, 50, "timed steps per repetition (3 repetitions, the median is reported)");
DEFINE_string(precision, "fp32", "matrix products: fp32, tf32 or bf16 (tensor cores; fp32 tensors)");
DEFINE_int32(cpu_steps, 5, "steps of the CPU reference at the smallest batch (0: skip)");

namespace choir {
namespace {

using models::BasicModelInputs;
using models::Device;
using models::Tensor;

models::ModelShape BenchShape() {
  models::ModelShape s;
  s.num_slots = 10;
  s.embedding_dim = 16;
  s.num_dense = 6;
  s.max_seq_len = 30;
  s.sequence_targets = {2};
  s.group_levels = 3;
  s.group_attribute_slots = 3;
  s.group_stats = 6;
  s.group_max_seq_len = 10;
  s.group_sequence_targets = {1};
  s.group_channel_slots = {1, 2, 3};
  s.activity_features = 4;
  return s;
}

ModelConfig BenchConfig(const std::string& type) {
  ModelConfig c;
  c.set_type(type);
  c.set_embedding_dim(16);
  for (int h : {256, 128, 64}) c.add_hidden(h);
  c.set_activation("relu");
  c.add_attention_hidden(36);
  c.mutable_choirrec()->set_aux_loss_weight(1.0);
  return c;
}

Tensor<float> Random(int rows, int cols, std::mt19937_64* rng) {
  Tensor<float> t(rows, cols);
  std::uniform_real_distribution<float> u(-1, 1);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = u(*rng);
  return t;
}

BasicModelInputs<float> RandomInputs(const models::ModelShape& s, int batch, std::mt19937_64* rng) {
  BasicModelInputs<float> in;
  const int d = s.embedding_dim;
  std::uniform_int_distribution<int> len(0, s.max_seq_len), glen(0, s.group_max_seq_len);
  in.slots = Random(batch, s.num_slots * d, rng);
  in.dense = Random(batch, s.num_dense, rng);
  for (size_t q = 0; q < s.sequence_targets.size(); ++q) {
    in.sequences.push_back(Random(batch * s.max_seq_len, d, rng));
    in.lengths.emplace_back(batch);
    for (int& l : in.lengths.back()) l = len(*rng);
  }
  if (s.group_levels > 0) in.group_ids = Random(batch, s.group_levels * d, rng);
  if (s.group_attribute_slots > 0) in.group_attributes = Random(batch, s.group_attribute_slots * d, rng);
  if (s.group_stats > 0) in.group_stats = Random(batch, s.group_stats, rng);
  for (size_t q = 0; q < s.group_sequence_targets.size(); ++q) {
    in.group_sequences.push_back(Random(batch * s.group_max_seq_len, d, rng));
    in.group_lengths.emplace_back(batch);
    for (int& l : in.group_lengths.back()) l = glen(*rng);
  }
  if (s.activity_features > 0) in.activity = Random(batch, s.activity_features, rng);
  std::uniform_int_distribution<int> purchases(0, 10);
  for (int b = 0; b < batch; ++b) in.purchases.push_back(static_cast<float>(purchases(*rng)));
  return in;
}

// The same inputs with every tensor on `device`.
BasicModelInputs<float> OnDevice(const BasicModelInputs<float>& in, Device device) {
  BasicModelInputs<float> out = in;
  auto move = [device](Tensor<float>* t) { *t = t->To(device); };
  move(&out.slots);
  move(&out.dense);
  for (auto& t : out.sequences) move(&t);
  move(&out.group_ids);
  move(&out.group_attributes);
  move(&out.group_stats);
  for (auto& t : out.group_sequences) move(&t);
  move(&out.activity);
  return out;
}

absl::StatusOr<std::unique_ptr<models::Model>> MakeModel(const std::string& type,
                                                         models::LayerFactory<float>* factory) {
  const ModelConfig config = BenchConfig(type);
  if (type == "choirrec") {
    ASSIGN_OR_RETURN(auto m, models::ChoirRecModel<float>::Create(config, BenchShape(), 1, factory));
    return std::unique_ptr<models::Model>(std::move(m));
  }
  ASSIGN_OR_RETURN(auto m, models::RankingModel::Create(config, BenchShape(), 1, factory));
  return std::unique_ptr<models::Model>(std::move(m));
}

struct Timing {
  double samples_per_s = 0;
  double matmul_tflops = 0;  // achieved by the products (GEMM FLOPs issued / time)
};

// Median over 3 repetitions of `steps` training steps, rotating over 4 prepared batches.
Timing TimeSteps(models::Model* model, const std::vector<BasicModelInputs<float>>& batches,
                 int batch, int steps, bool grads_on_device) {
  std::mt19937_64 rng(7);
  std::vector<float> labels(batch), weights;
  for (float& l : labels) l = rng() % 4 == 0 ? 1.0f : 0.0f;
  models::AdagradOptions options;
  models::Adagrad<float> optimizer(options);
  const std::vector<models::Param<float>*> params = model->Params();
  models::ModelGrads grads;
  if (grads_on_device) {
    grads.slots = Tensor<float>(Device::kCuda);
    grads.group_ids = Tensor<float>(Device::kCuda);
    grads.group_attributes = Tensor<float>(Device::kCuda);
    grads.sequences.assign(batches[0].sequences.size(), Tensor<float>(Device::kCuda));
    grads.group_sequences.assign(batches[0].group_sequences.size(), Tensor<float>(Device::kCuda));
  }
  Tensor<float> logits(grads_on_device ? Device::kCuda : Device::kCpu);
  const bool gpu = params.front()->value.device() == Device::kCuda;
  auto step = [&](int i) {
    model->Forward(batches[i % batches.size()], &logits);
    models::ZeroGrads(params);
    model->TrainBackward(labels, weights, &grads, nullptr);
    optimizer.Step(params);
  };
  for (int i = 0; i < 3; ++i) step(i);  // warm-up: allocations, cuBLAS heuristics
  if (gpu) models::cuda::CudaSynchronize();
  std::vector<Timing> reps;
  for (int rep = 0; rep < 3; ++rep) {
    const int64_t flops0 = gpu ? models::cuda::MatmulFlopsIssued() : 0;
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < steps; ++i) step(i);
    if (gpu) models::cuda::CudaSynchronize();
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    Timing t;
    t.samples_per_s = static_cast<double>(steps) * batch / s;
    if (gpu) t.matmul_tflops = (models::cuda::MatmulFlopsIssued() - flops0) / s / 1e12;
    reps.push_back(t);
  }
  std::sort(reps.begin(), reps.end(),
            [](const Timing& a, const Timing& b) { return a.samples_per_s < b.samples_per_s; });
  return reps[1];
}

// Median TFLOP/s of a square cuBLAS product (n = 8192) of fp32 matrices on random data, with
// the products' arithmetic of `precision` (as the towers issue them): the card's matrix-product
// ceiling for this precision.
double MeasureGemmPeak(models::cuda::MatmulPrecision precision) {
  const int n = 8192;
  std::mt19937_64 rng(3);
  Tensor<float> a = Random(n, n, &rng).To(Device::kCuda), b = Random(n, n, &rng).To(Device::kCuda);
  Tensor<float> c(Device::kCuda);
  c.ResizeUninitialized(n, n);
  cublasHandle_t handle;
  CHECK_EQ(cublasCreate(&handle), CUBLAS_STATUS_SUCCESS);
  const bool tf32 = precision == models::cuda::MatmulPrecision::kTf32;
  const bool bf16 = precision == models::cuda::MatmulPrecision::kBf16;
  CHECK_EQ(cublasSetMathMode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH),
           CUBLAS_STATUS_SUCCESS);
  cudaEvent_t start, stop;
  CHECK_EQ(cudaEventCreate(&start), cudaSuccess);
  CHECK_EQ(cudaEventCreate(&stop), cudaSuccess);
  models::cuda::CudaSynchronize();
  const float one = 1, zero = 0;
  std::vector<double> tflops;
  for (int rep = 0; rep < 8; ++rep) {
    CHECK_EQ(cudaEventRecord(start), cudaSuccess);
    if (bf16) {
      CHECK_EQ(cublasGemmEx(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.data(), CUDA_R_32F, n, b.data(),
                            CUDA_R_32F, n, &zero, c.data(), CUDA_R_32F, n, CUBLAS_COMPUTE_32F_FAST_16BF,
                            CUBLAS_GEMM_DEFAULT),
               CUBLAS_STATUS_SUCCESS);
    } else {
      CHECK_EQ(cublasSgemm(handle, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, a.data(), n, b.data(), n,
                           &zero, c.data(), n),
               CUBLAS_STATUS_SUCCESS);
    }
    CHECK_EQ(cudaEventRecord(stop), cudaSuccess);
    CHECK_EQ(cudaEventSynchronize(stop), cudaSuccess);
    float ms = 0;
    CHECK_EQ(cudaEventElapsedTime(&ms, start, stop), cudaSuccess);
    if (rep >= 2) tflops.push_back(2.0 * n * n * n / (ms * 1e-3) / 1e12);  // 2 warm-ups
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  cublasDestroy(handle);
  std::sort(tflops.begin(), tflops.end());
  return tflops[tflops.size() / 2];
}

int Run() {
  std::vector<int> batch_sizes;
  for (absl::string_view b : absl::StrSplit(FLAGS_batches, ',')) {
    int v = 0;
    if (!absl::SimpleAtoi(b, &v) || v < 1) {
      std::fprintf(stderr, "--batches: '%s' is not a positive integer\n", std::string(b).c_str());
      return 2;
    }
    batch_sizes.push_back(v);
  }
  const absl::Status init = models::cuda::InitCuda(0);
  if (!init.ok()) {
    std::fprintf(stderr, "choir_bench_gpu: %s\n", init.ToString().c_str());
    return 1;
  }
  models::cuda::MatmulPrecision precision;
  if (!models::cuda::ParseMatmulPrecision(FLAGS_precision, &precision)) {
    std::fprintf(stderr, "--precision: '%s' (fp32, tf32 or bf16)\n", FLAGS_precision.c_str());
    return 2;
  }
  models::cuda::SetMatmulPrecision(precision);
  const double peak = MeasureGemmPeak(precision);
  const nlohmann::json base = {{"bench", "gpu"},
                               {"device", models::cuda::CudaDeviceDescription()},
                               {"precision", FLAGS_precision},
                               {"sgemm_peak_tflops", peak}};
  auto emit = [&](nlohmann::json j, const char* metric, double value, const char* unit) {
    j.update(base);
    j["metric"] = metric;
    j["value"] = value;
    j["unit"] = unit;
    std::printf("%s\n", j.dump().c_str());
    std::fflush(stdout);
  };
  emit({}, "sgemm_peak", peak, "TFLOP/s");

  models::cuda::CudaLayerFactory<float> gpu_factory;
  models::CpuLayerFactory<float> cpu_factory;
  for (absl::string_view type_view : absl::StrSplit(FLAGS_models, ',')) {
    const std::string type(type_view);
    absl::StatusOr<std::unique_ptr<models::Model>> gpu_model = MakeModel(type, &gpu_factory);
    if (!gpu_model.ok()) {
      std::fprintf(stderr, "%s: %s\n", type.c_str(), gpu_model.status().ToString().c_str());
      return 1;
    }
    const models::ModelShape shape = (*gpu_model)->shape();
    for (int batch : batch_sizes) {
      std::mt19937_64 rng(batch);
      std::vector<BasicModelInputs<float>> host, device;
      for (int i = 0; i < 4; ++i) {
        host.push_back(RandomInputs(shape, batch, &rng));
        device.push_back(OnDevice(host.back(), Device::kCuda));
      }
      size_t free0 = 0, total = 0;
      CHECK_EQ(cudaMemGetInfo(&free0, &total), cudaSuccess);
      const Timing tower = TimeSteps(gpu_model->get(), device, batch, FLAGS_steps, true);
      const Timing step = TimeSteps(gpu_model->get(), host, batch, FLAGS_steps, false);
      size_t free1 = 0;
      CHECK_EQ(cudaMemGetInfo(&free1, &total), cudaSuccess);
      const nlohmann::json ctx = {{"model", type}, {"batch", batch}, {"steps", FLAGS_steps},
                                  {"gpu_mem_used_mb", (total - free1) / 1048576.0},
                                  {"peak_rss_mb", PeakRssMb()}};
      emit(ctx, "tower_samples_per_s", tower.samples_per_s, "samples/s");
      emit(ctx, "tower_matmul_tflops", tower.matmul_tflops, "TFLOP/s");
      emit(ctx, "tower_share_of_sgemm_peak", tower.matmul_tflops / peak, "fraction");
      emit(ctx, "step_with_transfers_samples_per_s", step.samples_per_s, "samples/s");
    }
    if (FLAGS_cpu_steps > 0) {
      absl::StatusOr<std::unique_ptr<models::Model>> cpu_model = MakeModel(type, &cpu_factory);
      CHECK(cpu_model.ok());
      const int batch = batch_sizes.front();
      std::mt19937_64 rng(batch);
      std::vector<BasicModelInputs<float>> host = {RandomInputs(shape, batch, &rng)};
      const Timing cpu = TimeSteps(cpu_model->get(), host, batch, FLAGS_cpu_steps, false);
      emit({{"model", type}, {"batch", batch}, {"steps", FLAGS_cpu_steps}, {"cpu", CpuModel()}},
           "cpu_step_samples_per_s", cpu.samples_per_s, "samples/s");
    }
  }
  return 0;
}

}  // namespace
}  // namespace choir

int main(int argc, char** argv) {
  gflags::ParseCommandLineFlags(&argc, &argv, true);
  google::InitGoogleLogging(argv[0]);
  FLAGS_logtostderr = true;
  FLAGS_minloglevel = 1;
  return choir::Run();
}
