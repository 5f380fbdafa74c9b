# shellcheck shell=bash
# Sourced by scripts/node-e2e.sh (uses its ROOT, TMP, NS, NODE_IP, TIMEOUT, kubectl, log, ok,
# fail, wait_for). The cluster's SNI ingress on the real node: real Traefik v3
# (tests/traefik/build.sh), a process on the node's host (no registry to pull its image
# from), listening on $NODE_IP:443 (entry point websecure) and passing TLS through,
# unterminated, by SNI to the session pods' ssh-tls port (their EndpointSlices: pod IPs are
# routable from the host over the CNI bridge). Both route kinds of the controller:
# - ingress.mode gateway: its kubernetesGateway provider, GatewayClass "traefik" and the
#   Gateway session-ssh/ssh (the overlay's parentRefs) with one TLS Passthrough listener on
#   443 that takes TLSRoutes from the namespaces labelled session-ssh.io/enabled=true;
# - ingress.mode traefik: its kubernetesCRD provider, the IngressRouteTCPs (HostSNI,
#   passthrough) on the entry point websecure.
# It runs as the ServiceAccount traefik/traefik with a token kubeconfig. Cluster-wide it may
# only list namespaces and read GatewayClasses (and set their status); everything else it
# reads through RoleBindings in the namespaces it watches: session-ssh (the Gateway) and each
# session namespace (traefik_watch adds one and restarts it: an informer of a namespace it
# may not read never syncs).

TRAEFIK_BIN=$ROOT/tests/traefik/bin/traefik
TRAEFIK_CRDS=$ROOT/tests/traefik/bin/crds
TRAEFIK_DIR=$TMP/traefik
TRAEFIK_PID=""
TRAEFIK_WATCH=""
TRAEFIK_API=""

# traefik_build: build on first use (a no-op when up to date; scripts/test.sh builds it in
# the background); SKIP_GO_BUILD=1 takes tests/traefik/bin as it is.
traefik_build() {
    if [ "${SKIP_GO_BUILD:-0}" != 1 ]; then
        local t=$SECONDS
        nice -n 10 tests/traefik/build.sh >&2 || fail "tests/traefik/build.sh (real Traefik for the SNI routes)"
        [ $((SECONDS - t)) -lt 5 ] || ok "Traefik built ($((SECONDS - t)) s)"
    fi
    [ -x "$TRAEFIK_BIN" ] && [ -d "$TRAEFIK_CRDS" ] ||
        fail "no $TRAEFIK_BIN or $TRAEFIK_CRDS: run tests/traefik/build.sh (scripts/test.sh does)"
}

# traefik_crds: the Gateway API's standard channel (TLSRoute v1 among them) and Traefik's
# CRDs, both of the versions Traefik's go.mod pins; before the product, so the controller
# finds the route kinds at start.
traefik_crds() {
    kubectl apply --server-side -f "$TRAEFIK_CRDS" >"$TMP/crds.log" 2>&1 ||
        fail "kubectl apply the Gateway API and Traefik CRDs: $(tail -n 5 "$TMP/crds.log")"
    kubectl wait --for=condition=Established crd --all --timeout="${TIMEOUT}s" >/dev/null ||
        fail "CRDs not established"
    ok "CRDs: $(cat "$TRAEFIK_CRDS/VERSIONS") ($(grep -c 'serverside-applied\|unchanged' "$TMP/crds.log") objects)"
}

# traefik_install: its namespace, ServiceAccount, RBAC and token kubeconfig, the
# GatewayClass and the Gateway; then starts it watching the session namespace $NS.
traefik_install() {
    kubectl apply -f - >/dev/null <<'YAML' || fail "kubectl apply Traefik's RBAC, GatewayClass and Gateway"
apiVersion: v1
kind: Namespace
metadata:
  name: traefik
  # The sessions' NetworkPolicy lets the ingress's namespace reach the TLS port.
  labels: {session-ssh.io/ingress: "true"}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: traefik, namespace: traefik}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: traefik-cluster}
rules:
  # The Gateway's allowedRoutes namespace selector.
  - apiGroups: [""]
    resources: [namespaces]
    verbs: [list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gatewayclasses/status]
    verbs: [update]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: traefik-cluster}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: traefik-cluster}
