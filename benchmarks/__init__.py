"""Benchmark support for ``scripts/bench.py``.

* :mod:`benchmarks.inputs`: the synthetic Janus-layout input tree (N folders x M prompts).
* :mod:`benchmarks.real_size`: a weights root with every architecture at its real size and
  random weights, in the on-disk formats the scorers read (no download).
* :mod:`benchmarks.phases`: the timed phases, each run in a fresh child process (the
  pipeline, the one-image-at-a-time baseline, the pure model work).
* :mod:`benchmarks.procmem`: peak memory of a process tree, sampled.
* :mod:`benchmarks.runner`: the command line, the orchestration, the table and the JSON.
"""
