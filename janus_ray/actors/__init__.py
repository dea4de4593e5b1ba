"""Ray Data callable classes (with stream.py, the only code that runs under Ray).

They are plain classes with ``__init__`` (load once) and ``__call__(batch) -> batch``; ``ray`` itself
is only needed by ``stream.py``, which hands them to ``Dataset.map_batches``.
"""

from janus_ray.actors.decode_stage import DecodeStage, pixel_column, stage_error_column
from janus_ray.actors.metric_actor import MetricActor, output_column

__all__ = ["DecodeStage", "MetricActor", "output_column", "pixel_column", "stage_error_column"]
