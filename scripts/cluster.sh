#!/usr/bin/env bash
# A real single-node Kubernetes cluster on this machine, for the node tests and
# by hand (tests/controlplane/NODE.md):
#
#   scripts/cluster.sh up      # last line: export KUBECONFIG=...
#   scripts/cluster.sh smoke   # a pod runs to completion; logs, exec, port-forward, Services
#   scripts/cluster.sh status
#   scripts/cluster.sh down    # removes everything up made; safe with nothing up
#   scripts/cluster.sh down --force  # also when another clone's cluster is running
#
# The control plane binary (tests/controlplane, Kubernetes 1.35) runs etcd,
# kube-apiserver and kube-controller-manager in node mode, and kube-scheduler,
# kubelet and kube-proxy (iptables) as its subcommands. The runtime is Debian's
# containerd 1.6 + runc 1.1 with the CNI bridge plugins, on a socket, root and
# state of its own. No registry is reachable: the sandbox (pause) and busybox
# images are built locally with buildah and imported into containerd.
#
# All files live in .work/cluster of the repo this script is in. Machine-wide
# things carry fixed names so down finds them after a killed up: the bridge
# ssh-br0 (the node IP and the pods' network), the cgroup
# /session-ssh-cluster in every hierarchy, iptables chains KUBE-*, CNI-* and
# SESSION-SSH-*. Hence one cluster per machine; /run/session-ssh-cluster/owner
# says which clone's it is (the lock file beside it stays).
#
# Env: CLUSTER_NODE_IP (default 10.250.0.1), CLUSTER_TIMEOUT (seconds per wait,
# default 180), SKIP_GO_BUILD=1 (use tests/controlplane/bin as it is).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.work/cluster
BIN=$ROOT/tests/controlplane/bin/controlplane
PAUSE_BIN=$ROOT/tests/controlplane/bin/pause

NODE_NAME=session-ssh-node
# The node IP lives on the pods' bridge: a local, non-loopback address (the
# kubelet refuses loopback node IPs) that pods can reach (they cannot reach the
# host's 127.0.0.1) and that no other machine routes to. (No dummy interface:
# this VM's kernel has no CONFIG_DUMMY.)
NODE_IP=${CLUSTER_NODE_IP:-10.250.0.1}
BRIDGE=ssh-br0
POD_CIDR=10.244.0.0/24
POD_GW=10.244.0.1
POD_SUPERNET=10.244.0.0/16
SERVICE_CIDR=10.96.0.0/16 # tests/controlplane's serviceCIDR
API_PORT=6443
CGROUP=session-ssh-cluster
CNI_NET=session-ssh
RUN_DIR=/run/session-ssh-cluster
TIMEOUT=${CLUSTER_TIMEOUT:-180}
IMAGE_PREFIX=localhost/session-ssh
PAUSE_IMAGE=$IMAGE_PREFIX/pause:dev
BUSYBOX_IMAGE=$IMAGE_PREFIX/busybox:dev
# Ports we bind, checked before starting: apiserver and kubelet on the node IP;
# kubelet healthz, kube-proxy metrics and healthz on 127.0.0.1.
PORTS=("$API_PORT" 10250 10248 10249 10256)
# Sysctls the kubelet (kernel tunables), kube-proxy and the bridge need; down
# restores what they were before up.
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
    net.ipv4.conf.all.route_localnet vm.overcommit_memory vm.panic_on_oom kernel.panic
    kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

CTR=(ctr --address "$STATE/containerd/containerd.sock" --namespace k8s.io)
KUBECONFIG_FILE=$STATE/admin.kubeconfig
LOGS=$STATE/logs
PIDS=$STATE/pids

