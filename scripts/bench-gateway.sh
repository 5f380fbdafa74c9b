#!/usr/bin/env bash
# Benchmark the SSH gateway against a direct connection to the same session (issue 13):
# latency, throughput (ssh, sftp, forwarded TCP) and the gateway's memory per idle proxied
# connection. Not a test: it prints numbers and ratios (tests/src/bin/bench-gateway.rs).
#
#   scripts/bench-gateway.sh      # after scripts/setup.sh --tests (control plane, venv)
#
# Env: BENCH_MIB (1024), BENCH_SFTP_MIB (256), BENCH_LATENCY_N (30), BENCH_IDLE (1000),
# BENCH_MODES (shared,pinned: the CPU placements throughput is measured in; pinned needs
# taskset and 2 CPUs).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
source scripts/test-env.sh
scripts/russh-patch.sh
static_build -q
# Each idle connection holds a socket on both legs in this process and the gateway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec cargo run -q -p session-ssh-tests --bin bench-gateway
