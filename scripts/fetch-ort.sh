#!/usr/bin/env bash
# Installs the ONNX Runtime shared library Demeter loads at run time, taken from the official
# `onnxruntime` wheel on PyPI (the only place it may come from). Idempotent: prints the path.
#   usage: scripts/fetch-ort.sh [DEST_DIR]
set -euo pipefail
version=1.31.1
dest=${1:-${HOME}/.cache/demeter/onnxruntime/${version}}
lib=${dest}/libonnxruntime.so.${version}
if [[ -f ${lib} ]]; then echo "${lib}"; exit 0; fi
command -v python3 >/dev/null || { echo "python3 is needed to fetch ONNX Runtime (apt-get install python3-pip)" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "pip is needed to fetch ONNX Runtime (apt-get install python3-pip)" >&2; exit 1; }
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# Any CPython tag works: only the shared library inside is used, so pin one that exists.
python3 -m pip download --quiet --no-deps --only-binary=:all: \
  --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp \
  -d "$tmp" "onnxruntime==${version}" >&2
mkdir -p "${dest}"
python3 - "$tmp" "$dest" "$version" <<'PY'
import glob, sys, zipfile, os
tmp, dest, version = sys.argv[1:]
whl = glob.glob(os.path.join(tmp, "onnxruntime-*.whl"))[0]
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        base = os.path.basename(name)
        if base in (f"libonnxruntime.so.{version}", "libonnxruntime_providers_shared.so"):
            out = os.path.join(dest, base)
            with z.open(name) as src, open(out + ".part", "wb") as dst:
                dst.write(src.read())
            os.replace(out + ".part", out)
PY
echo "${lib}"
