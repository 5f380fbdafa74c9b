#!/usr/bin/env bash
# Render every kustomization under manifests/ and validate every object.
#
#   scripts/validate-manifests.sh
#   scripts/validate-manifests.sh --tools   # only install and build what it needs
#
# Installs what it needs itself: kustomize (Go module proxy, pinned), the PyPI
# package kubernetes-validate (pinned) into the repo venv .venv, and the Debian
# package python3-venv when `python3 -m venv` is missing. Needs Go >= 1.26 on
# PATH (or in /usr/local/go/bin) for kustomize and scripts/crdcheck.
#
# What is checked, per rendered kustomization:
#  - every core/apps/rbac/policy/networking/admissionregistration object strictly
#    (unknown fields are errors) against the Kubernetes $K8S_VERSION OpenAPI schemas
#    (kubernetes-validate); an object of any other kind fails, except cert-manager.io;
#  - cert-manager.io Certificate/Issuer: strict decode into cert-manager's own Go API
#    types (the source its CRD schemas are generated from) plus cert-manager's
#    admission rules for the fields we use (scripts/crdcheck). This is not the CRD's
#    OpenAPI schema itself: CEL rules and pattern constraints of the CRD are not run;
#  - cross-object policy of issue 4 (scripts/validate_manifests.py): security
#    context, probes, selectors, Service -> container port, webhook settings and
#    objectSelector, RBAC exactly as the webhook needs for the TLS mode;
#  - the webhook's ConfigMap with `session-ssh-webhook check-config` when the binary
#    exists ($SESSION_SSH_WEBHOOK_BIN, else target/{debug,release}); REQUIRE_CHECK_CONFIG=1
#    makes a missing binary an error; the defaults documented in comments of
#    manifests/base/config.yaml must be what check-config prints;
#  - with the test control plane (tests/controlplane/bin/controlplane or
#    $SESSION_SSH_CONTROLPLANE): a real kube-apiserver stores the default install,
#    admits the webhook's pod under Pod Security "restricted", accepts every overlay
#    (server-side dry run), and its RBAC authorizer grants the webhook's
#    ServiceAccount exactly what the webhook uses;
#  - `kubectl kustomize` (what `kubectl apply -k` uses) renders the same;
#  kubectl is always `$CONTROLPLANE kubectl` (kubectl of the control plane's release,
#  tests/controlplane/kubectl.go), never one from PATH. $SESSION_SSH_CONTROLPLANE set
#  (scripts/test.sh sets it) but not runnable is an error; only without it and without
#  a built tests/controlplane/bin/controlplane are these two checks skipped;
#  - a self-test that breaks the rendered objects on purpose and requires every
#    break to be caught.
# Exit status is non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
K8S_VERSION=${K8S_VERSION:-1.35}
KUSTOMIZE_VERSION=v5.8.2          # v5.8.3 needs Go 1.27
KUBERNETES_VALIDATE_VERSION=1.37.0
OUT=$ROOT/target/manifests
mkdir -p "$OUT" "$ROOT/target/tools"

