#!/usr/bin/env bash
# session-ssh installed as an admin would, on the real single-node cluster of
# scripts/cluster.sh, and one KubeSpawner-like session pod checked end to end:
#
#   scripts/node-e2e.sh          # up, images, apply -k, checks; down on exit
#   KEEP_CLUSTER=1 scripts/node-e2e.sh   # leave the cluster up (then: scripts/cluster.sh down)
#   scripts/node-e2e.sh --hub    # the session pod made by a real JupyterHub + KubeSpawner
#
#  1. scripts/cluster.sh up; scripts/node-images.sh (build what changed, import);
#  2. namespace jhub labelled session-ssh.io/enabled=true; `kubectl apply -k
#     manifests/overlays/local-node` (the jupyterhub example with the local images);
#     the webhook Deployment becomes available (its pods on the node, self-managed TLS:
#     caBundle patched by the webhook itself);
#  3. admission works: a server-side dry-run of the session pod comes back mutated;
#  4. the per-user Secret ssh-keys-alice holds a fresh ed25519 key; a stand-in hub API
#     (a pod + Service answering /hub/api, as jupyterhub-singleuser needs one to keep
#     running) and the session pod jupyter-alice as KubeSpawner makes it (labels,
#     container "notebook", image jupyter-session, runAsUser 1000, fsGroup 100,
#     args jupyterhub-singleuser, JUPYTERHUB_* env);
#  5. the stored pod is mutated (init container session-ssh-install, postStart hook),
#     it becomes Ready, the controller made its Service and published known-hosts;
#  6. ssh through `kubectl port-forward` to port 2222 with the Secret's key and the
#     published host key (StrictHostKeyChecking yes): id -u = 1000, SESSION_IMAGE_VAR
#     = from-image, PATH is the image's; through the Service ClusterIP: PTY shell, the VS
#     Code pattern, scp/sftp of 256 MiB; through the SNI route on 443 (the overlay's
#     TLSRoute per session on the Gateway session-ssh/ssh, served by real Traefik v3 on
#     the node IP, scripts/node-traefik.sh) with the published ssh-config block and a
#     known_hosts file of only the published line (and refused with another key in it);
#     rsync of 256 MiB both ways over that route.
# With --hub, step 4 is a real JupyterHub on this machine instead (PyPI jupyterhub +
# jupyterhub-kubespawner, npm configurable-http-proxy, in .work/hub/): DummyAuthenticator,
# KubeSpawner configured as zero-to-jupyterhub does (namespace jhub, uid 1000, fsGid 100,
# cmd jupyterhub-singleuser, image pull policy IfNotPresent), the hub API on the node IP
# (pods reach it there), the proxy on 127.0.0.1:8000. A service token starts alice's
# server through the REST API; the same checks run against the pod KubeSpawner made,
# and the hub must report the server ready and proxy /user/alice/ to it; then the same
# for alice's named server "lab" (pod jupyter-alice--lab, /user/alice/lab/). Then:
# kill the main process (the kubelet restarts the container; one SSH server, same host
# key), stop the server through the hub (pod, Service, TLSRoute garbage-collected, the
# host-key Secret kept; started again: same key), the webhook scaled to 0 (a server
# starts uninjected, the apiserver logs "failing open"; scaled back, injection again).
# Last, ingress.mode traefik: the webhook's ConfigMap switched and the Deployment restarted,
# the controller replaces the session's TLSRoute by an IngressRouteTCP, and the same login
# through Traefik's kubernetesCRD provider; then back to gateway and the login again.
# Without --hub, the main-process kill runs against the plain session pod.
# --ingress-modes (alone or after --first-law): the README followed literally in ingress modes
# none, nodeport and loadbalancer (scripts/node-e2e-modes.sh).
# --first-law: after the plain setup, each bad environment of issue 15 (init image absent,
# install OOM, volume full = binary missing at postStart, runAsNonRoot with a named USER,
# Pod Security restricted) as a pod, with a verdict line each; exits 1 while one is broken.
# --bench: create->Ready p50/p95 with and without injection (NODE_BENCH_N pairs, default
# 10), the SSH server's RSS/CPU idle and during NODE_BENCH_MIB (1024) MiB up and down.
# --hub-bench: the same for servers KubeSpawner makes through the hub (NODE_BENCH_N, default
# 20, of each: profiles "ssh" and "nossh"), from the REST API's POST to the pod's Ready.
# --demo: scripts/demo.sh --cluster (a hub on 127.0.0.1:8000 for a person; DEMO_MINUTES).
# --hub-deps: install the hub's PyPI and npm packages into .work/hub, and end (no cluster).
# Exits 0 only when every check holds; each prints "ok   ..." or "FAIL ...".
# Env: NODE_E2E_TIMEOUT (seconds per wait, default 180), KEEP_CLUSTER=1.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
TIMEOUT=${NODE_E2E_TIMEOUT:-180}
NS=jhub
POD=jupyter-alice
MODE=pod
INGRESS_MODES=0
WITH_BENCH=0
for arg in "$@"; do
    case $arg in
    --hub) MODE=hub ;;
    --hub-bench) MODE=hub HUB_BENCH=1 ;;
    --bench) WITH_BENCH=1 ;;
    --first-law) MODE=firstlaw ;;
    --ingress-modes) INGRESS_MODES=1 ;;
    --demo) MODE=demo ;;
    --hub-deps) MODE=hubdeps ;;
    *) echo "usage: $0 [--hub | --hub-bench | --bench | --first-law [--bench] [--ingress-modes] | --demo | --hub-deps]" >&2; exit 2 ;;
    esac
done
# --bench alone is its own mode; with --first-law it runs first, on the same cluster.
[ "$WITH_BENCH" = 0 ] || [ "$MODE" != pod ] || MODE=bench
NODE_IP=${CLUSTER_NODE_IP:-10.250.0.1}
HUB_DIR=$ROOT/.work/hub
HUB_PID=""
HUB_TOKEN=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')
KUBECONFIG_FILE=$ROOT/.work/cluster/admin.kubeconfig
TMP=$(mktemp -d /tmp/node-e2e.XXXXXX)
PF_PID=""
T0=$SECONDS

# fd 3 and 4: the script's own stdout and stderr, also from inside a redirected command
# (a fail in a wait_for predicate, whose output goes to /dev/null, must still be seen).
exec 3>&1 4>&2
log() { printf '==> %s\n' "$*" >&4; }
ok() { printf 'ok   [%3ds] %s\n' $((SECONDS - T0)) "$*"; }
fail() {
    printf 'FAIL [%3ds] %s\n' $((SECONDS - T0)) "$*" >&3
    diagnostics 2>&4
    exit 1
}
kubectl() { "$ROOT/tests/controlplane/bin/controlplane" kubectl --kubeconfig "$KUBECONFIG_FILE" "$@"; }

diagnostics() {
    [ -f "$KUBECONFIG_FILE" ] || return 0
    {
        # Node pressure first: a pod the kubelet failed says so in .status.reason.
        echo "--- node conditions"
        kubectl get nodes -o jsonpath='{range .items[*].status.conditions[*]}{.type}={.status} {.reason}{"\n"}{end}' 2>&1
        echo "--- pods failed by the node"
        kubectl get pods -A -o jsonpath='{range .items[?(@.status.reason)]}{.metadata.namespace}/{.metadata.name}: {.status.reason} {.status.message}{"\n"}{end}' 2>&1 | tail -n 10
        free -m; df -h / 2>&1 | tail -n 1
        echo "--- pods"
        kubectl get pods -A -o wide 2>&1 | grep -v Evicted | tail -n 20
        echo "--- events ($NS, session-ssh)"
        kubectl -n "$NS" get events --sort-by=.lastTimestamp 2>&1 | tail -n 15
        kubectl -n session-ssh get events --sort-by=.lastTimestamp 2>&1 | tail -n 10
        echo "--- webhook logs"
        kubectl -n session-ssh logs deploy/session-ssh-webhook --tail=20 2>&1
        echo "--- $POD logs"
        kubectl -n "$NS" logs "$POD" -c notebook --tail=20 2>&1
        kubectl -n "$NS" logs "$POD" -c session-ssh-install --tail=20 2>&1
        [ -f "$TMP/pf.log" ] && { echo "--- port-forward"; tail -n 5 "$TMP/pf.log"; }
        [ -f "$TMP/traefik/traefik.log" ] && { echo "--- traefik"; tail -n 15 "$TMP/traefik/traefik.log"; }
    } >&2 || true
}

cleanup() {
    local rc=$?
    # shellcheck disable=SC2086 # a list of pids
    [ -z "$PF_PID" ] || kill $PF_PID 2>/dev/null || true
    ! declare -F traefik_stop >/dev/null || traefik_stop
    if [ -n "$HUB_PID" ]; then
        # (bounded: on SIGTERM the hub stops its servers through the apiserver, which hangs
        # once the cluster is going down; the cluster goes down next anyway)
        kill "$HUB_PID" 2>/dev/null || true
        local i
        for i in $(seq 20); do kill -0 "$HUB_PID" 2>/dev/null || break; sleep 0.5; done
        kill -9 "$HUB_PID" 2>/dev/null || true
        wait "$HUB_PID" 2>/dev/null || true
        [ $rc = 0 ] || tail -n 30 "$HUB_DIR/run/hub.log" >&4 || true
    fi
    rm -rf "$TMP"
    if [ "${KEEP_CLUSTER:-0}" = 1 ]; then
        log "KEEP_CLUSTER=1: cluster left up (scripts/cluster.sh down)"
    else
        local t=$SECONDS
        scripts/cluster.sh down >&4 2>&4 || rc=1
        log "cluster.sh down: $((SECONDS - t)) s"
    fi
    log "node-e2e: $([ $rc = 0 ] && echo PASS || echo FAIL) in $((SECONDS - T0)) s"
    exit $rc
}
trap cleanup EXIT
# (a run cut short by a signal ends as FAIL, not with the last command's status)
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for DESC CMD...: run CMD until it succeeds, at most $TIMEOUT seconds.
wait_for() {
    local desc=$1 deadline=$((SECONDS + TIMEOUT))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || fail "$desc: not within ${TIMEOUT}s"
        sleep 1
    done
}

