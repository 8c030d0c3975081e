#!/usr/bin/env bash
# README command 1: bring up a local Ray cluster and run the main job through `ray job submit`
# on the embedded CPU default model.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/cluster.sh start
mkdir -p outputs
.venv/bin/python - <<'PY'
import gzip
with gzip.open("../shared/data/stsbenchmark/sts-test.csv.gz", "rt", encoding="utf-8") as f:
    texts = [line.split("\t")[4] for line in f][:200]
open("outputs/demo-texts.txt", "w").write("\n".join(texts) + "\n")
PY
scripts/cluster.sh submit -- python jobs/embed.py --config configs/cpu-tiny.yaml \
  --input "$PWD/outputs/demo-texts.txt" --output "$PWD/outputs/demo-embeddings"
echo "embeddings: outputs/demo-embeddings"
