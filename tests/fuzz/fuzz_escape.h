// What a libFuzzer target does with an exception the code under test should never throw (any
// but the error type its API documents). Left alone it would reach std::terminate, and the run
// would end in "libFuzzer: deadly signal" with the type and message only in the target's log —
// which CI does not keep (once, on CI, fuzz_gguf died that way and the cause was lost). So the
// type and message go to stderr on a line with "ERROR", which tests/fuzz/run.sh prints, and
// the process aborts: libFuzzer still saves the input as a crash artifact.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <typeinfo>

[[noreturn]] inline void fuzz_escaped(const char *target, const std::exception *e) {
    if (e)
        std::fprintf(stderr, "==%s== ERROR: an exception of type %s escaped: %s\n", target, typeid(*e).name(),
                     e->what());
    else
        std::fprintf(stderr, "==%s== ERROR: an exception that is not a std::exception escaped\n", target);
    std::fflush(stderr);
    std::abort();
}