# gate_is open|closed: wait until every webhook replica's init-image gate says so (its log).
gate_is() {
    wait_for "the webhook's init-image gate $1" gate_last_is "$1"
}
# gate_last_is open|closed: the last gate line of every webhook replica says so.
gate_last_is() {
    local want=$1 p last
    for p in $(kubectl -n session-ssh get pods -l app.kubernetes.io/name=session-ssh-webhook -o name); do
        last=$(kubectl -n session-ssh logs "$p" 2>/dev/null | grep -E 'init image (ready on every node|not known to be on every node)' | tail -n 1)
        case $want in
        open) grep -q 'ready on every node' <<<"$last" || return 1 ;;
        closed) grep -q 'not known to be on every node' <<<"$last" || return 1 ;;
        esac
    done
}
# set_ingress_mode MODE: the webhook's live config (the overlay's, or --hub's with the
# gateway) with ingress.mode MODE: an SNI mode (gateway, traefik, ingress-nginx) keeps the
# overlay's host template and parentRefs, a plain one (none, nodeport, loadbalancer) is
# `ingress: {mode: MODE}` alone. Then the Deployment restarts, and the checks start only
# when no old replica is left (an old one still reconciles its mode's routes while it
# terminates), the init-image gate is open and admission mutates again.
set_ingress_mode() {
    local mode=$1 cm t=$SECONDS
    cm=$(kubectl -n session-ssh get deploy session-ssh-webhook -o jsonpath='{.spec.template.spec.volumes[?(@.name=="config")].configMap.name}')
    [ -n "$cm" ] || fail "the webhook Deployment mounts no config ConfigMap"
    kubectl -n session-ssh get configmap "$cm" -o json | python3 -c '
import json, sys, yaml
live = yaml.safe_load(json.load(sys.stdin)["data"]["config.yaml"])
overlay = yaml.safe_load(open(sys.argv[1]))
mode = sys.argv[2]
if mode in ("gateway", "traefik", "ingress-nginx"):
    live["ingress"] = dict(overlay["ingress"], mode=mode)
else:
    live["ingress"] = {"mode": mode}
print(json.dumps({"data": {"config.yaml": yaml.safe_dump(live, sort_keys=False)}}))
' "$ROOT/manifests/overlays/local-node/config.yaml" "$mode" >"$TMP/cm-patch.json" || fail "config for ingress.mode $mode"
    kubectl -n session-ssh patch configmap "$cm" --type=merge --patch-file "$TMP/cm-patch.json" >/dev/null ||
        fail "patch ConfigMap $cm"
    kubectl -n session-ssh rollout restart deploy/session-ssh-webhook >/dev/null || fail "rollout restart"
    kubectl -n session-ssh rollout status deploy/session-ssh-webhook --timeout="${TIMEOUT}s" >/dev/null ||
        fail "webhook rollout with ingress.mode $mode"
    wait_for "only the new webhook replicas run, Ready (ingress.mode $mode)" webhook_only_new_ready
    gate_is open
    wait_for "a dry-run is mutated (ingress.mode $mode)" dry_run_mutated
    ok "ingress.mode $mode: ConfigMap $cm patched, webhook restarted, only the new replicas run ($((SECONDS - t)) s)"
}
# webhook_only_new_ready: the Deployment's newest ReplicaSet has all the webhook pods, each
# Ready, none terminating, as many as the Deployment wants.
webhook_only_new_ready() {
    kubectl -n session-ssh get deploy,rs,pods -l app.kubernetes.io/name=session-ssh-webhook -o json | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
rev = lambda o: o["metadata"].get("annotations", {}).get("deployment.kubernetes.io/revision")
dep = next(o for o in items if o["kind"] == "Deployment")
rs = [o for o in items if o["kind"] == "ReplicaSet" and rev(o) == rev(dep)]
pods = [o for o in items if o["kind"] == "Pod"]
want = rs[0]["metadata"]["labels"]["pod-template-hash"] if len(rs) == 1 else None
ready = lambda p: any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
ok = want and len(pods) == dep["spec"]["replicas"] and all(
    p["metadata"]["labels"].get("pod-template-hash") == want and ready(p)
    and not p["metadata"].get("deletionTimestamp") for p in pods)
sys.exit(0 if ok else 1)'
}
prepull_pod() { kubectl -n session-ssh get pods -l app.kubernetes.io/name=session-ssh-prepull -o name | head -n 1; }

