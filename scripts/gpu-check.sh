#!/usr/bin/env bash
# The GPU check (issue 23), for a machine with an NVIDIA GPU. `demeter process` with default
# settings over the photos repeated ROUNDS times (default 40), for the default model (plant-exg),
# the heavy test model with a session per worker and the heavy model with a batch axis (batched on
# the GPU by `batching = "auto"`), each on `--device auto` and on `--device cpu`. Prints a markdown
# table for docs/benchmarks.md: photos/min (wall time, start-up included), start-up to ready (from
# the log), peak GPU memory (nvidia-smi), plants counted (every row must agree: the heavy trunk is
# added times zero) and where `auto` put the model. Exits non-zero if a photo failed or counts differ.
#
# On a connected machine:
#   scripts/gpu-check.sh [PHOTO_DIR]          (default ../shared/data/real)
#   installs the onnxruntime-gpu 1.31.1 library (with CUDA 13 / cuDNN 9 wheels when the system
#   has none) in ~/.cache/demeter/gpu-venv and builds demeter in release mode.
# On an offline machine, from a bundle made on a connected one (uploads capped at 64 MiB):
#   here:   scripts/gpu-bundle.sh .gpu        (ONNX Runtime GPU trimmed for Hopper, demeter, photos)
#   there:  source .gpu/unpack.sh && scripts/gpu-check.sh .gpu/photos
#   ($ORT_LIB and $BIN/demeter from the bundle: nothing is installed or built.)
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.31.1
photos=${1:-../shared/data/real}
rounds=${ROUNDS:-40}
cache=${DEMETER_CACHE:-$HOME/.cache/demeter}

command -v nvidia-smi >/dev/null && nvidia-smi -L || { echo "gpu-check: no NVIDIA GPU here (nvidia-smi not found)" >&2; exit 2; }

if [[ -n ${ORT_LIB:-} && -x ${BIN:-}/demeter ]]; then
  ort_lib=$ORT_LIB
  demeter=$BIN/demeter
  echo "gpu-check: bundle: $demeter with $ort_lib"
else
  # The GPU build of ONNX Runtime and, where the machine lacks them, CUDA 13 and cuDNN 9, all
  # from PyPI wheels (the extras of onnxruntime-gpu pull NVIDIA's own wheels).
  venv=$cache/gpu-venv
  [[ -x $venv/bin/python ]] || python3 -m venv "$venv"
  pip_args=(--quiet --disable-pip-version-check)
  [[ -z ${WHEELHOUSE:-} ]] || pip_args+=(--no-index --find-links "$WHEELHOUSE")
  "$venv/bin/pip" install "${pip_args[@]}" "onnxruntime-gpu[cuda,cudnn]==${version}"
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  ort_dir=$site/onnxruntime/capi
  ort_lib=$(ls "$ort_dir"/libonnxruntime.so.* | head -n1)
  nvidia_libs=$(find "$site/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd: || true)
  export LD_LIBRARY_PATH=$ort_dir${nvidia_libs:+:$nvidia_libs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$cache/target}
  cargo build --release --locked -p demeter-daemon
  demeter=$CARGO_TARGET_DIR/release/demeter
fi

# The photos, ROUNDS times (hard links where the filesystem allows, else copies; `demeter process`
# does not deduplicate, and like the daemon it does not follow symbolic links).
work=$(mktemp -d /tmp/gpu-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/photos"
n=0
for ((r = 0; r < rounds; r++)); do
  for f in "$photos"/*; do
    case ${f,,} in *.jpg | *.jpeg | *.png) ln "$f" "$work/photos/r$r-$(basename "$f")" 2>/dev/null || cp "$f" "$work/photos/r$r-$(basename "$f")"; n=$((n + 1)) ;; esac
  done
done
echo "gpu-check: $n photos ($rounds rounds of $photos) on $(nproc) cores"

# One run: prints "label|device|photos/min|start-up s|GPU MiB|plants|where".
run() {
  local label=$1 device=$2; shift 2
  local log=$work/$label-$device.log json=$work/$label-$device.json mem=$work/mem
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 > "$mem.base"
  ( while sleep 0.2; do nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0; done ) > "$mem" 2>/dev/null &
  local sampler=$! start end
  start=$(date +%s.%N)
  DEMETER_CONFIG= DEMETER_LOG=demeter=info "$demeter" process "$work/photos" --device "$device" --ort-lib "$ort_lib" \
    --json "$json" "$@" > /dev/null 2> "$log" || true
  end=$(date +%s.%N)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  python3 - "$label" "$device" "$start" "$end" "$json" "$log" "$mem.base" "$mem" <<'PY'
import datetime, json, re, sys
label, device, start, end, path, log, base, mem = sys.argv[1:]
start, end = float(start), float(end)
try:
    photos = json.load(open(path))["photos"]
except Exception as e:
    sys.exit(f"gpu-check: {label} on {device}: no report ({e}); log: {open(log).read()[-2000:]}")
bad = [p["path"] for p in photos if p["status"] != "completed"]
if bad:
    sys.exit(f"gpu-check: {label} on {device}: {len(bad)} photos failed, e.g. {bad[0]}")
plants = sum(p["result"]["total_detected"] for p in photos)
where = {p["result"].get("execution_provider", "?") for p in photos}
ready = None
for line in open(log):
    if re.search(r"device chosen|warmed up|batched", line):
        t = datetime.datetime.fromisoformat(line.split()[0].replace("Z", "+00:00")).timestamp()
        ready = t - start
base = int(open(base).read().split()[0])
peak = max([int(x) for x in open(mem).read().split()] or [base])
print(f"{label}|{device}|{len(photos) * 60 / (end - start):.0f}|{ready if ready is not None else float('nan'):.2f}|{peak - base}|{plants}|{'+'.join(sorted(where))}")
PY
}

heavy=tests/models/plant-exg-heavy
batch=tests/models/plant-exg-heavy-batch
rows=()
for device in auto cpu; do
  rows+=("$(run plant-exg "$device")")
  rows+=("$(run heavy "$device" --model "$heavy")")
  rows+=("$(run heavy-batch "$device" --model "$batch")")
done

echo
echo "| model | --device | photos/min | start-up to ready (s) | GPU memory (MiB) | plants | ran on |"
echo "|---|---|---|---|---|---|---|"
for r in "${rows[@]}"; do echo "| ${r//|/ | } |"; done
plants=$(printf '%s\n' "${rows[@]}" | cut -d'|' -f6 | sort -u | wc -l)
if [[ $plants -ne 1 ]]; then
  echo "gpu-check: the runs counted different numbers of plants" >&2
  exit 1
fi
echo "gpu-check: done; every run counted the same plants"