subjects: [{kind: ServiceAccount, name: traefik, namespace: traefik}]
---
# Bound per watched namespace (RoleBinding): what its informers list there.
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: traefik-namespaced}
rules:
  - apiGroups: [""]
    resources: [services, secrets, configmaps]
    verbs: [get, list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gateways, tlsroutes, httproutes, grpcroutes, referencegrants, backendtlspolicies]
    verbs: [get, list, watch]
  - apiGroups: [gateway.networking.k8s.io]
    resources: [gateways/status, tlsroutes/status, httproutes/status, grpcroutes/status, backendtlspolicies/status]
    verbs: [update]
  - apiGroups: [traefik.io]
    resources: [ingressroutes, ingressroutetcps, ingressrouteudps, middlewares, middlewaretcps,
      tlsoptions, tlsstores, traefikservices, serverstransports, serverstransporttcps]
    verbs: [get, list, watch]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: traefik}
spec: {controllerName: traefik.io/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: ssh, namespace: session-ssh}
spec:
  gatewayClassName: traefik
  listeners:
    - name: ssh-tls
      protocol: TLS
      port: 443
      tls: {mode: Passthrough}
      allowedRoutes:
        kinds: [{kind: TLSRoute}]
        namespaces:
          from: Selector
          selector: {matchLabels: {session-ssh.io/enabled: "true"}}
YAML
    mkdir -p "$TRAEFIK_DIR"
    local token server ca
    token=$(kubectl -n traefik create token traefik --duration=24h) || fail "a token for traefik/traefik"
    server=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.server}')
    ca=$(kubectl config view --raw --minify -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')
    cat >"$TRAEFIK_DIR/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters: [{name: node, cluster: {server: "$server", certificate-authority-data: "$ca"}}]
users: [{name: traefik, user: {token: "$token"}}]
contexts: [{name: traefik, context: {cluster: node, user: traefik}}]
current-context: traefik
KC
    chmod 600 "$TRAEFIK_DIR/kubeconfig"
    # Least privilege, checked: no Secret outside the watched namespaces, no Pod anywhere.
    local can
    can=$(kubectl --kubeconfig "$TRAEFIK_DIR/kubeconfig" auth can-i list secrets -n kube-system 2>/dev/null || true)
    [ "$can" = no ] || fail "Traefik's token may list Secrets in kube-system ($can)"
    traefik_watch session-ssh "$NS"
    traefik_gateway_programmed() {
        kubectl -n session-ssh get gateway ssh -o jsonpath='{.status.conditions[?(@.type=="Programmed")].status}' | grep -qx True
    }
    wait_for "Traefik programs the Gateway session-ssh/ssh" traefik_gateway_programmed
    ok "Traefik $("$TRAEFIK_BIN" version | awk '$1 == "Version:" {print $2}') on $NODE_IP:443 (ServiceAccount traefik/traefik): GatewayClass traefik accepted, Gateway session-ssh/ssh programmed ($(kubectl -n session-ssh get gateway ssh -o jsonpath='{.status.addresses[0].value} listener {.spec.listeners[0].name} {.spec.listeners[0].protocol}/{.spec.listeners[0].tls.mode}'))"
}

# traefik_watch NS...: Traefik reads these namespaces too (a RoleBinding each); restarted
# when the set grows.
traefik_watch() {
    local ns changed=0
    for ns in "$@"; do
        case " $TRAEFIK_WATCH " in *" $ns "*) continue ;; esac
        kubectl -n "$ns" create rolebinding traefik --clusterrole=traefik-namespaced \
            --serviceaccount=traefik:traefik >/dev/null || fail "RoleBinding traefik in $ns"
        TRAEFIK_WATCH="${TRAEFIK_WATCH:+$TRAEFIK_WATCH }$ns"
        changed=1
    done
    [ $changed = 0 ] || traefik_start
}

