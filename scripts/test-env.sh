# Sourced by scripts/test.sh and scripts/flake-hunt.sh: where the tests find the built
# binaries and the tools that scripts/setup.sh --tests installed.
musl=x86_64-unknown-linux-musl
export CC_x86_64_unknown_linux_musl=musl-gcc
# static_build [CARGO ARGS]: the static release binaries, always these four packages together:
# another set unifies the dependencies' features differently, and each switch rebuilds the
# webhook (minutes on 2 cores).
static_build() {
    cargo build --release --target "$musl" \
        -p init-sshd -p session-ssh-webhook -p session-ssh-gateway -p session-ssh-certs "$@"
}
export CARGO_TERM_COLOR=never
export INIT_SSHD_BIN=$root/target/$musl/release/init-sshd
export SESSION_SSH_WEBHOOK_BIN=$root/target/$musl/release/session-ssh-webhook
export SESSION_SSH_GATEWAY_BIN=$root/target/$musl/release/session-ssh-gateway
export SESSION_SSH_CERTS_BIN=$root/target/$musl/release/session-ssh-certs
export SESSION_SSH_PYTHON=$root/.venv/bin/python
export KUBERNETES_VALIDATE=$root/.venv/bin/kubernetes-validate
export SESSION_SSH_CONTROLPLANE=$root/tests/controlplane/bin/controlplane
export SESSION_SSH_HELM=$root/tests/helm/bin/helm
export SESSION_SSH_CERTMANAGER=$root/tests/certmanager/bin