need_pkgs=()
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need_pkgs+=(openssh-client)
command -v rsync >/dev/null || need_pkgs+=(rsync)
command -v openssl >/dev/null || need_pkgs+=(openssl)
[ ${#need_pkgs[@]} = 0 ] || DEBIAN_FRONTEND=noninteractive apt-get install -y "${need_pkgs[@]}" >/dev/null

# --- the SNI ingress on 443: real Traefik v3 on the host ----------------------------------
# shellcheck source=scripts/node-traefik.sh
. "$ROOT/scripts/node-traefik.sh"

# --- a real JupyterHub (--hub) ------------------------------------------------------------
hub_deps() {
    # (--version also proves the script's #! interpreter exists: a venv copied from another
    # clone keeps that clone's absolute path)
    if ! "$HUB_DIR/venv/bin/jupyterhub" --version >/dev/null 2>&1 || ! "$HUB_DIR/venv/bin/python" -c 'import kubespawner' 2>/dev/null; then
        log "installing jupyterhub==6.1.1 jupyterhub-kubespawner==7.1.0 into $HUB_DIR/venv (PyPI)"
        rm -rf "$HUB_DIR/venv"
        python3 -m venv "$HUB_DIR/venv"
        "$HUB_DIR/venv/bin/pip" install --quiet jupyterhub==6.1.1 jupyterhub-kubespawner==7.1.0 >&2 ||
            fail "pip install jupyterhub jupyterhub-kubespawner"
    fi
    if ! [ -x "$HUB_DIR/node_modules/.bin/configurable-http-proxy" ]; then
        log "installing configurable-http-proxy@4 into $HUB_DIR (npm)"
        command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y npm >/dev/null
        (cd "$HUB_DIR" && npm install --silent --no-audit --no-fund configurable-http-proxy@4) >&2 ||
            fail "npm install configurable-http-proxy"
    fi
}
# --hub-deps: only install the hub's packages (scripts/test.sh runs it beside the builds, so
# the first --hub run does not wait on PyPI and npm); no cluster.
if [ "$MODE" = hubdeps ]; then
    trap - EXIT
    rm -rf "$TMP"
    hub_deps
    exit 0
fi

# --hub-bench: the hub offers two profiles, with and without SSH (run_hub_bench).
HUB_EXTRA_CONFIG=$(cat <<'PY'
c.KubeSpawner.profile_list = [
    {"display_name": "with SSH", "slug": "ssh", "default": True},
    {"display_name": "without SSH", "slug": "nossh", "kubespawner_override": {"extra_labels": {
        "hub.jupyter.org/network-access-hub": "true", "session-ssh.io/inject": "false"}}},
]
PY
)
[ "${HUB_BENCH:-0}" = 1 ] || HUB_EXTRA_CONFIG=""
# --hub kills the notebook process to see the kubelet restart the container (check_kill_main).
# The hub polls each server every 30 s, and KubeSpawner reports a server whose container it
# finds terminated as stopped: a poll that falls in the seconds before the restart makes the
# hub delete the pod (seen in a loaded run). That is KubeSpawner's behaviour with or without
# session-ssh, so the suite turns the poll off; every stop it checks is an explicit one.
HUB_POLL_CONFIG=""
[ "$MODE" != hub ] || [ "${HUB_BENCH:-0}" = 1 ] || HUB_POLL_CONFIG="c.KubeSpawner.poll_interval = 0"

hub_api() { # METHOD PATH [JSON]
    curl -sf -X "$1" -H "Authorization: token $HUB_TOKEN" ${3:+-d "$3"} "http://127.0.0.1:8000/hub/api$2"
}

start_hub() {
    local t=$SECONDS
    hub_deps
    rm -rf "$HUB_DIR/run"
    mkdir -p "$HUB_DIR/run"
    cat >"$HUB_DIR/run/jupyterhub_config.py" <<PYEOF
# What zero-to-jupyterhub's hub config does for KubeSpawner, on this node.
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = 8000
c.ConfigurableHTTPProxy.command = ["$HUB_DIR/node_modules/.bin/configurable-http-proxy"]
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:8001"
# Pods reach the hub on the node IP (they cannot reach the host's loopback).
c.JupyterHub.hub_ip = "$NODE_IP"
c.JupyterHub.hub_port = 8081
c.JupyterHub.hub_connect_ip = "$NODE_IP"
c.JupyterHub.db_url = "sqlite:///$HUB_DIR/run/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "$HUB_DIR/run/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "$HUB_DIR/run/jupyterhub.pid"
c.JupyterHub.cleanup_servers = True
c.JupyterHub.allow_named_servers = True
c.JupyterHub.services = [{"name": "node-e2e", "api_token": "$HUB_TOKEN"}]
c.JupyterHub.load_roles = [{"name": "node-e2e", "services": ["node-e2e"],
    "scopes": ["admin:users", "admin:servers", "access:servers", "read:users"]}]
c.JupyterHub.spawner_class = "kubespawner.KubeSpawner"
c.KubeSpawner.namespace = "$NS"
c.KubeSpawner.image = "localhost/session-ssh/jupyter-session:dev"
c.KubeSpawner.image_pull_policy = "IfNotPresent"
c.KubeSpawner.cmd = ["jupyterhub-singleuser"]
c.KubeSpawner.uid = 1000
c.KubeSpawner.fs_gid = 100
c.KubeSpawner.mem_guarantee = "256M"
c.KubeSpawner.start_timeout = $TIMEOUT
c.KubeSpawner.http_timeout = $TIMEOUT
c.KubeSpawner.events_enabled = True
c.KubeSpawner.extra_labels = {"hub.jupyter.org/network-access-hub": "true"}
${HUB_POLL_CONFIG:-}
${HUB_EXTRA_CONFIG:-}
PYEOF
    (cd "$HUB_DIR/run" && KUBECONFIG=$KUBECONFIG_FILE exec "$HUB_DIR/venv/bin/jupyterhub" \
        -f "$HUB_DIR/run/jupyterhub_config.py" >"$HUB_DIR/run/hub.log" 2>&1) &
    HUB_PID=$!
    hub_up() {
        kill -0 "$HUB_PID" 2>/dev/null || fail "jupyterhub exited: $(tail -n 20 "$HUB_DIR/run/hub.log")"
        hub_api GET /
    }
    wait_for "JupyterHub answers on 127.0.0.1:8000" hub_up
    ok "JupyterHub $(hub_api GET / | tr -d '\n') up with KubeSpawner ($((SECONDS - t)) s)"
}

# spawn_via_hub [SERVER]: start alice's default (or named) server through the hub's REST
# API, wait until the hub calls it ready, and set POD to the pod KubeSpawner made.
spawn_via_hub() {
    local t=$SECONDS server=${1:-} path=/users/alice/server
    [ -z "$server" ] || path=/users/alice/servers/$server
    hub_api GET /users/alice >/dev/null || hub_api POST /users/alice >/dev/null || fail "hub API: create user alice"
    hub_api POST "$path" >/dev/null || fail "hub API: POST $path"
    alice_ready() {
        hub_api GET /users/alice | python3 -c 'import json,sys; s=json.load(sys.stdin)["servers"].get(sys.argv[1]); sys.exit(0 if s and s["ready"] else 1)' "$server"
    }
    wait_for "the hub reports alice's server '$server' ready" alice_ready
    POD=$(kubectl -n "$NS" get pods -l "component=singleuser-server,hub.jupyter.org/username=alice,hub.jupyter.org/servername=$server" \
        -o jsonpath='{.items[0].metadata.name}')
    [ -n "$POD" ] || fail "no singleuser-server pod of alice's server '$server'"
    ok "hub API: POST $path -> KubeSpawner made pod $POD, ready in $((SECONDS - t)) s"
}

# gateway_overlay: .work/overlay-gateway = local-node + manifests/gateway, with fresh keys.
gateway_overlay() {
    local dir=$ROOT/.work/overlay-gateway
    rm -rf "$dir"
    mkdir -p "$dir"
    ssh-keygen -q -t ed25519 -N '' -C session-ssh-gateway -f "$TMP/gw_host"
    ssh-keygen -q -t ed25519 -N '' -C session-ssh-gateway-ca -f "$TMP/gw_user_ca"
    { cat manifests/overlays/local-node/config.yaml
      printf 'gateway:\n  userCaPublicKey: "%s"\n  hubTokenLogin: true\n' "$(cat "$TMP/gw_user_ca.pub")"
    } >"$dir/config.yaml"
    cat >"$dir/gateway-env.yaml" <<YAML
apiVersion: apps/v1
kind: Deployment
metadata:
  name: session-ssh-gateway
  namespace: session-ssh
spec:
  template:
    spec:
      containers:
        - name: gateway
          env:
            - name: GATEWAY_HUB_API_URL
              value: http://$NODE_IP:8081/hub/api
YAML
    cat >"$dir/kustomization.yaml" <<'YAML'
# Made by scripts/node-e2e.sh --hub: the local node's install plus the SSH gateway.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../manifests/overlays/local-node
components:
  - ../../manifests/gateway
images:
  - name: session-ssh-gateway
    newName: localhost/session-ssh/gateway
    newTag: dev
  - name: ghcr.io/session-ssh/gateway
    newName: localhost/session-ssh/gateway
    newTag: dev
configMapGenerator:
  - name: session-ssh-config
    namespace: session-ssh
    behavior: replace
    files:
      - config.yaml
patches:
  - path: gateway-env.yaml
YAML
}

# check_gateway: alice's default server through the SSH gateway's Service (issue 15 item 6):
# `ssh alice@<gateway>` with her key (uid, the image's variable, PTY, the VS Code pattern,
# 256 MiB scp up + sftp down), then with a hub API token and no key at all.
check_gateway() {
    local t=$SECONDS gip out token mib=${NODE_E2E_TRANSFER_MIB:-256}
    kubectl -n session-ssh rollout status deploy/session-ssh-gateway --timeout="${TIMEOUT}s" >&2 ||
        fail "gateway Deployment not available"
    gip=$(kubectl -n session-ssh get svc session-ssh-gateway -o jsonpath='{.spec.clusterIP}')
    echo "$gip $(cut -d' ' -f1,2 "$TMP/gw_host.pub")" >"$TMP/gw_known_hosts"
    local g=(ssh -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/gw_known_hosts" -o ConnectTimeout=10)
    gw_login() { "${g[@]}" "alice@$gip" true; }
    wait_for "a login through the gateway" gw_login
    out=$("${g[@]}" "alice@$gip" 'echo "$(id -u) $SESSION_IMAGE_VAR"') || fail "ssh alice@gateway"
    [ "$out" = "1000 from-image" ] || fail "through the gateway: got '$out', want '1000 from-image'"
    ok "ssh alice@$gip (the gateway's Service, its host key pinned): uid 1000, SESSION_IMAGE_VAR=from-image ($((SECONDS - t)) s)"
    out=$("${g[@]}" -tt "alice@$gip" 'tty; echo "shell=$0"' 2>/dev/null | tr -d '\r')
    grep -q '^/dev/pts/' <<<"$out" || fail "no PTY through the gateway: $out"
    out=$(echo 'echo "vscode=$((6*7))"' | "${g[@]}" "alice@$gip" bash) || fail "VS Code pattern through the gateway"
    [ "$out" = vscode=42 ] || fail "bash on stdin through the gateway: $out"
    local lport
    lport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${g[@]}" -N -L "127.0.0.1:$lport:127.0.0.1:8888" "alice@$gip" &
    local fwd=$!
    fwd_up() { curl -sf "http://127.0.0.1:$lport/user/alice/api" >/dev/null; }
    wait_for "ssh -L to 8888 through the gateway" fwd_up
    kill "$fwd" 2>/dev/null; wait "$fwd" 2>/dev/null || true
    ok "through the gateway: PTY, bash on stdin (vscode=42), ssh -L to the notebook's 8888"
    if [ "$mib" -gt 0 ]; then
        head -c "$((mib * 1048576))" /dev/urandom >"$TMP/gw_up.bin"
        t=$SECONDS
        scp -q -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes \
            -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/gw_known_hosts" \
            "$TMP/gw_up.bin" "alice@$gip:gw_up.bin" || fail "scp up through the gateway"
        sftp -q -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes \
            -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/gw_known_hosts" \
            "alice@$gip:gw_up.bin" "$TMP/gw_down.bin" >/dev/null || fail "sftp down through the gateway"
        [ "$(sha256sum <"$TMP/gw_up.bin")" = "$(sha256sum <"$TMP/gw_down.bin")" ] ||
            fail "256 MiB through the gateway: sha256 differs"
        "${g[@]}" "alice@$gip" rm -f gw_up.bin
        rm -f "$TMP/gw_up.bin" "$TMP/gw_down.bin"
        ok "through the gateway: scp up + sftp down of $mib MiB, sha256 equal ($((SECONDS - t)) s)"
    fi
    # A hub API token as the password, no key: alice makes one with her hub password
    # (DummyAuthenticator takes any), as from the hub's token page.
    token=$(curl -sf -X POST -d '{"auth": {"username": "alice", "password": "any"}, "note": "ssh"}' \
        "http://127.0.0.1:8000/hub/api/users/alice/tokens" | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])') ||
        fail "hub API: alice's token"
    printf '#!/bin/sh\nprintf "%%s\\n" "$HUB_TOKEN"\n' >"$TMP/askpass"
    chmod 700 "$TMP/askpass"
    out=$(HUB_TOKEN=$token SSH_ASKPASS=$TMP/askpass SSH_ASKPASS_REQUIRE=force \
        ssh -F /dev/null -o PubkeyAuthentication=no -o PreferredAuthentications=keyboard-interactive \
        -o NumberOfPasswordPrompts=1 -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/gw_known_hosts" \
        -o ConnectTimeout=10 "alice@$gip" 'id -u' </dev/null) || fail "hub-token login through the gateway"
    [ "$out" = 1000 ] || fail "hub-token login: got '$out'"
    out=$(HUB_TOKEN=0123456789abcdef0123456789abcdef SSH_ASKPASS=$TMP/askpass SSH_ASKPASS_REQUIRE=force \
        ssh -F /dev/null -o PubkeyAuthentication=no -o PreferredAuthentications=keyboard-interactive \
        -o NumberOfPasswordPrompts=1 -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/gw_known_hosts" \
        -o ConnectTimeout=10 "alice@$gip" 'id -u' </dev/null 2>&1) && fail "a made-up token logged in: $out"
    ok "through the gateway with alice's hub API token and no key: uid 1000; a made-up token refused"
}

# 1. cluster and images (Traefik first: a build that fails costs no cluster)
traefik_build
t=$SECONDS
# The suite's cluster is its own (it goes down at the end): one still up from a run that was
# killed, or kept with KEEP_CLUSTER=1, holds that run's objects, so it goes first.
if scripts/cluster.sh status >/dev/null 2>&1; then
    log "a cluster is up (left by an earlier run): scripts/cluster.sh down first"
    scripts/cluster.sh down >&2 || fail "scripts/cluster.sh down (the leftover cluster)"
fi
scripts/cluster.sh up >&2 || fail "scripts/cluster.sh up"
ok "cluster up ($((SECONDS - t)) s): $(kubectl get nodes --no-headers | awk '{print $1, $2, $5}')"
t=$SECONDS
scripts/node-images.sh >&2 || fail "scripts/node-images.sh"
ok "images built and imported ($((SECONDS - t)) s)"

# 2. install as an admin
kubectl create namespace "$NS" >/dev/null
kubectl label namespace "$NS" session-ssh.io/enabled=true >/dev/null
# The route kinds' CRDs, as a cluster with Traefik and the Gateway API has them.
traefik_crds
OVERLAY=manifests/overlays/local-node
if [ "$MODE" = hub ]; then
    # The SSH gateway too (issue 15 item 6): its two keys, the webhook told its user CA and
    # to take hub-token logins, the gateway told the hub's API on the node IP.
    gateway_overlay
    OVERLAY=.work/overlay-gateway
fi
kubectl apply -k "$OVERLAY" >"$TMP/apply.log" 2>&1 || {
    cat "$TMP/apply.log" >&2
    fail "kubectl apply -k $OVERLAY"
}
ok "kubectl apply -k $OVERLAY: $(grep -c . "$TMP/apply.log") objects"
if [ "$MODE" = hub ]; then
    kubectl -n session-ssh create secret generic session-ssh-gateway-host-key \
        --from-file=ssh_host_ed25519_key="$TMP/gw_host" >/dev/null
    kubectl -n session-ssh create secret generic session-ssh-gateway-user-ca \
        --from-file=user_ca="$TMP/gw_user_ca" >/dev/null
fi
t=$SECONDS
kubectl -n session-ssh rollout status deploy/session-ssh-webhook --timeout="${TIMEOUT}s" >&2 ||
    fail "webhook Deployment not available"
ok "webhook Deployment available ($((SECONDS - t)) s): $(kubectl -n session-ssh get pods -l app.kubernetes.io/name=session-ssh-webhook --no-headers | awk '{printf "%s %s %s; ", $1, $2, $3}')"
t=$SECONDS
kubectl -n session-ssh rollout status ds/session-ssh-prepull --timeout="${TIMEOUT}s" >&2 ||
    fail "pre-pull DaemonSet not ready"
gate_is open
ok "pre-pull DaemonSet ready, the webhook's init-image gate open ($((SECONDS - t)) s)"
ca_bundle() { kubectl get mutatingwebhookconfiguration session-ssh -o jsonpath='{.webhooks[0].clientConfig.caBundle}'; }
wait_for "caBundle patched by the webhook" test -n "$(ca_bundle)"
ok "self-managed TLS: caBundle set ($(ca_bundle | base64 -d | openssl x509 -noout -subject 2>/dev/null || echo '?')), Secret $(kubectl -n session-ssh get secret session-ssh-webhook-tls -o name)"
traefik_install

# 3-4. the key, a stand-in hub API, the session pod
ssh-keygen -q -t ed25519 -N '' -C alice@node-e2e -f "$TMP/id_alice"
kubectl -n "$NS" create secret generic ssh-keys-alice --from-file=authorized_keys="$TMP/id_alice.pub" >/dev/null
ok "Secret $NS/ssh-keys-alice holds $(ssh-keygen -lf "$TMP/id_alice.pub" | awk '{print $2}')"

if [ "$MODE" != hub ] && [ "$MODE" != demo ]; then
kubectl -n "$NS" apply -f - >/dev/null <<'EOF'
apiVersion: v1
kind: Pod
metadata:
  name: hub-api-stub
  labels: {app: jupyterhub, component: hub}
spec:
  containers:
    - name: hub
      image: localhost/session-ssh/jupyter-session:dev
      imagePullPolicy: IfNotPresent
      command: [python3, -c]
      args:
        - |
          import http.server
          class H(http.server.BaseHTTPRequestHandler):
              def reply(self):
                  self.send_response(200)
                  self.send_header("X-JupyterHub-Version", "6.1.1")
                  self.send_header("Content-Type", "application/json")
                  self.end_headers()
                  self.wfile.write(b"{}")
              do_GET = do_POST = reply
          http.server.ThreadingHTTPServer(("0.0.0.0", 8081), H).serve_forever()
      ports: [{containerPort: 8081, name: http}]
---
apiVersion: v1
kind: Service
metadata:
  name: hub
spec:
  selector: {component: hub}
  ports: [{port: 8081, targetPort: 8081}]
EOF
HUB_IP=$(kubectl -n "$NS" get svc hub -o jsonpath='{.spec.clusterIP}')
else
    HUB_IP=$NODE_IP # the real hub's API (only for the dry-run pod below)
fi

cat >"$TMP/pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $POD
  labels:
    app: jupyterhub
    component: singleuser-server
    heritage: jupyterhub
    hub.jupyter.org/network-access-hub: "true"
    hub.jupyter.org/servername: ""
    hub.jupyter.org/username: alice
  annotations:
    hub.jupyter.org/username: alice
spec:
  automountServiceAccountToken: false
  restartPolicy: OnFailure
  securityContext:
    fsGroup: 100
  containers:
    - name: notebook
      image: localhost/session-ssh/jupyter-session:dev
      imagePullPolicy: IfNotPresent
      args: [jupyterhub-singleuser]
      env:
        - {name: JUPYTERHUB_API_TOKEN, value: node-e2e-token}
        - {name: JPY_API_TOKEN, value: node-e2e-token}
        - {name: JUPYTERHUB_API_URL, value: "http://$HUB_IP:8081/hub/api"}
        - {name: JUPYTERHUB_ACTIVITY_URL, value: "http://$HUB_IP:8081/hub/api/users/alice/activity"}
        - {name: JUPYTERHUB_BASE_URL, value: /}
        - {name: JUPYTERHUB_CLIENT_ID, value: jupyterhub-user-alice}
        - {name: JUPYTERHUB_HOST, value: ""}
        - {name: JUPYTERHUB_OAUTH_CALLBACK_URL, value: /user/alice/oauth_callback}
        - {name: JUPYTERHUB_OAUTH_SCOPES, value: '["access:servers!server=alice/"]'}
        - {name: JUPYTERHUB_SERVER_NAME, value: ""}
        - {name: JUPYTERHUB_SERVICE_PREFIX, value: /user/alice/}
        - {name: JUPYTERHUB_SERVICE_URL, value: "http://0.0.0.0:8888/user/alice/"}
        - {name: JUPYTERHUB_USER, value: alice}
        - {name: MEM_GUARANTEE, value: "1073741824"}
      ports:
        - {containerPort: 8888, name: notebook-port, protocol: TCP}
      resources:
        requests: {memory: 256Mi}
      securityContext:
        runAsUser: 1000
        allowPrivilegeEscalation: false
EOF
# pod_named NAME [SED...]: $TMP/pod.yaml as pod NAME (alice's still), edited by the sed scripts.
pod_named() {
    local name=$1
    shift
    sed -e "s/^  name: $POD\$/  name: $name/" "$@" "$TMP/pod.yaml"
}

# Admission through the Service (kube-proxy) may lag the Deployment's availability by
# a moment: a server-side dry run shows what the stored pod will be (the webhook
# makes no host-key Secret on a dry run).
pod_named dry-run >"$TMP/dry.yaml"
dry_run_mutated() {
    kubectl -n "$NS" create --dry-run=server -f "$TMP/dry.yaml" -o jsonpath='{.spec.initContainers[*].name}' |
        grep -qw session-ssh-install
}
t=$SECONDS
wait_for "a dry-run of the session pod comes back mutated" dry_run_mutated
ok "admission: dry-run create of $POD is mutated ($((SECONDS - t)) s after the rollout)"

if [ "$MODE" = demo ]; then
    start_hub
elif [ "$MODE" != hub ]; then
    kubectl -n "$NS" create -f "$TMP/pod.yaml" >/dev/null
else
    start_hub
    spawn_via_hub
fi
if [ "$MODE" != hub ] && [ "$MODE" != demo ]; then
    kubectl -n "$NS" wait --for=condition=Ready pod/hub-api-stub --timeout="${TIMEOUT}s" >/dev/null ||
        fail "hub-api-stub not Ready"
fi

# check_session POD SERVER: steps 5-6 against one session pod (SERVER: the hub's server
# name, "" for the default one).
check_session() {
    local pod=$1 server=$2 prefix=/user/alice/ init hook t known svc port out api probe restarts
    [ -z "$server" ] || prefix=/user/alice/$server/
    init=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')
    hook=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.containers[?(@.name=="notebook")].lifecycle.postStart.exec.command}')
    case " $init " in *" session-ssh-install "*) ok "$pod mutated: init containers [$init]" ;; *) fail "$pod not mutated: init containers [$init]" ;; esac
    case $hook in *init-sshd*start*) ok "$pod mutated: postStart $hook" ;; *) fail "$pod: no postStart hook of init-sshd: '$hook'" ;; esac
    t=$SECONDS
    kubectl -n "$NS" wait --for=condition=Ready "pod/$pod" --timeout="${TIMEOUT}s" >/dev/null ||
        fail "$pod not Ready within ${TIMEOUT}s"
    ok "$pod Running/Ready ($((SECONDS - t)) s): $(kubectl -n "$NS" get pod "$pod" --no-headers | awk '{print $2, $3, "restarts=" $4}')"

    known() { kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/known-hosts}'; }
    wait_for "controller publishes session-ssh.io/known-hosts on $pod" test -n "$(known)"
    known=$(known)
    svc=$(kubectl -n "$NS" get svc "$pod" -o jsonpath='{.spec.clusterIP} {.spec.ports[*].port} owner={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}') ||
        fail "controller made no Service $NS/$pod"
    ok "controller: Service $pod ($svc), known-hosts published: $(cut -c1-60 <<<"$known")..."

    # ssh through kubectl port-forward, the published host key pinned for that address.
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    # (the log of an earlier call says "Forwarding" too: gone first, so the wait below
    # cannot see it before this port-forward has truncated the file)
    rm -f "$TMP/pf.log"
    kubectl -n "$NS" port-forward --address 127.0.0.1 "pod/$pod" "$port:2222" >"$TMP/pf.log" 2>&1 &
    PF_PID="$PF_PID $!"
    wait_for "port-forward 127.0.0.1:$port -> $pod:2222" grep -q Forwarding "$TMP/pf.log"
    awk '{print "[127.0.0.1]:'"$port"'", $(NF-1), $NF}' <<<"$known" | grep -E 'ssh-|ecdsa-' >>"$TMP/known_hosts" ||
        fail "cannot read a host key from the known-hosts annotation: $known"
    SSH=(ssh -F /dev/null -p "$port" -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/known_hosts" -o ConnectTimeout=10 alice@127.0.0.1)
    out=$(timeout 60 "${SSH[@]}" 'echo "uid=$(id -u)"; echo "var=$SESSION_IMAGE_VAR"; echo "path=$PATH"; echo "home=$HOME"' 2>"$TMP/ssh.err") ||
        fail "ssh through port-forward to $pod: $(tail -n 5 "$TMP/ssh.err")"
    printf '%s\n' "$out" | sed 's/^/     /'
    grep -qx 'uid=1000' <<<"$out" || fail "id -u is not 1000"
    ok "ssh via port-forward to $pod (host key pinned from the pod's annotation): id -u = 1000"
    # The login's audit line is in the session container's own log (kubectl logs).
    local audit
    audit=$(kubectl -n "$NS" logs "$pod" -c notebook 2>/dev/null | grep -F '"event":"login"' | grep -F '"outcome":"accepted"' | tail -n 1)
    [ -n "$audit" ] || fail "no login audit line in kubectl logs of $pod (container notebook)"
    ok "kubectl logs $pod -c notebook has the login: $(cut -c1-160 <<<"$audit")"
    grep -qx 'var=from-image' <<<"$out" || fail "SESSION_IMAGE_VAR is not the image's 'from-image'"
    ok "ssh: SESSION_IMAGE_VAR = from-image (the image's ENV)"
    grep -q '^path=/opt/venv/bin:' <<<"$out" || fail "PATH is not the image's (/opt/venv/bin first)"
    ok "ssh: PATH starts with the image's /opt/venv/bin"

    # Through the Service ClusterIP from the node (kube-proxy's iptables rules), the same
    # published host key pinned for that address.
    local cip lport size=${NODE_E2E_TRANSFER_MIB:-256}
    cip=$(kubectl -n "$NS" get svc "$pod" -o jsonpath='{.spec.clusterIP}')
    awk '{print "'"$cip"'", $(NF-1), $NF}' <<<"$known" | grep -E 'ssh-|ecdsa-' >>"$TMP/known_hosts"
    local SSHC=(ssh -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/known_hosts" -o ConnectTimeout=10)
    out=$(timeout 60 "${SSHC[@]}" "alice@$cip" 'echo "uid=$(id -u) var=$SESSION_IMAGE_VAR"' 2>"$TMP/ssh.err") ||
        fail "ssh to the Service ClusterIP $cip:22: $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = "uid=1000 var=from-image" ] || fail "ssh via ClusterIP: '$out'"
    ok "ssh via Service ClusterIP $cip:22 from the node (kube-proxy): $out"
    # A PTY login shell.
    # (stdin stays open until the shell has read the line: an EOF first may hang the pty up)
    out=$({ sleep 2; printf 'tty; echo "shell=$0"; exit\n'; sleep 5; } |
        timeout 60 "${SSHC[@]}" -tt "alice@$cip" 2>"$TMP/ssh.err" | tr -d '\r') ||
        fail "ssh -tt: $(tail -n 5 "$TMP/ssh.err")"
    # (bash's bracketed-paste escapes precede the lines: match inside them)
    grep -q '/dev/pts/[0-9]' <<<"$out" && grep -q 'shell=-' <<<"$out" ||
        fail "no PTY login shell: $(tail -n 5 <<<"$out")"
    ok "PTY login shell: $(grep -o '/dev/pts/[0-9]*' <<<"$out") $(grep -o 'shell=-[a-z]*' <<<"$out")"
    # The VS Code Remote-SSH pattern: a script on bash's stdin, then -L to the session's port.
    out=$(echo 'echo "vscode=$((40 + 2)) $(uname -s)"' | timeout 60 "${SSHC[@]}" "alice@$cip" bash 2>"$TMP/ssh.err") ||
        fail "bash on stdin: $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = "vscode=42 Linux" ] || fail "bash on stdin printed '$out'"
    lport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "${SSHC[@]}" -N -o ExitOnForwardFailure=yes -L "127.0.0.1:$lport:127.0.0.1:8888" "alice@$cip" 2>"$TMP/fwd.err" &
    PF_PID="$PF_PID $!"
    fwd_up() { curl -sf "http://127.0.0.1:$lport${prefix}api" >"$TMP/fwd.out"; }
    wait_for "ssh -L $lport -> the session's 8888" fwd_up
    ok "VS Code pattern: bash on stdin ($out), then ssh -L to 8888: ${prefix}api $(tr -d '\n' <"$TMP/fwd.out")"
    # sftp and scp (OpenSSH 9's scp speaks SFTP; the image has no sftp-server: init-sshd
    # serves it), a ${size} MiB file both ways, sha256 equal.
    if [ "$size" -gt 0 ]; then
        head -c "$((size * 1024 * 1024))" /dev/urandom >"$TMP/blob"
        local want got t0=$SECONDS
        want=$(sha256sum <"$TMP/blob" | cut -d' ' -f1)
        timeout 300 scp -q -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes \
            -o UserKnownHostsFile="$TMP/known_hosts" "$TMP/blob" "alice@$cip:blob" 2>"$TMP/scp.err" ||
            fail "scp up: $(tail -n 5 "$TMP/scp.err")"
        got=$(timeout 120 "${SSHC[@]}" "alice@$cip" 'sha256sum blob' | cut -d' ' -f1)
        [ "$got" = "$want" ] || fail "scp: sha256 in the pod $got, want $want"
        printf 'get blob %s\nrm blob\n' "$TMP/blob.back" >"$TMP/sftp.batch"
        timeout 300 sftp -q -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes \
            -o UserKnownHostsFile="$TMP/known_hosts" -b "$TMP/sftp.batch" "alice@$cip" >/dev/null 2>"$TMP/sftp.err" ||
            fail "sftp get: $(tail -n 5 "$TMP/sftp.err")"
        got=$(sha256sum <"$TMP/blob.back" | cut -d' ' -f1)
        [ "$got" = "$want" ] || fail "sftp: sha256 back $got, want $want"
        rm -f "$TMP/blob" "$TMP/blob.back"
        ok "scp up + sftp down of $size MiB via ClusterIP, sha256 equal ($((SECONDS - t0)) s)"
    fi

    # Through the SNI route on 443 (the Gateway's port, Traefik), with nothing but
    # what the pod publishes: its ssh-config block (Traefik answers on the node IP,
    # not on the .test name: -connect there, the name stays the SNI) and a known_hosts
    # file holding only the annotation's line, verbatim; StrictHostKeyChecking yes.
    local route rhost alias
    route=$(kubectl -n "$NS" get tlsroute "$pod" -o jsonpath='{.spec.hostnames[0]} -> {.spec.rules[0].backendRefs[0].name}:{.spec.rules[0].backendRefs[0].port} owner={.metadata.ownerReferences[0].kind}/{.metadata.ownerReferences[0].name}') ||
        fail "controller made no TLSRoute $NS/$pod"
    router_sync
    rhost=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/ssh-host}')
    kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/ssh-config}' |
        sed "s/-connect %h:443/-connect $NODE_IP:443/" >"$TMP/sni_config.$pod"
    [ "$rhost" = "${route%% *}" ] || fail "ssh-host annotation '$rhost' is not the TLSRoute's hostname (${route%% *})"
    # ports.sshTls of the overlay is not the default 2443: the Service must target it (and
    # the logins below prove the server listens there).
    # (The Service targets the container port by its name; the pod's spec gives its number.)
    local want_tls target tport
    want_tls=$(awk '$1 == "sshTls:" {print $2}' manifests/overlays/local-node/config.yaml)
    target=$(kubectl -n "$NS" get svc "$pod" -o jsonpath='{.spec.ports[?(@.port==443)].targetPort}')
    case $target in
        '' | *[!0-9]*) tport=$(kubectl -n "$NS" get pod "$pod" -o jsonpath="{.spec.containers[*].ports[?(@.name==\"$target\")].containerPort}") ;;
        *) tport=$target ;;
    esac
    [ -n "$want_tls" ] && [ "$tport" = "$want_tls" ] ||
        fail "Service $pod: port 443 targets '$target' = pod port '$tport', want ports.sshTls '$want_tls'"
    printf '%s\n' "$known" >"$TMP/sni_known.$pod"
    alias=$(awk '$1 == "Host" {print $2; exit}' "$TMP/sni_config.$pod")
    grep -q "ProxyCommand openssl s_client" "$TMP/sni_config.$pod" && [ -n "$alias" ] ||
        fail "ssh-config annotation of $pod has no SNI block: $(cat "$TMP/sni_config.$pod")"
    # (ssh keeps the first value of an option: the known_hosts file is given once, last)
    local SSHS0=(ssh -F "$TMP/sni_config.$pod" -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10)
    SSHS=("${SSHS0[@]}" -o UserKnownHostsFile="$TMP/sni_known.$pod")
    out=$(timeout 60 "${SSHS[@]}" "$alias" 'echo "uid=$(id -u) var=$SESSION_IMAGE_VAR"' 2>"$TMP/ssh.err") ||
        fail "ssh through the SNI router on $NODE_IP:443 as $alias: $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = "uid=1000 var=from-image" ] || fail "ssh via SNI: '$out'"
    wait_for "Traefik accepts TLSRoute $NS/$pod" tlsroute_accepted "$pod"
    ok "ssh via Traefik on 443 (router $(traefik_router_of "$rhost"), TLSRoute Accepted by traefik.io/gateway-controller) -> Service 443 -> $target = pod port $tport (TLSRoute $route, $ROUTES TCP routers; known_hosts = only '$(cut -c1-45 <<<"$known")...'): $out"
    # ... and the same with another key in that line is refused (the check can fail).
    rm -f "$TMP/other_host_key.$pod" "$TMP/other_host_key.$pod.pub"
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/other_host_key.$pod"
    awk '{print $1, $(NF-1)}' <<<"$known" | tr '\n' ' ' >"$TMP/sni_wrong.$pod"
    awk '{print $2}' "$TMP/other_host_key.$pod.pub" >>"$TMP/sni_wrong.$pod"
    if timeout 60 "${SSHS0[@]}" -o UserKnownHostsFile="$TMP/sni_wrong.$pod" "$alias" true 2>"$TMP/ssh.err"; then
        fail "ssh via SNI accepted a known_hosts line with another host key"
    fi
    grep -q "Host key verification failed" "$TMP/ssh.err" || fail "ssh via SNI with a wrong key: $(tail -n 3 "$TMP/ssh.err")"
    ok "ssh via SNI with another key in that known_hosts line: refused (Host key verification failed)"
    # rsync over that route (the image's own rsync at the far end), up and down.
    if [ "$size" -gt 0 ]; then
        head -c "$((size * 1024 * 1024))" /dev/urandom >"$TMP/blob"
        local want got t0=$SECONDS
        want=$(sha256sum <"$TMP/blob" | cut -d' ' -f1)
        local RSH="ssh -F $TMP/sni_config.$pod -i $TMP/id_alice -o IdentitiesOnly=yes -o BatchMode=yes -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$TMP/sni_known.$pod -o GlobalKnownHostsFile=/dev/null"
        timeout 300 rsync -e "$RSH" "$TMP/blob" "$alias:rsync-blob" 2>"$TMP/rsync.err" ||
            fail "rsync up via SNI: $(tail -n 5 "$TMP/rsync.err")"
        got=$(timeout 120 "${SSHS[@]}" "$alias" 'sha256sum rsync-blob' | cut -d' ' -f1)
        [ "$got" = "$want" ] || fail "rsync up: sha256 in the pod $got, want $want"
        timeout 300 rsync -e "$RSH" --remove-source-files "$alias:rsync-blob" "$TMP/blob.back" 2>"$TMP/rsync.err" ||
            fail "rsync down via SNI: $(tail -n 5 "$TMP/rsync.err")"
        got=$(sha256sum <"$TMP/blob.back" | cut -d' ' -f1)
        [ "$got" = "$want" ] || fail "rsync down: sha256 back $got, want $want"
        rm -f "$TMP/blob" "$TMP/blob.back"
        ok "rsync up + down of $size MiB via the SNI router, sha256 equal ($((SECONDS - t0)) s; remote $(timeout 30 "${SSHS[@]}" "$alias" 'rsync --version | head -n 1' | awk '{print $1, $3}'))"
    fi

    # The session itself keeps working with SSH injected: jupyterhub-singleuser answers
    # on 8888 (asked from inside, over ssh), and the container never restarted.
    api=http://127.0.0.1:8888${prefix}api
    probe="python3 -c \"import urllib.request; print(urllib.request.urlopen('$api', timeout=5).read().decode())\""
    single_user_up() { timeout 30 "${SSH[@]}" "$probe" >"$TMP/api.out" 2>/dev/null; }
    wait_for "jupyterhub-singleuser answers $api" single_user_up
    ok "jupyterhub-singleuser answers $api: $(tr -d '\n' <"$TMP/api.out")"
    restarts=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="notebook")].restartCount}')
    [ "$restarts" = 0 ] || fail "container notebook restarted $restarts times"
    ok "$pod container notebook: 0 restarts, pod $(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.status.phase}')"

    if [ "$MODE" = hub ]; then
        ready=$(hub_api GET /users/alice | python3 -c 'import json,sys; print(json.load(sys.stdin)["servers"][sys.argv[1]]["ready"])' "$server")
        [ "$ready" = True ] || fail "the hub does not report alice's server '$server' ready"
        code=$(curl -s -o "$TMP/proxied" -w '%{http_code}' -H "Authorization: token $HUB_TOKEN" \
            "http://127.0.0.1:8000${prefix}api")
        [ "$code" = 200 ] || fail "GET ${prefix}api through the hub's proxy: HTTP $code"
        ok "hub: alice's server '$server' ready; ${prefix}api through configurable-http-proxy: $(tr -d '\n' <"$TMP/proxied")"
    fi
}

