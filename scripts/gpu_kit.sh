#!/usr/bin/env bash
# The GPU kit: bring the pure-Python wheels the GPU machine lacks, install them there, run gpu_check.
#
#   scripts/gpu_kit.sh fetch             # here (needs pip access): wheels into .gpu_wheels/ (ignored, ~2 MB)
#   scripts/gpu_kit.sh install           # on the GPU machine (no registry): pip install --no-deps --no-index
#   scripts/gpu_kit.sh run [ARGS...]     # install, then python scripts/gpu_check.py ARGS (default --out gpu_check_out)
#
# .gpu_wheels/ is git-ignored: pass it in the device tool's `carry` list so it travels with the
# checkout. open_clip (HPSv2) needs ftfy, which needs wcwidth; everything else open_clip imports
# (torch, torchvision, timm, regex, huggingface_hub, safetensors, tqdm) is on the GPU machine.
# Without the wheels gpu_check still runs: HPSv2 is then reported as skipped (No module named 'open_clip').
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.gpu_wheels
PYTHON=${PYTHON:-python}

case "${1:-}" in
  fetch)
    mkdir -p "$WHEELS"
    # The versions this checkout is tested with (override: OPEN_CLIP=open_clip_torch==X ...); wheels
    # for the GPU machine's Python 3.12 (pure Python, or abi3 for wcwidth).
    "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
      "${OPEN_CLIP:-open_clip_torch==3.3.0}" "${FTFY:-ftfy==6.3.1}" "${WCWIDTH:-wcwidth==0.9.4}" -d "$WHEELS"
    ls -l "$WHEELS"
    ;;
  install)
    if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
      echo "gpu_kit: no wheels in $WHEELS (run 'scripts/gpu_kit.sh fetch' where pip works, and carry $WHEELS)" >&2
      exit 1
    fi
    "$PYTHON" -m pip install --no-deps --no-index --quiet "$WHEELS"/*.whl
    "$PYTHON" -c "import open_clip, ftfy; print('gpu_kit: open_clip', open_clip.__version__, 'ftfy', ftfy.__version__)"
    ;;
  run)
    shift
    "$0" install || echo "gpu_kit: continuing without open_clip (HPSv2 will be skipped)" >&2
    if [ "$#" -eq 0 ]; then set -- --out gpu_check_out; fi
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" scripts/gpu_check.py "$@"
    ;;
  *)
    sed -n '2,12p' "$0"
    exit 2
    ;;
esac
