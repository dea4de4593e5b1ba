#!/usr/bin/env python
"""Benchmark janus_ray's Ray pipeline against the earlier tool's loop, on one machine, same inputs.

    python scripts/bench.py --models tiny --folders 6 --prompts 200            # CPU, tiny models
    python scripts/bench.py --models real-size --device cuda --out bench.json  # GPU box, real sizes

See ``python scripts/bench.py --help`` and docs/bench.md. The code lives in ``benchmarks``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

from benchmarks.runner import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
