"""CPU-only clusters: decode and every metric in one actor process.

Without GPUs there is nothing to overlap with, and every stage boundary costs a copy of the
batch (pixel tensors of all metrics) through the object store plus one more process importing
torch and loading its model. Fusing the stages keeps the decode-once and batching benefits and
drops that overhead; replicas of the fused actor give the parallelism.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from janus_ray.actors.decode_stage import DecodeStage
from janus_ray.actors.metric_actor import MetricActor


class FusedStage:
    """Ray Data UDF: ``DecodeStage`` followed by one ``MetricActor`` per metric, in-process (those
    stages arm the process's quick exit: ``janus_ray.quick_exit.QuickExitWhenReleased``)."""

    def __init__(self, decode: dict[str, Any], metrics: list[dict[str, Any]], torch_threads: int | None = None,
                 keep: list[str] | None = None, decode_class: type = DecodeStage, metric_class: type = MetricActor):
        """``keep``: the columns to return (the result columns; None: all). Projecting here, as the
        stage's last step, spares Ray Data a projection task per block and converting the other
        columns (paths, prompts, emptied pixel cells, shapes) into its output blocks.
        ``decode_class`` / ``metric_class``: the stage classes it builds (``stream.ActorClasses``'
        ``decode`` / ``metric``, the same classes the per-metric layout runs in its pools)."""
        import torch

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.stages = [decode_class(**decode)] + [metric_class(**kwargs) for kwargs in metrics]
        self.keep = keep

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for stage in self.stages:
            batch = stage(batch)
        if self.keep is not None:
            # a missing column is left out here; the driver's check_result_batch names it
            batch = {column: batch[column] for column in self.keep if column in batch}
        return batch
