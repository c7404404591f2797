#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what the tests need, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustfmt cargo-clippy; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Benches are compiled (and linted) by clippy above; running them is `cargo bench`, not a test.
cargo test --lib --bins --tests --examples --locked
cargo test --doc --locked
