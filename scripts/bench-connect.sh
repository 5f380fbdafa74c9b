#!/usr/bin/env bash
# The connect stall (issue 13): N x `ssh host true` against init-sshd on 127.0.0.1, per binary
# given, printing the latency distribution and how many connections waited >= 30 ms for the
# server's ACK (Nagle on the client meeting a delayed ACK on the server). Not a test: numbers.
#
#   scripts/bench-connect.sh [INIT_SSHD_BIN ...]     # default: the musl release build
#
# Env: BENCH_CONNECT_N (20). Needs root for tcpdump on lo (Debian tcpdump, installed if
# missing) and the OpenSSH client. Every process it starts is stopped on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${BENCH_CONNECT_N:-20}
[ $# -gt 0 ] || set -- "$ROOT/target/x86_64-unknown-linux-musl/release/init-sshd"
command -v tcpdump >/dev/null || apt-get install -y tcpdump >/dev/null
W=$(mktemp -d /tmp/bench-connect.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
ssh-keygen -q -t ed25519 -N '' -f "$W/key"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Per connection: did a client data segment wait >= 30 ms for the server's next segment?
stalls() {
  python3 - "$1" "$2" <<'PY'
import re, sys
port, conns = sys.argv[1], {}
for line in open(sys.argv[2]):
    m = re.match(r'(\d+\.\d+) IP [\d.]+\.(\d+) > [\d.]+\.(\d+): .*length (\d+)', line)
    if not m:
        continue
    t, src, dst, n = float(m[1]), m[2], m[3], int(m[4])
    if dst == port:
        c = conns.setdefault(src, [None, 0])
        if n > 0 and c[0] is None:
            c[0] = t
    elif src == port:
        c = conns.setdefault(dst, [None, 0])
        if c[0] is not None:
            c[1] += t - c[0] >= 0.030
            c[0] = None
print(sum(1 for c in conns.values() if c[1]), "of", len(conns))
PY
}

printf '%-60s %8s %8s %8s  %s\n' binary "min ms" "p50 ms" "max ms" "connections with a >=30 ms ACK stall"
for bin in "$@"; do
  d="$W/$(basename "$bin").$RANDOM"
  "$bin" install --dir "$d" --keys "$W/key.pub" >"$W/install.log" 2>&1
  port=$(free_port)
  INIT_SSHD_TLS_LISTEN=off "$d/bin/init-sshd" serve --dir "$d" --listen "127.0.0.1:$port" >"$W/serve.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  tcpdump -i lo -nn -tt "tcp port $port" >"$W/td" 2>/dev/null &
  PIDS+=($!)
  sleep 1
  ms=()
  for _ in $(seq "$N"); do
    s=$(date +%s%N)
    ssh -F /dev/null -i "$W/key" -o IdentitiesOnly=yes -o StrictHostKeyChecking=no \
      -o UserKnownHostsFile=/dev/null -o LogLevel=error -p "$port" root@127.0.0.1 true
    ms+=($((($(date +%s%N) - s) / 1000000)))
  done
  sleep 1
  kill "${PIDS[@]: -1}" "${PIDS[@]: -2:1}" 2>/dev/null || true
  sorted=($(printf '%s\n' "${ms[@]}" | sort -n))
  printf '%-60s %8s %8s %8s  %s\n' "$bin" "${sorted[0]}" "${sorted[$((N / 2))]}" "${sorted[$((N - 1))]}" "$(stalls "$port" "$W/td")"
done