log() { printf '==> %s\n' "$*" >&2; }
die() {
    printf 'cluster.sh: %s\n' "$*" >&2
    exit 1
}
kubectl() { "$BIN" kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

usage() {
    sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
    exit 2
}

# --- preflight ---------------------------------------------------------------

require_root() { [ "$(id -u)" = 0 ] || die "must run as root (containerd, kubelet, iptables, cgroups, mounts)"; }

# Only one cluster.sh at a time on this machine: a second one fails at once.
take_lock() {
    mkdir -p "$RUN_DIR"
    exec 9>"$RUN_DIR/lock"
    flock -n 9 || die "another scripts/cluster.sh is running (lock $RUN_DIR/lock)"
}

install_missing() {
    local missing=()
    command -v containerd >/dev/null 2>&1 || missing+=(containerd)
    command -v runc >/dev/null 2>&1 || missing+=(runc)
    [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
    command -v buildah >/dev/null 2>&1 || missing+=(buildah)
    # The image needs a static busybox; Debian's busybox-static replaces busybox.
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    command -v iptables >/dev/null 2>&1 || missing+=(iptables)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing Debian ${missing[*]}"
        apt-get -o DPkg::Lock::Timeout=600 update -qq || die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
            --no-install-recommends "${missing[@]}" >/dev/null \
            || die "apt-get install ${missing[*]} failed"
    fi
    if ! [ -f /etc/containers/policy.json ]; then # buildah refuses to run without one
        mkdir -p /etc/containers
        echo '{"default":[{"type":"insecureAcceptAnything"}]}' >/etc/containers/policy.json
    fi
}

# The cgroup v1 hierarchies (mount point per controller) and the v2 mount, if any.
cgroup_mounts() { awk '$9 == "cgroup" || $9 == "cgroup2" { print $5 }' /proc/self/mountinfo; }

check_cgroups() {
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        local c
        for c in cpu cpuset memory pids; do
            grep -qw "$c" /sys/fs/cgroup/cgroup.controllers \
                || die "cgroup v2 controller '$c' is not available (/sys/fs/cgroup/cgroup.controllers)"
        done
        return
    fi
    local c
    for c in cpu cpuacct cpuset memory pids devices freezer; do
        [ "$(awk -v c="$c" '$1 == c { print $4 }' /proc/cgroups)" = 1 ] \
            || die "cgroup controller '$c' is not enabled in the kernel (/proc/cgroups); the kubelet needs it"
        # mountinfo: "... - cgroup cgroup rw,cpu": fstype, source, super options.
        awk -v c="$c" '{ split($0, a, " - "); split(a[2], f, " "); n = split(f[3], o, ",")
            if (f[1] == "cgroup") for (i = 1; i <= n; i++) if (o[i] == c) found = 1 }
            END { exit !found }' /proc/self/mountinfo \
            || die "cgroup v1 controller '$c' is not mounted under /sys/fs/cgroup; the kubelet needs it"
    done
}

check_ports() {
    local p holder
    for p in "${PORTS[@]}"; do
        holder=$(ss -Htlnp "( sport = :$p )" 2>/dev/null | head -1)
        [ -z "$holder" ] || die "port $p is already taken: $holder"
    done
}

# --- state of a cluster --------------------------------------------------------

pid_alive() { [ -f "$PIDS/$1.pid" ] && kill -0 "$(cat "$PIDS/$1.pid")" 2>/dev/null; }

is_up() {
    [ -f "$RUN_DIR/owner" ] && [ "$(cat "$RUN_DIR/owner")" = "$STATE" ] || return 1
    local c
    for c in containerd controlplane kube-scheduler kubelet kube-proxy; do
        pid_alive "$c" || return 1
    done
    kubectl get --raw /readyz >/dev/null 2>&1
}

# --- down ----------------------------------------------------------------------

# Every process that names DIR in its command line (our daemons, containerd's
# shims: -address DIR/containerd/...), except this script and its ancestors (a
# shell that ran `cluster.sh down; ls DIR/...`). Pid files are not trusted: after
# a reboot they may name someone else's process.
procs_of() {
    local dir=$1 p cmd skip=" $BASHPID " a=$$
    while [ "$a" -gt 1 ]; do
        skip+="$a "
        a=$(awk '/^PPid:/ { print $2 }' "/proc/$a/status" 2>/dev/null) || break
        [ -n "$a" ] || break
    done
    for p in /proc/[0-9]*; do
        p=${p#/proc/}
        case $skip in *" $p "*) continue ;; esac
        cmd=$(tr '\0' ' ' 2>/dev/null <"/proc/$p/cmdline") || continue
        case "$cmd" in
            *"$dir/"* | *"$dir "*) echo "$p" ;;
        esac
    done
}