# traefik_start: (re)start it with the static configuration for TRAEFIK_WATCH.
traefik_start() {
    traefik_stop
    local port ns list=""
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    TRAEFIK_API=127.0.0.1:$port
    for ns in $TRAEFIK_WATCH; do list="$list\"$ns\", "; done
    cat >"$TRAEFIK_DIR/traefik.yml" <<YAML
global: {checkNewVersion: false, sendAnonymousUsage: false}
log: {level: INFO, noColor: true}
entryPoints:
  websecure: {address: "$NODE_IP:443"}
  traefik: {address: "$TRAEFIK_API"}
# The API (read-only, loopback) tells which routers it made.
api: {insecure: true, dashboard: false}
providers:
  kubernetesCRD:
    namespaces: [${list%, }]
    disableClusterScopeResources: true
    safeNaming: true
  kubernetesGateway:
    namespaces: [${list%, }]
    statusAddress: {ip: "$NODE_IP"}
YAML
    KUBECONFIG=$TRAEFIK_DIR/kubeconfig "$TRAEFIK_BIN" --configFile="$TRAEFIK_DIR/traefik.yml" \
        >>"$TRAEFIK_DIR/traefik.log" 2>&1 &
    TRAEFIK_PID=$!
    traefik_up() {
        kill -0 "$TRAEFIK_PID" 2>/dev/null || fail "traefik exited: $(tail -n 20 "$TRAEFIK_DIR/traefik.log")"
        curl -sf "http://$TRAEFIK_API/api/overview" >/dev/null && ss -Hltn "sport = :443" | grep -qF "$NODE_IP:443"
    }
    wait_for "Traefik's API on $TRAEFIK_API and $NODE_IP:443" traefik_up
}

traefik_stop() {
    [ -n "$TRAEFIK_PID" ] || return 0
    kill "$TRAEFIK_PID" 2>/dev/null || true
    wait "$TRAEFIK_PID" 2>/dev/null || true
    TRAEFIK_PID=""
}

# traefik_routes_ok: every TLSRoute and IngressRouteTCP of $NS is exactly one enabled TCP
# router of Traefik (by its HostSNI); sets ROUTES (Traefik's enabled TCP routers) and
# ROUTE_WHY (what is missing).
traefik_routes_ok() {
    local hosts
    hosts=$( {
        kubectl -n "$NS" get tlsroutes.gateway.networking.k8s.io -o jsonpath='{range .items[*]}{.spec.hostnames[0]}{"\n"}{end}'
        kubectl -n "$NS" get ingressroutetcps.traefik.io -o jsonpath='{range .items[*]}{.spec.routes[0].match}{"\n"}{end}' |
            sed -n 's/^HostSNI(`\(.*\)`)$/\1/p'
    } ) || { ROUTE_WHY="cannot list the routes of $NS"; return 1; }
    curl -sf "http://$TRAEFIK_API/api/tcp/routers" >"$TRAEFIK_DIR/routers.json" || { ROUTE_WHY="Traefik's API"; return 1; }
    ROUTE_WHY=$(python3 - "$TRAEFIK_DIR/routers.json" $hosts <<'PY'
import json, re, sys
routers = [r for r in json.load(open(sys.argv[1])) if r.get("status") == "enabled"]
for host in sys.argv[2:]:
    n = [r["name"] for r in routers if re.search(r'HostSNI\([`"]' + re.escape(host) + r'[`"]\)', r.get("rule", ""))]
    if len(n) != 1:
        print(f"{host}: {len(n)} routers {n}")
print(f"ROUTES={len(routers)}")
PY
    )
    # shellcheck disable=SC2034 # read by node-e2e.sh
    ROUTES=$(sed -n 's/^ROUTES=//p' <<<"$ROUTE_WHY")
    ROUTE_WHY=$(grep -v '^ROUTES=' <<<"$ROUTE_WHY" || true)
    [ -z "$ROUTE_WHY" ]
}

# router_sync: Traefik watches $NS and serves each of its routes (the SNI checks follow).
router_sync() {
    traefik_watch "$NS"
    local deadline=$((SECONDS + TIMEOUT))
    until traefik_routes_ok; do
        [ $SECONDS -lt $deadline ] || fail "Traefik does not serve the routes of $NS: $ROUTE_WHY"
        sleep 1
    done
}

# traefik_router_of HOST: the name (NAME@PROVIDER) of Traefik's TCP router for HOST.
traefik_router_of() {
    curl -sf "http://$TRAEFIK_API/api/tcp/routers" | python3 -c '
import json, re, sys
for r in json.load(sys.stdin):
    if re.search(r"HostSNI\([`\"]" + re.escape(sys.argv[1]) + r"[`\"]\)", r.get("rule", "")):
        print(r["name"])' "$1"
}

# tlsroute_accepted POD: Traefik set Accepted=True on the pod's TLSRoute (for its Gateway).
tlsroute_accepted() {
    kubectl -n "$NS" get tlsroute "$1" -o jsonpath='{range .status.parents[*]}{.controllerName} {.conditions[?(@.type=="Accepted")].status}{"\n"}{end}' |
        grep -qx 'traefik.io/gateway-controller True'
}

