#!/usr/bin/env bash
# Self-managed TLS against a real kube-apiserver (tests/controlplane): two webhook
# replicas start together on a Secret whose certificate is about to expire.
# Checks: exactly one renewal (the other replica loses the resourceVersion race and
# reuses it), both serve the same certificate, the caBundle of every webhook in the
# MutatingWebhookConfiguration is the Secret's ca.crt = new CA + still-valid old CA,
# no flapping over several checks, a deleted Secret is re-created once and followed,
# and a client trusting ca.crt verifies the Service name.
# Needs: kubectl, curl; the control plane binary ($SESSION_SSH_CONTROLPLANE or
# tests/controlplane/bin/controlplane, built by tests/controlplane/build.sh).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
CP="${SESSION_SSH_CONTROLPLANE:-$root/tests/controlplane/bin/controlplane}"
[[ -x "$CP" ]] || { echo "no control plane at $CP (tests/controlplane/build.sh)" >&2; exit 1; }
for tool in kubectl curl; do command -v "$tool" >/dev/null || { echo "$tool missing" >&2; exit 1; }; done
cargo build -q -p session-ssh-webhook -p session-ssh-certs --bins
BIN="$root/target/debug"

work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; for i in 1 2; do echo "--- replica $i log" >&2; tail -20 "$work/r$i/log" >&2 || true; done; exit 1; }

# The control plane stops when its stdin closes; `sleep` bounds its life.
mkfifo "$work/cp.in"
sleep 900 >"$work/cp.in" &
pids+=($!)
"$CP" <"$work/cp.in" >"$work/cp.out" 2>"$work/cp.err" &
pids+=($!)
for _ in $(seq 180); do grep -q '^READY' "$work/cp.out" 2>/dev/null && break; sleep 1; done
export KUBECONFIG="$(sed -n 's/^READY kubeconfig=//p' "$work/cp.out")"
[[ -n "$KUBECONFIG" ]] || { cat "$work/cp.err" >&2; fail "control plane not ready"; }
echo "control plane ready"

NS=session-ssh SECRET=session-ssh-webhook-tls MWC=session-ssh SVC=session-ssh-webhook
NAMES="$SVC,$SVC.$NS,$SVC.$NS.svc,$SVC.$NS.svc.cluster.local"
kubectl create namespace "$NS" >/dev/null
# A certificate with one day left (inside the 30-day renewal window), named as the webhook would.
"$BIN/session-ssh-certs" secret --service "$SVC" --namespace "$NS" --days 1 --secret-name "$SECRET" \
  --ca-bundle-out "$work/old.b64" >"$work/old-secret.yaml" 2>/dev/null
kubectl apply -f "$work/old-secret.yaml" >/dev/null
kubectl -n "$NS" annotate secret "$SECRET" "session-ssh.io/tls-names=$NAMES" >/dev/null
cat >"$work/mwc.yaml" <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {name: $MWC}
webhooks:
- name: inject.session-ssh.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig: {url: "https://127.0.0.1:1/mutate", caBundle: "$(cat "$work/old.b64")"}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}]
  namespaceSelector: {matchLabels: {session-ssh.io/enabled: "true"}}
- name: second.session-ssh.io
  admissionReviewVersions: [v1]
  sideEffects: None
  failurePolicy: Ignore
  clientConfig: {url: "https://127.0.0.1:1/mutate"}
  rules: [{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}]
  namespaceSelector: {matchLabels: {session-ssh.io/enabled: "true"}}
EOF
kubectl apply -f "$work/mwc.yaml" >/dev/null
printf 'platform: jupyterhub\n' >"$work/config.yaml"

secret_field() { kubectl -n "$NS" get secret "$SECRET" -o "jsonpath={.$1}"; }
for i in 1 2; do
  mkdir -p "$work/r$i"
  "$BIN/session-ssh-webhook" --log-format json serve --config "$work/config.yaml" \
    --tls-cert "$work/r$i/tls.crt" --tls-key "$work/r$i/tls.key" \
    --listen "127.0.0.1:0" --metrics-listen "127.0.0.1:0" --shutdown-delay-seconds 0 \
    --tls-reload-seconds 1 --check-seconds 2 \
    --self-managed-tls --tls-secret "$NS/$SECRET" --webhook-config "$MWC" --service "$SVC.$NS" \
    >"$work/r$i/log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 60); do [[ -s "$work/r1/tls.crt" && -s "$work/r2/tls.crt" ]] && break; sleep 0.5; done

