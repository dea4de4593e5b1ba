#!/usr/bin/env bash
# Submit `janus-ray eval` to a running Ray cluster as a Ray job.
#
#   RAY_ADDRESS=http://HEAD:8265 scripts/submit_job.sh /mnt/data/Janus_* \
#       --weights-root /mnt/weights --prompt-json /mnt/data/prompt.json --resource vqascore=vqa_gpu:1
#
# Paths are paths ON THE CLUSTER (shared mount). Inside the job RAY_ADDRESS is set, so `eval` joins
# the cluster (no --ray-address needed) and plans for its nodes plus the node types its autoscaler
# can add. The job server wants the cluster's token: the same ~/.ray/auth_token that cluster.yaml
# mounts on every node (or RAY_AUTH_TOKEN), with RAY_AUTH_MODE=token.
set -euo pipefail
: "${RAY_ADDRESS:?set RAY_ADDRESS to the cluster dashboard, e.g. http://127.0.0.1:8265}"
export RAY_AUTH_MODE="${RAY_AUTH_MODE:-token}"
cd "$(dirname "$0")/.."
exec ray job submit --address "$RAY_ADDRESS" --working-dir . -- python -m janus_ray eval "$@"
