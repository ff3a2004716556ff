#pragma once
// The delta-rule read-out (recurrent_head_weights::delta_rule): internal entry points, reached
// through recurrent_head.h's functions, which check the arguments and dispatch here.
#include <cstddef>

#include "recur/recurrent_head.h"

namespace recur::delta {

// One token; q, k, v, y: [hd]; state: [hd*hd] in/out; scratch: [3*hd] floats.
void step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt, float *state,
          float *y, float *scratch);

// The sequential scan, contract of recurrent_scan_ref.
void scan(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
          size_t stride, const float *dt, float *state, float *y, size_t y_stride);

// Reverse mode, contract of recurrent_scan_backward.
void scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,
                   size_t stride, const float *dt, const float *state0, const float *dy, size_t dy_stride,
                   float *dq, float *dk, float *dv, size_t g_stride, float *ddt, float *dstate,
                   recurrent_head_grads &grads);

} // namespace recur::delta
