#pragma once
// Where the CUDA backend keeps a sequence's state, against the order of an engine state file
// (recur/state_file.h), so cuda_model::save_state / load_state copy whole blocks between the
// two. Plain C++ with no CUDA type: the unit tests check the map without a GPU.
//
// The backend's buffers (cuda_model.cu, impl::upload):
//   k_cache, v_cache  [attention group][n_ctx][head_dim] F16, groups in layer then group order:
//                     the file's order, so each group's first n_past rows are one block.
//   rec_state         per layer: the heads of its plain recurrent groups, then each window +
//                     recurrent group's g heads (its own kernel launch); the file keeps a
//                     layer's heads in group order, kinds interleaved. Blocks of g·hd² floats.
//   ring_k, ring_v    per layer, per window group: its W ring rows (row p % W), then its S sink
//                     rows; the file puts the S sink rows first. Blocks of rows.
//   dt rings          one buffer per window + recurrent group ([g][W], entry h·W + p % W), in
//                     the file's order: no map needed.
#include "recur/model.h"

#include <cstddef>
#include <vector>

namespace recur {

// count elements at file_at in the file's part and at device_at in the backend's buffer.
struct state_block {
    size_t file_at = 0, device_at = 0, count = 0;
};

struct cuda_state_map {
    std::vector<state_block> recurrent; // in floats of rec_state
    std::vector<state_block> windows;   // in rows of ring_k / ring_v
};

inline cuda_state_map map_cuda_state(const model &m) {
    const model_hparams &hp = m.hparams();
    const size_t g = size_t(hp.group_size()), per_group = g * size_t(hp.head_dim) * size_t(hp.head_dim);
    cuda_state_map map;
    size_t rec_base = 0, row_base = 0;
    for (const hybrid_layer &H : m.hybrid()) {
        // Device: plain recurrent groups first (in order), then window + recurrent groups.
        size_t n_plain = 0;
        for (int32_t grp : H.recurrent_groups)
            if (!H.group_is(grp, replacement_kind::window_recurrent)) ++n_plain;
        size_t plain_seen = 0, wr_seen = 0;
        for (size_t gi = 0; gi < H.recurrent_groups.size(); ++gi) {
            const bool wr = H.group_is(H.recurrent_groups[gi], replacement_kind::window_recurrent);
            const size_t device_group = wr ? n_plain + wr_seen++ : plain_seen++;
            map.recurrent.push_back({rec_base + gi * per_group, rec_base + device_group * per_group, per_group});
        }
        rec_base += H.recurrent_groups.size() * per_group;
        for (int32_t grp : H.window_groups) {
            const size_t W = size_t(H.group_window[size_t(grp)]), S = size_t(H.group_sinks[size_t(grp)]);
            if (S) map.windows.push_back({row_base, row_base + W, S}); // sinks
            map.windows.push_back({row_base + S, row_base, W});        // ring
            row_base += W + S;
        }
    }
    return map;
}

} // namespace recur
