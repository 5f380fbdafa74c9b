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
    "$@"
    local dt=$(($(date +%s) - t0))
    timings+=("$(printf '%-28s %5ss' "$name" "$dt")")
    echo "=== $name: ${dt}s"
}

# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh

stage "setup (apt, musl, venv)" scripts/setup.sh --tests

# The Go control plane builds in the background while cargo works.
cp_log=$(mktemp)
(cd tests/controlplane && ./build.sh) >"$cp_log" 2>&1 &
cp_pid=$!
# So do cert-manager's controller and cainjector (tests/certmanager, for cluster_certmanager).
cm_log=$(mktemp)
(cd tests/certmanager && ./build.sh) >"$cm_log" 2>&1 &
cm_pid=$!

# So do the real node's session images (Debian + PyPI inside, no Rust binary; cached in
# .work/images by content), which need only the network and buildah from setup.
img_log=$(mktemp)
scripts/node-images.sh build jupyter-session minimal named-user >"$img_log" 2>&1 &
img_pid=$!
# A stage that fails ends the run: the background builds end with it.
trap 'kill "$cp_pid" "$cm_pid" "$img_pid" 2>/dev/null || true' EXIT

stage "cargo fmt --check" cargo fmt --all -- --check
stage "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
stage "architecture (loops, sizes)" python3 scripts/check-architecture.py
stage "static release binaries" cargo build --release --target "$musl" \
    -p init-sshd -p session-ssh-webhook -p session-ssh-gateway -p session-ssh-certs
stage "static check" bash -c "for b in init-sshd session-ssh-webhook session-ssh-gateway; do
    f=target/$musl/release/\$b
    ldd \$f 2>&1 | grep -qE 'not a dynamic executable|statically linked' || { echo \"\$b is not static\"; ldd \$f; exit 1; }
    echo \"\$b: static, \$(stat -c %s \$f) bytes stripped\"
done"

wait_controlplane() {
    if ! wait "$cp_pid"; then
        cat "$cp_log"
        echo "control plane build failed"
        return 1
    fi
    cat "$cp_log"
}
stage "control plane build (go)" wait_controlplane
wait_certmanager() {
    if ! wait "$cm_pid"; then
        cat "$cm_log"
        echo "cert-manager build failed"
        return 1
    fi
    cat "$cm_log"
}
stage "cert-manager build (go)" wait_certmanager

stage "cargo test (unit + e2e)" cargo test --workspace --no-fail-fast
stage "manifests" scripts/validate-manifests.sh
stage "images (buildah)" scripts/build-images.sh
wait_node_images() {
    if ! wait "$img_pid"; then
        cat "$img_log"
        echo "node session images build failed"
        return 1
    fi
    cat "$img_log"
}
stage "node images (go on from bg)" wait_node_images
# A real node (kubelet + containerd + kube-proxy on this machine, tests/controlplane/NODE.md):
# the product installed with kubectl apply -k, sessions spawned by a real JupyterHub +
# KubeSpawner, reached through port-forward, ClusterIP, the SNI route and the gateway;
# then the first-law cases. Each run brings its cluster up and down.
stage "real node: hub + gateway" scripts/node-e2e.sh --hub
stage "real node: the first law" scripts/node-e2e.sh --first-law
stage "demo --check" cargo run -q -p session-ssh-tests --bin session-ssh-demo -- --check \
    --webhook "$SESSION_SSH_WEBHOOK_BIN" --init-sshd "$INIT_SSHD_BIN"

echo
echo "=== stage times"
printf '%s\n' "${timings[@]}"
echo "total $(($(date +%s) - t_all))s"
