#!/usr/bin/env bash
# Run the webhook image the way manifests/ runs it, against a real kube-apiserver.
#
#   scripts/run-webhook-image.sh [RENDERED.yaml]     (after scripts/build-images.sh)
#
# RENDERED defaults to the default install (target/manifests/manifests.yaml, self-managed
# TLS); target/manifests/manifests_overlays_cert-manager.yaml runs the cert-manager
# variant, with session-ssh-certs standing in for cert-manager: the Certificate's
# Secret is mounted read-only (mode 0440, group 65532 as fsGroup makes it).
#
# No kubelet here, so this script plays the kubelet for the Deployment's one
# container, from the rendered default install (target/manifests/manifests.yaml):
#   - root filesystem: the image's, mounted READ-ONLY; process: UID/GID 65532,
#     the exact args and env of the Deployment (listen addresses moved to 127.0.0.1);
#   - volumes: the ConfigMap's config.yaml read-only at /etc/session-ssh, an
#     in-memory emptyDir at /run/session-ssh/tls, a projected ServiceAccount token
#     (TokenRequest for the manifests' ServiceAccount) with the apiserver's CA;
#   - the apiserver: tests/controlplane (issue 5) with manifests/ applied, so the
#     self-managed TLS mode runs with exactly the manifests' RBAC.
# Then it checks what an admin relies on: /readyz turns ready, the webhook made
# its TLS Secret and patched the caBundle of its MutatingWebhookConfiguration,
# HTTPS on the Service's DNS name verifies against that caBundle and answers an
# AdmissionReview with a patch, /metrics counts it, SIGTERM stops it. Prints RSS.
#
# Env: SESSION_SSH_CONTROLPLANE (default tests/controlplane/bin/controlplane),
# IMAGE_REGISTRY/IMAGE_TAG as for build-images.sh. Needs root and curl. kubectl is
# the control plane's own (`controlplane kubectl`, k8s.io/kubectl of the apiserver's
# release), never one from PATH: no hand-installed kubectl needed, none can skew.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
REGISTRY=${IMAGE_REGISTRY:-ghcr.io/session-ssh}
VERSION=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
IMAGE=$REGISTRY/webhook:${IMAGE_TAG:-$VERSION}
OUT=$ROOT/target/images
BUILDAH=(buildah --storage-driver vfs --root "$OUT/storage" --runroot "$OUT/run")
CONTROLPLANE=${SESSION_SSH_CONTROLPLANE:-$ROOT/tests/controlplane/bin/controlplane}
RENDERED=${1:-$ROOT/target/manifests/manifests.yaml}
PY=$ROOT/.venv/bin/python
[ -x "$PY" ] || PY=python3

