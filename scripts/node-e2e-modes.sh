# shellcheck shell=bash
# Sourced by scripts/node-e2e.sh for --ingress-modes (issue 17 item 1): the README followed
# literally in ingress modes none, nodeport and loadbalancer on the real node. Per mode the
# webhook's ConfigMap gets `ingress.mode` (no hostTemplate: the mode's own address), the
# webhook Deployment is restarted until only new, Ready replicas run (two replicas, each
# also a controller: an old one left would admit or publish with the old mode), the session
# pod jupyter-alice is made afresh, and a user follows the README as written:
#   none          the README's `kubectl -n jhub port-forward pod/jupyter-alice 2222:2222`,
#                 its `~/.ssh/config` block (Host mysession, 127.0.0.1, Port 2222) and its
#                 `ssh -p 2222 jovyan@127.0.0.1`, with the known_hosts line of the session's
#                 ~/ssh-connect.txt; also the block and line the pod publishes, as a client
#                 in the cluster (cluster DNS: a private /etc/hosts naming the ClusterIP);
#   nodeport      the block and line the pod publishes (the node IP, the NodePort);
#   loadbalancer  the same, after this script has played the cloud's LB controller.
# The user: a private home (bwrap over root's) with only ~/.ssh/config, ~/.ssh/known_hosts
# (that one line) and ~/.ssh/id_ed25519; `ssh -o StrictHostKeyChecking=yes HOST id -u`.
# Each mode also proves the check can fail: another key in that line is refused.
# Uses from node-e2e.sh: kubectl, wait_for, fail, ok, log, gate_is, dry_run_mutated, $NS,
# $POD, $TMP, $ROOT, $NODE_IP, $TIMEOUT, $PF_PID.

# An address no machine answers (TEST-NET-3, RFC 5737): only kube-proxy's rule for the
# Service's load-balancer IP can make it greet with SSH.
LB_IP=${NODE_E2E_LB_IP:-203.0.113.22}