# --- resilience ---------------------------------------------------------------------------
# pin POD FILE: a known_hosts FILE with only the pod's published host key, under the alias
# "session" (ssh_pinned checks it with HostKeyAlias, whatever the Service IP is then).
pin() {
    local k
    k=$(kubectl -n "$NS" get pod "$1" -o jsonpath='{.metadata.annotations.session-ssh\.io/known-hosts}')
    [ -n "$k" ] || return 1
    awk '{print "session", $(NF-1), $NF}' <<<"$k" >"$2"
}
ssh_pinned() { # FILE POD CMD: ssh to the pod's ClusterIP with only FILE as known_hosts
    local c
    c=$(kubectl -n "$NS" get svc "$2" -o jsonpath='{.spec.clusterIP}') || return 1
    timeout 60 ssh -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes \
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$1" -o GlobalKnownHostsFile=/dev/null \
        -o HostKeyAlias=session -o ConnectTimeout=10 "alice@$c" "$3"
}
host_key_of() { kubectl -n "$NS" get pod "$1" -o jsonpath='{.metadata.annotations.session-ssh\.io/known-hosts}' | awk '{print $NF}'; }
# serve_pids POD [NS]: the pod's session SSH server processes, seen from the node (this script
# runs there as root), not by exec in the pod: images need not have pgrep (busybox-static
# lacks it). The cgroup path holds pod<uid>, with _ for - under the systemd driver.
serve_pids() {
    local uid p
    uid=$(kubectl -n "${2:-$NS}" get pod "$1" -o jsonpath='{.metadata.uid}') && [ -n "$uid" ] || return 1
    for p in $(pgrep -f '/opt/session-ssh/bin/init-sshd serve'); do
        grep -qE "pod(${uid}|${uid//-/_})" "/proc/$p/cgroup" 2>/dev/null && echo "$p"
    done
    return 0
}
servers_running() { # POD: how many session SSH servers it runs
    local pids
    pids=$(serve_pids "$1") || return 1
    if [ -z "$pids" ]; then echo 0; else wc -l <<<"$pids"; fi
}
# has_ssh POD [NS]: the pod runs a session SSH server.
has_ssh() { [ -n "$(serve_pids "$@")" ]; }

