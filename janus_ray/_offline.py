"""Force every Hugging Face library into offline mode before it is imported.

janus_ray reads weights only from a local weights root; nothing may reach a hub at run time.
The variables must be set before ``transformers`` / ``huggingface_hub`` are imported, because
those libraries read them once at import time.
"""

import os

OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # transformers 5 draws a "Loading weights" bar per model per actor: ~20 lines of noise in every
    # eval's output (Ray forwards each actor's stderr); progress is janus-ray's own progress line
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}


def force_offline() -> None:
    """Set the offline variables in this process (and thus in any child it spawns)."""
    for key, value in OFFLINE_ENV.items():
        os.environ[key] = value


force_offline()