echo "== renewal race"
renewed=$(cat "$work"/r?/log | grep -c "renewed CA and certificate" || true)
[[ "$renewed" == 1 ]] || fail "expected exactly one renewal, saw $renewed"
cmp -s "$work/r1/tls.crt" "$work/r2/tls.crt" || fail "replicas serve different certificates"
secret_field 'data.tls\.crt' | base64 -d | cmp -s - "$work/r1/tls.crt" || fail "files are not the Secret's"
secret_field 'data.ca\.crt' >"$work/ca.b64"
base64 -d "$work/ca.b64" >"$work/ca.crt"
[[ $(grep -c 'BEGIN CERTIFICATE' "$work/ca.crt") == 2 ]] || fail "ca.crt should hold the new and the old CA"
base64 -d "$work/old.b64" >"$work/old-ca.crt"
tail -n "$(wc -l <"$work/old-ca.crt")" "$work/ca.crt" | cmp -s - "$work/old-ca.crt" || fail "old CA not kept after the new one"
echo "one renewal, replicas agree, ca.crt = new CA + old CA"

echo "== caBundle of every webhook"
for _ in $(seq 20); do
  ok=1
  for j in 0 1; do
    kubectl get mutatingwebhookconfiguration "$MWC" -o "jsonpath={.webhooks[$j].clientConfig.caBundle}" | cmp -s - "$work/ca.b64" || ok=0
  done
  [[ $ok == 1 ]] && break
  sleep 0.5
done
[[ $ok == 1 ]] || fail "caBundle differs from the Secret's ca.crt"
echo "both webhooks carry the Secret's ca.crt"

echo "== no flapping (3 check periods)"
rv=$(secret_field metadata.resourceVersion)
sleep 6
[[ "$(secret_field metadata.resourceVersion)" == "$rv" ]] || fail "the Secret changed again without reason"
echo "Secret unchanged"

echo "== deleted Secret is re-created once and followed"
kubectl -n "$NS" delete secret "$SECRET" >/dev/null
for _ in $(seq 40); do kubectl -n "$NS" get secret "$SECRET" >/dev/null 2>&1 && break; sleep 0.5; done
secret_field 'data.tls\.crt' | base64 -d >"$work/new.crt"
for _ in $(seq 40); do
  cmp -s "$work/new.crt" "$work/r1/tls.crt" && cmp -s "$work/new.crt" "$work/r2/tls.crt" && break
  sleep 0.5
done
cmp -s "$work/new.crt" "$work/r1/tls.crt" && cmp -s "$work/new.crt" "$work/r2/tls.crt" || fail "replicas did not follow the new Secret"
created=$(cat "$work"/r?/log | grep -c "created CA and certificate" || true)
[[ "$created" == 1 ]] || fail "expected one creation, saw $created"
secret_field 'data.ca\.crt' | base64 -d >"$work/ca2.crt"
echo "re-created once; both replicas switched"

echo "== a client trusting ca.crt verifies the Service name"
port=$(grep -o '"listen":"127.0.0.1:[0-9]*"' "$work/r2/log" | head -1 | grep -o '[0-9]*"$' | tr -d '"')
[[ -n "$port" ]] || fail "no listen address in the log"
sleep 1.5 # reload period
out=$(curl -sS --cacert "$work/ca2.crt" --resolve "$SVC.$NS.svc:$port:127.0.0.1" \
  "https://$SVC.$NS.svc:$port/mutate" -d 'x') || fail "TLS verification failed"
[[ "$out" == *"not JSON"* ]] || fail "unexpected answer: $out"
echo "OK: self-managed TLS (renewal race, caBundle, no flapping, re-creation, verification)"