log() { printf '==> %s\n' "$*"; }
die() { printf 'run-webhook-image: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (mount namespace, chroot)"
[ -x "$CONTROLPLANE" ] || die "no control plane at $CONTROLPLANE (tests/controlplane/build.sh)"
# A control plane built before it had the subcommand would start a cluster instead.
timeout 30 "$CONTROLPLANE" kubectl version --client 2>/dev/null | grep '^Client Version: v1\.' >/dev/null \
    || die "$CONTROLPLANE has no kubectl subcommand: rebuild it (tests/controlplane/build.sh)"
[ -f "$RENDERED" ] || die "$RENDERED missing: run scripts/validate-manifests.sh first"

WORK=$(mktemp -d)
CP_PID='' WH_PID='' CTR=''
cleanup() {
    if [ -n "$WH_PID" ]; then kill -KILL "$WH_PID" 2>/dev/null || true; wait "$WH_PID" 2>/dev/null || true; fi
    if [ -n "$CP_PID" ]; then kill -TERM "$CP_PID" 2>/dev/null || true; wait "$CP_PID" 2>/dev/null || true; fi
    if [ -n "$CTR" ]; then
        "${BUILDAH[@]}" umount "$CTR" >/dev/null 2>&1 || true
        "${BUILDAH[@]}" rm "$CTR" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the apiserver, with the install applied -------------------------------------
log "control plane + kubectl apply (server-side) of manifests/"
"$CONTROLPLANE" --dir "$WORK/cp" >"$WORK/cp.out" 2>"$WORK/cp.log" &
CP_PID=$!
for _ in $(seq 1 180); do
    grep -q '^READY' "$WORK/cp.out" && break
    kill -0 "$CP_PID" 2>/dev/null || { tail -20 "$WORK/cp.log"; die "control plane exited"; }
    sleep 1
done
KC=$(sed -n 's/^READY kubeconfig=//p' "$WORK/cp.out")
[ -n "$KC" ] || die "control plane not ready in 180 s"
k() { "$CONTROLPLANE" kubectl --kubeconfig "$KC" "$@"; }
# cert-manager's CRDs are not installed here; its objects are not needed to run the webhook.
"$PY" -c 'import sys, yaml
yaml.safe_dump_all([d for d in yaml.safe_load_all(open(sys.argv[1])) if d and not d["apiVersion"].startswith("cert-manager.io/")], sys.stdout)' \
    "$RENDERED" >"$WORK/apply.yaml"
k apply --server-side -f "$WORK/apply.yaml" >/dev/null

# --- the pod's view: volumes, token, args, env -----------------------------------
mkdir -p "$WORK/config" "$WORK/sa"
SERVER=$(k config view --raw -o jsonpath='{.clusters[0].cluster.server}')
k config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}' | base64 -d >"$WORK/sa/ca.crt"
k create token session-ssh-webhook -n session-ssh --duration=1h >"$WORK/sa/token"
printf 'session-ssh' >"$WORK/sa/namespace"
chmod 0444 "$WORK/sa/"* && chmod 0755 "$WORK/sa" "$WORK/config"
HOSTPORT=${SERVER#https://}
API_HOST=${HOSTPORT%:*} API_PORT=${HOSTPORT##*:}

# Free loopback ports for the two listeners.
read -r P_HTTPS P_METRICS < <("$PY" -c 'import socket
s = [socket.socket() for _ in range(2)]
[x.bind(("127.0.0.1", 0)) for x in s]
print(*[x.getsockname()[1] for x in s])')

# Args, env and mounts exactly as rendered (only the listen addresses change).
"$PY" - "$RENDERED" "$WORK" "$P_HTTPS" "$P_METRICS" <<'EOF'
import json, sys, yaml
rendered, work, p_https, p_metrics = sys.argv[1:]
objs = [o for o in yaml.safe_load_all(open(rendered)) if o]
dep = next(o for o in objs if o["kind"] == "Deployment")
pod = dep["spec"]["template"]["spec"]
c = pod["containers"][0]
args = list(c["args"])
for flag, value in (("--listen", f"127.0.0.1:{p_https}"), ("--metrics-listen", f"127.0.0.1:{p_metrics}")):
    args[args.index(flag) + 1] = value
env = {}
for e in c.get("env") or []:
    if "value" in e:
        env[e["name"]] = e["value"]
    else:
        path = e["valueFrom"]["fieldRef"]["fieldPath"]
        env[e["name"]] = {"metadata.namespace": dep["metadata"]["namespace"],
                          "metadata.name": "session-ssh-webhook-smoke"}[path]
vols = {v["name"]: v for v in pod["volumes"]}
mounts = {}
for m in c["volumeMounts"]:
    v = vols[m["name"]]
    if "configMap" in v:
        cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"] == v["configMap"]["name"])
        for key, text in cm["data"].items():
            open(f"{work}/config/{key}", "w").write(text)
        mounts[m["mountPath"]] = "config"
    elif "emptyDir" in v:
        mounts[m["mountPath"]] = "emptyDir"
    elif "secret" in v:
        mounts[m["mountPath"]] = "secret"
    else:
        sys.exit(f"volume {m['name']} is not a ConfigMap, emptyDir or Secret")
sc = c["securityContext"]
json.dump({"args": args, "env": env, "mounts": mounts, "user": f"{sc['runAsUser']}:{sc['runAsGroup']}",
           "ro": sc["readOnlyRootFilesystem"], "image": c["image"], "command": c.get("command") or []}, open(f"{work}/pod.json", "w"))
EOF
jq_() { "$PY" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$WORK/pod.json" "$1"; }
[ "$(jq_ 'd["image"]')" = "$IMAGE" ] || die "the Deployment runs $(jq_ 'd["image"]'), this script tests $IMAGE"
[ "$(jq_ 'd["ro"]')" = True ] || die "expected readOnlyRootFilesystem"
USERSPEC=$(jq_ 'd["user"]')
CONFIG_DIR=$(jq_ '[p for p, k in d["mounts"].items() if k == "config"][0]')
TLS_DIR=$(jq_ '[p for p, k in d["mounts"].items() if k in ("emptyDir", "secret")][0]')
TLS_KIND=$(jq_ 'd["mounts"]["'"$TLS_DIR"'"]')
mkdir -p "$WORK/tls"
if [ "$TLS_KIND" = secret ]; then
    # What cert-manager would put in the Secret, as the kubelet mounts it.
    CERTS=${SESSION_SSH_CERTS_BIN:-}
    for b in target/x86_64-unknown-linux-musl/release/session-ssh-certs target/release/session-ssh-certs target/debug/session-ssh-certs; do
        [ -n "$CERTS" ] || { [ -x "$b" ] && CERTS=$ROOT/$b; }
    done
    [ -n "$CERTS" ] || die "no session-ssh-certs binary (cargo build -p session-ssh-certs) to stand in for cert-manager"
    "$CERTS" pem --service session-ssh-webhook --namespace session-ssh --out-dir "$WORK/tls" >/dev/null
    chgrp 65532 "$WORK/tls/"* && chmod 0440 "$WORK/tls/"* && chmod 0755 "$WORK/tls"
fi
mapfile -t ARGS < <(jq_ '"\n".join(d["args"])')
mapfile -t ENV < <(jq_ '"\n".join(f"{k}={v}" for k, v in d["env"].items())')

# --- the container: image root read-only, volumes mounted, UID 65532 ---------------
# What the kubelet runs: the container's command, else the image's ENTRYPOINT, then args.
mapfile -t CMD < <(jq_ '"\n".join(d["command"])')
if [ "${#CMD[@]}" = 0 ] || [ -z "${CMD[0]}" ]; then
    mapfile -t CMD < <("${BUILDAH[@]}" inspect --type image --format '{{range .OCIv1.Config.Entrypoint}}{{println .}}{{end}}' "$IMAGE" | sed '/^$/d')
fi
ARGS=("${CMD[@]}" "${ARGS[@]}")
CTR=$("${BUILDAH[@]}" from --pull-never "$IMAGE")
MNT=$("${BUILDAH[@]}" mount "$CTR")
SA_DIR=/var/run/secrets/kubernetes.io/serviceaccount
for d in "$CONFIG_DIR" "$TLS_DIR" "$SA_DIR" /proc; do mkdir -p "$MNT$d"; done
log "running $IMAGE as $USERSPEC: ${ARGS[*]}"
# shellcheck disable=SC2016 # the inner script expands its own positional args
env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "${ENV[@]}" KUBERNETES_SERVICE_HOST="$API_HOST" KUBERNETES_SERVICE_PORT="$API_PORT" \
    unshare --mount --propagation private -- /bin/sh -c '
    set -e
    m=$1 cfg=$2 tls=$3 sa=$4 work=$5 user=$6 tlskind=$7; shift 7
    mount --bind "$m" "$m"
    mount --bind -o ro "$work/config" "$m$cfg"
    if [ "$tlskind" = secret ]; then mount --bind -o ro "$work/tls" "$m$tls"
    else mount -t tmpfs -o mode=1777,size=1m tmpfs "$m$tls"; fi
    mount --bind -o ro "$work/sa" "$m$sa"
    mount -t proc proc "$m/proc"
    mount -o remount,bind,ro "$m"
    exec env -u PATH /usr/sbin/chroot --userspec="$user" "$m" "$@"
' sh "$MNT" "$CONFIG_DIR" "$TLS_DIR" "$SA_DIR" "$WORK" "$USERSPEC" "$TLS_KIND" "${ARGS[@]}" >"$WORK/webhook.log" 2>&1 &
WH_PID=$!

fail() { echo "--- webhook log"; tail -30 "$WORK/webhook.log"; die "$*"; }
for _ in $(seq 1 60); do
    curl -fsS "http://127.0.0.1:$P_METRICS/readyz" >/dev/null 2>&1 && break
    kill -0 "$WH_PID" 2>/dev/null || fail "the webhook exited"
    sleep 1
done
curl -fsS "http://127.0.0.1:$P_METRICS/readyz" >/dev/null || fail "/readyz not ready in 60 s"
curl -fsS "http://127.0.0.1:$P_METRICS/healthz" >/dev/null || fail "/healthz failed"
echo "  ready: /readyz and /healthz answer on the metrics port"
# The process is what the pod spec says: its root is read-only, it runs as 65532.
awk '$5 == "/" { print $6 }' "/proc/$WH_PID/mountinfo" | grep -q '^ro' || fail "the webhook's root filesystem is not read-only"
[ "$(awk '/^Uid:/ { print $2 }' "/proc/$WH_PID/status")" = "${USERSPEC%%:*}" ] || fail "the webhook does not run as ${USERSPEC%%:*}"
echo "  process: root filesystem read-only, UID ${USERSPEC%%:*}"

# --- what self-managed TLS must have done, with the manifests' RBAC ------------------
MWC=$("$PY" -c 'import sys, yaml
print(next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "MutatingWebhookConfiguration")["metadata"]["name"])' "$RENDERED")
SVC=$("$PY" -c 'import sys, yaml
s = next(d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d["kind"] == "MutatingWebhookConfiguration")["webhooks"][0]["clientConfig"]["service"]
print(s["name"] + "." + s["namespace"])' "$RENDERED")
if [ "$TLS_KIND" = secret ]; then
    cp "$WORK/tls/ca.crt" "$WORK/bundle.crt"
    [ -z "$(k get mutatingwebhookconfiguration "$MWC" -o jsonpath='{.webhooks[0].clientConfig.caBundle}')" ] \
        || fail "the webhook touched the caBundle in cert-manager mode"
    echo "  certificate from the read-only Secret mount; caBundle left to cert-manager"
else
SECRET=$(jq_ '[d["args"][i + 1] for i, a in enumerate(d["args"]) if a == "--tls-secret"][0]')
[ "$MWC" = "$(jq_ '[d["args"][i + 1] for i, a in enumerate(d["args"]) if a == "--webhook-config"][0]')" ] \
    || fail "--webhook-config is not the MutatingWebhookConfiguration's name"
k get secret -n "${SECRET%/*}" "${SECRET#*/}" -o jsonpath='{.data.ca\.crt}' | base64 -d >"$WORK/ca.crt" \
    || fail "Secret $SECRET was not made"
k get mutatingwebhookconfiguration "$MWC" -o jsonpath='{.webhooks[0].clientConfig.caBundle}' | base64 -d >"$WORK/bundle.crt"
cmp -s "$WORK/ca.crt" "$WORK/bundle.crt" || fail "caBundle of $MWC is not the CA in $SECRET"
echo "  self-managed TLS: Secret $SECRET made, caBundle of $MWC patched with its CA"
fi

# --- the apiserver's path: HTTPS to the Service name, verified by the caBundle --------
cat >"$WORK/review.json" <<'EOF'
{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{
 "uid":"0c3f6e4a-1111-4a2b-9c3d-000000000001",
 "kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
 "requestKind":{"group":"","version":"v1","kind":"Pod"},"requestResource":{"group":"","version":"v1","resource":"pods"},
 "namespace":"smoke","operation":"CREATE","userInfo":{"username":"smoke"},"dryRun":true,
 "object":{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"smoke-","namespace":"smoke",
   "labels":{"session-ssh.io/inject":"true"}},
   "spec":{"containers":[{"name":"notebook","image":"jupyter/base-notebook"}]}},
 "options":{"apiVersion":"meta.k8s.io/v1","kind":"CreateOptions"}}}
EOF
HOST=${SVC}.svc
curl -fsS --cacert "$WORK/bundle.crt" --resolve "$HOST:$P_HTTPS:127.0.0.1" \
    -H 'Content-Type: application/json' --data @"$WORK/review.json" \
    "https://$HOST:$P_HTTPS/mutate" >"$WORK/response.json" || fail "HTTPS /mutate to $HOST failed"
"$PY" - "$WORK/response.json" <<'EOF' || fail "bad AdmissionReview response"
import base64, json, sys
r = json.load(open(sys.argv[1]))["response"]
assert r["uid"] == "0c3f6e4a-1111-4a2b-9c3d-000000000001", r
assert r["allowed"] is True, r
patch = json.loads(base64.b64decode(r["patch"]))
assert r["patchType"] == "JSONPatch" and patch, r
print(f"  HTTPS {len(patch)}-operation JSON patch for an opted-in pod, verified against the caBundle")
EOF
curl -fsS "http://127.0.0.1:$P_METRICS/metrics" >"$WORK/metrics.txt" || fail "/metrics failed"
grep -q . "$WORK/metrics.txt" || fail "/metrics is empty"
RSS=$(awk '/^VmRSS/ {print $2}' "/proc/$WH_PID/status" 2>/dev/null || echo '?')
echo "  /metrics: $(grep -vc '^#' "$WORK/metrics.txt") samples; webhook RSS ${RSS} kB"

kill -TERM "$WH_PID"
for _ in $(seq 1 30); do kill -0 "$WH_PID" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$WH_PID" 2>/dev/null; then fail "still running 15 s after SIGTERM"; fi
wait "$WH_PID" 2>/dev/null || true
WH_PID=''
echo "run-webhook-image: $IMAGE runs as $(basename "$RENDERED") says (read-only root, UID 65532, $TLS_KIND TLS, the manifests' RBAC)"
