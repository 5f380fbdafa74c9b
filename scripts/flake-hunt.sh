#!/usr/bin/env bash
# Hunts flaky tests the way CI meets them: a shared 2-core machine with one core kept busy.
# Not part of CI (it takes an hour or more). Runs `cargo test --workspace` N times and the
# SNI ingress tests M times while a bounded CPU hog runs, then prints every run's time and
# result. Logs: .work/flake-hunt/.
#
#   scripts/flake-hunt.sh [--workspace N] [--sni M] [--no-hog]
#
# Needs what scripts/test.sh needs; builds the static binaries and the control plane first.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh

workspace_runs=5
sni_runs=50
hog=true
while [ $# -gt 0 ]; do
    case $1 in
        --workspace) workspace_runs=$2; shift 2 ;;
        --sni) sni_runs=$2; shift 2 ;;
        --no-hog) hog=false; shift ;;
        *) echo "usage: $0 [--workspace N] [--sni M] [--no-hog]" >&2; exit 2 ;;
    esac
done

logs=$root/.work/flake-hunt
mkdir -p "$logs"
scripts/setup.sh --tests
static_build -q
(cd tests/controlplane && ./build.sh)
cargo test -q --workspace --no-run

hog_pid=
stop_hog() { [ -n "$hog_pid" ] && kill "$hog_pid" 2>/dev/null; hog_pid=; }
trap stop_hog EXIT INT TERM HUP
if $hog; then
    # One core busy for at most 4 hours, whatever happens to this script.
    timeout 4h sh -c 'while :; do :; done' &
    hog_pid=$!
fi

declare -a results=()
failed=0
one() {
    local name=$1
    shift
    local log=$logs/$name.log t0 rc dt summary
    t0=$(date +%s)
    set +e
    "$@" >"$log" 2>&1
    rc=$?
    set -e
    dt=$(($(date +%s) - t0))
    # Sum cargo's "test result:" lines: passed and failed over every test binary.
    summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed/) p += $(i-1); if ($(i) ~ /^failed/) f += $(i-1) } }
        END { printf "%d passed, %d failed", p, f }' "$log")
    results+=("$(printf '%-16s %5ss  exit %3s  %s' "$name" "$dt" "$rc" "$summary")")
    echo "${results[-1]}"
    if [ "$rc" -ne 0 ]; then
        failed=$((failed + 1))
        grep -E '^test .* FAILED$|panicked at' "$log" | head -20 || true
    fi
}

for i in $(seq 1 "$workspace_runs"); do
    one "workspace-$i" cargo test --workspace --no-fail-fast
done
for i in $(seq 1 "$sni_runs"); do
    one "sni-$i" cargo test -p session-ssh-tests --test sni_ingress
done
stop_hog

echo
echo "=== flake hunt (hog: $hog, $(nproc) cores)"
printf '%s\n' "${results[@]}"
echo "runs with a failure: $failed"
[ "$failed" -eq 0 ]
