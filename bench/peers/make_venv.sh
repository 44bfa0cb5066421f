#!/usr/bin/env bash
# Build the virtual environment of one peer quantizer the benchmark compares against: bench/.venv-NAME.
# Peers live outside compress's install: their pins (torch, onnx, onnxruntime) may clash with constraints.txt.
# The benchmark drives them through bench/peers/NAME_int8.py (fp32 .onnx + calibration .npz -> int8 .onnx).
#
# Example:
#   bench/peers/make_venv.sh nncf     # NNCF on ONNX input: nncf, onnx, onnxruntime (no torch)
#   bench/peers/make_venv.sh olive    # Olive: olive-ai requires torch, so the CPU wheel torch==2.13.* goes first
#   bench/peers/make_venv.sh llama    # llama-cpp-python (bench/lm_peers.py): builds llama.cpp from the sdist (long)
set -euo pipefail
name=${1:?usage: bench/peers/make_venv.sh nncf|olive|llama}
case "$name" in
  nncf) packages=(nncf onnx onnxruntime) ;;
  olive) packages=("torch==2.13.*" olive-ai onnx onnxruntime requests) ;;  # olive 0.13 imports requests undeclared
  llama) packages=(llama-cpp-python numpy)  # the CPU library only: no tests, examples, multimodal or curl
         export CMAKE_ARGS="-DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DGGML_NATIVE=ON -DLLAMA_CURL=OFF" ;;
  *) echo "unknown peer '$name': use nncf, olive or llama" >&2; exit 2 ;;
esac
venv="$(cd "$(dirname "$0")/.." && pwd)/.venv-$name"
python3.11 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "${packages[@]}"
"$venv/bin/python" -m pip freeze > "$venv/freeze.txt"
echo "built $venv ($(grep -iE "^($name|olive-ai|llama_cpp_python)==" "$venv/freeze.txt" | head -1))"
