#!/usr/bin/env bash
# Trains the zstd dictionary that packs published frames at rest (src/store/frames.dict).
#
# The samples are notification frames of simulated traffic: several centers (seeds, sizes, call mixes),
# folded with `callgate fold --updates` and given the envelope the gateway publishes them in. Rerun it
# when the call resource's members change; the dictionary only changes how well frames pack, never what
# is delivered (a frame packed with one dictionary is unpacked with the same one, within one run).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin callgate
bin=target/release/callgate
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
n=0
for spec in "1 50 4" "2 500 8" "3 2000 20" "4 120 6"; do
    read -r seed agents queues <<<"$spec"
    "$bin" sim --seed "$seed" --agents "$agents" --queues "$queues" --calls-per-second 5 \
        --mix hold=0.3,conference=0.1,abandon-queue=0.05 --events 40000 |
        "$bin" fold --updates |
        sed -E 's/^\{"seq":([0-9]+),/{"type":"notification","epoch":"18ecbdc26987cb1d-7450","seq":\1,/' |
        shuf -n 6000 --random-source=<(yes "$seed") >"$work/frames"
    while IFS= read -r line; do
        printf '%s' "$line" >"$work/$n.json"
        n=$((n + 1))
    done <"$work/frames"
done
rm "$work/frames"
zstd -q --train "$work"/*.json --maxdict=16384 -o src/store/frames.dict
echo "trained on $n frames: src/store/frames.dict"