# Kill the session's main process (jupyterhub-singleuser, tini's child) with SIGKILL: the
# kubelet restarts the container (restartPolicy OnFailure, as KubeSpawner sets it); the
# postStart hook runs again; then exactly one SSH server answers, with the same host key.
check_kill_main() {
    local pod=$1 r0 r1 key0 n t=$SECONDS
    r0=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="notebook")].restartCount}')
    key0=$(host_key_of "$pod")
    pin "$pod" "$TMP/kill_known" || fail "$pod: no known-hosts or Service to pin"
    n=$(servers_running "$pod") || fail "cannot list the SSH servers of $pod"
    [ "$n" = 1 ] || fail "$pod runs $n SSH servers before the kill"
    kubectl -n "$NS" exec "$pod" -c notebook -- pkill -KILL -f '^/opt/venv/bin/python3? .*jupyterhub-singleuser' ||
        fail "pkill -KILL jupyterhub-singleuser in $pod"
    restarted() {
        r1=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="notebook")].restartCount}')
        [ "$r1" -gt "$r0" ] && kubectl -n "$NS" wait --for=condition=Ready "pod/$pod" --timeout=1s
    }
    wait_for "the kubelet restarts $pod's notebook container" restarted
    ok "killed jupyterhub-singleuser (SIGKILL) in $pod: container restarted (restarts $r0 -> $r1), Ready again ($((SECONDS - t)) s)"
    wait_for "ssh to $pod after the restart" ssh_pinned "$TMP/kill_known" "$pod" true
    n=$(servers_running "$pod") || fail "cannot list the SSH servers of $pod"
    [ "$n" = 1 ] || fail "$pod runs $n SSH servers after the restart"
    [ "$(host_key_of "$pod")" = "$key0" ] || fail "$pod's published host key changed across the restart"
    out=$(ssh_pinned "$TMP/kill_known" "$pod" 'echo "uid=$(id -u) var=$SESSION_IMAGE_VAR"') || fail "ssh after the restart"
    ok "after the restart: $n SSH server in $pod, same host key (StrictHostKeyChecking yes against the old pin): $out"
}

