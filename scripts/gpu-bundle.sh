#!/usr/bin/env bash
# Makes the bundle scripts/gpu-check.sh runs from on an offline GPU machine whose uploads are
# capped at 64 MiB: ../shared/gpu/bundle.sh (the ONNX Runtime 1.31.1 GPU library trimmed for
# Hopper, xz-compressed, and the release `demeter`), plus the dev photos that fit beside them.
#
#   usage: scripts/gpu-bundle.sh [OUT_DIR]        (default .gpu; add it to .git/info/exclude)
#   then on the GPU machine: source OUT_DIR/unpack.sh && scripts/gpu-check.sh OUT_DIR/photos
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-.gpu}
photos=${PHOTOS:-../shared/data/real}
limit=$((60 * 1024 * 1024)) # under the 64 MiB cap, with room for the working tree's own files
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/demeter/target}
cargo build --release --locked -p demeter-daemon
rm -rf "$out"
../shared/gpu/bundle.sh "$out" "$CARGO_TARGET_DIR/release/demeter"
mkdir -p "$out/photos"
# The photos, smallest first, while they fit: the 5 MP tray photos are the ones that matter
# most and come in too unless the bundle has grown.
used=$(du -sb "$out" | cut -f1)
while IFS= read -r -d '' f; do
  size=$(stat -c %s "$f")
  if ((used + size <= limit)); then
    cp "$f" "$out/photos/"
    used=$((used + size))
  fi
done < <(find "$photos" -maxdepth 1 -type f \( -iname '*.jpg' -o -iname '*.jpeg' -o -iname '*.png' \) -printf '%s %p\0' \
  | sort -zn | sed -z 's/^[0-9]* //')
echo "gpu-bundle: $out: $(ls "$out/photos" | wc -l) photos, $((used / 1024 / 1024)) MiB in all"
