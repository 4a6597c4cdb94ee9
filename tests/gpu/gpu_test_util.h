// Shared by the gpu tests: skip without a GPU, fresh random inputs, poisoned outputs, and the
// relative error against the CPU reference.
//
// Tolerances (stated once, used by every gpu test): the relative L2 error
// ||gpu - cpu|| / ||cpu|| (for sums that can cancel, over at least their uncancelled size; see
// RelativeError) must be at most kTolerance<T>: 1e-5 for float and 1e-12 for double. On an
// H200 (2026-11-29), 14 of 200 runs of the attention test under this rule had a quantity past
// 1e-5 (up to 3e-4), each a sum whose terms nearly cancel, so that test judges against a double
// reference and the float rounding measured on the same problem instead (attention_gpu_test.cc).
// CHOIR_TEST_SEED=N replays a failure's printed seed.
#ifndef CHOIR_TESTS_GPU_GPU_TEST_UTIL_H_
#define CHOIR_TESTS_GPU_GPU_TEST_UTIL_H_

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "models/cuda/cuda.h"
#include "models/tensor.h"

namespace choir::testing {

template <typename T>
constexpr double kTolerance = 1e-5;
template <>
constexpr double kTolerance<double> = 1e-12;

// In a test body: skips (with the reason) when no GPU is usable, else initialises CUDA. With
// CHOIR_GPU_REQUIRED=1 in the environment (tools/gpu_check.sh sets it) a missing GPU fails the
// test instead, so a GPU run cannot pass by skipping. With CHOIR_CUDA_NO_POOLS=1 device memory
// comes from the cudaMalloc cache instead of the stream-ordered pool (checked).
#define CHOIR_REQUIRE_GPU()                                                          \
  do {                                                                               \
    std::string choir_why;                                                           \
    if (::choir::models::cuda::CudaDeviceCount(&choir_why) == 0) {                   \
      const char* choir_required = std::getenv("CHOIR_GPU_REQUIRED");                \
      if (choir_required != nullptr && std::string(choir_required) == "1") {         \
        FAIL() << "CHOIR_GPU_REQUIRED=1 but no GPU is usable: " << choir_why;        \
      }                                                                              \
      GTEST_SKIP() << "no GPU here (" << choir_why << "): gpu test skipped";         \
    }                                                                                \
    const char* choir_no_pools = std::getenv("CHOIR_CUDA_NO_POOLS");                 \
    ::choir::models::cuda::CudaOptions choir_options;                                \
    choir_options.memory_pools = !(choir_no_pools != nullptr && std::string(choir_no_pools) == "1"); \
    const absl::Status choir_init = ::choir::models::cuda::InitCuda(0, choir_options); \
    ASSERT_TRUE(choir_init.ok()) << choir_init;                                      \
    if (!choir_options.memory_pools) {                                               \
      ASSERT_FALSE(::choir::models::cuda::CudaUsesMemoryPools());                    \
    }                                                                                \
  } while (0)

// A fresh seed per run (printed by the caller on failure), so every run draws new inputs; with
// CHOIR_TEST_SEED=N in the environment, N (to replay a failure's printed seed).
inline uint64_t FreshSeed() {
  const char* fixed = std::getenv("CHOIR_TEST_SEED");
  if (fixed != nullptr && *fixed != '\0') {
    char* end = nullptr;
    errno = 0;
    const uint64_t seed = std::strtoull(fixed, &end, 10);
    if (*end == '\0' && errno == 0) return seed;
    ADD_FAILURE() << "CHOIR_TEST_SEED='" << fixed << "' is not a seed (a decimal uint64)";
  }
  return std::random_device{}() * 0x9E3779B97F4A7C15ULL ^ std::random_device{}();
}

// A host copy of `t` (any device) with every element converted to To.
template <typename To, typename From>
models::Tensor<To> HostCast(const models::Tensor<From>& t) {
  const models::Tensor<From> h = t.To(models::Device::kCpu);
  models::Tensor<To> out(h.rows(), h.cols());
  for (int64_t i = 0; i < h.size(); ++i) out.data()[i] = static_cast<To>(h.data()[i]);
  return out;
}

// A host tensor of uniform values in [lo, hi).
template <typename T>
models::Tensor<T> RandomTensor(int rows, int cols, std::mt19937_64* rng, double lo = -1,
                               double hi = 1) {
  models::Tensor<T> t(rows, cols);
  std::uniform_real_distribution<double> u(lo, hi);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = static_cast<T>(u(*rng));
  return t;
}

// A GPU tensor of the given shape filled with NaN: an element the code under test forgets to
// write stays NaN and fails the comparison.
template <typename T>
models::Tensor<T> PoisonedDeviceTensor(int rows, int cols) {
  models::Tensor<T> t(models::Device::kCuda);
  t.Resize(rows, cols, std::numeric_limits<T>::quiet_NaN());
  return t;
}

// ||a - b|| / max(||b||, floor, tiny), with `a` on any device and `b` on the host; infinity when
// shapes differ or any element of `a` is not finite.
//
// `floor` is for sums whose terms cancel: a parameter gradient summed over the batch (a bias, a
// one-feature alpha) or one that is exactly 0 in exact arithmetic (the score bias under a softmax)
// can be arbitrarily close to 0 while each backend keeps a rounding error of the size of its
// terms, so a purely relative error fails at random. Pass the size such a sum has when its terms
// do not cancel (the root of the summed squared terms, see SumScale); an indexing or formula bug
// still moves the result by about that size and fails.
template <typename T>
double RelativeError(const models::Tensor<T>& a, const models::Tensor<T>& b, double floor = 0) {
  const models::Tensor<T> h = a.To(models::Device::kCpu);
  if (!h.SameShape(b)) return std::numeric_limits<double>::infinity();
  double diff = 0, norm = 0;
  for (int64_t i = 0; i < h.size(); ++i) {
    const double x = h.data()[i];
    if (!std::isfinite(x)) return std::numeric_limits<double>::infinity();
    const double y = b.data()[i];
    diff += (x - y) * (x - y);
    norm += y * y;
  }
  return std::sqrt(diff) / std::max({std::sqrt(norm), floor, 1e-30});
}

// The root mean square of a host tensor's elements; 0 for an empty one.
template <typename T>
double Rms(const models::Tensor<T>& t) {
  if (t.size() == 0) return 0;
  double sum = 0;
  for (int64_t i = 0; i < t.size(); ++i) sum += static_cast<double>(t.data()[i]) * t.data()[i];
  return std::sqrt(sum / t.size());
}

// The floor for RelativeError of a gradient of `numel` elements, each a sum of `terms` products
// of an input of root mean square `input_rms` and an upstream gradient of root mean square
// `upstream_rms`: the norm such a gradient has when its terms do not cancel.
inline double SumScale(int64_t numel, int64_t terms, double input_rms, double upstream_rms) {
  return std::sqrt(static_cast<double>(numel) * terms) * input_rms * upstream_rms;
}

}  // namespace choir::testing

#endif  // CHOIR_TESTS_GPU_GPU_TEST_UTIL_H_