log() { printf '==> %s\n' "$*"; }
die() { printf 'validate-manifests: %s\n' "$*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH=/usr/local/go/bin:$PATH
fi
command -v go >/dev/null 2>&1 || die "Go is required (kustomize and scripts/crdcheck are built from the Go module proxy)"
GOBIN_DIR=$(go env GOBIN)
[ -n "$GOBIN_DIR" ] || GOBIN_DIR=$(go env GOPATH)/bin
KUSTOMIZE=$GOBIN_DIR/kustomize
if ! [ -x "$KUSTOMIZE" ] || [ "$("$KUSTOMIZE" version 2>/dev/null)" != "$KUSTOMIZE_VERSION" ]; then
    log "installing kustomize $KUSTOMIZE_VERSION from the Go module proxy"
    go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
fi

if ! [ -x .venv/bin/python ]; then
    if ! python3 -m venv --help >/dev/null 2>&1; then
        log "installing Debian python3-venv"
        apt-get install -y python3-venv >/dev/null
    fi
    python3 -m venv .venv
fi
if [ "$(.venv/bin/python -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null)" \
     != "$KUBERNETES_VALIDATE_VERSION" ]; then
    log "installing kubernetes-validate $KUBERNETES_VALIDATE_VERSION into .venv"
    .venv/bin/pip install -q "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi

log "building scripts/crdcheck (cert-manager API types)"
CRDCHECK=$ROOT/target/tools/crdcheck
(cd scripts/crdcheck && go build -o "$CRDCHECK" .)
# --tools: only install and build the tools (scripts/test.sh does so in the background).
[ "${1:-}" != --tools ] || exit 0

# kubectl: the test control plane's own subcommand, k8s.io/kubectl at the release its
# kube-apiserver runs (tests/controlplane/kubectl.go). Always that one, even when a
# kubectl is on PATH: what these checks find must not depend on what happens to be
# installed (Debian's kubernetes-client is 1.20, a newer kubectl embeds another
# kustomize), and client and apiserver are then one release, as in the tests.
CONTROLPLANE=${SESSION_SSH_CONTROLPLANE:-$ROOT/tests/controlplane/bin/controlplane}
KUBECTL=()
if [ -x "$CONTROLPLANE" ]; then
    # A control plane built before it had the subcommand would start a cluster instead.
    kv=$(timeout 30 "$CONTROLPLANE" kubectl version --client 2>/dev/null | sed -n 's/^Client Version: //p' || true)
    [ -n "$kv" ] || die "$CONTROLPLANE has no kubectl subcommand: rebuild it (tests/controlplane/build.sh)"
    KUBECTL=("$CONTROLPLANE" kubectl)
    log "kubectl: $CONTROLPLANE kubectl ($kv)"
elif [ -n "${SESSION_SSH_CONTROLPLANE:-}" ]; then
    die "SESSION_SSH_CONTROLPLANE=$CONTROLPLANE is not executable (tests/controlplane/build.sh builds it)"
else
    log "SKIP \`kubectl kustomize\` and real kube-apiserver checks: no test control plane at $CONTROLPLANE;" \
        "build it (tests/controlplane/build.sh) or run scripts/test.sh, which does and never skips these"
fi

CHECK_CONFIG=${SESSION_SSH_WEBHOOK_BIN:-}
if [ -z "$CHECK_CONFIG" ]; then
    for b in target/debug/session-ssh-webhook target/release/session-ssh-webhook \
             target/x86_64-unknown-linux-musl/release/session-ssh-webhook; do
        if [ -x "$b" ]; then CHECK_CONFIG=$ROOT/$b; break; fi
    done
fi
CHECK_ARGS=()
if [ -n "$CHECK_CONFIG" ]; then
    [ -x "$CHECK_CONFIG" ] || die "SESSION_SSH_WEBHOOK_BIN=$CHECK_CONFIG is not executable"
    CHECK_ARGS=(--check-config "$CHECK_CONFIG")
    log "webhook configs are checked with $CHECK_CONFIG check-config"
elif [ "${REQUIRE_CHECK_CONFIG:-0}" = 1 ]; then
    die "REQUIRE_CHECK_CONFIG=1 but no session-ssh-webhook binary (build it: cargo build -p session-ssh-webhook)"
else
    log "SKIP check-config: no session-ssh-webhook binary yet (cargo build -p session-ssh-webhook)"
fi

# --- render and validate -------------------------------------------------------
# Components (manifests/gateway) render only inside a kustomization that uses them.
mapfile -t DIRS < <(find manifests -name kustomization.yaml -exec grep -L '^kind: Component' {} + | xargs -n1 dirname | sort)
[ "${#DIRS[@]}" -gt 0 ] || die "no kustomization.yaml under manifests/"
failed=0 kustomized=0
for dir in "${DIRS[@]}"; do
    name=${dir//\//_}
    rendered=$OUT/$name.yaml
    log "$dir"
    if ! "$KUSTOMIZE" build "$dir" >"$rendered"; then
        echo "ERROR $dir: kustomize build failed"; failed=1; continue
    fi
    if [ "$dir" = manifests/base ]; then
        # The base alone has no TLS mode (an overlay adds one): schema only.
        .venv/bin/kubernetes-validate --strict --quiet -k "$K8S_VERSION" "$rendered" || failed=1
        grep -q '^apiVersion: cert-manager.io/' "$rendered" && { echo "ERROR base has cert-manager objects"; failed=1; }
        continue
    fi
    # Admins run `kubectl apply -k`: kubectl's embedded kustomize must render the same.
    if [ "${#KUBECTL[@]}" -gt 0 ]; then
        if ! "${KUBECTL[@]}" kustomize "$dir" 2>&1 | cmp -s - "$rendered"; then
            echo "ERROR $dir: \`kubectl kustomize\` ($("${KUBECTL[@]}" version --client 2>/dev/null | sed -n 's/^Kustomize Version: //p')) renders differently from kustomize $KUSTOMIZE_VERSION"
            failed=1
        fi
        kustomized=$((kustomized + 1))
    fi
    .venv/bin/python scripts/validate_manifests.py --k8s-version "$K8S_VERSION" --name "$dir" \
        "${CHECK_ARGS[@]}" "$rendered" || failed=1
    want=$(grep -c '^apiVersion: cert-manager.io/' "$rendered" || true)
    if [ "$want" -gt 0 ]; then
        if ! out=$("$CRDCHECK" "$rendered"); then failed=1; fi
        printf '%s\n' "$out" | sed 's/^/  /'
        got=$(printf '%s\n' "$out" | grep -c '^OK .*types, strict' || true)
        if [ "$got" != "$want" ]; then
            echo "ERROR $dir: $want cert-manager objects but crdcheck passed $got"; failed=1
        fi
    fi
done

if [ -n "$CHECK_CONFIG" ]; then
    .venv/bin/python scripts/validate_manifests.py --k8s-version "$K8S_VERSION" --name base-config \
        --documented-defaults --check-config "$CHECK_CONFIG" manifests/base/config.yaml || failed=1
fi

# --- a real kube-apiserver: its own validation and RBAC authorizer --------------------
# With the test control plane (tests/controlplane, issue 5) and its kubectl: apply the
# default install for real and every other overlay as a server-side dry run, then ask
# the apiserver's RBAC authorizer (SubjectAccessReview via `kubectl auth can-i --as`)
# what the webhook's ServiceAccount may and may not do.
CP_PID='' CP_DIR=''
stop_controlplane() {
    if [ -n "$CP_PID" ]; then kill -TERM "$CP_PID" 2>/dev/null || true; wait "$CP_PID" 2>/dev/null || true; fi
    if [ -n "$CP_DIR" ]; then rm -rf "$CP_DIR"; fi
    CP_PID='' CP_DIR=''
}
live_check() {
    local dir cp_pid kc
    dir=$(mktemp -d)
    "$CONTROLPLANE" --dir "$dir/state" >"$dir/out" 2>"$dir/log" &
    cp_pid=$!
    CP_PID=$cp_pid CP_DIR=$dir
    trap stop_controlplane EXIT
    for _ in $(seq 1 180); do
        grep -q '^READY' "$dir/out" && break
        kill -0 "$cp_pid" 2>/dev/null || { tail -20 "$dir/log"; echo "ERROR control plane exited"; return 1; }
        sleep 1
    done
    kc=$(sed -n 's/^READY kubeconfig=//p' "$dir/out")
    [ -n "$kc" ] || { tail -20 "$dir/log"; echo "ERROR control plane not ready in 180 s"; return 1; }
    local k=("${KUBECTL[@]}" --kubeconfig "$kc")
    local bad=0
    "${k[@]}" create namespace jhub >/dev/null && "${k[@]}" create namespace renku >/dev/null || return 1
    "${k[@]}" apply --server-side -f "$OUT/manifests.yaml" >"$dir/apply.log" 2>&1 \
        || { cat "$dir/apply.log"; echo "ERROR the apiserver refused manifests/"; bad=1; }
    local n
    n=$("${k[@]}" get -f "$OUT/manifests.yaml" -o name | wc -l)
    # The webhook's pod as the Deployment would create it, through the apiserver's
    # admission (Pod Security "restricted" is enforced on namespace session-ssh).
    .venv/bin/python -c 'import sys, yaml
d = next(o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o["kind"] == "Deployment")
t = d["spec"]["template"]
yaml.safe_dump({"apiVersion": "v1", "kind": "Pod", "metadata": dict(t["metadata"], name="pss-check",
    namespace=d["metadata"]["namespace"]), "spec": t["spec"]}, sys.stdout)' "$OUT/manifests.yaml" >"$dir/pod.yaml"
    "${k[@]}" create --dry-run=server -f "$dir/pod.yaml" >"$dir/pod.log" 2>&1 \
        || { cat "$dir/pod.log"; echo "ERROR the webhook's pod is refused in its namespace (Pod Security restricted?)"; bad=1; }
    grep -q 'Warning' "$dir/pod.log" && { cat "$dir/pod.log"; echo "ERROR admission warnings for the webhook's pod"; bad=1; }
    local dry=0
    for f in "$OUT"/manifests_*.yaml; do
        case $f in *_base.yaml | */self-test-*) continue ;; esac
        # cert-manager's CRDs are not installed here (crdcheck covers those objects).
        .venv/bin/python -c 'import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and not d["apiVersion"].startswith("cert-manager.io/")]
yaml.safe_dump_all(docs, sys.stdout)' "$f" >"$dir/dry.yaml"
        "${k[@]}" apply --server-side --dry-run=server -f "$dir/dry.yaml" >"$dir/dry.log" 2>&1 \
            || { cat "$dir/dry.log"; echo "ERROR the apiserver refused $(basename "$f") (dry run)"; bad=1; }
        dry=$((dry + 1))
    done
    local as=system:serviceaccount:session-ssh:session-ssh-webhook
    # want VERB RESOURCE [NAME] [-n NS]: "yes" or "no" from the real RBAC authorizer.
    can() {
        local want=$1; shift
        local got
        got=$("${k[@]}" auth can-i "$@" --as="$as" 2>/dev/null || true)
        if [ "$got" != "$want" ]; then echo "ERROR RBAC: can-i $* is '$got', want '$want'"; bad=1; fi
        asked=$((asked + 1))
    }
    local asked=0
    # What the webhook uses (manifests/base/rbac.yaml, overlays/self-signed/rbac-self-managed-tls.yaml).
    can yes get pods -A;  can yes list pods -A;  can yes watch pods -A;  can yes patch pods -n jhub
    for v in get list watch create patch delete; do can yes "$v" services -n jhub; done
    # Host-key rights are bound per session namespace, never by the default install.
    can no get secrets -n jhub;  can no list secrets -A;  can no create secrets -n jhub
    can yes create events.events.k8s.io -n jhub;  can yes patch events.events.k8s.io -n jhub
    can yes get mutatingwebhookconfigurations/session-ssh
    can yes patch mutatingwebhookconfigurations/session-ssh
    for v in get update patch; do can yes "$v" secrets/session-ssh-webhook-tls -n session-ssh; done
    can yes create secrets -n session-ssh
    # ... and nothing more.
    can no create pods -n jhub;  can no delete pods -n jhub;  can no update pods -n jhub
    can no update services -n jhub;  can no update secrets -n jhub;  can no patch secrets -n jhub
    can no create events -n jhub
    can no patch mutatingwebhookconfigurations/other;  can no list mutatingwebhookconfigurations
    can no delete mutatingwebhookconfigurations/session-ssh
    can no create validatingwebhookconfigurations
    can no update secrets/other -n session-ssh
    can no create configmaps -n jhub;  can no create clusterroles;  can no create rolebindings -n jhub
    can no get nodes;  can no create pods/exec -n jhub
    # The JupyterHub example binds host-key rights in its namespace only.
    "${k[@]}" apply --server-side -f "$OUT/manifests_examples_jupyterhub.yaml" >"$dir/apply.log" 2>&1 \
        || { cat "$dir/apply.log"; echo "ERROR the apiserver refused examples/jupyterhub"; bad=1; }
    for v in get list create delete; do can yes "$v" secrets -n jhub; done
    can no watch secrets -n jhub;  can no create secrets -n renku;  can no get secrets -n renku
    can no get secrets -n kube-system
    # manifests/prepull (in the example): read its one DaemonSet, nothing else of apps.
    can yes get daemonsets.apps/session-ssh-prepull -n session-ssh
    can no get daemonsets.apps/other -n session-ssh;  can no list daemonsets.apps -n session-ssh
    can no update daemonsets.apps/session-ssh-prepull -n session-ssh
    can no delete secrets/session-ssh-webhook-tls -n session-ssh
    # The optional host CA (hostKeys.ca): read its one Secret, nothing else there.
    can yes get secrets/session-ssh-host-ca -n session-ssh
    can no update secrets/session-ssh-host-ca -n session-ssh;  can no list secrets -n session-ssh
    stop_controlplane
    echo "  real kube-apiserver: manifests/ applied ($n objects stored), webhook pod admitted under Pod Security restricted, $dry overlays accepted by dry run, $asked RBAC questions as the webhook's ServiceAccount"
    return $bad
}
if [ "${#KUBECTL[@]}" -gt 0 ]; then
    echo "  \`kubectl kustomize\` (kubectl $kv) compared with kustomize $KUSTOMIZE_VERSION: $kustomized kustomizations"
    log "real kube-apiserver (tests/controlplane): apply, dry runs, RBAC"
    live_check || failed=1
else
    log "SKIP real kube-apiserver check: no test control plane (see above)"
fi

# --- the checks themselves must be able to fail ----------------------------------
log "self-test of the checks"
.venv/bin/python scripts/validate_manifests.py --k8s-version "$K8S_VERSION" --name self-test --self-test \
    "$OUT/manifests.yaml" || failed=1
.venv/bin/python scripts/validate_manifests.py --k8s-version "$K8S_VERSION" --name self-test --self-test \
    "$OUT/manifests_overlays_cert-manager.yaml" || failed=1
.venv/bin/python scripts/validate_manifests.py --k8s-version "$K8S_VERSION" --name self-test --self-test \
    "$OUT/manifests_examples_jupyterhub.yaml" || failed=1
broken=$OUT/self-test-cert-manager.yaml
for edit in 's/^  secretName: session-ssh-webhook-tls/  secretNme: session-ssh-webhook-tls/' \
            's/^    size: 256/    size: 255/' \
            's/^    name: session-ssh-ca$/    name: no-such-issuer/'; do
    sed "$edit" "$OUT/manifests_overlays_cert-manager.yaml" >"$broken"
    cmp -s "$broken" "$OUT/manifests_overlays_cert-manager.yaml" && { echo "SELF-TEST: sed '$edit' changed nothing"; failed=1; continue; }
    if "$CRDCHECK" "$broken" >/dev/null; then
        echo "SELF-TEST FAILED: crdcheck accepted: $edit"; failed=1
    fi
done
[ "$failed" = 0 ] && echo "  crdcheck self-test: 3 of 3 deliberate breakages caught"

if [ "$failed" != 0 ]; then
    echo "validate-manifests: FAILED"
    exit 1
fi
echo "validate-manifests: ${#DIRS[@]} kustomizations rendered and valid (rendered output in target/manifests/)"
