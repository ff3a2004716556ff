#pragma once
// Engine state files (docs/FORMAT.md "Engine state files"): what one sequence of one model holds
// (its tokens, the attention groups' K/V rows in use, recurrent states, window groups' rows, the
// window + recurrent heads' dt rings, the last logits) in one device-neutral layout. The CPU
// context and the CUDA backend each fill a state_view from their own buffers and place a
// loaded_state into them; the format, its checksum and every check on reading live here once, so
// a state saved on a GPU loads on the CPU and the other way round.
#include "recur/model.h"

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace recur {

// The sizes of a model's state in the file, from the model alone. The file's order, which the
// CPU context keeps in memory as well:
//   recurrent  per layer, per head of H.recurrent_groups (group by group, g heads each; plain
//              recurrent and window + recurrent groups interleaved as they come), hd × hd floats,
//              row r = key dimension r (S[r][c], recurrent_head.h)
//   windows    per layer, per group of H.window_groups: its S sink rows (row p holds position p),
//              then its W ring rows (row S + p % W holds position p), [head_dim] elements each
//   dt rings   per layer, per head of the window + recurrent groups in H.recurrent_groups order:
//              W floats (entry p % W: the dt position p got on entering the window)
struct state_layout {
    int32_t attention_groups = 0; // groups served by full attention, summed over layers
    size_t recurrent_floats = 0;
    size_t window_rows = 0;       // sink and ring rows of every window group, summed
    size_t dt_ring_floats = 0;
};
state_layout state_layout_of(const model &m);

// A state to write, as pointers into the caller's memory.
struct state_view {
    uint32_t kv_elem_bytes = 2;          // 2: F16 cache rows, 4: F32
    std::vector<int32_t> tokens;         // [n_past]
    // Per attention group, in layer order then group order: [n_past][head_dim] K rows, V rows.
    std::vector<const void *> k_rows, v_rows;
    const float *recurrent = nullptr;    // [layout.recurrent_floats]
    const void *window_k = nullptr;      // [layout.window_rows][head_dim]
    const void *window_v = nullptr;
    const float *dt_rings = nullptr;     // [layout.dt_ring_floats]
    const float *logits = nullptr;       // [n_vocab] of the last position, or null (none yet)
};

// Writes PATH.part, syncs it and renames it over PATH; on any failure the part file is removed
// and recur::error says why. The sizes are checked against state_layout_of(m) first.
void write_state_file(const std::string &path, const model &m, const state_view &s);

// A state read back and checked: row blocks point into `data`, so it moves but is not copied.
struct loaded_state {
    uint32_t kv_elem_bytes = 2;
    std::vector<int32_t> tokens;                  // [n_past], every id inside the vocabulary
    std::vector<const uint8_t *> k_rows, v_rows;  // per attention group: [n_past][head_dim]
    std::vector<float> recurrent;                 // [layout.recurrent_floats]
    const uint8_t *window_k = nullptr, *window_v = nullptr; // [layout.window_rows][head_dim]
    std::vector<float> dt_rings;                  // [layout.dt_ring_floats]
    std::vector<float> logits;                    // [n_vocab], or empty when the file holds none
    std::vector<uint8_t> data;                    // the file's bytes

    loaded_state() = default;
    loaded_state(loaded_state &&) = default;
    loaded_state &operator=(loaded_state &&) = default;
    loaded_state(const loaded_state &) = delete;
    loaded_state &operator=(const loaded_state &) = delete;
    int32_t n_past() const { return int32_t(tokens.size()); }
};

// Reads and checks a whole state file: magic, version, the model's fingerprint (a state of
// another model is refused, saying so), shapes, the cache element size (kv_elem_bytes: what the
// caller's cache holds), n_past ≤ n_ctx, every token id, the checksum and no trailing bytes.
// Throws recur::error naming the file and the problem; nothing of the caller's is touched.
loaded_state read_state_file(const std::string &path, const model &m, int32_t n_ctx, uint32_t kv_elem_bytes);

} // namespace recur
