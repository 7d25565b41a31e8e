#!/usr/bin/env bash
# On a machine with an NVIDIA GPU (nvidia-smi present): installs the GPU build of ONNX Runtime
# (the `onnxruntime-gpu` 1.31.1 wheel from PyPI) into DEST, and CUDA 13 / cuDNN 9 from NVIDIA's
# PyPI wheels (the wheel's `cuda,cudnn` extras) when the system has none, linked into DEST/cuda/.
# `demeter` prefers DEST's library on a machine with a GPU and loads DEST/cuda/ before it.
# Anywhere else it does nothing and downloads nothing. Idempotent; prints the library's path.
#   usage: scripts/fetch-ort-gpu.sh [DEST]      (DEMETER_GPU=0 skips it; WHEELHOUSE=dir offline)
set -euo pipefail
version=1.31.1
dest=${1:-${HOME}/.cache/demeter/onnxruntime-gpu/${version}}
[[ ${DEMETER_GPU:-1} != 0 ]] || exit 0
command -v nvidia-smi >/dev/null || exit 0
lib=${dest}/libonnxruntime.so.${version}
if [[ -e ${lib} ]]; then echo "${lib}"; exit 0; fi

venv=$(dirname "${dest}")/venv-${version}
[[ -x ${venv}/bin/pip ]] || python3 -m venv "${venv}"
has() { ldconfig -p 2>/dev/null | grep -q "$1"; }
spec="onnxruntime-gpu==${version}"
if ! has 'libcudart\.so\.13' || ! has 'libcudnn\.so\.9'; then
  spec="onnxruntime-gpu[cuda,cudnn]==${version}"
  echo "fetch-ort-gpu: this system has no CUDA 13 / cuDNN 9; taking NVIDIA's wheels (several GB)" >&2
fi
pip_args=(--quiet --disable-pip-version-check)
if [[ -n ${WHEELHOUSE:-} ]]; then pip_args+=(--no-index --find-links "${WHEELHOUSE}"); fi
"${venv}/bin/pip" install "${pip_args[@]}" "${spec}" >&2
site=$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

part=${dest}.part
rm -rf "${part}" && mkdir -p "${part}/cuda"
for f in "${site}"/onnxruntime/capi/libonnxruntime*.so*; do ln -s "${f}" "${part}/"; done
[[ -e ${part}/libonnxruntime.so.${version} ]] || { echo "fetch-ort-gpu: the wheel has no libonnxruntime.so.${version}" >&2; exit 1; }
if [[ -d ${site}/nvidia ]]; then
  find "${site}/nvidia" -path '*/lib/*.so*' -type f -exec ln -sf {} "${part}/cuda/" \;
fi
rm -rf "${dest}" && mv "${part}" "${dest}"
echo "${lib}"
