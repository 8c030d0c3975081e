#!/usr/bin/env bash
# README command 1: bring up a local Ray cluster and run the whole pipeline (generate -> train ->
# evaluate -> deploy) through `ray job submit` on the embedded CPU default profile. Leaves the cluster
# and the embedding endpoint running. Extra arguments are passed on as --set overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
PROFILE=${PROFILE:-configs/cpu-tiny.yaml}
SETS=()
for kv in "$@"; do SETS+=(--set "$kv"); done
# Validate config and inputs here, before anything is submitted or computed.
.venv/bin/python jobs/pipeline.py --config "$PROFILE" "${SETS[@]}" --check
scripts/cluster.sh start
ID="pipeline-$(date +%Y%m%d-%H%M%S)"
echo "submitting $ID (follow it in the dashboard: http://127.0.0.1:8265/#/jobs)"
start=$(date +%s)
scripts/cluster.sh submit --submission-id "$ID" -- python jobs/pipeline.py --config "$PROFILE" "${SETS[@]}"
echo "pipeline finished in $(( $(date +%s) - start )) s; summary: ${SUMMARY:-outputs/pipeline/summary.json}"