# Stop alice's default server through the hub: KubeSpawner deletes the pod, the garbage
# collector its Service and TLSRoute (owned by the pod); the host-key Secret stays. Start
# it again: the same host key, and the old pin (the key, not the address) still works.
check_stop_start() {
    local pod=$1 secret key0 t=$SECONDS
    secret=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.volumes[?(@.name=="session-ssh-host-key")].secret.secretName}')
    [ -n "$secret" ] || fail "$pod mounts no host-key Secret"
    key0=$(host_key_of "$pod")
    pin "$pod" "$TMP/stop_known" || fail "$pod: no known-hosts or Service to pin"
    hub_api DELETE /users/alice/server >/dev/null || fail "hub API: DELETE /users/alice/server"
    stopped() {
        hub_api GET /users/alice | python3 -c 'import json,sys; sys.exit(0 if "" not in json.load(sys.stdin)["servers"] else 1)'
    }
    wait_for "the hub reports alice's default server stopped" stopped
    gone() { ! kubectl -n "$NS" get "$@" >/dev/null 2>&1; }
    wait_for "pod $pod deleted" gone pod "$pod"
    wait_for "Service $pod garbage-collected" gone svc "$pod"
    wait_for "TLSRoute $pod garbage-collected" gone tlsroute "$pod"
    ok "hub API: DELETE /users/alice/server -> pod, Service and TLSRoute $pod gone ($((SECONDS - t)) s; Service + route by the garbage collector)"
    kubectl -n "$NS" get secret "$secret" >/dev/null 2>&1 || fail "host-key Secret $secret was deleted with the pod"
    ok "host-key Secret $NS/$secret kept"
    spawn_via_hub
    kubectl -n "$NS" wait --for=condition=Ready "pod/$POD" --timeout="${TIMEOUT}s" >/dev/null || fail "$POD not Ready again"
    has_known() { [ -n "$(host_key_of "$POD")" ]; }
    wait_for "known-hosts published again on $POD" has_known
    [ "$(host_key_of "$POD")" = "$key0" ] || fail "the restarted server has another host key"
    out=$(ssh_pinned "$TMP/stop_known" "$POD" 'echo "uid=$(id -u)"' 2>&1) || fail "ssh to the restarted server with the old pin: $out"
    ok "started again through the hub ($POD): same host key $(cut -c1-20 <<<"$key0")..., the old pin works: $out"
}

# The webhook scaled to 0: the apiserver cannot call it, failurePolicy Ignore admits the pod
# unchanged (with a warning), the hub starts the server and reports it ready; scaled back,
# injection works again.
check_webhook_down() {
    local t=$SECONDS pod warn
    kubectl -n session-ssh scale deploy/session-ssh-webhook --replicas=0 >/dev/null
    no_webhook_pods() { [ -z "$(kubectl -n session-ssh get pods -l app.kubernetes.io/name=session-ssh-webhook -o name)" ]; }
    wait_for "webhook pods gone after scale to 0" no_webhook_pods
    ok "webhook Deployment scaled to 0 ($((SECONDS - t)) s)"
    local apilog=$ROOT/.work/cluster/logs/controlplane.log open0 open1
    open0=$(grep -c 'failing open inject.session-ssh.io' "$apilog" || true)
    warn=$(kubectl -n "$NS" create --dry-run=server -f "$TMP/dry.yaml" -o jsonpath='{.spec.initContainers[*].name}' 2>&1 >"$TMP/dry.out") ||
        fail "dry-run create with the webhook down: $warn"
    ! grep -qw session-ssh-install "$TMP/dry.out" || fail "a dry-run was mutated with the webhook down"
    open1=$(grep -c 'failing open inject.session-ssh.io' "$apilog" || true)
    [ "$open1" -gt "$open0" ] || fail "the apiserver logged no 'failing open' for the webhook"
    ok "with the webhook down a pod is admitted unchanged; kubectl shows ${warn:-no warning}; the apiserver logs: $(grep -o 'Failed calling webhook, failing open inject.session-ssh.io: .*' "$apilog" | tail -n 1 | cut -c1-220)"
    spawn_via_hub nossh
    pod=$POD
    [ -z "$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')" ] || fail "$pod was injected with the webhook down"
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: token $HUB_TOKEN" "http://127.0.0.1:8000/user/alice/nossh/api")
    [ "$code" = 200 ] || fail "/user/alice/nossh/api through the proxy: HTTP $code"
    ok "with the webhook down: the hub started $pod uninjected (no init container), ready, /user/alice/nossh/api 200"
    t=$SECONDS
    kubectl -n session-ssh scale deploy/session-ssh-webhook --replicas=2 >/dev/null
    kubectl -n session-ssh rollout status deploy/session-ssh-webhook --timeout="${TIMEOUT}s" >&2 || fail "webhook not available after scaling back"
    wait_for "a dry-run is mutated again" dry_run_mutated
    ok "webhook scaled back to 2: available and injecting again ($((SECONDS - t)) s)"
    hub_api DELETE /users/alice/servers/nossh >/dev/null || fail "hub API: DELETE /users/alice/servers/nossh"
}

# --- --bench: issue 15 item 5 (a benchmark: it prints figures, it asserts only that the
# pods start and the transfers complete) -----------------------------------------------------
# now_ms: wall clock in milliseconds.
now_ms() { date +%s%3N; }
# pctl P FILE: the P-th percentile (nearest rank) of the numbers in FILE.
pctl() { sort -n "$2" | awk -v p="$1" '{v[NR]=$1} END {i=int((p*NR+99)/100); if (i<1) i=1; print v[i]}'; }
# bench_pod NAME INJECT: create a KubeSpawner-made pod (the spec of $TMP/pod.yaml, user NAME)
# and print the milliseconds from `kubectl create` to Ready as the kubelet reports it.
bench_pod() {
    local name=$1 inject=$2 t0 t1
    variant "$name" >"$TMP/bench.yaml"
    [ "$inject" = yes ] || sed -i 's/^  labels:$/  labels:\n    session-ssh.io\/inject: "false"/' "$TMP/bench.yaml"
    t0=$(now_ms)
    kubectl -n "$NS" create -f "$TMP/bench.yaml" >/dev/null || fail "create $name"
    kubectl -n "$NS" wait --for=condition=Ready "pod/$name" --timeout="${TIMEOUT}s" >/dev/null || fail "$name not Ready"
    t1=$(now_ms)
    init=$(kubectl -n "$NS" get pod "$name" -o jsonpath='{.spec.initContainers[*].name}')
    if [ "$inject" = yes ]; then [ "$init" = session-ssh-install ] || fail "$name not injected"; else [ -z "$init" ] || fail "$name injected"; fi
    kubectl -n "$NS" delete pod "$name" --timeout=60s >/dev/null || fail "delete $name"
    echo $((t1 - t0))
}

# serve_stats PID: "rss_kib hwm_kib cpu_ticks" of a host process.
serve_stats() {
    local rss hwm cpu
    rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$1/status")
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$1/status")
    cpu=$(awk '{print $14 + $15}' "/proc/$1/stat")
    echo "$rss $hwm $cpu"
}

run_bench() {
    local n=${NODE_BENCH_N:-10} mib=${NODE_BENCH_MIB:-1024} i ms
    local hz pid cg memcg cpucg
    : >"$TMP/plain.ms"
    : >"$TMP/inject.ms"
    # Warm both paths once (first use of the image, the webhook's connections), not counted.
    bench_pod warm-plain no >/dev/null
    bench_pod warm-inject yes >/dev/null
    for i in $(seq 1 "$n"); do
        ms=$(bench_pod "bench-plain-$i" no)
        echo "$ms" >>"$TMP/plain.ms"
        ms=$(bench_pod "bench-ssh-$i" yes)
        echo "$ms" >>"$TMP/inject.ms"
        log "pair $i: plain $(tail -n 1 "$TMP/plain.ms") ms, injected $ms ms"
    done
    local p50a p95a p50b p95b
    p50a=$(pctl 50 "$TMP/plain.ms"); p95a=$(pctl 95 "$TMP/plain.ms")
    p50b=$(pctl 50 "$TMP/inject.ms"); p95b=$(pctl 95 "$TMP/inject.ms")
    echo "BENCH create->Ready n=$n (alternating, same node, KubeSpawner pod spec, jupyter-session image):"
    echo "BENCH   without injection: p50 ${p50a} ms  p95 ${p95a} ms  (all: $(sort -n "$TMP/plain.ms" | tr '\n' ' '))"
    echo "BENCH   with injection:    p50 ${p50b} ms  p95 ${p95b} ms  (all: $(sort -n "$TMP/inject.ms" | tr '\n' ' '))"
    echo "BENCH   overhead:          p50 +$((p50b - p50a)) ms  p95 +$((p95b - p95a)) ms"

    # The SSH server of jupyter-alice: its own process (RSS, CPU) and its container's cgroup.
    pid=$(serve_pids "$POD" | head -n 1)
    [ -n "$pid" ] || fail "no init-sshd serve process of $POD on the node"
    hz=$(getconf CLK_TCK)
    # cgroup v1: each controller's mount and the process's path in it
    cg=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ {print $3}' "/proc/$pid/cgroup")
    memcg=$(findmnt -n -t cgroup -O memory -o TARGET | head -n 1)$cg
    cg=$(awk -F: '$2 ~ /(^|,)cpuacct(,|$)/ {print $3}' "/proc/$pid/cgroup")
    cpucg=$(findmnt -n -t cgroup -O cpuacct -o TARGET | head -n 1)$cg
    [ -f "$memcg/memory.usage_in_bytes" ] || fail "no memory cgroup $memcg"
    [ -f "$cpucg/cpuacct.usage" ] || fail "no cpuacct cgroup $cpucg"
    sleep 5
    read -r rss hwm cpu0 < <(serve_stats "$pid")
    local ccpu0 cmem
    ccpu0=$(cat "$cpucg/cpuacct.usage")
    cmem=$(( $(cat "$memcg/memory.usage_in_bytes") / 1048576 ))
    sleep 10
    read -r rss hwm cpu1 < <(serve_stats "$pid")
    echo "BENCH SSH server idle (jupyter-alice, no connection): RSS ${rss} KiB, CPU $(( (cpu1 - cpu0) * 1000 / hz )) ms in 10 s; container cgroup memory $cmem MiB (jupyter + server)"
    # 1 GiB up (into cat >/dev/null in the pod) and down (head -c from /dev/zero), sampled.
    echo 0 >"$memcg/memory.max_usage_in_bytes" 2>/dev/null || true
    local t0 t1 up_s down_s peak_rss=0 r c1 cc1
    read -r _ _ cpu0 < <(serve_stats "$pid")
    ccpu0=$(cat "$cpucg/cpuacct.usage")
    t0=$(now_ms)
    ( head -c "$((mib * 1048576))" /dev/zero | timeout 600 "${SSHC[@]}" "alice@$cip" 'cat >/dev/null' ) &
    local xfer=$!
    while kill -0 "$xfer" 2>/dev/null; do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        [ "$r" -le "$peak_rss" ] || peak_rss=$r
        sleep 0.2
    done
    wait "$xfer" || fail "1 GiB upload"
    t1=$(now_ms); up_s=$(( (t1 - t0) ))
    t0=$(now_ms)
    ( timeout 600 "${SSHC[@]}" "alice@$cip" "head -c $((mib * 1048576)) /dev/zero" | wc -c >"$TMP/down.bytes" ) &
    xfer=$!
    while kill -0 "$xfer" 2>/dev/null; do
        r=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
        [ "$r" -le "$peak_rss" ] || peak_rss=$r
        sleep 0.2
    done
    wait "$xfer" || fail "1 GiB download"
    t1=$(now_ms); down_s=$(( (t1 - t0) ))
    [ "$(cat "$TMP/down.bytes")" = $((mib * 1048576)) ] || fail "download: $(cat "$TMP/down.bytes") bytes"
    read -r _ hwm c1 < <(serve_stats "$pid")
    cc1=$(cat "$cpucg/cpuacct.usage")
    echo "BENCH SSH server during $mib MiB up + $mib MiB down (ssh cat, aes/chacha as negotiated): up $up_s ms ($(( mib * 1000 / (up_s > 0 ? up_s : 1) )) MiB/s), down $down_s ms ($(( mib * 1000 / (down_s > 0 ? down_s : 1) )) MiB/s)"
    echo "BENCH   server RSS peak ${peak_rss} KiB (sampled every 0.2 s; VmHWM ${hwm} KiB), server CPU $(( (c1 - cpu0) * 1000 / hz )) ms = $(( (c1 - cpu0) * 100000 / hz / (up_s + down_s) )) % of a core; container CPU $(( (cc1 - ccpu0) / 1000000 )) ms"
    echo "BENCH   container cgroup memory now $(( $(cat "$memcg/memory.usage_in_bytes") / 1048576 )) MiB, peak since reset $(( $(cat "$memcg/memory.max_usage_in_bytes") / 1048576 )) MiB"
}