# Every process in our cgroup subtree: the pods' containers.
procs_in_cgroup() {
    local m
    for m in $(cgroup_mounts); do
        if [ -d "$m/$CGROUP" ]; then find "$m/$CGROUP" -name cgroup.procs -exec cat {} + 2>/dev/null; fi
    done | sort -u
}

kill_all() {
    local dir=$1 pids i
    # SIGTERM for 6 s (the control plane removes its files on the way out), then SIGKILL.
    for i in $(seq 50); do
        pids=$(procs_of "$dir")
        [ -z "$pids" ] && break
        [ "$i" = 1 ] || sleep 0.2
        [ "$i" -lt 30 ] && kill -TERM $pids 2>/dev/null || kill -KILL $pids 2>/dev/null || true
    done
    [ -z "$(procs_of "$dir")" ] || die "processes still running after SIGKILL: $(procs_of "$dir" | tr '\n' ' ')"
    for i in $(seq 50); do
        pids=$(procs_in_cgroup)
        [ -z "$pids" ] && break
        kill -KILL $pids 2>/dev/null || true
        sleep 0.1
    done
    [ -z "$(procs_in_cgroup)" ] || die "container processes left in cgroup $CGROUP: $(procs_in_cgroup | tr '\n' ' ')"
}

# Mount points under DIR, deepest first (mountinfo escapes spaces as \040).
mounts_under() {
    awk -v d="$1/" 'index($5, d) == 1 { print $5 }' /proc/self/mountinfo | sed 's/\\040/ /g' | sort -r
}

unmount_all() {
    local dir=$1 m i
    for i in 1 2 3 4 5; do
        [ -z "$(mounts_under "$dir")" ] && return 0
        while IFS= read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
        done < <(mounts_under "$dir")
    done
    [ -z "$(mounts_under "$dir")" ] || die "cannot unmount: $(mounts_under "$dir" | tr '\n' ' ')"
}

# Rules jumping to our chains in the built-in chains, then the chains themselves.
clean_iptables() {
    local ipt table line chains c
    for ipt in iptables ip6tables; do
        command -v "$ipt" >/dev/null 2>&1 || continue
        for table in filter nat mangle raw; do
            "$ipt" -t "$table" -S >/dev/null 2>&1 || continue
            while IFS= read -r line; do
                eval "$ipt -t $table ${line/#-A/-D}" 2>/dev/null || true
            done < <("$ipt" -t "$table" -S | grep -E -- '-j (KUBE-|CNI-|SESSION-SSH-)' |
                grep -Ev -- '^-A (KUBE-|CNI-|SESSION-SSH-)' || true)
            chains=$("$ipt" -t "$table" -S | awk '$1 == "-N" && $2 ~ /^(KUBE-|CNI-|SESSION-SSH-)/ { print $2 }')
            for c in $chains; do "$ipt" -t "$table" -F "$c" 2>/dev/null || true; done
            for c in $chains; do "$ipt" -t "$table" -X "$c" 2>/dev/null || true; done
        done
    done
}

clean_cgroups() {
    local m i
    for m in $(cgroup_mounts); do
        [ -d "$m/$CGROUP" ] || continue
        for i in 1 2 3 4 5; do
            find "$m/$CGROUP" -depth -type d -exec rmdir {} + 2>/dev/null || true
            [ -d "$m/$CGROUP" ] || break
            sleep 0.2
        done
        [ -d "$m/$CGROUP" ] && die "cannot remove cgroup $m/$CGROUP"
    done
    return 0
}

restore_sysctls() {
    local f=$1/sysctl.orig k v
    [ -f "$f" ] || return 0
    while read -r k v; do sysctl -qw "$k=$v" 2>/dev/null || true; done <"$f"
    rm -f "$f"
}

