#!/usr/bin/env bash
# Installs everything the demo and the tests need on a fresh Debian machine with
# Rust (rustup) and Go: Debian packages, the musl target, the patched russh, and
# the PyPI tools in .venv. Idempotent; safe to re-run.
#
#   scripts/setup.sh          demo needs only (packages + musl + russh patch)
#   scripts/setup.sh --tests  also the test tools (PyPI venv, sshd, nginx, buildah,
#                             nightly + cargo-fuzz...)
set -euo pipefail
cd "$(dirname "$0")/.."

with_tests=false
[ "${1:-}" = "--tests" ] && with_tests=true

sudo_() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# What the demo needs: the OpenSSH client, bubblewrap for the pod sandbox,
# musl-tools for the static init-sshd, patch/curl for the russh patch.
pkgs=(openssh-client bubblewrap util-linux musl-tools patch curl ca-certificates)
if $with_tests; then
    # Real peers of the tests: sshd for the benchmark baseline, rsync, busybox for
    # a rootfs with nothing else in it, nginx stream for the SNI router, buildah
    # for images without a Docker daemon, python venv for PyPI tools, PuTTY (plink,
    # psftp) as a second SSH client family through the gateway.
    pkgs+=(openssh-server rsync busybox-static nginx libnginx-mod-stream buildah
        python3-venv wrk procps iproute2 openssl putty-tools)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: apt-get install ${missing[*]}"
    sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 \
        install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
    rustup target add x86_64-unknown-linux-musl
fi
rustup component list --installed | grep -q '^clippy' || rustup component add clippy rustfmt

if [ -x scripts/russh-patch.sh ]; then
    scripts/russh-patch.sh
fi

if $with_tests; then
    if [ ! -x .venv/bin/python ]; then
        python3 -m venv .venv
    fi
    .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
    # JupyterHub's proxy (npm), for the real hub of the gateway and activity tests.
    if [ ! -x .venv/chp/node_modules/.bin/configurable-http-proxy ]; then
        command -v npm >/dev/null || sudo_ env DEBIAN_FRONTEND=noninteractive \
            apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends npm >/dev/null
        npm install --silent --no-audit --no-fund --prefix .venv/chp configurable-http-proxy@4
    fi
    # Fuzzing (scripts/fuzz.sh): cargo-fuzz needs a nightly toolchain (sanitizer flags).
    if ! rustup run nightly rustc --version >/dev/null 2>&1; then
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        cargo install cargo-fuzz --locked
    fi
fi
echo "setup: done"
