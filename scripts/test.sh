#!/usr/bin/env bash
# The project's test command: quality gates, then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all --check
# Twice: the default build (and its `cfg(not(feature = "distributed"))` lines), then with
# the `distributed` feature (vsum-distributed, `vsum worker`, tests/distributed.rs).
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features vsum/distributed -- -D warnings
cargo test --workspace --locked
# Real NATS and S3 servers on loopback (installed by scripts/setup.sh).
cargo test --locked -p vsum --features distributed --test distributed
