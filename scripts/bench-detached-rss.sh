#!/usr/bin/env bash
# Memory of shells kept after a dropped connection (issue 14): serve's RSS with 50 detached
# shells, each with a full replay buffer. Prints numbers; needs the release musl binary
# (see scripts/test-env.sh) and scripts/setup.sh --tests.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/test-env.sh
source "$root/scripts/test-env.sh"
"$root/scripts/russh-patch.sh"
cd "$root"
static_build
cargo test -p session-ssh-tests --test sshd_detach -- --ignored --nocapture bench_rss_of_50_detached_shells 2>&1 |
    grep -E 'RSS|bash processes|test result'
