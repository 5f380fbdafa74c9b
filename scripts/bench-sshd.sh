#!/usr/bin/env bash
# Benchmark init-sshd against Debian's OpenSSH sshd, side by side, on 127.0.0.1. Not a test:
# prints a table of numbers and ratios (init-sshd / OpenSSH).
#
#   scripts/bench-sshd.sh                 # needs root (OpenSSH sshd), Debian openssh-server/-client, python3
#
# Env: INIT_SSHD_BIN (default: the musl release build, built if missing), BENCH_MIB (1024),
#      BENCH_LATENCY_N (30), BENCH_IDLE_SESSIONS (20).
# Both servers run as root with their own host key and authorized_keys in a temp dir and the
# same user (root, with an empty temp HOME via a bwrap-bound /etc/passwd) logs in to both; OpenSSH runs `/usr/sbin/sshd -D -f CONFIG -e` with UsePAM no,
# init-sshd runs `init-sshd install` + `init-sshd serve`. Every loop is bounded, every process
# is killed on exit.
set -euo pipefail
# A failed transfer inside $(...) must stop the run, not print a fast number.
shopt -s inherit_errexit

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
MIB=${BENCH_MIB:-1024}
BYTES=$((MIB * 1024 * 1024))
NLAT=${BENCH_LATENCY_N:-30}
NIDLE=${BENCH_IDLE_SESSIONS:-20}
TCP="python3 $ROOT/scripts/bench-tcp.py"

