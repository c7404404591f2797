#!/usr/bin/env bash
# The whole test suite, as CI runs it (.ci/run calls this). Installs what the tests need, idempotently.
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in cargo rustfmt cargo-clippy; do
    command -v "$tool" >/dev/null || { echo "missing required tool: $tool" >&2; exit 1; }
done

# Debian packages the tests read or run (tests/enrich_reference.rs reads iso-codes' ISO 3166 table;
# tests/jetstream.rs runs nats-server 2.9 with JetStream; tests/postgres_sink.rs runs a PostgreSQL server;
# tests/cometd_client.rs runs the official CometD client in Node.js, which the machine may already have
# from elsewhere: only a missing `node` or `npm` command asks for Debian's; tests/web.rs drives Debian's
# chromium through chromium-driver (WebDriver): a missing browser fails that test, it never skips;
# tests/containers.rs builds and runs the image and the compose stack with podman (runc: crun fails here;
# catatonit for compose's `init: true`), makes its base images with mmdebstrap, and resolves compose
# service names with netavark's aardvark-dns, or dnsname under CNI; netavark sets up the build's and the
# stack's networks with the `iptables` command, which Debian's netavark does not depend on: a machine
# without it fails every RUN step with "netavark: No such file or directory").
missing=()
for package in iso-codes nats-server postgresql chromium chromium-driver podman runc catatonit mmdebstrap \
    podman-compose netavark aardvark-dns iptables golang-github-containernetworking-plugin-dnsname; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    apt-get update -qq && apt-get install -y -qq "${missing[@]}"
fi

# tests/duckdb_check.rs runs docs/analytics/duckdb_check.py, which needs DuckDB's Python package.
python3 -c 'import duckdb' 2>/dev/null || python3 -m pip install --quiet --root-user-action=ignore duckdb==1.5.6

# The Node test tools, exactly as pinned in package-lock.json.
(cd tests/cometd-client && npm ci --no-audit --no-fund --loglevel=error)

cargo fmt --all -- --check
cargo clippy --all-targets --locked -- -D warnings
# Benches are compiled (and linted) by clippy above; running them is `cargo bench`, not a test.
cargo test --lib --bins --tests --examples --locked
cargo test --doc --locked