# --- --hub-bench: create -> Ready of servers that KubeSpawner makes through the hub ----------
# Alice's named servers b1..bN started by the hub's REST API, alternately with the profile
# "ssh" (injected) and "nossh" (KubeSpawner adds session-ssh.io/inject: "false"), one at a
# time; each is timed from the POST to its pod's Ready condition, then stopped and removed.

hub_bench_one() { # NAME PROFILE: milliseconds from the POST to the pod's Ready
    local name=$1 profile=$2 pod=jupyter-alice--$1 t0 t1 post init
    t0=$(now_ms)
    hub_api POST "/users/alice/servers/$name" "{\"profile\": \"$profile\"}" >/dev/null &
    post=$!
    pod_made() { kubectl -n "$NS" get pod "$pod" >/dev/null 2>&1; }
    wait_for "KubeSpawner creates $pod" pod_made
    kubectl -n "$NS" wait --for=condition=Ready "pod/$pod" --timeout="${TIMEOUT}s" >/dev/null || fail "$pod not Ready"
    t1=$(now_ms)
    wait "$post" || fail "hub API: POST /users/alice/servers/$name"
    init=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}')
    if [ "$profile" = ssh ]; then [ "$init" = session-ssh-install ] || fail "$pod not injected"; else [ -z "$init" ] || fail "$pod injected"; fi
    hub_api DELETE "/users/alice/servers/$name" '{"remove": true}' >/dev/null || fail "hub API: DELETE server $name"
    kubectl -n "$NS" wait --for=delete "pod/$pod" --timeout="${TIMEOUT}s" >/dev/null 2>&1 || true
    echo $((t1 - t0))
}

run_hub_bench() {
    local n=${NODE_BENCH_N:-20} i ms p50a p95a p50b p95b
    : >"$TMP/hub-plain.ms"
    : >"$TMP/hub-inject.ms"
    # Warm both paths once, not counted.
    hub_bench_one warm1 nossh >/dev/null
    hub_bench_one warm2 ssh >/dev/null
    for i in $(seq 1 "$n"); do
        ms=$(hub_bench_one "p$i" nossh)
        echo "$ms" >>"$TMP/hub-plain.ms"
        ms=$(hub_bench_one "s$i" ssh)
        echo "$ms" >>"$TMP/hub-inject.ms"
        log "pair $i: without $(tail -n 1 "$TMP/hub-plain.ms") ms, with $ms ms"
    done
    p50a=$(pctl 50 "$TMP/hub-plain.ms"); p95a=$(pctl 95 "$TMP/hub-plain.ms")
    p50b=$(pctl 50 "$TMP/hub-inject.ms"); p95b=$(pctl 95 "$TMP/hub-inject.ms")
    echo "BENCH hub POST -> pod Ready, n=$n servers each (KubeSpawner through JupyterHub, alternating, same node):"
    echo "BENCH   without injection: p50 ${p50a} ms  p95 ${p95a} ms  (all: $(sort -n "$TMP/hub-plain.ms" | tr '\n' ' '))"
    echo "BENCH   with injection:    p50 ${p50b} ms  p95 ${p95b} ms  (all: $(sort -n "$TMP/hub-inject.ms" | tr '\n' ' '))"
    echo "BENCH   overhead:          p50 +$((p50b - p50a)) ms  p95 +$((p95b - p95a)) ms"
}

# --- --first-law: what each bad environment does to a session on this node ------------------
# observe POD [NS [SETTLED]]: wait up to FIRST_LAW_WAIT seconds for Ready, then print one line
# of what the kubelet did: phase, Ready, the init and session containers' states, restarts,
# hook events. Returns 0 when the pod is Ready (the session runs), 1 when it is not. With
# SETTLED (law_alike: a case expected to fail with or without session-ssh), the wait also ends
# when a container waits for a reason the kubelet only retries, e.g. a config error.
observe() {
    local pod=$1 ns=${2:-$NS} settled=${3:-} wait=${FIRST_LAW_WAIT:-60} rc=0 st ev end
    if [ -z "$settled" ]; then
        kubectl -n "$ns" wait --for=condition=Ready "pod/$pod" --timeout="${wait}s" >/dev/null 2>&1 || rc=1
    else
        rc=1
        end=$((SECONDS + wait))
        while [ $SECONDS -lt $end ]; do
            st=$(kubectl -n "$ns" get pod "$pod" -o go-template='{{range .status.conditions}}{{if eq .type "Ready"}}ready={{.status}}{{end}}{{end}}{{range .status.containerStatuses}}{{with .state.waiting}} {{.reason}}{{end}}{{end}}' 2>/dev/null || true)
            case $st in
                *ready=True*) rc=0; break ;;
                *CreateContainerConfigError* | *CreateContainerError* | *ErrImagePull* | *ImagePullBackOff* | *ErrImageNeverPull* | *InvalidImageName* | *CrashLoopBackOff* | *RunContainerError*) break ;;
            esac
            sleep 1
        done
    fi
    st=$(kubectl -n "$ns" get pod "$pod" -o go-template='phase={{.status.phase}}{{range .status.initContainerStatuses}} init:{{.name}}={{range $k, $v := .state}}{{$k}}{{with $v.reason}}/{{.}}{{end}}{{end}},restarts={{.restartCount}}{{end}}{{range .status.containerStatuses}} {{.name}}={{range $k, $v := .state}}{{$k}}{{with $v.reason}}/{{.}}{{end}}{{end}},ready={{.ready}},restarts={{.restartCount}}{{end}}')
    ev=$(kubectl -n "$ns" get events --field-selector "involvedObject.name=$pod" -o go-template='{{range .items}}{{if and (ne .type "Normal") (ne .reason "MissingClusterDNS")}}{{.reason}}: {{.message}} | {{end}}{{end}}' | cut -c1-400 || true)
    echo "$st${ev:+ ; warnings: $ev}"
    return $rc
}

# law CASE POD [NS]: one verdict line. The first law holds when the session runs (Ready),
# with or without SSH; it is broken when the pod is stuck or its container is killed.
LAW_BROKEN=()
law() {
    local case=$1 pod=$2 ns=${3:-$NS} what ssh
    if what=$(observe "$pod" "$ns"); then
        # (in an injected pod, a server that postStart just launched may take a moment to exec)
        ssh=without
        if kubectl -n "$ns" get pod "$pod" -o jsonpath='{.spec.initContainers[*].name}' | grep -qw session-ssh-install; then
            for _ in 1 2 3 4 5 6 7 8 9 10; do has_ssh "$pod" "$ns" && { ssh=with; break; }; sleep 0.5; done
        fi
        echo "FIRST-LAW holds  [$case] session runs $ssh SSH: $what"
    else
        echo "FIRST-LAW BROKEN [$case] session not running after ${FIRST_LAW_WAIT:-60}s: $what"
        LAW_BROKEN+=("$case")
    fi
}

# variant NAME [SED...]: pod_named NAME for user NAME (no keys: alice's Secret is not its).
variant() {
    local name=$1
    shift
    pod_named "$name" -e "s/alice/$name/g" "$@"
}
# inject_offline CONFIG: the pod on stdin as the webhook would write it with CONFIG
# (`session-ssh-webhook inject`, the product's offline injector).
inject_offline() { "$BIN_DIR/session-ssh-webhook" inject --config "$1" -f - --force; }

# law_alike CASE PLAIN INJECTED: a case that fails without session-ssh too. The first law
# holds when the injected pod ends exactly as the plain one (injection adds no failure).
law_alike() {
    local case=$1 plain=$2 injected=$3 a b
    a=$(observe "$plain" "$NS" settled | sed 's/ ; warnings:.*//; s/init:[^ ]* //')
    b=$(observe "$injected" "$NS" settled | sed 's/ ; warnings:.*//; s/init:[^ ]* //')
    if [ "$a" = "$b" ]; then
        echo "FIRST-LAW holds  [$case] injected ends as without session-ssh: $b"
    else
        echo "FIRST-LAW BROKEN [$case] without session-ssh: $a; injected: $b"
        LAW_BROKEN+=("$case")
    fi
}