die() { echo "bench-sshd: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (OpenSSH's sshd needs it)"
for t in ssh sftp ssh-keygen python3 /usr/sbin/sshd; do
  command -v "$t" >/dev/null || die "missing $t (Debian openssh-client openssh-server python3)"
done

if [ -n "${INIT_SSHD_BIN:-}" ]; then
  BIN=$INIT_SSHD_BIN
else
  BIN=target/x86_64-unknown-linux-musl/release/init-sshd
  if [ ! -x "$BIN" ]; then
    echo "building $BIN ..." >&2
    root=$ROOT
    # shellcheck source=scripts/test-env.sh
    . "$ROOT/scripts/test-env.sh"
    static_build >&2
  fi
fi
[ -x "$BIN" ] || die "no init-sshd binary at $BIN"

W=$(mktemp -d /tmp/bench-sshd.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$W/sshd.pid" ] && kill "$(cat "$W/sshd.pid")" 2>/dev/null || true
  sleep 0.3
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$W"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now_ns() { date +%s%N; }
# seconds (float) between two ns stamps
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", (b - a) / 1e9 }'; }
mbps() { awk -v n="$BYTES" -v s="$1" 'BEGIN { if (s > 0) printf "%.0f", n / 1048576 / s; else print "nan" }'; }
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# RSS sum (KiB) of a pid and all its descendants
tree_rss_kb() {
  local total=0 p
  for p in $(tree_pids "$1"); do total=$((total + $(rss_kb "$p"))); done
  echo "$total"
}
tree_pids() {
  local todo=("$1") out=() p c
  while [ ${#todo[@]} -gt 0 ]; do
    p=${todo[0]}; todo=("${todo[@]:1}"); out+=("$p")
    for c in $(cat /proc/"$p"/task/*/children 2>/dev/null); do todo+=("$c"); done
  done
  echo "${out[@]}"
}

# ---------- keys and servers ----------
ssh-keygen -q -t ed25519 -N '' -C bench -f "$W/id"
cp "$W/id.pub" "$W/authorized_keys"
chmod 600 "$W/authorized_keys"

OPORT=$(free_port)
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh_host_ed25519_key"
mkdir -p /run/sshd && chmod 755 /run/sshd
cat > "$W/sshd_config" <<EOF
ListenAddress 127.0.0.1:$OPORT
HostKey $W/ssh_host_ed25519_key
PidFile $W/sshd.pid
AuthorizedKeysFile $W/authorized_keys
StrictModes no
UsePAM no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 100:30:200
MaxSessions 100
AllowTcpForwarding yes
Subsystem sftp /usr/lib/openssh/sftp-server
EOF
/usr/sbin/sshd -t -f "$W/sshd_config" || die "sshd config invalid"
# The login user is root, but with an empty HOME in both servers: a fake /etc/passwd bound in
# a private mount namespace (bwrap), so neither server's shell runs the host's ~/.bashrc.
mkdir "$W/home"
sed "s#^root:[^:]*:0:0:[^:]*:[^:]*:.*#root:x:0:0:root:$W/home:/bin/bash#" /etc/passwd > "$W/passwd"
NS=(bwrap --dev-bind / / --bind "$W/passwd" /etc/passwd --die-with-parent --)
child_of() { local c; for _ in $(seq 1 100); do c=$(cat /proc/"$1"/task/*/children 2>/dev/null | awk '{print $1}'); [ -n "$c" ] && { echo "$c"; return; }; sleep 0.05; done; die "no child of $1"; }
"${NS[@]}" /usr/sbin/sshd -D -f "$W/sshd_config" -e 2>"$W/openssh.log" &
PIDS+=("$!")
OPID=$(child_of "$!")

IPORT=$(free_port)
mkdir "$W/isd"
"$BIN" install --dir "$W/isd" --keys "$W/authorized_keys" >"$W/install.log" 2>&1 || die "install failed: $(cat "$W/install.log")"
# Same burst allowance as the OpenSSH config above (MaxStartups 100:30:200).
INIT_SSHD_MAX_STARTUPS=100 INIT_SSHD_TLS_LISTEN=off "${NS[@]}" "$W/isd/bin/init-sshd" serve --dir "$W/isd" --listen "127.0.0.1:$IPORT" >"$W/init-sshd.log" 2>&1 &
PIDS+=("$!")
IPID=$(child_of "$!")

{
  echo "[127.0.0.1]:$OPORT $(cut -d' ' -f1,2 "$W/ssh_host_ed25519_key.pub")"
  echo "[127.0.0.1]:$IPORT $(cut -d' ' -f1,2 "$W/isd/ssh_host_ed25519_key.pub")"
} > "$W/known_hosts"

OPTS=(-F /dev/null -o "UserKnownHostsFile=$W/known_hosts" -o GlobalKnownHostsFile=/dev/null
  -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityAgent=none
  -o "IdentityFile=$W/id" -o User=root -o ConnectTimeout=10 -o ControlMaster=no -o ControlPath=none)
sshx() { local port=$1; shift; timeout 600 ssh "${OPTS[@]}" -o "Port=$port" "$@"; }
# Background ssh: started directly (not through a function) so that $! is `timeout`, which passes
# SIGTERM on to ssh; stdio never inherits a $(...) pipe (that would block the capture).
bg_ssh() { # port args... ; sets BG
  local port=$1; shift
  timeout 600 ssh "${OPTS[@]}" -o "Port=$port" "$@" </dev/null >/dev/null 2>>"$W/client.log" &
  BG=$!
}

for i in $(seq 1 50); do
  if sshx "$OPORT" 127.0.0.1 true 2>/dev/null && sshx "$IPORT" 127.0.0.1 true 2>/dev/null; then break; fi
  [ "$i" = 50 ] && die "servers not ready: $(tail -5 "$W/openssh.log") / $(tail -5 "$W/init-sshd.log")"
  sleep 0.2
done

echo "generating ${MIB} MiB of test data ..." >&2
head -c "$BYTES" /dev/urandom > "$W/data.bin"

declare -A R   # R[metric,server] = value

# ---------- measurements ----------
latency() { # port -> median ms
  local port=$1 i t0 t1 all=()
  for i in $(seq 1 "$NLAT"); do
    t0=$(now_ns); sshx "$port" 127.0.0.1 true; t1=$(now_ns)
    all+=("$(( (t1 - t0) / 1000 ))")
  done
  printf '%s\n' "${all[@]}" | sort -n | awk '{ a[NR] = $1 } END { m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2; printf "%.1f", m / 1000 }'
}
up_cat() { # port cipher -> MB/s (the remote end counts what arrived)
  local t0 t1 n; t0=$(now_ns)
  n=$(sshx "$1" -c "$2" 127.0.0.1 'wc -c' < "$W/data.bin")
  t1=$(now_ns)
  [ "$n" = "$BYTES" ] || die "upload ($2, port $1) delivered $n bytes"
  mbps "$(secs "$t0" "$t1")"
}
down_cat() {
  local t0 t1 n; t0=$(now_ns)
  n=$(sshx "$1" -c "$2" 127.0.0.1 "cat $W/data.bin" | wc -c)
  t1=$(now_ns)
  [ "$n" = "$BYTES" ] || die "download ($2, port $1) delivered $n bytes"
  mbps "$(secs "$t0" "$t1")"
}
sftp_put() {
  local t0 t1; rm -f "$W/sftp-dst.bin"; echo "put $W/data.bin $W/sftp-dst.bin" > "$W/batch"
  t0=$(now_ns); timeout 600 sftp "${OPTS[@]}" -o "Port=$1" -b "$W/batch" 127.0.0.1 >/dev/null; t1=$(now_ns)
  [ "$(stat -c %s "$W/sftp-dst.bin")" = "$BYTES" ] || die "sftp put size mismatch"
  rm -f "$W/sftp-dst.bin"; mbps "$(secs "$t0" "$t1")"
}
sftp_get() {
  local t0 t1; rm -f "$W/sftp-get.bin"; echo "get $W/data.bin $W/sftp-get.bin" > "$W/batch"
  t0=$(now_ns); timeout 600 sftp "${OPTS[@]}" -o "Port=$1" -b "$W/batch" 127.0.0.1 >/dev/null; t1=$(now_ns)
  [ "$(stat -c %s "$W/sftp-get.bin")" = "$BYTES" ] || die "sftp get size mismatch"
  rm -f "$W/sftp-get.bin"; mbps "$(secs "$t0" "$t1")"
}
fwd() { # port up|down -> MB/s through ssh -L (helpers accept exactly one connection: no probes)
  local port=$1 dir=$2 lport t0 t1 pf="$W/tcp.port" fp hp
  rm -f "$pf"
  if [ "$dir" = up ]; then timeout 600 $TCP sink "$pf" > "$W/sink.out" 2>>"$W/client.log" &
  else timeout 600 $TCP source "$pf" "$BYTES" >/dev/null 2>>"$W/client.log" & fi
  hp=$!
  for _ in $(seq 1 100); do [ -f "$pf" ] && break; sleep 0.05; done
  lport=$(free_port)
  bg_ssh "$port" -N -o ExitOnForwardFailure=yes -L "127.0.0.1:$lport:127.0.0.1:$(cat "$pf")" 127.0.0.1
  fp=$BG
  for _ in $(seq 1 100); do ss -Hltn "sport = :$lport" | grep -q . && break; sleep 0.05; done
  t0=$(now_ns)
  if [ "$dir" = up ]; then timeout 600 $TCP send "$lport" "$BYTES"; else timeout 600 $TCP recv "$lport" > "$W/recv.out"; fi
  t1=$(now_ns)
  wait "$hp" 2>/dev/null || true
  kill "$fp" 2>/dev/null; wait "$fp" 2>/dev/null || true
  if [ "$dir" = up ]; then [ "$(cat "$W/sink.out")" = "$BYTES" ] || die "-L sink got $(cat "$W/sink.out") bytes"
  else [ "$(cat "$W/recv.out")" = "$BYTES" ] || die "-L recv got $(cat "$W/recv.out") bytes"; fi
  mbps "$(secs "$t0" "$t1")"
}
idle_sessions() { # port serverpid name
  local port=$1 spid=$2 name=$3 cl=() i
  R[rss_idle,$name]=$(tree_rss_kb "$spid")
  for i in $(seq 1 "$NIDLE"); do
    bg_ssh "$port" -N 127.0.0.1; cl+=("$BG"); PIDS+=("$BG")
  done
  sleep 4
  for i in "${cl[@]}"; do kill -0 "$i" 2>/dev/null || die "idle session client $i exited early ($name)"; done
  R[rss_busy,$name]=$(tree_rss_kb "$spid")
  for i in "${cl[@]}"; do kill "$i" 2>/dev/null || true; done
  for i in "${cl[@]}"; do wait "$i" 2>/dev/null || true; done
  sleep 3
  R[rss_after,$name]=$(tree_rss_kb "$spid")
}

BG=
# Metrics are interleaved (OpenSSH, then init-sshd, per metric) so that load drift on a shared
# machine hits both sides alike.
port_of() { if [ "$1" = openssh ]; then echo "$OPORT"; else echo "$IPORT"; fi; }
pid_of() { if [ "$1" = openssh ]; then echo "$OPID"; else echo "$IPID"; fi; }
for srv in openssh init; do echo "measuring $srv: idle sessions ..." >&2; idle_sessions "$(port_of $srv)" "$(pid_of $srv)" "$srv"; done
for srv in openssh init; do echo "measuring $srv: latency ..." >&2; R[lat,$srv]=$(latency "$(port_of $srv)"); done
for c in chacha20-poly1305@openssh.com aes128-gcm@openssh.com; do
  for srv in openssh init; do echo "measuring $srv: cat $c ..." >&2; R[up_$c,$srv]=$(up_cat "$(port_of $srv)" "$c"); done
  for srv in openssh init; do R[down_$c,$srv]=$(down_cat "$(port_of $srv)" "$c"); done
done
for srv in openssh init; do echo "measuring $srv: sftp ..." >&2; R[sftp_put,$srv]=$(sftp_put "$(port_of $srv)"); done
for srv in openssh init; do R[sftp_get,$srv]=$(sftp_get "$(port_of $srv)"); done
for srv in openssh init; do echo "measuring $srv: ssh -L ..." >&2; R[fwd_up,$srv]=$(fwd "$(port_of $srv)" up); done
for srv in openssh init; do R[fwd_down,$srv]=$(fwd "$(port_of $srv)" down); done

# ---------- table ----------
row() { # label key unit goal
  local o=${R[$2,openssh]} i=${R[$2,init]}
  local ratio; ratio=$(awk -v a="$i" -v b="$o" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  printf '%-56s %10s %10s %7s   %s\n' "$1 ($3)" "$i" "$o" "$ratio" "$4"
}
echo
echo "init-sshd $("$BIN" --version 2>/dev/null || echo "($BIN)") vs $(ssh -V 2>&1 | cut -d, -f1) sshd; ${MIB} MiB transfers, $(nproc) cores, loopback"
printf '%-56s %10s %10s %7s   %s\n' "metric" "init-sshd" "OpenSSH" "ratio" "goal"
row "connect+auth+true, median of $NLAT" lat ms "<= 0.5"
for c in chacha20-poly1305@openssh.com aes128-gcm@openssh.com; do
  row "upload into wc -c, $c" "up_$c" MB/s ">= 1.0"
  row "download from cat, $c" "down_$c" MB/s ">= 1.0"
done
row "sftp put (default cipher)" sftp_put MB/s ">= 1.0"
row "sftp get (default cipher)" sftp_get MB/s ">= 1.0"
row "ssh -L client->server (default cipher)" fwd_up MB/s ">= 1.0"
row "ssh -L server->client (default cipher)" fwd_down MB/s ">= 1.0"
row "server RSS idle" rss_idle KiB ""
row "server RSS, $NIDLE idle connections (ssh -N, sum)" rss_busy KiB "<= 0.05"
row "server RSS after they closed" rss_after KiB "init: within 1024 KiB of idle"
echo "init-sshd RSS after close - idle: $(( ${R[rss_after,init]} - ${R[rss_idle,init]} )) KiB"
