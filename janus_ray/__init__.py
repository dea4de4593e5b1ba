"""janus_ray: score generated images with six text-to-image metrics, faithfully, offline, on Ray."""

from janus_ray import _offline  # noqa: F401  (must run before transformers is imported)
from janus_ray.metrics import list_scorers, load_scorer

__version__ = "0.1.0"

__all__ = ["__version__", "list_scorers", "load_scorer"]
