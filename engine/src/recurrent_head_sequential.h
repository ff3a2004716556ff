#pragma once
// The recurrent head's sequential forms (recurrent_head.h): the delta-rule read-out
// (recurrent_head_weights::delta_rule) and per-channel decay (recurrent_head_weights::a_chan), in
// any combination. recurrent_head.h's functions check the arguments and dispatch here whenever
// either is on; the additive head with one decay per head keeps its chunked (SSD) prefill and its
// AVX2 kernels.
#include <cstddef>

#include "recur/recurrent_head.h"

// The three functions, declared by one macro so that the dispatch (recurrent_head_sequential.cpp)
// declares the AVX2 build's copies (namespace seq_avx2) with exactly these signatures.
//   step: one token; q, k, v, y: [hd]; state: [hd*hd] in/out. Allocates nothing for head_dim <= 256.
//   scan: contract of recurrent_scan_ref.
//   scan_backward: reverse mode, contract of recurrent_scan_backward (grads.a_chan is required when
//   w.a_chan is set).
#define RECUR_SEQUENTIAL_FUNCTIONS                                                                              \
    void step(const recurrent_head_weights &w, const float *q, const float *k, const float *v, float dt,       \
              float *state, float *y);                                                                          \
    void scan(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k, const float *v,   \
              size_t stride, const float *dt, float *state, float *y, size_t y_stride);                         \
    void scan_backward(const recurrent_head_weights &w, int n_tokens, const float *q, const float *k,          \
                       const float *v, size_t stride, const float *dt, const float *state0, const float *dy,   \
                       size_t dy_stride, float *dq, float *dk, float *dv, size_t g_stride, float *ddt,         \
                       float *dstate, recurrent_head_grads &grads);

namespace recur::sequential {
RECUR_SEQUENTIAL_FUNCTIONS
} // namespace recur::sequential
