#!/usr/bin/env bash
# Submit `janus-ray eval` to a running Ray cluster as a Ray job.
#
#   RAY_ADDRESS=http://HEAD:8265 scripts/submit_job.sh /mnt/data/Janus_* \
#       --weights-root /mnt/weights --prompt-json /mnt/data/prompt.json --resource vqascore=vqa_gpu:1
#
# Paths are paths ON THE CLUSTER (shared mount). Ray >= 2.60 protects the job server with a token:
# run `ray get-auth-token` on the head (or copy ~/.ray/auth_token) and export RAY_AUTH_MODE=token.
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://127.0.0.1:8265}"
cd "$(dirname "$0")/.."
exec ray job submit --address "$RAY_ADDRESS" --working-dir . -- python -m janus_ray eval "$@"
