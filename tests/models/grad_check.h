// Finite-difference gradient checks for the layer tests (double precision).
//
// A piece's output y is reduced to the scalar L = <R, y> for a fixed random R, so dL/dy = R.
// Every element of an input or parameter is perturbed by +-kFdEps and the central difference
// (L(+) - L(-)) / (2 kFdEps) is compared with the analytic gradient:
//   |analytic - numeric| <= kFdTol * max(1, |analytic|, |numeric|).
#ifndef CHOIR_TESTS_MODELS_GRAD_CHECK_H_
#define CHOIR_TESTS_MODELS_GRAD_CHECK_H_

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <string>

#include "gtest/gtest.h"
#include "models/layers.h"
#include "models/tensor.h"

namespace choir::models::testing {

inline constexpr double kFdEps = 1e-6;
inline constexpr double kFdTol = 1e-6;

// Uniform in [lo, hi) from a seeded generator (test data only).
inline Tensor<double> RandomTensor(int rows, int cols, uint64_t seed, double lo = -1.0,
                                   double hi = 1.0) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<double> dist(lo, hi);
  Tensor<double> t(rows, cols);
  for (int64_t i = 0; i < t.size(); ++i) t.data()[i] = dist(rng);
  return t;
}

inline double Dot(const Tensor<double>& a, const Tensor<double>& b) {
  EXPECT_TRUE(a.SameShape(b));
  double s = 0;
  for (int64_t i = 0; i < a.size(); ++i) s += a.data()[i] * b.data()[i];
  return s;
}

// Compares `analytic` with central differences of `loss` over every element of `*x`
// (restored afterwards). Returns the number of mismatches (each also reported).
inline int ExpectMatchesFiniteDifferences(const std::function<double()>& loss, Tensor<double>* x,
                                          const Tensor<double>& analytic, const std::string& what) {
  EXPECT_TRUE(x->SameShape(analytic)) << what << ": gradient shape " << analytic.rows() << "x"
                                      << analytic.cols() << " vs " << x->rows() << "x" << x->cols();
  if (!x->SameShape(analytic)) return 1;
  int bad = 0;
  for (int64_t i = 0; i < x->size(); ++i) {
    const double saved = x->data()[i];
    x->data()[i] = saved + kFdEps;
    const double plus = loss();
    x->data()[i] = saved - kFdEps;
    const double minus = loss();
    x->data()[i] = saved;
    const double numeric = (plus - minus) / (2 * kFdEps);
    const double a = analytic.data()[i];
    const double scale = std::max({1.0, std::abs(a), std::abs(numeric)});
    if (std::abs(a - numeric) > kFdTol * scale) {
      if (++bad <= 5) {
        ADD_FAILURE() << what << "[" << i / x->cols() << "," << i % x->cols() << "]: analytic " << a
                      << " numeric " << numeric;
      }
    }
  }
  return bad;
}

// Checks dx and every parameter gradient of a single-input layer at input x.
inline void CheckLayerGradients(Layer<double>* layer, Tensor<double> x, uint64_t seed,
                                const std::string& what) {
  Tensor<double> y;
  layer->Forward(x, &y);
  const Tensor<double> r = RandomTensor(y.rows(), y.cols(), seed + 1);
  layer->ZeroGrad();
  Tensor<double> dx;
  layer->Backward(r, &dx);
  std::vector<Tensor<double>> grads;
  for (Param<double>* p : layer->Params()) grads.push_back(p->grad);

  auto loss = [&]() {
    Tensor<double> out;
    layer->Forward(x, &out);
    return Dot(out, r);
  };
  EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &x, dx, what + " dx"), 0);
  std::vector<Param<double>*> params = layer->Params();
  for (size_t i = 0; i < params.size(); ++i) {
    EXPECT_EQ(ExpectMatchesFiniteDifferences(loss, &params[i]->value, grads[i],
                                             what + " d" + params[i]->name),
              0);
  }
}

}  // namespace choir::models::testing

#endif  // CHOIR_TESTS_MODELS_GRAD_CHECK_H_
