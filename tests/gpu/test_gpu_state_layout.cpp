// The map between engine state files and the CUDA backend's buffers (cuda/src/state_layout.h),
// checked on the host: it runs without a GPU. The round trips through a real device are
// GpuModel.StateFilesCrossDevices.
#include "gpu_test_util.h"
#include "recur/state_file.h"
#include "state_layout.h"
#include "../scratch.h"

#include <gtest/gtest.h>

using namespace recur;

namespace {

// Each element of [0, n) covered exactly once by the blocks' ranges on one side.
void expect_tiles(const std::vector<state_block> &blocks, size_t n, bool file_side, const char *what) {
    std::vector<int> hits(n, 0);
    for (const state_block &b : blocks) {
        const size_t at = file_side ? b.file_at : b.device_at;
        ASSERT_LE(at + b.count, n) << what;
        for (size_t i = at; i < at + b.count; ++i) ++hits[i];
    }
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(hits[i], 1) << what << (file_side ? ", file" : ", device") << " element " << i;
}

} // namespace

// stories260K (4 KV groups of 2 heads, head_dim 8) with groups 0 and 2 recurrent and group 1
// window + recurrent (ring 5, 2 sinks) in every layer: the backend keeps groups 0, 2 then 1.
TEST(GpuStateLayout, BlocksTileBothSidesInTheBackendsOrder) {
    const std::string stories = gpu_test::shared_dir() + "/models/stories260K.gguf";
    if (!gpu_test::file_exists(stories)) GTEST_SKIP() << stories << " not found";
    const std::string path = recur_test::scratch("stories-layout-winrec.gguf");
    gpu_test::write_hybrid(*model::load(stories), path, {0.75, 5, 2, true, 8, 2, true, true});
    auto m = model::load(path);
    const model_hparams &hp = m->hparams();
    const state_layout L = state_layout_of(*m);
    const cuda_state_map map = map_cuda_state(*m);
    const size_t per_group = size_t(hp.group_size()) * hp.head_dim * hp.head_dim;
    ASSERT_EQ(L.recurrent_floats, size_t(hp.n_layer) * 3 * per_group);
    ASSERT_EQ(L.window_rows, size_t(hp.n_layer) * (5 + 2));
    ASSERT_EQ(L.dt_ring_floats, size_t(hp.n_layer) * hp.group_size() * 5);
    ASSERT_EQ(L.attention_groups, hp.n_layer * 1);

    expect_tiles(map.recurrent, L.recurrent_floats, true, "recurrent");
    expect_tiles(map.recurrent, L.recurrent_floats, false, "recurrent");
    expect_tiles(map.windows, L.window_rows, true, "windows");
    expect_tiles(map.windows, L.window_rows, false, "windows");

    // Per layer, file groups 0, 1, 2 (group order) sit at device groups 0, 2, 1.
    ASSERT_EQ(map.recurrent.size(), size_t(hp.n_layer) * 3);
    for (int l = 0; l < hp.n_layer; ++l) {
        const size_t base = size_t(l) * 3 * per_group;
        const size_t device_group_of[3] = {0, 2, 1};
        for (size_t gi = 0; gi < 3; ++gi) {
            const state_block &b = map.recurrent[size_t(l) * 3 + gi];
            EXPECT_EQ(b.file_at, base + gi * per_group) << "layer " << l << " group " << gi;
            EXPECT_EQ(b.device_at, base + device_group_of[gi] * per_group) << "layer " << l << " group " << gi;
            EXPECT_EQ(b.count, per_group);
        }
    }
    // Per window group: the file's 2 sink rows are the device's rows 5 and 6, the ring's 5 rows
    // (file rows 2..6) the device's 0..4.
    ASSERT_EQ(map.windows.size(), size_t(hp.n_layer) * 2);
    for (int l = 0; l < hp.n_layer; ++l) {
        const size_t base = size_t(l) * 7;
        const state_block &sinks = map.windows[size_t(l) * 2], &ring = map.windows[size_t(l) * 2 + 1];
        EXPECT_EQ(sinks.file_at, base);
        EXPECT_EQ(sinks.device_at, base + 5);
        EXPECT_EQ(sinks.count, 2u);
        EXPECT_EQ(ring.file_at, base + 2);
        EXPECT_EQ(ring.device_at, base);
        EXPECT_EQ(ring.count, 5u);
    }
}
