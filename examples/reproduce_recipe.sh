#!/usr/bin/env bash
# Reproduce a named recipe's row of docs/results.md end to end: train, then score the fixed,
# seeded, stratified 2,000-review test sample that the table reports.
#
#   examples/reproduce_recipe.sh cpu-10min runs/E1              # about 10 + 8 minutes on 2 cores
#   examples/reproduce_recipe.sh cpu-10min runs/E2 --max-examples 5400   # more rows, same recipe
#
# IMDB comes from $IMDB (default ../shared/data/imdb, else tensorflow-datasets); options after
# the output folder go to kgemma-train and override the recipe's.
set -euo pipefail
recipe=${1:?usage: reproduce_recipe.sh RECIPE OUTPUT [kgemma-train options]}
output=${2:?usage: reproduce_recipe.sh RECIPE OUTPUT [kgemma-train options]}
shift 2
data=${IMDB:-$([ -f ../shared/data/imdb/train.jsonl.gz ] && echo ../shared/data/imdb || echo tfds)}
kgemma-train --recipe "$recipe" --data "$data" --no-save-keras --output "$output" "$@"
kgemma-eval --adapter "$output/adapter.npz" --data "$data" --max-examples 2000 --output "$output/eval"
python "$(dirname "$0")/plot_time_to_accuracy.py" "$output" --output "$output/time_to_accuracy.png"
