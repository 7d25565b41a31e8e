#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU: installs the ONNX Runtime library of the
# `onnxruntime-gpu==1.31.1` wheel (with CUDA 13 and cuDNN 9 from their PyPI wheels when the
# machine has none), builds `demeter`, runs `demeter process --device cuda`
# over the dev photos and prints its throughput against `--device cpu`. Under 5 minutes on a
# machine with a few cores (most of it the release build).
#
#   usage: scripts/gpu-check.sh [PHOTO_DIR]        (default: ../shared/data/real)
#   offline machines: on a connected one run
#     python3 -m pip download -d wheels "onnxruntime-gpu[cuda,cudnn]==1.31.1"
#   copy wheels/ over and set WHEELHOUSE=wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.31.1
photos=${1:-../shared/data/real}
cache=${DEMETER_CACHE:-$HOME/.cache/demeter}
venv=$cache/gpu-venv
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu-check: no NVIDIA GPU here (nvidia-smi not found)" >&2; exit 2; }

# 1. The GPU build of ONNX Runtime and, where the machine lacks them, CUDA 13 and cuDNN 9, all
#    from PyPI wheels (the extras of onnxruntime-gpu pull NVIDIA's own wheels).
if [[ ! -x $venv/bin/python ]]; then python3 -m venv "$venv"; fi
pip_args=(--quiet --disable-pip-version-check)
if [[ -n ${WHEELHOUSE:-} ]]; then pip_args+=(--no-index --find-links "$WHEELHOUSE"); fi
"$venv/bin/pip" install "${pip_args[@]}" "onnxruntime-gpu[cuda,cudnn]==${version}"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ort_dir=$site/onnxruntime/capi
ort_lib=$(ls "$ort_dir"/libonnxruntime.so.* | head -n1)
# CUDA and cuDNN libraries of the nvidia-* wheels (ignored where the system has its own).
nvidia_libs=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)
export LD_LIBRARY_PATH=$ort_dir${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
echo "gpu-check: ONNX Runtime GPU library $ort_lib"

# 2. demeter (every build has the CUDA execution provider compiled in).
cargo build --release --locked -p demeter-daemon
demeter=$CARGO_TARGET_DIR/release/demeter

# 3. The same photos on each device; `demeter process` prints per photo, we time the whole run.
run() {
  local device=$1 start end n
  start=$(date +%s.%N)
  DEMETER_CONFIG= "$demeter" process "$photos" --device "$device" --workers 4 --ort-lib "$ort_lib" --json "/tmp/gpu-check-$device.json" >/dev/null
  end=$(date +%s.%N)
  n=$(python3 -c "import json; print(len(json.load(open('/tmp/gpu-check-$device.json'))['photos']))")
  python3 -c "print(f'{\"$device\":>5}: {$n} photos in {$end - $start:.2f} s = {$n * 60 / ($end - $start):.0f} photos/min')"
}
run cuda
run cpu
python3 -c "import json,sys; f=[p['path'] for p in json.load(open('/tmp/gpu-check-cuda.json'))['photos'] if p['status']!='completed']; f and sys.exit(f'gpu-check: failed on CUDA: {f}')"
echo "gpu-check: done"
