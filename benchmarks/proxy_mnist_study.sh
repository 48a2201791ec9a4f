#!/usr/bin/env bash
# The second proxy study (README "Measured numbers", proxy_mnist), end to end, resumable: rerun it to finish it.
#   1. STR as published needs its threshold decay per target: the decay table on the pilot seed 100 (both arms);
#   2. per target, the grid decay whose baseline (ham=off) mean sparsity is nearest the target (no interpolation);
#   3. the study: 13 rows x {baseline, HAM} x seeds 0-4, two one-thread jobs at a time.
# Run from the repository root: bash benchmarks/proxy_mnist_study.sh
set -euo pipefail
PY=${PY:-python}
export WANDB_MODE=${WANDB_MODE:-disabled}
if [ ! -f runs/sweeps/proxy_mnist_str_decay/runs.csv ]; then  # done once (a rerun would restamp its manifest)
  $PY sweep.py --table str_decay experiment=proxy_mnist --decays 2e-3 4e-3 8e-3 16e-3 --hams off proxy_mnist \
      --seeds 100 --parallel 2 --name proxy_mnist_str_decay --report-dir results/proxy_mnist_str_decay
fi
pick() {  # the decay whose baseline runs' mean sparsity is nearest $1
  $PY - "$1" <<'PYEOF'
import csv, sys
target, by = float(sys.argv[1]), {}
for r in csv.DictReader(open("runs/sweeps/proxy_mnist_str_decay/runs.csv")):
    if r["status"] == "done" and r["col"] == "baseline":
        by.setdefault(r["row"].rsplit("=", 1)[1], []).append(float(r["sparsity"]))
print(min(by, key=lambda d: abs(sum(by[d]) / len(by[d]) - target)))
PYEOF
}
D90=$(pick 0.9)
D95=$(pick 0.95)
echo "STR threshold decay: 0.9 -> $D90, 0.95 -> $D95"
$PY sweep.py --table proxy_mnist --seeds 0 1 2 3 4 --str-decay 0.9=$D90 0.95=$D95 --parallel 2 --name proxy_mnist \
    --report-dir results/proxy_mnist
