#pragma once
// splitmix64 (Steele, Lea, Flood 2014): one 64-bit state advanced by a constant and mixed. Used
// wherever the engine needs reproducible randomness from a seed in plain integer arithmetic (no
// std:: distribution, whose output is implementation-defined): seeding the sampler's xoshiro
// state (it never yields the all-zero state), distillation's chunk order, passkey trials.
#include <cstdint>

namespace recur {

inline uint64_t splitmix64(uint64_t &state) {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

} // namespace recur