# down for the cluster whose state is in DIR (ours, or a killed one of another clone).
teardown() {
    local dir=$1
    log "stopping processes of $dir"
    kill_all "$dir"
    log "unmounting, removing network, iptables, cgroups"
    unmount_all "$dir"
    # Network namespaces are bind mounts under containerd's state dir (netns_mounts_under_state_dir),
    # gone with the unmount; their veths go with them. What remains is ours by name.
    ip link del "$BRIDGE" 2>/dev/null || true # its addresses and routes go with it
    clean_iptables
    clean_cgroups
    restore_sysctls "$dir"
    # libcni's cache of each sandbox's result: ours name our network, or (lo) our netns path.
    rm -f /var/lib/cni/results/"$CNI_NET"-* 2>/dev/null || true
    grep -lF "$dir/" /var/lib/cni/results/* 2>/dev/null | xargs -r rm -f || true
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true # only if empty
    # The kubelet links every container's log into /var/log/containers.
    local link
    for link in /var/log/containers/*.log; do
        [ -L "$link" ] && case $(readlink "$link") in "$dir"/*) rm -f "$link" ;; esac
    done
    rmdir /var/log/containers 2>/dev/null || true
    # Nothing may be mounted below dir any more: rm must not follow a bind mount
    # of a host directory (hostPath) into the host.
    [ -z "$(mounts_under "$dir")" ] || die "still mounted under $dir"
    rm -rf --one-file-system "$dir"
    if [ -f "$RUN_DIR/owner" ] && [ "$(cat "$RUN_DIR/owner")" = "$dir" ]; then rm -f "$RUN_DIR/owner"; fi
}

cmd_down() {
    require_root
    take_lock
    local owner=""
    [ -f "$RUN_DIR/owner" ] && owner=$(cat "$RUN_DIR/owner")
    if [ -n "$owner" ] && [ "$owner" != "$STATE" ]; then
        if [ -n "$(procs_of "$owner")" ] && [ "${1:-}" != --force ]; then
            die "the cluster up on this machine is $owner's (another clone); run its down, or down --force"
        fi
        teardown "$owner"
    fi
    teardown "$STATE"
    log "down"
}

# --- up --------------------------------------------------------------------------

# wait_for WHAT COMPONENT CHECK...: poll CHECK until it succeeds; fail at once
# if COMPONENT died, or after $TIMEOUT s, with the end of its log.
wait_for() {
    local what=$1 comp=$2 i
    shift 2
    for i in $(seq $((TIMEOUT * 5))); do
        "$@" >/dev/null 2>&1 && return 0
        if ! pid_alive "$comp"; then
            tail -n 30 "$LOGS/$comp.log" >&2 || true
            die "$comp exited while waiting for $what (log: $LOGS/$comp.log)"
        fi
        sleep 0.2
    done
    tail -n 30 "$LOGS/$comp.log" >&2 || true
    die "timed out after ${TIMEOUT}s waiting for $what (log: $LOGS/$comp.log)"
}

# start NAME CMD...: a daemon in a session of its own, detached from this script's
# stdio (a caller capturing our output must not wait for the daemons).
start() {
    local name=$1
    shift
    # 9>&-: the daemons must not inherit (and hold) the lock.
    setsid "$@" </dev/null >>"$LOGS/$name.log" 2>&1 9>&- &
    echo $! >"$PIDS/$name.pid"
}

setup_sysctls() {
    local k v
    : >"$STATE/sysctl.orig"
    for k in "${SYSCTLS[@]}"; do
        v=$(sysctl -n "$k" 2>/dev/null) && printf '%s %s\n' "$k" "$v" >>"$STATE/sysctl.orig"
    done
    # Service traffic from a pod to a pod is routed back out of the bridge.
    sysctl -qw net.ipv4.ip_forward=1
    # Bridged pod-to-pod traffic must see kube-proxy's DNAT.
    sysctl -qw net.bridge.bridge-nf-call-iptables=1 || die "no br_netfilter: /proc/sys/net/bridge is missing"
}

setup_network() {
    # Made here rather than by the CNI bridge plugin (which takes it as it finds
    # it), so that the node IP exists before the first pod.
    ip link add "$BRIDGE" type bridge
    ip addr add "$POD_GW/${POD_CIDR#*/}" dev "$BRIDGE"
    ip addr add "$NODE_IP/32" dev "$BRIDGE"
    ip link set "$BRIDGE" up
    # Service IPs that kube-proxy has not DNATed, and pod IPs outside the bridge's
    # subnet, go to the bridge, where nothing answers them: never out of eth0.
    ip route add "$SERVICE_CIDR" dev "$BRIDGE"
    ip route add "$POD_SUPERNET" dev "$BRIDGE"
    # Pods talk to each other, to Services and to the node, and to nothing else:
    # forwarded traffic between the pod network and another interface is dropped.
    # In mangle, which runs before kube-proxy's ACCEPTs in filter FORWARD.
    iptables -t mangle -N SESSION-SSH-GUARD
    iptables -t mangle -A SESSION-SSH-GUARD -s "$POD_SUPERNET" ! -o "$BRIDGE" -j DROP
    iptables -t mangle -A SESSION-SSH-GUARD -d "$POD_SUPERNET" ! -i "$BRIDGE" -j DROP
    iptables -t mangle -I FORWARD 1 -j SESSION-SSH-GUARD
}

