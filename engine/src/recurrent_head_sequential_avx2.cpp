// The sequential forms compiled with AVX2 + FMA (this file's name puts it in the engine's AVX2
// set): recurrent_head_sequential_impl.h in namespace seq_avx2. Called only after the CPU check.
#define RECUR_SEQ_NS seq_avx2
#include "recurrent_head_sequential_impl.h"
