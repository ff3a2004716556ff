// The sequential forms (recurrent_head_sequential.h): the baseline build of
// recurrent_head_sequential_impl.h, and the dispatch between it and the AVX2 build.
#define RECUR_SEQ_NS seq_baseline
#include "recurrent_head_sequential_impl.h"

#include "recurrent_head_kernels.h"
#include "recurrent_head_sequential.h"

namespace recur {
#if defined(RECUR_X86)
namespace seq_avx2 {
RECUR_SEQUENTIAL_FUNCTIONS
} // namespace seq_avx2
#define RECUR_SEQ_PICK(fn) (rec_kernels::avx2_enabled() ? seq_avx2::fn : seq_baseline::fn)
#else
#define RECUR_SEQ_PICK(fn) seq_baseline::fn
#endif

namespace sequential {

void step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt, float *state,
          float *y) {
    RECUR_SEQ_PICK(step)(w, q, k, v, dt, state, y);
}

void scan(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
          size_t stride, const float *dt, float *state, float *y, size_t y_stride) {
    RECUR_SEQ_PICK(scan)(w, n_tokens, q, k, v, stride, dt, state, y, y_stride);
}

void scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
                   size_t stride, const float *dt, const float *state0, const float *dy, size_t dy_stride,
                   float *dq, float *dk, float *dv, size_t g_stride, float *ddt, float *dstate,
                   recurrent_head_grads &grads) {
    RECUR_SEQ_PICK(scan_backward)(w, n_tokens, q, k, v, stride, dt, state0, dy, dy_stride, dq, dk, dv, g_stride, ddt,
                                  dstate, grads);
}

} // namespace sequential
} // namespace recur