run_first_law() {
    BIN_DIR=${BIN_DIR:-$ROOT/target/x86_64-unknown-linux-musl/release}
    local ctr=(ctr --address "$ROOT/.work/cluster/containerd/containerd.sock" -n k8s.io)
    # 0. the reference: a plain session and an injected one; the pre-pull DaemonSet of the
    #    JupyterHub example holds the init image on the node and the webhook's gate is open.
    variant fl-plain -e 's/^  labels:$/  labels:\n    session-ssh.io\/inject: "false"/' | kubectl -n "$NS" create -f - >/dev/null
    law "reference, no injection" fl-plain
    law "reference, injected (jupyter-alice)" "$POD"
    gate_is open

    # 1. the init image is absent and cannot be pulled (removed from containerd, the
    #    pre-pull pod restarted so it must pull it again; IfNotPresent, no registry).
    "${ctr[@]}" images rm localhost/session-ssh/init-sshd:dev >/dev/null || fail "ctr images rm init-sshd"
    kubectl -n session-ssh delete "$(prepull_pod)" --wait=true >/dev/null
    gate_is closed
    variant fl-noimage | kubectl -n "$NS" create -f - >/dev/null
    law "init image absent (pre-pull DaemonSet not ready)" fl-noimage
    echo "                 reason on the pod: $(kubectl -n "$NS" get pod fl-noimage -o jsonpath='{.metadata.annotations.session-ssh\.io/reason}')"
    echo "FIRST-LAW note   [init image absent] not covered: an image removed by hand while the pre-pull pod keeps running (its pod stays ready; the kubelet's GC never removes an image in use)"
    scripts/node-images.sh import >/dev/null || fail "re-import the images"
    kubectl -n session-ssh delete "$(prepull_pod)" --wait=true >/dev/null
    gate_is open
    kubectl -n "$NS" delete pod fl-noimage --wait=false >/dev/null

    # 2. the install container's memory limit, 3. the volume it copies into: the config
    #    refuses both below 32Mi (the webhook would not start with it); at 32Mi, with a
    #    memory-backed volume, the session runs with SSH.
    local c out
    printf 'initContainer:\n  image: localhost/session-ssh/init-sshd:dev\n  imagePullPolicy: IfNotPresent\n  resources:\n    limits: {memory: 4Mi}\n    requests: {memory: 4Mi}\nplatform: jupyterhub\n' >"$TMP/oom.yaml"
    printf 'initContainer:\n  image: localhost/session-ssh/init-sshd:dev\n  imagePullPolicy: IfNotPresent\nplatform: jupyterhub\nvolumeSizeLimit: 1Mi\n' >"$TMP/full.yaml"
    for c in oom full; do
        if out=$(variant "fl-$c" | inject_offline "$TMP/$c.yaml" 2>&1); then
            echo "FIRST-LAW BROKEN [config $c] the config was accepted"
            LAW_BROKEN+=("config $c")
        else
            echo "FIRST-LAW holds  [config $c] refused before any pod: $(tail -n 1 <<<"$out" | cut -c1-200)"
        fi
    done
    printf 'initContainer:\n  image: localhost/session-ssh/init-sshd:dev\n  imagePullPolicy: IfNotPresent\n  resources:\n    limits: {memory: 32Mi}\n    requests: {memory: 32Mi}\nplatform: jupyterhub\nvolumeSizeLimit: 32Mi\n' >"$TMP/floor.yaml"
    variant fl-floor | inject_offline "$TMP/floor.yaml" |
        python3 -c '
import sys, yaml
docs = list(yaml.safe_load_all(sys.stdin))
for d in docs:
    for v in d["spec"]["volumes"]:
        if v["name"] == "session-ssh":
            v["emptyDir"]["medium"] = "Memory"
yaml.safe_dump_all(docs, sys.stdout)' >"$TMP/fl-floor.yaml" || fail "inject fl-floor"
    kubectl -n "$NS" create -f "$TMP/fl-floor.yaml" >/dev/null || fail "create fl-floor"
    law "install limit 32Mi, volume 32Mi in memory (the floors)" fl-floor
    has_ssh fl-floor || { echo "FIRST-LAW BROKEN [the floors] no SSH at the floors"; LAW_BROKEN+=("floors without SSH"); }

    # 4. runAsNonRoot enforced with an image whose USER is a name (jovyan), no runAsUser:
    #    the kubelet refuses it with or without session-ssh.
    local named='s|localhost/session-ssh/jupyter-session:dev|localhost/session-ssh/named-user:dev|; /^      args:/d; /runAsUser: 1000/d; s/^  securityContext:$/  securityContext:\n    runAsNonRoot: true/'
    variant fl-named-plain -e "$named" -e 's/^  labels:$/  labels:\n    session-ssh.io\/inject: "false"/' | kubectl -n "$NS" create -f - >/dev/null
    variant fl-named -e "$named" | kubectl -n "$NS" create -f - >/dev/null
    law_alike "runAsNonRoot + USER jovyan (a name), no runAsUser" fl-named-plain fl-named

    # 5. The minimal image (busybox-static only: no passwd entry, no shell profile, no bash;
    #    USER 1000:100, its own PATH and variable, `sleep` as entrypoint), alice's keys: the
    #    session runs with SSH, and a login gets uid 1000 and the image's variables.
    pod_named fl-minimal -e 's|localhost/session-ssh/jupyter-session:dev|localhost/session-ssh/minimal:dev|' \
        -e '/^      args:/d' | kubectl -n "$NS" create -f - >/dev/null || fail "create fl-minimal"
    law "minimal image (busybox-static: no passwd entry, no shell profile, no bash)" fl-minimal
    wait_for "known-hosts published on fl-minimal" pin fl-minimal "$TMP/minimal_known"
    out=$(ssh_pinned "$TMP/minimal_known" fl-minimal 'echo "uid=$(id -u) var=$SESSION_IMAGE_VAR path=$PATH shell=$(readlink /proc/$$/exe)"') ||
        fail "ssh to fl-minimal"
    case $out in
        "uid=1000 var=from-minimal path=/bin shell=/bin/busybox") ok "minimal image: ssh (ClusterIP, the published key pinned): $out" ;;
        *) fail "minimal image: ssh gave '$out', not uid 1000 and the image's variables" ;;
    esac
    kubectl -n "$NS" delete pod fl-minimal --wait=false >/dev/null

    # 6. Pod Security "restricted" enforced on the namespace: a restricted-compliant
    #    KubeSpawner pod, injected; then the session checks of check_session there.
    local rns=jhub-restricted
    kubectl create namespace "$rns" >/dev/null
    kubectl label namespace "$rns" session-ssh.io/enabled=true pod-security.kubernetes.io/enforce=restricted >/dev/null
    kubectl -n "$rns" create secret generic ssh-keys-alice --from-file=authorized_keys="$TMP/id_alice.pub" >/dev/null
    # As the jupyterhub example does for its namespace: the webhook may keep host keys here.
    sed "s/namespace: jhub\$/namespace: $rns/" manifests/examples/jupyterhub/host-keys-rolebinding.yaml | kubectl apply -f - >/dev/null
    sed -e 's/^  securityContext:$/  securityContext:\n    runAsNonRoot: true\n    seccompProfile: {type: RuntimeDefault}/' \
        -e 's/^        allowPrivilegeEscalation: false$/        allowPrivilegeEscalation: false\n        capabilities: {drop: [ALL]}/' \
        "$TMP/pod.yaml" >"$TMP/restricted.yaml"
    kubectl -n "$rns" create -f "$TMP/restricted.yaml" >"$TMP/restricted.out" 2>&1 ||
        fail "PSA restricted refused the injected pod: $(cat "$TMP/restricted.out")"
    law "Pod Security restricted namespace, injected" "$POD" "$rns"
    local saved=$NS
    NS=$rns
    check_session "$POD" ""
    NS=$saved
    echo "FIRST-LAW note   [hostUsers: false] not run: containerd 1.6 refuses it (user namespaces need containerd >= 2.0, runc >= 1.2)"

    echo "FIRST-LAW summary: ${#LAW_BROKEN[@]} case(s) broken${LAW_BROKEN[*]:+: ${LAW_BROKEN[*]}}"
    [ ${#LAW_BROKEN[@]} = 0 ]
}

# shellcheck source=scripts/node-e2e-modes.sh
. "$ROOT/scripts/node-e2e-modes.sh"

# --- --demo: scripts/demo.sh --cluster (issue 15 item 7) ------------------------------------
# The real cluster, the product installed, a JupyterHub on http://127.0.0.1:8000 (user alice,
# any password); when alice's server runs, print how to ssh in. Ends (and brings the cluster
# down) on Ctrl-C, or after DEMO_MINUTES (default 60).
run_demo() {
    local minutes=${DEMO_MINUTES:-60} deadline shown="" pod known cip
    mkdir -p "$ROOT/.work/demo"
    cp "$TMP/id_alice" "$TMP/id_alice.pub" "$ROOT/.work/demo/"
    deadline=$((SECONDS + minutes * 60))
    cat >&3 <<MSG

  JupyterHub: http://127.0.0.1:8000   (user alice, any password; then "Start My Server")
  alice's SSH key: $ROOT/.work/demo/id_alice (its public half is in Secret jhub/ssh-keys-alice)
  The demo prints the ssh lines when the server is up; Ctrl-C ends it (cluster down).

MSG
    # DEMO_CHECK=1 (demo.sh --cluster --check): the script plays the newcomer, starts the
    # server through the hub's REST API, runs the lines it printed once, and ends.
    if [ "${DEMO_CHECK:-0}" = 1 ]; then
        spawn_via_hub
        deadline=$((SECONDS + TIMEOUT))
    fi
    while [ $SECONDS -lt $deadline ]; do
        pod=$(kubectl -n "$NS" get pods -l component=singleuser-server,hub.jupyter.org/username=alice \
            -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\n"}{end}' 2>/dev/null | head -n 1)
        if [ -n "$pod" ] && [ "$pod" != "$shown" ]; then
            known=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/known-hosts}')
            cip=$(kubectl -n "$NS" get svc "$pod" -o jsonpath='{.spec.clusterIP}' 2>/dev/null || true)
            if [ -n "$known" ] && [ -n "$cip" ]; then
                router_sync
                awk '{print "'"$cip"'", $(NF-1), $NF}' <<<"$known" >"$ROOT/.work/demo/known_hosts"
                printf '%s\n' "$known" >>"$ROOT/.work/demo/known_hosts"
                kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/ssh-config}' |
                    sed "s/-connect %h:443/-connect $NODE_IP:443/" >"$ROOT/.work/demo/ssh_config"
                cat >&3 <<MSG
  alice's server runs in pod $pod. From this machine:

    ssh -i .work/demo/id_alice -o UserKnownHostsFile=.work/demo/known_hosts alice@$cip
    # or through the SNI router on $NODE_IP:443, with the block the pod publishes:
    ssh -F .work/demo/ssh_config -i .work/demo/id_alice -o UserKnownHostsFile=.work/demo/known_hosts $(awk '$1 == "Host" {print $2; exit}' "$ROOT/.work/demo/ssh_config")
    # scp, sftp, rsync -e 'ssh -F .work/demo/ssh_config ...' and VS Code Remote-SSH work the same way.

MSG
                shown=$pod
                if [ "${DEMO_CHECK:-0}" = 1 ]; then
                    demo_check_lines "$cip"
                    return 0
                fi
            fi
        fi
        sleep 3
    done
    [ "${DEMO_CHECK:-0}" = 0 ] || fail "demo: no ssh lines printed within ${TIMEOUT} s"
    log "demo: $minutes minutes are up"
}

# demo_check_lines CLUSTER_IP: the two ssh lines the demo printed, run as printed (from the
# repository root, as a newcomer who copies them) with `id -u`.
demo_check_lines() {
    local host uid
    host=$(awk '$1 == "Host" {print $2; exit}' .work/demo/ssh_config)
    uid=$(ssh -i .work/demo/id_alice -o UserKnownHostsFile=.work/demo/known_hosts -o BatchMode=yes \
        -o StrictHostKeyChecking=yes "alice@$1" id -u) || fail "demo: the ClusterIP line does not log in"
    [ "$uid" = 1000 ] || fail "demo: the ClusterIP line gives uid '$uid', not 1000"
    ok "demo: the printed ClusterIP line logs in (uid $uid)"
    uid=$(ssh -F .work/demo/ssh_config -i .work/demo/id_alice -o UserKnownHostsFile=.work/demo/known_hosts \
        -o BatchMode=yes -o StrictHostKeyChecking=yes "$host" id -u) || fail "demo: the SNI line does not log in"
    [ "$uid" = 1000 ] || fail "demo: the SNI line gives uid '$uid', not 1000"
    ok "demo: the printed SNI line logs in through Traefik on $NODE_IP:443 (uid $uid)"
}

if [ "$MODE" = demo ]; then
    run_demo
    exit 0
fi

bench_session() {
    cip=$(kubectl -n "$NS" get svc "$POD" -o jsonpath='{.spec.clusterIP}')
    SSHC=(ssh -F /dev/null -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=yes -o UserKnownHostsFile="$TMP/known_hosts" -o ConnectTimeout=10)
    run_bench
    log "benchmark done"
}

if [ "$MODE" = firstlaw ]; then
    NODE_E2E_TRANSFER_MIB=0
    check_session "$POD" ""
    [ "$WITH_BENCH" = 0 ] || bench_session
    law_rc=0
    run_first_law || { log "first-law cases broken: ${LAW_BROKEN[*]}"; law_rc=1; }
    [ "$INGRESS_MODES" = 0 ] || run_ingress_modes
    exit $law_rc
fi
if [ "$INGRESS_MODES" = 1 ] && [ "$MODE" = pod ]; then
    run_ingress_modes
    exit 0
fi

if [ "$MODE" = bench ]; then
    NODE_E2E_TRANSFER_MIB=0
    check_session "$POD" ""
    bench_session
    exit 0
fi

if [ "${HUB_BENCH:-0}" = 1 ]; then
    run_hub_bench
    log "benchmark done"
    exit 0
fi

check_session "$POD" ""
if [ "$MODE" = hub ]; then
    check_gateway
    spawn_via_hub lab
    check_session "$POD" lab
    check_kill_main jupyter-alice
    check_stop_start jupyter-alice
    check_webhook_down
    check_traefik_mode jupyter-alice
else
    check_kill_main "$POD"
fi

log "all checks passed"
