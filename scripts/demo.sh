#!/usr/bin/env bash
# The no-cluster demo: builds session-ssh, injects a realistic JupyterHub pod,
# runs the injected init container and postStart hook in a local sandbox as the
# session user, serves SSH on 127.0.0.1 and prints how to connect. Ctrl-C cleans up.
# Extra arguments go to the demo (e.g. --check to connect once and exit).
#
#   scripts/demo.sh --cluster   the same story on a real single-node cluster (root): the
#       cluster comes up (scripts/cluster.sh), the images are built and imported, the product
#       is installed with kubectl apply -k, a JupyterHub serves http://127.0.0.1:8000 (user
#       alice, any password); when alice starts her server from the hub page, the demo
#       prints the lines to ssh into it. Ctrl-C (or DEMO_MINUTES, default 60) ends it and
#       brings the cluster down. (scripts/node-e2e.sh --demo; tests/controlplane/NODE.md)
#   scripts/demo.sh --cluster --check   the same, with the script as the newcomer: it starts
#       alice's server through the hub API, runs the printed ssh lines once, and ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
# shellcheck source=scripts/test-env.sh
. scripts/test-env.sh
scripts/setup.sh
echo "demo: building the static binaries (a few minutes on a cold cache)"
static_build -q
if [ "${1:-}" = --cluster ]; then
    # --cluster --check: the script starts alice's server itself and runs the printed lines.
    check=0
    [ "${2:-}" != --check ] || check=1
    [ "$(id -u)" -eq 0 ] || exec sudo env DEMO_CHECK=$check scripts/node-e2e.sh --demo
    DEMO_CHECK=$check exec scripts/node-e2e.sh --demo
fi
cargo build -q -p session-ssh-tests --bin session-ssh-demo
if [ "$(id -u)" -ne 0 ]; then
    echo "demo: the sandbox switches to the pod's UIDs (setpriv, nsenter), so it runs under sudo"
    exec sudo target/debug/session-ssh-demo \
        --webhook "target/$musl/release/session-ssh-webhook" \
        --init-sshd "target/$musl/release/init-sshd" "$@"
fi
exec target/debug/session-ssh-demo \
    --webhook "target/$musl/release/session-ssh-webhook" \
    --init-sshd "target/$musl/release/init-sshd" "$@"