# readme_block ANCHOR: the first fenced block after the first README line containing ANCHOR.
readme_block() {
    local b
    b=$(awk -v a="$1" 'f == 0 && index($0, a) {f = 1; next}
        f == 1 && /^```/ {f = 2; next}
        f == 2 && /^```/ {exit}
        f == 2 {print}' "$ROOT/README.md")
    [ -n "$b" ] || fail "README.md: no fenced block after a line with '$1'"
    printf '%s\n' "$b"
}

# user_home NAME: a fresh home for a user of this test: ~/.ssh with alice's key as the
# default identity (id_ed25519) and nothing else; prints its path.
user_home() {
    local h=$TMP/home-$1
    rm -rf "$h"
    mkdir -p "$h/.ssh"
    chmod 700 "$h" "$h/.ssh"
    cp "$TMP/id_alice" "$h/.ssh/id_ed25519"
    cp "$TMP/id_alice.pub" "$h/.ssh/id_ed25519.pub"
    echo "$h"
}

# user_ssh HOME HOSTS ARGS...: ssh as the user whose home is HOME (bound over this user's
# own, so `~/.ssh/...` of a README block means HOME's files); HOSTS, when not "", is bound
# over /etc/hosts (the user's DNS). No agent; StrictHostKeyChecking yes.
user_ssh() {
    local home=$1 hosts=$2 own
    shift 2
    own=$(getent passwd "$(id -u)" | cut -d: -f6)
    local bind=(--dev-bind / / --bind "$home" "$own")
    [ -z "$hosts" ] || bind+=(--bind "$hosts" /etc/hosts)
    env -u SSH_AUTH_SOCK bwrap "${bind[@]}" --die-with-parent -- \
        timeout 60 ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o ConnectTimeout=10 "$@"
}

# refused_with_another_key HOME HOSTS LINE ARGS...: the same login with LINE's key replaced
# by another one must fail host key verification.
refused_with_another_key() {
    local home=$1 hosts=$2 line=$3 other
    shift 3
    rm -f "$TMP/other_key" "$TMP/other_key.pub"
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/other_key"
    other=$(awk '{print $2}' "$TMP/other_key.pub")
    awk -v k="$other" '{$NF = k; print}' <<<"$line" >"$home/.ssh/known_hosts"
    if user_ssh "$home" "$hosts" "$@" true 2>"$TMP/wrong.err"; then
        fail "ssh $* accepted a known_hosts line with another host key"
    fi
    grep -q "Host key verification failed" "$TMP/wrong.err" || fail "ssh $* with another key: $(tail -n 3 "$TMP/wrong.err")"
    printf '%s\n' "$line" >"$home/.ssh/known_hosts"
}

# fresh_session: jupyter-alice made again under the current config (its Service gone first:
# the controller never takes over a Service of another pod), mutated and Ready.
fresh_session() {
    local t=$SECONDS init
    kubectl -n "$NS" delete pod "$POD" --ignore-not-found --grace-period=2 --wait=true >/dev/null
    svc_gone() { ! kubectl -n "$NS" get svc "$POD" >/dev/null 2>&1; }
    wait_for "Service $POD garbage-collected" svc_gone
    kubectl -n "$NS" create -f "$TMP/pod.yaml" >/dev/null || fail "create $POD"
    kubectl -n "$NS" wait --for=condition=Ready "pod/$POD" --timeout="${TIMEOUT}s" >/dev/null || fail "$POD not Ready"
    init=$(kubectl -n "$NS" get pod "$POD" -o jsonpath='{.spec.initContainers[*].name}')
    [ "$init" = session-ssh-install ] || fail "$POD not injected: init containers [$init]"
    ok "$POD made again, injected and Ready ($((SECONDS - t)) s)"
}

annotation() { kubectl -n "$NS" get pod "$POD" -o jsonpath="{.metadata.annotations.session-ssh\.io/$1}"; }

# published_for HOST PORT: the pod's connection annotations name HOST:PORT, with a
# known_hosts line for it (only the final address counts: not one published earlier).
published_for() {
    local want=$1
    [ "$2" = 22 ] || want="[$1]:$2"
    [ "$(annotation ssh-host)" = "$1" ] && [ "$(annotation ssh-port)" = "$2" ] &&
        grep -q "^HostName $1\$" <<<"$(annotation ssh-config | sed 's/^ *//')" &&
        [ "$(annotation known-hosts | cut -d' ' -f1)" = "$want" ]
}

# nat_hits PATTERN: packets counted by kube-proxy's nat rules matching PATTERN (each new
# connection through the rule counts once).
nat_hits() {
    iptables-save -c -t nat | { grep -F -- "$1" || true; } | sed -n 's/^\[\([0-9]*\):.*/\1/p' |
        awk '{s += $1} END {print s + 0}'
}
has_nat_rule() { iptables-save -t nat | grep -qF -- "$1"; }

# login_published LABEL HOSTS RULE: ~/.ssh/config = the pod's published block verbatim,
# ~/.ssh/known_hosts = its published line verbatim; `ssh <the block's Host> id -u` is
# 1000 and, when RULE is given, went through kube-proxy's rule RULE; another key refused.
login_published() {
    local label=$1 hosts=$2 rule=$3 home cfg line alias out n0 n1
    home=$(user_home "$label")
    cfg=$(annotation ssh-config)
    line=$(annotation known-hosts)
    printf '%s\n' "$cfg" >"$home/.ssh/config"
    printf '%s\n' "$line" >"$home/.ssh/known_hosts"
    alias=$(awk '$1 == "Host" {print $2; exit}' "$home/.ssh/config")
    [ -n "$alias" ] || fail "the published ssh-config has no Host line: $cfg"
    if [ -n "$rule" ]; then
        # (the connection info can be published before kube-proxy's next sync writes the rule)
        wait_for "[$label] kube-proxy's rule '$rule'" has_nat_rule "$rule"
        n0=$(nat_hits "$rule")
    fi
    out=$(user_ssh "$home" "$hosts" "$alias" id -u 2>"$TMP/ssh.err") ||
        fail "[$label] ssh $alias with the published block and line: $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = 1000 ] || fail "[$label] ssh $alias: id -u '$out'"
    if [ -n "$rule" ]; then
        n1=$(nat_hits "$rule")
        [ "$n1" -gt "$n0" ] || fail "[$label] the login did not go through kube-proxy's rule '$rule' ($n0 -> $n1 packets)"
    fi
    refused_with_another_key "$home" "$hosts" "$line" "$alias"
    ok "[$label] ~/.ssh/config = the published block ($(grep -E 'HostName|Port' "$home/.ssh/config" | tr -s ' \n' ' ')), known_hosts = only the published '$(cut -c1-40 <<<"$line")...': ssh $alias id -u = $out${rule:+ (kube-proxy rule '$rule': $n0 -> $n1 packets)}; another key refused"
}

# mode none: port-forward as the README says, then its block and the information file's line.
check_mode_none() {
    local home fwd conf oneliner info line words out cip
    fwd=$(readme_block '### Directly to your session')
    conf=$(readme_block 'A `~/.ssh/config` block makes every tool below')
    oneliner=$(grep -E '^ssh ' <<<"$fwd" | sed 's/ *#.*//')
    fwd=$(grep -E '^kubectl .* port-forward ' <<<"$fwd" | sed 's/ *&$//')
    [ -n "$fwd" ] && [ -n "$oneliner" ] || fail "README: no port-forward and ssh lines in 'Directly to your session'"
    info=$(kubectl -n "$NS" exec "$POD" -c notebook -- sh -c 'cat ~/ssh-connect.txt') || fail "cat ~/ssh-connect.txt in $POD"
    line=$(awk 'f {sub(/^ +/, ""); print; exit} /^known_hosts line/ {f = 1}' <<<"$info")
    [ "$(cut -d' ' -f1 <<<"$line")" = "[127.0.0.1]:2222" ] ||
        fail "[none] ~/ssh-connect.txt's known_hosts line is not for [127.0.0.1]:2222: '$line'"
    grep -qF 'kubectl port-forward' <<<"$info" || fail "[none] ~/ssh-connect.txt does not show the port-forward way"
    ! ss -Hltn 'sport = :2222' | grep -q . || fail "[none] 127.0.0.1:2222 is taken on this machine: $(ss -Hltnp 'sport = :2222')"
    read -ra words <<<"${fwd#kubectl }"
    kubectl "${words[@]}" >"$TMP/pf-none.log" 2>&1 &
    PF_PID="$PF_PID $!"
    wait_for "the README's '$fwd'" grep -q Forwarding "$TMP/pf-none.log"
    home=$(user_home none)
    printf '%s\n' "$conf" >"$home/.ssh/config"
    printf '%s\n' "$line" >"$home/.ssh/known_hosts"
    out=$(user_ssh "$home" "" mysession id -u 2>"$TMP/ssh.err") ||
        fail "[none] ssh mysession (the README's block, port-forward): $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = 1000 ] || fail "[none] ssh mysession: id -u '$out'"
    read -ra words <<<"${oneliner#ssh }"
    out=$(user_ssh "$home" "" "${words[@]}" id -u 2>"$TMP/ssh.err") ||
        fail "[none] the README's '$oneliner': $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = 1000 ] || fail "[none] $oneliner: id -u '$out'"
    refused_with_another_key "$home" "" "$line" mysession
    ok "[none] the README's '$fwd', its block as ~/.ssh/config, known_hosts = only the line of ~/ssh-connect.txt ('$(cut -c1-40 <<<"$line")...'): ssh mysession id -u = 1000, '$oneliner' id -u = 1000; another key refused"
    # The published block names the cluster DNS name: a client inside the cluster.
    cip=$(kubectl -n "$NS" get svc "$POD" -o jsonpath='{.spec.clusterIP}')
    wait_for "[none] connection info for $POD.$NS.svc:22 published" published_for "$POD.$NS.svc" 22
    { cat /etc/hosts; echo "$cip $POD.$NS.svc"; } >"$TMP/hosts-none"
    login_published none-in-cluster "$TMP/hosts-none" ""
}

# mode nodeport: the published block names the node IP and the NodePort (kube-proxy).
check_mode_nodeport() {
    local np hip
    nodeport_of() { kubectl -n "$NS" get svc "$POD" -o jsonpath='{.spec.ports[?(@.name=="ssh")].nodePort}'; }
    has_nodeport() { [ -n "$(nodeport_of)" ]; }
    wait_for "[nodeport] Service $POD of type NodePort" has_nodeport
    np=$(nodeport_of)
    hip=$(kubectl -n "$NS" get pod "$POD" -o jsonpath='{.status.hostIP}')
    wait_for "[nodeport] connection info for $hip:$np published" published_for "$hip" "$np"
    login_published nodeport "" "--dport $np "
}

# mode loadbalancer. No cloud LB controller runs here: this plays one, writing an address
# into the Service's status.loadBalancer.ingress (the status subresource, as a controller
# does). kube-proxy then DNATs that address:22 to the pod. Proves: the controller publishes
# the address the LB controller reports (only then: nothing before), the block and line are
# right for it, and the login goes through kube-proxy's load-balancer-IP rule (its packet
# counter). Does not prove: that a real cloud LB reaches the node (its NodePorts or pod IPs).
check_mode_loadbalancer() {
    local type greet
    type=$(kubectl -n "$NS" get svc "$POD" -o jsonpath='{.spec.type}')
    svc_is_lb() { [ "$(kubectl -n "$NS" get svc "$POD" -o jsonpath='{.spec.type}')" = LoadBalancer ]; }
    wait_for "[loadbalancer] Service $POD of type LoadBalancer (is $type)" svc_is_lb
    [ -z "$(annotation ssh-host)" ] || fail "[loadbalancer] an address is published before the load balancer has one: $(annotation ssh-host)"
    kubectl -n "$NS" patch svc "$POD" --subresource=status --type=merge \
        -p "{\"status\":{\"loadBalancer\":{\"ingress\":[{\"ip\":\"$LB_IP\"}]}}}" >/dev/null ||
        fail "[loadbalancer] set the Service's status.loadBalancer.ingress"
    # (this machine's network completes a TCP handshake to any address: wait for SSH itself)
    ssh_greets() { greet=$(timeout 5 bash -c "exec 5<>/dev/tcp/$LB_IP/22; head -c 8 <&5"); [ "$greet" = SSH-2.0- ]; }
    wait_for "[loadbalancer] $LB_IP:22 greets with SSH-2.0- (kube-proxy's rule)" ssh_greets
    wait_for "[loadbalancer] connection info for $LB_IP:22 published" published_for "$LB_IP" 22
    login_published loadbalancer "" "-d $LB_IP/32 "
}

run_ingress_modes() {
    local t0=$SECONDS mode
    command -v bwrap >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y bubblewrap >/dev/null
    for mode in none nodeport loadbalancer; do
        set_ingress_mode "$mode"
        fresh_session
        "check_mode_$mode"
    done
    # (jupyter-alice keeps listening through the port-forward of mode none: gone with the script)
    ok "ingress modes none, nodeport, loadbalancer: the README followed literally ($((SECONDS - t0)) s)"
}
