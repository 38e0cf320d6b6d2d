#!/usr/bin/env bash
# The whole pipeline from nothing to shippable weights, sized to 2 hours of wall time on a 2-core CPU:
#   1. the autoencoder, 1,100 steps on both cores (23 min in the recorded run);
#   2. side by side, one core each (91 min): the decoder fine-tune (encoder frozen, so the latents do
#      not move) and the diffuser, 9,000 steps on the frozen encoder's latents, sized to end close to it.
# Both models train on their commands' default recipes (RECIPES) but for the steps; the diffuser's (batch 32,
# predicting v) learned fastest in benchmarks/learning_speed.py.
# Usage: scripts/train_from_scratch.sh [OUT [OPTION...]]
#   OUT defaults to runs/scratch; OUT/pipeline.log gets the wall times, OUT/weights the pipeline folder.
#   Each OPTION is appended to every training command, so it wins over the script's own, e.g. a smoke test:
#   RIID_DATA=fixture scripts/train_from_scratch.sh /tmp/smoke --preset tiny --limit 32 --steps 2 --batch-size 4 --warmup 1
#   RIID_DATA is the MNIST root (default data; 'fixture' is the 1,000 test digits shipped in the package).
# After the budget, riid eval scores the weights at the sizes the 2-hour targets name (OUT/eval, with 32 px
# again at seeds 1 and 2 in OUT/eval-seed1 and -seed2); RIID_EVAL_N digits per class (default 20, 0 skips it).
set -euo pipefail
out=${1:-runs/scratch}
shift $(( $# > 0 ? 1 : 0 ))
data=${RIID_DATA:-data}
eval_n=${RIID_EVAL_N:-20}
mkdir -p "$out"
log="$out/pipeline.log"
start=$(date +%s)
stamp() { echo "$(date -u +%FT%TZ) +$(( ($(date +%s) - start) / 60 )) min: $*" | tee -a "$log"; }

stamp "start"
[ "$data" = fixture ] || riid data --root "$data"
riid train-autoencoder --out "$out/ae" --steps 1100 --preview-every 300 --threads 2 --data-root "$data" "$@"
stamp "autoencoder done"
riid train-autoencoder --out "$out/ae_ft" --init "$out/ae/autoencoder" --decoder-only --loss l1 --steps 3400 \
    --batch-size 64 --lr 5e-4 --warmup 100 --preview-every 500 --threads 1 --data-root "$data" "$@" \
    > "$out/ae_ft.log" 2>&1 &
decoder=$!
riid train-diffuser --out "$out/r2id" --autoencoder "$out/ae/autoencoder" --steps 9000 --preview-every 2000 \
    --threads 1 --data-root "$data" "$@" > "$out/r2id.log" 2>&1 &
diffuser=$!
wait $decoder || { echo "decoder fine-tune failed, see $out/ae_ft.log" >&2; kill $diffuser; exit 1; }
stamp "decoder fine-tune done"
wait $diffuser || { echo "diffuser failed, see $out/r2id.log" >&2; exit 1; }
stamp "diffuser done"

mkdir -p "$out/weights"
cp -r "$out/ae_ft/autoencoder" "$out/r2id/diffuser" "$out/r2id/conditioner" "$out/weights/"
# the guidance these 2-hour weights need (measured, model card): CFG 3 meets every accuracy target where
# the library's default, tuned for the longer-trained shipped diffuser, leaves them 1-4 points short
echo '{"cfg": 3.0}' > "$out/weights/sampling.json"
stamp "weights in $out/weights (riid eval --checkpoint $out/weights)"

[ "$eval_n" -gt 0 ] || exit 0
score() { riid eval --checkpoint "$out/weights" --n "$eval_n" --data-root "$data" "$@"; }
score --sizes 16,24,32,48,64,24x40,40x24,32x48,48x32 --out "$out/eval"
for seed in 1 2; do score --sizes 32 --seed $seed --out "$out/eval-seed$seed"; done
stamp "evaluated: $out/eval/report.md"
