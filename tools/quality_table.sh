#!/usr/bin/env bash
# The run that makes docs/toy/quality.{md,json}: every row of lib_sloth.toy.table at n images per
# row, in two shards (one torch thread each, on the two cores of the reference machine), then one
# merge that writes the table. Images and scores are cached per row (quality-cache-*.pt), so an
# interrupted run resumes, and `--rescore` re-scores the cached images without sampling.
#   bash tools/quality_table.sh [N]        (default 500)
set -euo pipefail
cd "$(dirname "$0")/.."
export SLOTH_TORCH_THREADS=1 OMP_NUM_THREADS=1
N=${1:-500}
PY=${PYTHON:-python}
for s in 0 1; do
  "$PY" -m lib_sloth.toy.table --n "$N" --shard $s/2 --cache quality-cache-$s.pt --markdown /dev/null \
    --json /dev/null > quality-shard-$s.log 2>&1 &
done
wait
"$PY" -m lib_sloth.toy.table --n "$N" --only plain --cache quality-cache-0.pt --merge quality-cache-1.pt \
  --made-by "bash tools/quality_table.sh $N"
