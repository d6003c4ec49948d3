#!/usr/bin/env bash
# The run that made docs/toy/quality.md: 21 rows of lib_sloth.toy.table at n = 80, in two shards
# (one torch thread each), then one merge that writes docs/toy/quality.{md,json}.
#   bash tools/quality_table.sh [N]        (N = 500 is the table's default; 80 fitted this session)
set -euo pipefail
cd "$(dirname "$0")/.."
export SLOTH_TORCH_THREADS=1 OMP_NUM_THREADS=1
N=${1:-80}
ONLY=("plain" "level-0 attn1 -> to_out(to_v(x))" "CFG far too high (30)" "fewer steps (3)"
 "preset slothful" "preset soft" "preset detail" "preset speed" "preset agentsd" "preset background fix"
 "slothful strength 4" "slothful strength 8" "slothful strength 16" "slothful strength 32"
 "tile 16, global 0.5" "attention 16 -> 24"
 "agentsd early, r 0.5" "agentsd late (ToMe), r 0.5" "tomesd 0.5" "SAG scale 1.0" "SAG scale 2.0")
for s in 0 1; do
  python -m lib_sloth.toy.table --n "$N" --shard $s/2 --cache quality-cache-$s.pt --markdown /dev/null \
    --json /dev/null --only "${ONLY[@]}" > quality-shard-$s.log 2>&1 &
done
wait
python -m lib_sloth.toy.table --n "$N" --only plain --cache quality-cache-0.pt --merge quality-cache-1.pt
