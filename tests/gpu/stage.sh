#!/usr/bin/env bash
# Packs what tests/gpu/run.sh needs on a GPU machine that has CUDA but not this project's build
# dependencies (sentencepiece, GoogleTest, gguf-py) nor ../shared: the two binaries built here,
# libsentencepiece, gguf-py, stories260K and the Llama 2 tokenizer, into build-gpu-stage/ (ignored
# by .gitignore's /build*/, so a device run can carry it). About 16 MiB.
# Usage: tests/gpu/stage.sh [BUILD_DIR]   (default build-cuda, built with RECUR_CUDA=ON)
set -euo pipefail
cd "$(dirname "$0")/../.."
build=${1:-build-cuda}
stage=build-gpu-stage
shared=${RECUR_SHARED_DIR:-../shared}
cmake --build "$build" -j"$(nproc)" --target recur_gpu_tests recur_gpu_bench >/dev/null
rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/lib" "$stage/py" "$stage/shared/models"
cp "$build/tests/recur_gpu_tests" "$build/tests/recur_gpu_bench" "$stage/bin/"
# Shared libraries the binaries need beyond glibc, libstdc++ and the CUDA toolkit's own.
for lib in $(ldd "$stage/bin/recur_gpu_tests" | awk '/=>/ {print $3}' | grep -E 'sentencepiece|protobuf|gtest' || true); do
  cp -L "$lib" "$stage/lib/"
done
# gguf-py from the project's venv (installer/setup.sh makes it) unless PYTHON names another.
py=${PYTHON:-python3}
[[ -z ${PYTHON:-} && -x .venv/bin/python ]] && py=.venv/bin/python
gguf_dir=$("$py" -c 'import gguf, os; print(os.path.dirname(gguf.__file__))')
cp -r "$gguf_dir" "$stage/py/"
find "$stage/py" -name __pycache__ -prune -exec rm -rf {} +
cp "$shared/models/stories260K.gguf" "$stage/shared/models/"
cp "$shared/models/llama2-tokenizer.model" "$stage/shared/models/" 2>/dev/null || true
# The recur CLI as well, when the build has it (the GPU CLI tests, test_gpu_cli.cpp, and run.sh's
# `--device cuda` check run it): its own libraries (poppler, sqlite, ...; about 15 MiB) go to
# cli-lib/, reached only through a wrapper, so they never shadow the GPU tests' libraries.
# NO_CLI=1 leaves it out.
if [[ -z ${NO_CLI:-} ]] && cmake --build "$build" -j"$(nproc)" --target recur >/dev/null 2>&1; then
  mkdir -p "$stage/cli-lib"
  cp "$build/app/recur" "$stage/bin/recur.bin"
  for lib in $(ldd "$build/app/recur" | awk '/=>/ {print $3}' |
               grep -vE 'libc\.so|libm\.so|libstdc\+\+|libgcc_s|ld-linux|libpthread|libdl\.|librt\.|libcublas' || true); do
    cp -L "$lib" "$stage/cli-lib/"
  done
  cat >"$stage/bin/recur" <<'WRAP'
#!/usr/bin/env bash
here=$(dirname "$(readlink -f "$0")")
LD_LIBRARY_PATH="$here/../cli-lib:${LD_LIBRARY_PATH:-}" exec "$here/recur.bin" "$@"
WRAP
  chmod +x "$stage/bin/recur"
  # A real converted hybrid with window + recurrent groups (the kind `convert --kind auto` picks for
  # some groups), for run.sh's --device check: 10 groups, 100 distillation steps, ~4 s here.
  "$stage/bin/recur" convert -m "$stage/shared/models/stories260K.gguf" --calib-self 4000 -c 256 --fraction 0.5 \
    --kind window+recurrent --steps 100 -o "$stage/shared/models/stories260K-wr.gguf" >/dev/null 2>&1 ||
    echo "stage: could not convert the window + recurrent stories260K hybrid" >&2
else
  echo "stage: no recur CLI in $build (configure it with the app, or NO_CLI=1): the GPU CLI tests will skip" >&2
fi
du -sh "$stage"
# A device run carries 64 MiB at most; the binaries' device code for two architectures (sm_80 and
# sm_90) is most of their size, so for the lent Hopper machine stage a build of sm_90 alone
# (-DCMAKE_CUDA_ARCHITECTURES=90-real).
if (( $(du -sm "$stage" | cut -f1) > 62 )); then
  echo "stage: $(du -sm "$stage" | cut -f1) MiB is over what a device run carries (64 MiB): stage a build configured with -DCMAKE_CUDA_ARCHITECTURES=90-real, or NO_CLI=1" >&2
fi
echo 'device run: command "tests/gpu/run.sh /tmp/recur-gpu 2>&1; tests/gpu/profile.sh /tmp/recur-gpu 2>&1", carry ["build-gpu-stage"], timeout_s 420'
