#!/usr/bin/env bash
# Mutation testing of the pure modules with cargo-mutants (https://mutants.rs): every small change a
# reviewer could plant (an operator flipped, a condition negated, a function's body replaced) must make a
# test fail. Not part of CI: a full run takes hours on two cores. docs/testing.md records the last score
# and argues every surviving mutant.
#
#   scripts/mutants.sh [reduce|event|enrich|core ...]     (default: all four)
#
# `core` is the serving core: src/stream, src/store, src/subscriptions, src/delivery (the fanout of
# docs/testing.md's earlier runs).
#
# Each group runs the cheap test targets that guard it (no binary started), in a copy of the tree that
# cargo-mutants makes; results land in target/mutants/<group>/mutants.out/ (caught.txt, missed.txt, ...).
# PROPTEST_CASES (default 256 here) sets the cases of every property test. MUTANTS_ARGS adds options:
# `MUTANTS_ARGS=--in-place` in a clean clone reuses its build instead of building a copy per group.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v cargo-mutants >/dev/null || cargo install --locked cargo-mutants@27.1.0

groups=("$@")
((${#groups[@]})) || groups=(reduce event enrich core)

for group in "${groups[@]}"; do
    case "$group" in
        reduce) tests=(--lib --test fixtures --test reducer_model --test reducer_props) ;;
        event) tests=(--lib --test fixtures --test reducer_model --test reducer_props --test fold_cli) ;;
        enrich) tests=(--lib --test enrich_reference --test fixtures) ;;
        # The core's unit tests drive it through its public API; `--test serve` (80 s a run) is for the
        # survivors, by hand.
        core) tests=(--lib) ;;
        *) echo "unknown group: $group (reduce, event, enrich, core)" >&2; exit 2 ;;
    esac
    files=(-f "src/$group/**")
    if [[ $group == core ]]; then
        files=(-f "src/stream/**" -f "src/store/**" -f "src/subscriptions/**" -f "src/delivery/**")
    fi
    mkdir -p "target/mutants/$group"
    # Without debug info the per-mutant rebuild and link take half the time. Exit status 2 (mutants
    # missed) and 3 (timeouts) are results; anything else is a failure of the run itself.
    status=0
    CARGO_PROFILE_DEV_DEBUG=0 CARGO_PROFILE_TEST_DEBUG=0 PROPTEST_CASES="${PROPTEST_CASES:-256}" \
        cargo mutants --no-shuffle ${MUTANTS_ARGS:-} "${files[@]}" -o "target/mutants/$group" \
        -- "${tests[@]}" || status=$?
    if ((status != 0 && status != 2 && status != 3)); then
        echo "cargo mutants failed for $group (exit $status)" >&2
        exit "$status"
    fi
    out="target/mutants/$group/mutants.out"
    echo "== $group: $(wc -l <"$out/caught.txt") caught, $(wc -l <"$out/missed.txt") missed," \
        "$(wc -l <"$out/timeout.txt") timeouts, $(wc -l <"$out/unviable.txt") unviable"
done