# sni_login POD: ssh to POD through Traefik on 443 with only what the pod publishes (its
# ssh-config block, -connect to the node IP; a known_hosts file of only its line;
# StrictHostKeyChecking yes): uid 1000; the same line with another key is refused.
sni_login() {
    local pod=$1 alias out
    kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/ssh-config}' |
        sed "s/-connect %h:443/-connect $NODE_IP:443/" >"$TMP/sni_config.$pod"
    kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/known-hosts}' >"$TMP/sni_known.$pod"
    alias=$(awk '$1 == "Host" {print $2; exit}' "$TMP/sni_config.$pod")
    [ -n "$alias" ] && [ -s "$TMP/sni_known.$pod" ] || fail "$pod publishes no ssh-config block or known-hosts"
    local s=(ssh -F "$TMP/sni_config.$pod" -i "$TMP/id_alice" -o IdentitiesOnly=yes -o BatchMode=yes
        -o StrictHostKeyChecking=yes -o GlobalKnownHostsFile=/dev/null -o ConnectTimeout=10)
    out=$(timeout 60 "${s[@]}" -o UserKnownHostsFile="$TMP/sni_known.$pod" "$alias" 'echo "uid=$(id -u)"' 2>"$TMP/ssh.err") ||
        fail "ssh through Traefik as $alias: $(tail -n 5 "$TMP/ssh.err")"
    [ "$out" = uid=1000 ] || fail "ssh through Traefik as $alias: '$out'"
    ssh-keygen -q -t ed25519 -N '' -f "$TMP/other_key.$pod.$SECONDS"
    { awk '{printf "%s %s ", $1, $(NF-1)}' "$TMP/sni_known.$pod"; awk '{print $2}' "$TMP/other_key.$pod.$SECONDS.pub"; } >"$TMP/sni_wrong.$pod"
    if timeout 60 "${s[@]}" -o UserKnownHostsFile="$TMP/sni_wrong.$pod" "$alias" true 2>"$TMP/ssh.err"; then
        fail "ssh through Traefik accepted a known_hosts line with another host key"
    fi
    grep -q "Host key verification failed" "$TMP/ssh.err" || fail "ssh through Traefik with a wrong key: $(tail -n 3 "$TMP/ssh.err")"
    SNI_ALIAS=$alias
}

# check_traefik_mode POD: ingress.mode traefik, the controller swaps POD's TLSRoute for an
# IngressRouteTCP, the login through Traefik's kubernetesCRD provider; then back to gateway.
check_traefik_mode() {
    local pod=$1 host t
    host=$(kubectl -n "$NS" get pod "$pod" -o jsonpath='{.metadata.annotations.session-ssh\.io/ssh-host}')
    [ -n "$host" ] || fail "$pod publishes no ssh-host"
    set_ingress_mode traefik
    t=$SECONDS
    only() { kubectl -n "$NS" get "$1" "$pod" >/dev/null 2>&1 && ! kubectl -n "$NS" get "$2" "$pod" >/dev/null 2>&1; }
    wait_for "the controller replaces TLSRoute $pod by an IngressRouteTCP" only ingressroutetcps.traefik.io tlsroutes.gateway.networking.k8s.io
    local irt
    irt=$(kubectl -n "$NS" get ingressroutetcps.traefik.io "$pod" -o jsonpath='{.spec.entryPoints} {.spec.routes[0].match} -> {.spec.routes[0].services[0].name}:{.spec.routes[0].services[0].port} passthrough={.spec.tls.passthrough}') ||
        fail "IngressRouteTCP $NS/$pod gone again"
    ok "controller: IngressRouteTCP $NS/$pod ($irt), its TLSRoute deleted ($((SECONDS - t)) s)"
    router_sync
    sni_login "$pod"
    ok "ssh via Traefik on 443, router $(traefik_router_of "$host") (IngressRouteTCP), as $SNI_ALIAS with only the published known_hosts line: uid 1000; another key in that line refused"
    set_ingress_mode gateway
    t=$SECONDS
    wait_for "the controller replaces IngressRouteTCP $pod by a TLSRoute" only tlsroutes.gateway.networking.k8s.io ingressroutetcps.traefik.io
    wait_for "Traefik accepts TLSRoute $NS/$pod" tlsroute_accepted "$pod"
    router_sync
    sni_login "$pod"
    ok "back to ingress.mode gateway: TLSRoute $pod again ($((SECONDS - t)) s), accepted; ssh via Traefik's router $(traefik_router_of "$host"): uid 1000, another key refused"
}
