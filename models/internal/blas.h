// OpenBLAS gemm for float and double behind one overload set. Row-major throughout:
// C[m, n] = alpha * op(A)[m, k] * op(B)[k, n] + beta * C.
#ifndef CHOIR_MODELS_INTERNAL_BLAS_H_
#define CHOIR_MODELS_INTERNAL_BLAS_H_

#include <cblas.h>

namespace choir::models::internal {

inline void Gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* a,
                 const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int i = 0; i < m * n; ++i) c[i] = beta == 0 ? 0 : beta * c[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, trans_a ? m : k, b,
              trans_b ? k : n, beta, c, n);
}

inline void Gemm(bool trans_a, bool trans_b, int m, int n, int k, double alpha, const double* a,
                 const double* b, double beta, double* c) {
  if (m == 0 || n == 0) return;
  if (k == 0) {
    for (int i = 0; i < m * n; ++i) c[i] = beta == 0 ? 0 : beta * c[i];
    return;
  }
  cblas_dgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
              trans_b ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, trans_a ? m : k, b,
              trans_b ? k : n, beta, c, n);
}

}  // namespace choir::models::internal

#endif  // CHOIR_MODELS_INTERNAL_BLAS_H_
