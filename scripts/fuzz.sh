#!/usr/bin/env bash
# Fuzzes every cargo-fuzz target of fuzz/ for SECONDS each (default 60), after building them
# all once. Each target starts from the repository's corpus (fuzz/corpus/<target>, read only)
# and its regression inputs (fuzz/regressions/<target>: every crash found, replayed first);
# new inputs go to a scratch corpus under target/fuzz/, so a run never dirties the tree.
# Prints each target's executions and the total; exits non-zero on any crash, leak, timeout
# or out-of-memory, with the reproducer's path in the output.
#
#   scripts/fuzz.sh [SECONDS]           all targets
#   FUZZ_TARGETS="demux config" scripts/fuzz.sh 600
#   FUZZ_JOBS=2 scripts/fuzz.sh         two targets at a time
#   FUZZ_QUICK=1 scripts/fuzz.sh        the quick build (below), as scripts/test.sh runs it
#
# Installs what it needs when missing: the nightly toolchain (sanitizer flags), cargo-fuzz
# (crates.io), and bubblewrap: sftp_request acts on the real filesystem, so it runs with /
# read-only.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${1:-60}
read -r -a targets <<<"${FUZZ_TARGETS:-admission authorized_keys config demux login_name sftp_request}"

[ -d target/patched ] || scripts/russh-patch.sh
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
command -v bwrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
# FUZZ_QUICK=1 (scripts/test.sh): an unoptimised build without AddressSanitizer, 361 instead
# of 1,370 CPU-s cold; it runs slower and cannot see memory errors in unsafe code, which the
# default build (for long runs) can. Panics, aborts, timeouts and OOM are caught by both.
if [ "${FUZZ_QUICK:-0}" = 1 ]; then
    (cd fuzz && nice cargo +nightly fuzz build --dev --sanitizer none)
    bin=$root/fuzz/target/x86_64-unknown-linux-gnu/debug
else
    (cd fuzz && nice cargo +nightly fuzz build)
    bin=$root/fuzz/target/x86_64-unknown-linux-gnu/release
fi
scratch=$root/target/fuzz

jobs=${FUZZ_JOBS:-1}

# run_target T: fuzzes T for $secs; its summary line goes to $scratch/T.result.
run_target() {
    local t=$1 corpus=$scratch/corpus/$1 artifacts=$scratch/artifacts/$1
    mkdir -p "$corpus" "$artifacts"
    local dirs=("$corpus" "$root/fuzz/corpus/$t")
    [ -d "fuzz/regressions/$t" ] && dirs+=("$root/fuzz/regressions/$t")
    local run=("$bin/$t" -max_total_time="$secs" -print_final_stats=1 -timeout=30 -rss_limit_mb=2048
        -artifact_prefix="$artifacts/" "${dirs[@]}")
    if [ "$t" = sftp_request ]; then
        # / read-only (bwrap binds recursively), a private /tmp for the SFTP homes; only the
        # scratch corpus and the artifacts are writable.
        run=(bwrap --die-with-parent --unshare-all --new-session --ro-bind / / --dev /dev
            --proc /proc --tmpfs /tmp --bind "$corpus" "$corpus" --bind "$artifacts" "$artifacts"
            -- "${run[@]}")
    fi
    echo "=== fuzz $t (${secs}s)"
    local log=$scratch/$t.log rc=0 execs
    nice "${run[@]}" </dev/null >"$log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    if [ "$rc" -ne 0 ]; then
        tail -n 60 "$log"
        grep -h -E 'Test unit written to|artifact_prefix' "$log" || true
        echo "${execs:-0} FAILED (exit $rc, log $log)" >"$scratch/$t.result"
    else
        echo "${execs:-0} ok" >"$scratch/$t.result"
    fi
}

# FUZZ_JOBS targets at a time (each libFuzzer run is one process on one core).
for t in "${targets[@]}"; do
    rm -f "$scratch/$t.result"
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
    run_target "$t" &
done
wait

total=0
failed=()
summary=()
for t in "${targets[@]}"; do
    read -r execs verdict <"$scratch/$t.result" || { execs=0; verdict="FAILED (no result)"; }
    total=$((total + execs))
    case $verdict in ok) ;; *) failed+=("$t") ;; esac
    summary+=("$(printf '%-16s %12s executions  %s' "$t" "$execs" "$verdict")")
done
echo
echo "=== fuzz summary (${secs}s per target)"
printf '%s\n' "${summary[@]}"
printf '%-16s %12s executions\n' total "$total"
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]} (reproducers under $scratch/artifacts/<target>/)" >&2
    exit 1
fi