setup_cgroups() {
    local m
    for m in $(cgroup_mounts); do
        mkdir -p "$m/$CGROUP"
        # cgroup v1 cpuset: a new group has no CPUs or memory nodes until given some.
        if [ -f "$m/cpuset.cpus" ] && [ -f "$m/$CGROUP/cpuset.cpus" ]; then
            cat "$m/cpuset.cpus" >"$m/$CGROUP/cpuset.cpus"
            cat "$m/cpuset.mems" >"$m/$CGROUP/cpuset.mems"
        fi
    done
    if [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ]; then
        echo "+cpu +cpuset +memory +pids" >"/sys/fs/cgroup/$CGROUP/cgroup.subtree_control" 2>/dev/null || true
    fi
}

# runc, or a wrapper of it where this root cannot lower an oom_score_adj: without
# CAP_SYS_RESOURCE (dropped in some sandboxes and VMs), runc init fails with
# "can't get final child's PID from pipe: EOF" when it writes the -998 the kubelet
# gives pod sandboxes (and -997 Guaranteed pods). The wrapper raises such values in
# the bundle's config.json (create/run) or process.json (exec) to runc's own score.
setup_runc() {
    RUNC=$(command -v runc)
    if sh -c 'echo -999 >/proc/self/oom_score_adj' 2>/dev/null; then return 0; fi
    log "no CAP_SYS_RESOURCE: containers get oom_score_adj >= $(cat /proc/self/oom_score_adj) (runc wrapper)"
    mkdir -p "$STATE/bin"
    cat >"$STATE/bin/runc" <<EOF
#!/bin/sh
# Written by scripts/cluster.sh (setup_runc): clamp oomScoreAdj to what we may set.
min=\$(cat /proc/\$\$/oom_score_adj)
clamp() {
    v=\$(grep -o '"oomScoreAdj":-[0-9]*' "\$1" | head -n 1 | cut -d: -f2)
    if [ -n "\$v" ] && [ "\$v" -lt "\$min" ]; then
        sed -i "s/\"oomScoreAdj\":\$v\([^0-9]\)/\"oomScoreAdj\":\$min\1/" "\$1"
    fi
}
prev=
for a in "\$@"; do
    case \$prev in
        --bundle | -b) [ -f "\$a/config.json" ] && clamp "\$a/config.json" ;;
        --process | -p) [ -f "\$a" ] && clamp "\$a" ;;
    esac
    prev=\$a
done
exec $RUNC "\$@"
EOF
    chmod 755 "$STATE/bin/runc"
    RUNC=$STATE/bin/runc
}

