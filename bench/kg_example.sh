#!/usr/bin/env bash
# The knowledge-graph worked example (docs/knowledge_graphs.md): graph fusion with the graphs (their
# facts as nodes too, as configs/kg_shapes.yaml), with the graphs' entities and edges alone (no fact
# nodes) and without the graphs, at the same step budget; then the first model evaluated with each test
# image given another test image's graph (the control) and with no graph. Writes RUNS/results.md.
#
#   bash bench/kg_example.sh [DATA] [RUNS] [SEED]     defaults: data/kg_shapes runs/kg_shapes 0
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data/kg_shapes}
RUNS=${2:-runs/kg_shapes}
SEED=${3:-0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} MKL_NUM_THREADS=${MKL_NUM_THREADS:-1}
[ -f "$DATA/kg/test_swapped.jsonl" ] || nice python -m bench.kg_example "$DATA"
common=(--set data.root="$DATA" --set seed="$SEED")
nice vlfuse train configs/kg_shapes.yaml "${common[@]}" --set out_dir="$RUNS/with_kg"
nice vlfuse train configs/kg_shapes.yaml "${common[@]}" --set out_dir="$RUNS/entities_kg" \
  --set data.knowledge_facts=false
nice vlfuse train configs/kg_shapes.yaml "${common[@]}" --set out_dir="$RUNS/without_kg" \
  --set data.knowledge_graph=null
nice vlfuse eval "$RUNS/with_kg/model" --set data.test.path=kg/test_swapped.jsonl \
  --out "$RUNS/with_kg/eval_swapped.json"
nice vlfuse eval "$RUNS/with_kg/model" --set data.knowledge_graph=null --out "$RUNS/with_kg/eval_no_graph.json"
python -m bench.kg_example "$RUNS" --table | tee "$RUNS/results.md"
