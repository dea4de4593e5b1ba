#!/usr/bin/env bash
# The GPU kit: bring the pure-Python wheels the GPU machine lacks, install them there, run gpu_check.
#
#   scripts/gpu_kit.sh fetch             # here (needs pip access): wheels into .gpu_wheels/ (ignored, ~2 MB)
#   scripts/gpu_kit.sh install           # on the GPU machine (no registry): pip install --no-deps --no-index
#   scripts/gpu_kit.sh run [ARGS...]     # install, then python scripts/gpu_check.py ARGS (default --out gpu_check_out)
#   scripts/gpu_kit.sh fetch-ray         # here: Ray + its deps for Python 3.12, tarred and split into
#                                        # .gpu_ray_1/ .gpu_ray_2/ ... (38 MiB each: one per command)
#   scripts/gpu_kit.sh install-ray       # there, once every part has arrived: join, check, pip install
#
# Ray (part c of gpu_check) does not fit one command's 64 MiB with the checkout (~21 MB): carry
# .gpu_ray_1 in a first command (`true` is enough: the folder stays on the kept machine), the next
# parts in the following ones, back to back, and the last part with the run itself:
# `scripts/gpu_kit.sh run --out "$OUT"` installs Ray first when .gpu_ray_1/PARTS is there.
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
  fetch-ray)
    version=${RAY_VERSION:-$("$PYTHON" -c 'import ray; print(ray.__version__)')}
    tmp=$(mktemp -d)
    "$PYTHON" -m pip download --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
      "ray==$version" -d "$tmp/wheels"
    rm -rf .gpu_ray_*
    tar -C "$tmp" -cf "$tmp/ray.tar" wheels
    (cd "$tmp" && split -b "${PART_MB:-38}M" -d ray.tar ray.tar.part-)
    n=0
    for part in "$tmp"/ray.tar.part-*; do
      n=$((n + 1)); mkdir -p ".gpu_ray_$n"; mv "$part" ".gpu_ray_$n/"
    done
    sha256sum "$tmp/ray.tar" | cut -d' ' -f1 > .gpu_ray_1/SHA256
    echo "$n" > .gpu_ray_1/PARTS
    rm -rf "$tmp"
    du -sh .gpu_ray_*
    ;;
  install-ray)
    [ -f .gpu_ray_1/PARTS ] || { echo "gpu_kit: no .gpu_ray_1/PARTS (run fetch-ray here, carry the parts)" >&2; exit 1; }
    n=$(cat .gpu_ray_1/PARTS)
    tmp=$(mktemp -d)
    for k in $(seq 1 "$n"); do
      ls .gpu_ray_"$k"/ray.tar.part-* >/dev/null 2>&1 || { echo "gpu_kit: Ray part $k of $n missing (carry .gpu_ray_$k)" >&2; exit 1; }
      cat .gpu_ray_"$k"/ray.tar.part-* >> "$tmp/ray.tar"
    done
    [ "$(sha256sum "$tmp/ray.tar" | cut -d' ' -f1)" = "$(cat .gpu_ray_1/SHA256)" ] || { echo "gpu_kit: Ray parts corrupt (sha256)" >&2; exit 1; }
    tar -C "$tmp" -xf "$tmp/ray.tar"
    # --find-links + --no-index: what the machine already has stays; only the missing deps are added.
    "$PYTHON" -m pip install --quiet --no-index --find-links "$tmp/wheels" ray
    "$PYTHON" -c "import ray; print('gpu_kit: ray', ray.__version__)"
    ;;
  run)
    shift
    "$0" install || echo "gpu_kit: continuing without open_clip (HPSv2 will be skipped)" >&2
    if [ -f .gpu_ray_1/PARTS ]; then
      "$0" install-ray || echo "gpu_kit: continuing without Ray (pipeline part skipped)" >&2
    fi
    if [ "$#" -eq 0 ]; then set -- --out gpu_check_out; fi
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" exec "$PYTHON" scripts/gpu_check.py "$@"
    ;;
  *)
    sed -n '2,21p' "$0"
    exit 2
    ;;
esac