write_configs() {
    mkdir -p "$STATE/containerd" "$STATE/cni/net.d" "$STATE/kubelet" "$STATE/kube-proxy"
    cat >"$STATE/containerd/config.toml" <<EOF
# containerd of the local node (scripts/cluster.sh): its own root, state and
# sockets, so that it never meets a system containerd and down removes it all.
version = 2
root = "$STATE/containerd/root"
state = "$STATE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = "$STATE/containerd/containerd.sock"
[ttrpc]
  address = "$STATE/containerd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  # Built locally and imported (no registry is reachable).
  sandbox_image = "$PAUSE_IMAGE"
  # exec/attach/port-forward: the kubelet proxies to this, on loopback only.
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod network namespaces under state, not /run/netns: unmounted and gone with down.
  netns_mounts_under_state_dir = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$RUNC"
        # The kubelet's cgroupDriver is cgroupfs (no systemd here); they must agree.
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
    cat >"$STATE/cni/net.d/10-$CNI_NET.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "$CNI_NET",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR", "gateway": "$POD_GW" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$STATE/cni/ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
    local node_dir=$STATE/controlplane/node
    cat >"$STATE/kubelet/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine has cgroup v1 (hybrid); kubelet 1.35 refuses v1 unless told.
failCgroupV1: false
# No systemd: the kubelet and runc manage cgroupfs directly, under a root of ours.
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP
cgroupsPerQOS: true
failSwapOn: false
containerRuntimeEndpoint: unix://$STATE/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: { enabled: false }
  webhook: { enabled: true }
  x509: { clientCAFile: $node_dir/ca.crt }
authorization:
  mode: Webhook
podLogsDir: $STATE/kubelet/pod-logs
# No cluster DNS; pods get no resolver of the host either (their traffic stays on this node).
resolvConf: ""
# A shared build machine: never evict for pressure the tests did not cause (a CI run lost
# every webhook replica to a memory-pressure eviction while cargo linked beside it). "0%" on
# every signal leaves the kubelet no threshold at all; it logs HardEvictionThresholds [].
# Never garbage-collect the locally built images either (they cannot be pulled again).
evictionHard:
  memory.available: "0%"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
  pid.available: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
staticPodPath: ""
EOF
    cat >"$STATE/kube-proxy/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: $node_dir/kube-proxy.kubeconfig
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_SUPERNET
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts on the node IP only, never on eth0 or 127.0.0.1 (no route_localnet).
nodePortAddresses: ["$NODE_IP/32"]
iptables:
  localhostNodePorts: false
# Leave the host's conntrack table size and timeouts as they are.
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# build_image NAME ROOTFS_DIR ENTRYPOINT_JSON USER: an image FROM scratch holding
# the files of ROOTFS_DIR, written as an OCI archive and imported into containerd.
build_image() {
    local image=$1 rootfs=$2 entrypoint=$3 user=$4
    local buildah=(buildah --storage-driver vfs --root "$STATE/buildah/storage" --runroot "$STATE/buildah/run")
    local ctr archive=$STATE/images/${image##*/}.tar
    archive=${archive/:/-}
    ctr=$("${buildah[@]}" from --quiet scratch)
    "${buildah[@]}" copy --quiet "$ctr" "$rootfs" / >/dev/null
    "${buildah[@]}" config --entrypoint "$entrypoint" --user "$user" \
        --label org.opencontainers.image.source=session-ssh/scripts/cluster.sh "$ctr"
    "${buildah[@]}" commit --quiet --rm "$ctr" "$image" >/dev/null
    "${buildah[@]}" push --quiet "$image" "oci-archive:$archive:$image"
    # grep reads the whole list: with pipefail, grep -q exiting at the first match
    # lets ctr die of SIGPIPE (141) when more names follow, and up failed at random.
    "${CTR[@]}" images import "$archive" >/dev/null
    "${CTR[@]}" images ls -q | grep -x "$image" >/dev/null || die "image $image not in containerd after import"
}

build_images() {
    mkdir -p "$STATE/images"
    local r=$STATE/images/pause-rootfs
    mkdir -p "$r"
    cp "$PAUSE_BIN" "$r/pause"
    build_image "$PAUSE_IMAGE" "$r" '["/pause"]' 65535:65535
    # busybox-static with its applets as symlinks, and nothing else (no /etc/passwd).
    r=$STATE/images/busybox-rootfs
    mkdir -p "$r/bin" "$r/tmp"
    chmod 1777 "$r/tmp"
    cp /bin/busybox "$r/bin/busybox"
    local a
    for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$r/bin/$a"; done
    build_image "$BUSYBOX_IMAGE" "$r" '["/bin/sh"]' 0:0
}

cmd_up() {
    require_root
    [ "$(uname -s)" = Linux ] || die "Linux only"
    take_lock
    if is_up; then
        log "already up ($STATE)"
        echo "export KUBECONFIG=$KUBECONFIG_FILE"
        return 0
    fi
    # Leftovers of a killed up (ours or another clone's) go first.
    local owner=""
    [ -f "$RUN_DIR/owner" ] && owner=$(cat "$RUN_DIR/owner")
    if [ -n "$owner" ] && [ "$owner" != "$STATE" ]; then
        [ -z "$(procs_of "$owner")" ] || die "a cluster of $owner (another clone) is up; run its scripts/cluster.sh down"
        log "removing the leftovers of $owner's cluster"
        teardown "$owner"
    fi
    if [ -e "$STATE" ] || ip link show "$BRIDGE" >/dev/null 2>&1 ||
        [ -d "/sys/fs/cgroup/memory/$CGROUP" ] || [ -d "/sys/fs/cgroup/$CGROUP" ]; then
        log "removing the leftovers of an earlier cluster"
        teardown "$STATE"
    fi
    install_missing
    check_cgroups
    check_ports
    if [ "${SKIP_GO_BUILD:-0}" != 1 ] || ! [ -x "$BIN" ]; then
        log "building tests/controlplane (Go; warm cache: seconds, cold: ~10 min)"
        nice -n 10 tests/controlplane/build.sh
    fi
    [ -x "$PAUSE_BIN" ] || die "$PAUSE_BIN missing (tests/controlplane/build.sh)"

    mkdir -p "$STATE" "$LOGS" "$PIDS"
    echo "$STATE" >"$RUN_DIR/owner"
    # A failed up leaves nothing running; its logs are kept for a look.
    trap 'up_failed' EXIT
    setup_sysctls
    setup_network
    setup_cgroups
    setup_runc
    write_configs

    log "containerd $(containerd --version | awk '{print $3}'), runc $(runc --version | awk 'NR==1 {print $3}')"
    start containerd containerd --config "$STATE/containerd/config.toml"
    wait_for "containerd" containerd "${CTR[@]}" version
    log "building the pause and busybox images (buildah) into containerd"
    build_images

    log "control plane (etcd, kube-apiserver, kube-controller-manager) on $NODE_IP:$API_PORT"
    setsid "$BIN" --dir "$STATE/controlplane" --kubeconfig-out "$KUBECONFIG_FILE" \
        --listen "$NODE_IP:$API_PORT" --node-ip "$NODE_IP" --node-name "$NODE_NAME" \
        </dev/null >"$LOGS/controlplane.out" 2>>"$LOGS/controlplane.log" 9>&- &
    echo $! >"$PIDS/controlplane.pid"
    wait_for "the control plane" controlplane grep -q '^READY' "$LOGS/controlplane.out"

    local node_dir=$STATE/controlplane/node
    log "kube-scheduler, kubelet, kube-proxy"
    start kube-scheduler "$BIN" kube-scheduler --kubeconfig "$node_dir/kube-scheduler.kubeconfig" \
        --authentication-kubeconfig "$node_dir/kube-scheduler.kubeconfig" \
        --authorization-kubeconfig "$node_dir/kube-scheduler.kubeconfig" \
        --leader-elect=false --secure-port=0
    start kubelet "$BIN" kubelet --config "$STATE/kubelet/config.yaml" \
        --kubeconfig "$node_dir/kubelet.kubeconfig" --root-dir "$STATE/kubelet/root" \
        --cert-dir "$STATE/kubelet/pki" --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"
    start kube-proxy "$BIN" kube-proxy --config "$STATE/kube-proxy/config.yaml"

    wait_for "node $NODE_NAME Ready" kubelet \
        kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
    wait_for "kube-proxy's rules" kube-proxy iptables -t nat -n -L KUBE-SERVICES
    # The node lifecycle controller lifts the not-ready taint shortly after Ready.
    wait_for "the not-ready taint to go" controlplane \
        sh -c "! '$BIN' kubectl --kubeconfig '$KUBECONFIG_FILE' get node '$NODE_NAME' \
            -o jsonpath='{.spec.taints[*].key}' | grep -q not-ready"
    kubectl get nodes -o wide >&2
    trap - EXIT
    log "up: logs in $LOGS; images $PAUSE_IMAGE, $BUSYBOX_IMAGE"
    echo "export KUBECONFIG=$KUBECONFIG_FILE"
}

up_failed() {
    local kept=$ROOT/.work/cluster-failed-logs
    rm -rf "$kept"
    cp -r "$LOGS" "$kept" 2>/dev/null || true
    log "up failed: tearing down; the logs are in $kept"
    teardown "$STATE" || true
}

cmd_status() {
    local c
    for c in containerd controlplane kube-scheduler kubelet kube-proxy; do
        if pid_alive "$c"; then echo "$c: running (pid $(cat "$PIDS/$c.pid"))"; else echo "$c: not running"; fi
    done
    if is_up; then kubectl get nodes -o wide; else
        echo "cluster: not up"
        return 1
    fi
}

# The node does what the tests need: a pod from the local busybox image runs to
# completion; logs, exec and port-forward work (apiserver -> kubelet ->
# containerd's stream server); a ClusterIP Service answers from the node and from
# a pod (kube-proxy, hairpin), and pods reach the apiserver through the
# `kubernetes` Service.
cmd_smoke() {
    is_up || die "not up (scripts/cluster.sh up)"
    local ns=smoke-$$ ip out pf_pid
    kubectl create namespace "$ns" >/dev/null
    # shellcheck disable=SC2064 # expand now: the namespace of this run
    trap "'$BIN' kubectl --kubeconfig '$KUBECONFIG_FILE' delete namespace '$ns' --wait=false >/dev/null 2>&1" EXIT
    kubectl -n "$ns" run once --image="$BUSYBOX_IMAGE" --restart=Never --command -- \
        sh -c 'echo "hello from $(hostname) uid=$(id -u) ip=$(ip -4 -o addr show eth0 | cut -d" " -f7)"' >/dev/null
    kubectl -n "$ns" wait --for=jsonpath='{.status.phase}'=Succeeded pod/once --timeout="${TIMEOUT}s" >/dev/null ||
        { kubectl -n "$ns" describe pod once >&2; die "pod once did not succeed"; }
    echo "run to completion: $(kubectl -n "$ns" logs once)"

    kubectl -n "$ns" run web --image="$BUSYBOX_IMAGE" --port=8080 --labels=app=web --command -- \
        sh -c 'mkdir -p /tmp/www && echo "web $(hostname)" >/tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www' >/dev/null
    kubectl -n "$ns" expose pod web --port=80 --target-port=8080 >/dev/null
    kubectl -n "$ns" wait --for=condition=Ready pod/web --timeout="${TIMEOUT}s" >/dev/null
    echo "exec: $(kubectl -n "$ns" exec web -- sh -c 'grep memory /proc/1/cgroup')"

    # (busybox-static's wget crashes in its static glibc resolver, even for an IP: nc it is.)
    ip=$(kubectl -n "$ns" get service web -o jsonpath='{.spec.clusterIP}')
    wait_for "Service web at $ip from the node" kube-proxy curl -fsS -m 2 -o /dev/null "http://$ip/"
    echo "service from the node: $(curl -fsS -m 5 "http://$ip/")"
    out=$(kubectl -n "$ns" exec web -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 $ip 80 | tail -n 1")
    echo "service from its own pod (hairpin): $out"
    [ "$out" = "web web" ] || die "Service web from its own pod: got '$out'"
    # The apiserver answers plain HTTP on its TLS port with a 400 that says so.
    out=$(kubectl -n "$ns" exec web -- sh -c "printf 'GET / HTTP/1.0\r\n\r\n' | nc -w 5 10.96.0.1 443 | tail -n 1")
    case $out in *"HTTPS server"*) echo "kubernetes Service from a pod: $out" ;;
        *) die "the kubernetes Service (10.96.0.1:443) from a pod: got '$out'" ;; esac

    kubectl -n "$ns" port-forward --address 127.0.0.1 pod/web 18080:8080 >/dev/null 2>&1 9>&- &
    pf_pid=$!
    wait_for "port-forward" kube-proxy curl -fsS -m 2 -o /dev/null http://127.0.0.1:18080/
    echo "port-forward: $(curl -fsS -m 5 http://127.0.0.1:18080/)"
    kill "$pf_pid" 2>/dev/null || true
    # httpd as PID 1 ignores SIGTERM: do not wait out the default 30 s grace period.
    kubectl -n "$ns" delete pod --all --grace-period=1 >/dev/null
    kubectl delete namespace "$ns" --wait=true >/dev/null
    trap - EXIT
    echo "smoke ok"
}

case ${1:-} in
    up) cmd_up ;;
    down) cmd_down "${2:-}" ;;
    status) cmd_status ;;
    smoke) cmd_smoke ;;
    *) usage ;;
esac
