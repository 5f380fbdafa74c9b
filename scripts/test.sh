#!/usr/bin/env bash
# Installs what the tests need and runs them all: format, lints, static builds,
# unit and end-to-end tests against real peers (OpenSSH, a real kube-apiserver),
# manifests validation, images, and the demo. Prints the time of every stage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

t_all=$(date +%s)
declare -a timings=()
stage() {
    local name=$1
    shift
    echo
    echo "=== $name"
    local t0
    t0=$(date +%s)
    # (returns the command's status: in a background job, where set -e does not act, a
    # failed stage stops a `stage A && stage B` chain)
    "$@" || return
    local dt=$(($(date +%s) - t0))
    timings+=("$(printf '%-28s %5ss' "$name" "$dt")")
    echo "=== $name: ${dt}s"
}

# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh

stage "setup (apt, musl, venv)" scripts/setup.sh --tests

# Background jobs: each logs to its own file and ends with its wall and CPU time, which the
# stage that waits for it prints and adds to the stage table.
declare -a bg_pids=()
# in_bg VAR LOG CMD...: runs CMD in the background, its pid in VAR (not a $(...) subshell:
# the job must be this shell's child for `wait`).
in_bg() {
    local var=$1 log=$2
    shift 2
    (
        t0=$(date +%s)
        rc=0
        "$@" || rc=$?
        # (the CPU of the waited-for children: fields 16-17 of the subshell's stat, in
        # clock ticks; bash's `times` reports 0 for them in a subshell)
        read -r -a st </proc/"$BASHPID"/stat
        hz=$(getconf CLK_TCK)
        echo "background job: $(($(date +%s) - t0)) s wall, $((st[15] / hz)) s user + $((st[16] / hz)) s sys CPU, exit $rc"
        exit "$rc"
    ) >"$log" 2>&1 &
    bg_pids+=($!)
    printf -v "$var" %s $!
}
# wait_bg PID LOG WHAT [LINES]: the job's last LINES lines of log (40; `all` for all of it),
# its own stage lines (`=== NAME: Ns`) and its time into the table.
wait_bg() {
    local pid=$1 log=$2 what=$3 lines=${4:-40} rc=0
    wait "$pid" || rc=$?
    # (a failed job shows more of its log)
    [ "$rc" = 0 ] || [ "$lines" = all ] || lines=80
    if [ "$lines" = all ]; then cat "$log"; else tail -n "$lines" "$log"; fi
    if [ "$rc" != 0 ]; then
        echo "$what failed (log $log)"
        return 1
    fi
    local line
    while IFS= read -r line; do
        timings+=("$(printf '  %-26s %5ss' "${line%: *}" "${line##*: }")")
    done < <(sed -n 's/^=== \(.*: [0-9]*\)s$/\1/p' "$log")
    timings+=("$(printf '  %-26s %s' "$what" "$(tail -n 1 "$log")")")
}
# A stage that fails ends the run: the background jobs end with it, compilers included.
kill_tree() {
    local p
    for p in $(pgrep -P "$1" 2>/dev/null); do kill_tree "$p"; done
    kill "$1" 2>/dev/null || true
}
on_exit() {
    local p node_kids=''
    [ -z "${node_pid:-}" ] || ! kill -0 "$node_pid" 2>/dev/null || node_kids=$(pgrep -P "$node_pid" || true)
    for p in "${bg_pids[@]}"; do kill_tree "$p"; done
    # Node suites cut short bring their cluster down in their own EXIT trap: wait for that
    # (bounded), then bring down whatever is still up.
    if [ -n "$node_kids" ]; then
        echo "real node suites cut short: waiting for their cleanup"
        local deadline=$((SECONDS + 180))
        for p in $node_kids; do
            while kill -0 "$p" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 1; done
        done
        ! scripts/cluster.sh status >/dev/null 2>&1 || scripts/cluster.sh down >/dev/null 2>&1 ||
            echo "scripts/cluster.sh down failed"
    fi
}
trap on_exit EXIT

# The Go control plane builds while cargo works; so do the real node's session images (Debian
# + PyPI inside, no Rust binary; cached in .work/images by content), which need only the
# network and buildah from setup. The fuzz targets build and run at the lowest priority: they
# take what the node stages leave idle.
cp_pid='' cm_pid='' helm_pid='' tr_pid='' tools_pid='' img_pid='' hub_pid='' fuzz_pid=''
cp_log=$(mktemp)
in_bg cp_pid "$cp_log" sh -c 'cd tests/controlplane && ./build.sh'
# So do real Traefik v3, the real node's SNI ingress (tests/traefik), then cert-manager's
# controller and cainjector (tests/certmanager, for cluster_certmanager), then helm (tests/helm,
# the Helm CLI of the chart's tests). One after the other: they are one Go workspace
# (tests/peers.work), so each finds most of its packages compiled by the one before.
# after "PID..." CMD...: CMD once the jobs PID... have ended (sibling jobs: `wait` cannot
# wait for them; their own stages report how they ended).
after() {
    local pids=$1 t0=$SECONDS pid
    shift
    for pid in $pids; do
        while kill -0 "$pid" 2>/dev/null; do sleep 2; done
    done
    echo "(started after $((SECONDS - t0)) s, when the jobs it needs had ended)"
    "$@"
}
tr_log=$(mktemp)
in_bg tr_pid "$tr_log" tests/traefik/build.sh
cm_log=$(mktemp)
in_bg cm_pid "$cm_log" after "$tr_pid" sh -c 'cd tests/certmanager && ./build.sh'
helm_log=$(mktemp)
in_bg helm_pid "$helm_log" after "$cm_pid" sh -c 'cd tests/helm && ./build.sh'
# And the manifests' tools (kustomize, scripts/crdcheck, kubernetes-validate).
tools_log=$(mktemp)
in_bg tools_pid "$tools_log" scripts/validate-manifests.sh --tools
img_log=$(mktemp)
in_bg img_pid "$img_log" scripts/node-images.sh build jupyter-session minimal named-user
# And the real node's JupyterHub (PyPI jupyterhub + kubespawner, npm configurable-http-proxy).
hub_log=$(mktemp)
in_bg hub_pid "$hub_log" scripts/node-e2e.sh --hub-deps
fuzz_log=$(mktemp)
in_bg fuzz_pid "$fuzz_log" nice -n 19 env FUZZ_JOBS=2 FUZZ_QUICK=1 scripts/fuzz.sh 60

# Clippy lints every workspace crate as it compiles for the tests (clippy-driver as the
# workspace's rustc wrapper, as `cargo clippy` runs it), so the dependency tree is built once
# for lints and tests, not twice. Any warning fails the build.
RUSTC_WORKSPACE_WRAPPER=$(rustup which clippy-driver 2>/dev/null || command -v clippy-driver)
export RUSTC_WORKSPACE_WRAPPER
export CLIPPY_ARGS=-D__CLIPPY_HACKERY__warnings__CLIPPY_HACKERY__

stage "cargo fmt --check" cargo fmt --all -- --check
stage "static release binaries" static_build
stage "static check" bash -c "for b in init-sshd session-ssh-webhook session-ssh-gateway; do
    f=target/$musl/release/\$b
    ldd \$f 2>&1 | grep -qE 'not a dynamic executable|statically linked' || { echo \"\$b is not static\"; ldd \$f; exit 1; }
    echo \"\$b: static, \$(stat -c %s \$f) bytes stripped\"
done"

# A real node (kubelet + containerd + kube-proxy on this machine, tests/controlplane/NODE.md):
# the product installed with kubectl apply -k, sessions spawned by a real JupyterHub +
# KubeSpawner, reached through port-forward, ClusterIP, the SNI routes (real Traefik: a
# TLSRoute through its Gateway API provider, an IngressRouteTCP through its CRD one) and the
# gateway; then, on one cluster, the create->Ready and server CPU/memory benchmark (numbers
# for the README; beside cargo test here, so slower than alone), the first-law cases and the
# README followed literally in ingress modes none, nodeport and loadbalancer; then
# `demo.sh --cluster --check`, the newcomer's story with the script starting alice's server
# through the hub API and running the ssh lines it printed. Each run brings its cluster up
# and down, one after the other. They mostly wait on the node, so they run in the background
# as soon as what they need is built (the static binaries, the control plane, Traefik, the
# session images, the hub's packages), beside the test build, cargo test and the manifests
# (nothing shared: the node's ports are fixed ones below the ephemeral range the tests bind,
# its apiserver is on the node IP, its Traefik on NODE_IP:443 and the tests' nginx on
# 127.0.0.1).
node_suites() {
    stage "real node: hub + gateway" scripts/node-e2e.sh --hub &&
        stage "real node: bench, law, modes" scripts/node-e2e.sh --first-law --bench --ingress-modes &&
        stage "demo --cluster --check" scripts/demo.sh --cluster --check
}
node_pid=''
node_log=$(mktemp)
in_bg node_pid "$node_log" after "$cp_pid $tr_pid $img_pid $hub_pid" node_suites
stage "clippy + test build" cargo test --workspace --all-targets --no-run
stage "architecture (loops, sizes)" python3 scripts/check-architecture.py
stage "node images" wait_bg "$img_pid" "$img_log" "node images (bg)"
stage "traefik build" wait_bg "$tr_pid" "$tr_log" "traefik build (bg)"
stage "hub packages" wait_bg "$hub_pid" "$hub_log" "hub packages (bg)"
stage "control plane build (go)" wait_bg "$cp_pid" "$cp_log" "control plane build (bg)"
stage "helm build (go)" wait_bg "$helm_pid" "$helm_log" "helm build (bg)"
stage "cert-manager build (go)" wait_bg "$cm_pid" "$cm_log" "cert-manager build (bg)"

stage "cargo test (unit + e2e)" cargo test --workspace --no-fail-fast
stage "manifests tools (go)" wait_bg "$tools_pid" "$tools_log" "manifests tools (bg)"
stage "manifests" scripts/validate-manifests.sh
# (checks the images against the rendered manifests of the stage before)
stage "images (buildah)" scripts/build-images.sh
# (the local demo needs no cluster: it runs while the node suites end)
stage "demo --check" cargo run -q -p session-ssh-tests --bin session-ssh-demo -- --check \
    --webhook "$SESSION_SSH_WEBHOOK_BIN" --init-sshd "$INIT_SSHD_BIN"
stage "real node suites" wait_bg "$node_pid" "$node_log" "real node suites (bg)" all
stage "fuzz (60 s per target)" wait_bg "$fuzz_pid" "$fuzz_log" "fuzz build + run (bg)"

echo
echo "=== stage times"
printf '%s\n' "${timings[@]}"
echo "total $(($(date +%s) - t_all))s"
