"""Validate rendered session-ssh manifests (called by scripts/validate-manifests.sh).

usage: validate_manifests.py --k8s-version 1.35 --name NAME RENDERED.yaml [--check-config BIN]

1. Schema: every object strictly (unknown fields are errors) against the Kubernetes
   OpenAPI schemas of kubernetes-validate. Objects of cert-manager.io are counted as
   delegated to scripts/crdcheck (run by the shell script on the same file); any other
   kind without a schema is an ERROR, never the library's silent WARN.
2. Policy: what issue 4 asks of the install, checked across objects so a rename in one
   file cannot silently break another (selectors, Service -> container port, the
   webhook's objectSelector really excluding its own pods, RBAC exactly as expected for
   the TLS mode, TLS flags matching the RBAC resourceNames, cert SANs).
3. The webhook config in the ConfigMap through `session-ssh-webhook check-config`.
Exit 1 on any error.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import yaml
from kubernetes_validate import utils as kv

GATEWAY_APP = "session-ssh-gateway"
PREPULL_APP = "session-ssh-prepull"
WEBHOOK_APP = "session-ssh-webhook"
ERRORS: list[str] = []


def err(name: str, msg: str) -> None:
    ERRORS.append(f"ERROR {name}: {msg}")


def kn(o: dict) -> str:
    md = o.get("metadata") or {}
    ns = md.get("namespace")
    return f"{o.get('kind')}/{ns + '/' if ns else ''}{md.get('name')}"


def schema_check(name: str, objs: list[dict], version: str) -> tuple[int, int]:
    schema_ok = delegated = 0
    for o in objs:
        try:
            kv.validate(o, version, strict=True)
            schema_ok += 1
        except kv.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            err(name, f"{kn(o)} fails the Kubernetes {e.version} schema at {path}: {e.message}")
        except kv.SchemaNotFoundError:
            if str(o.get("apiVersion", "")).startswith("cert-manager.io/"):
                delegated += 1
            else:
                err(name, f"{kn(o)}: no schema for {o.get('apiVersion')} {o.get('kind')}")
        except kv.VersionNotSupportedError:
            err(name, f"kubernetes-validate does not support Kubernetes {version}")
            return schema_ok, delegated
    return schema_ok, delegated


def match_selector(sel: dict | None, labels: dict) -> bool:
    """Kubernetes LabelSelector semantics (matchLabels AND matchExpressions)."""
    sel = sel or {}
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for ex in sel.get("matchExpressions") or []:
        k, op, vals = ex["key"], ex["operator"], ex.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def flag(args: list[str], name: str) -> str | None:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


def check_deployment(name: str, dep: dict) -> tuple[dict, dict]:
    spec = dep["spec"]
    tpl = spec["template"]
    labels = tpl["metadata"].get("labels") or {}
    pod = tpl["spec"]
    if not match_selector(spec.get("selector"), labels):
        err(name, f"{kn(dep)}: selector does not match its pod template labels")
    if labels.get("app.kubernetes.io/name") != WEBHOOK_APP:
        err(name, f"{kn(dep)}: pod label app.kubernetes.io/name must be {WEBHOOK_APP}")
    if spec.get("replicas", 1) < 2:
        err(name, f"{kn(dep)}: needs at least 2 replicas")
    anti = ((pod.get("affinity") or {}).get("podAntiAffinity") or {}).get(
        "preferredDuringSchedulingIgnoredDuringExecution") or []
    if not any(t["podAffinityTerm"].get("topologyKey") == "kubernetes.io/hostname"
               and match_selector(t["podAffinityTerm"].get("labelSelector"), labels) for t in anti):
        err(name, f"{kn(dep)}: no preferred pod anti-affinity by hostname on its own pods")
    psc = pod.get("securityContext") or {}
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(name, f"{kn(dep)}: pod seccompProfile must be RuntimeDefault")
    if len(pod["containers"]) != 1:
        err(name, f"{kn(dep)}: expected exactly one container")
    c = pod["containers"][0]
    sc = c.get("securityContext") or {}
    want = {
        "runAsNonRoot": True, "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False, "runAsUser": 65532,
    }
    for k, v in want.items():
        if sc.get(k, psc.get(k)) != v:
            err(name, f"{kn(dep)}: container securityContext.{k} must be {v}")
    if (sc.get("capabilities") or {}).get("drop") != ["ALL"]:
        err(name, f"{kn(dep)}: container must drop ALL capabilities")
    if (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        err(name, f"{kn(dep)}: container seccompProfile must be RuntimeDefault")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                err(name, f"{kn(dep)}: resources.{part}.{r} missing")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
    if ports.get("https") != 8443 or ports.get("metrics") != 9090:
        err(name, f"{kn(dep)}: ports must be https 8443 and metrics 9090, got {ports}")
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        hg = (c.get(probe) or {}).get("httpGet") or {}
        port = hg.get("port")
        port = ports.get(port, port)
        if hg.get("path") != path or port != 9090:
            err(name, f"{kn(dep)}: {probe} must be GET {path} on the metrics port 9090")
    args = c.get("args") or []
    if args[:1] != ["serve"] or flag(args, "--config") != "/etc/session-ssh/config.yaml":
        err(name, f"{kn(dep)}: args must start with `serve --config /etc/session-ssh/config.yaml`")
    if ":" in c["image"].rsplit("/", 1)[-1]:
        if c["image"].endswith(":latest"):
            err(name, f"{kn(dep)}: image tag latest")
    elif "@" not in c["image"]:
        err(name, f"{kn(dep)}: image {c['image']} has no tag")
    return labels, c


def rbac_grants(objs: list[dict], sa: tuple[str, str]) -> set[tuple]:
    """(scope, apiGroup, resource, verb, resourceName) granted to the ServiceAccount."""
    roles = {(o["kind"], (o["metadata"].get("namespace") or ""), o["metadata"]["name"]): o
             for o in objs if o["kind"] in ("Role", "ClusterRole")}
    grants = set()
    for b in objs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s.get("kind") == "ServiceAccount" and (s.get("namespace"), s.get("name")) == sa
                   for s in b.get("subjects") or []):
            continue
        ref = b["roleRef"]
        role_ns = b["metadata"].get("namespace", "") if ref["kind"] == "Role" else ""
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        if role is None:
            err("rbac", f"{kn(b)} refers to {ref['kind']} {ref['name']}, not in the rendered set")
            continue
        scope = "cluster" if b["kind"] == "ClusterRoleBinding" else "ns:" + b["metadata"]["namespace"]
        for rule in role.get("rules") or []:
            for g in rule.get("apiGroups") or []:
                for r in rule.get("resources") or []:
                    for v in rule.get("verbs") or []:
                        for n in rule.get("resourceNames") or ["*"]:
                            if "*" in (g, r, v):
                                err("rbac", f"{kn(role)} uses a wildcard ({g} {r} {v})")
                            grants.add((scope, g, r, v, n))
    return grants


# What the webhook does, in every mode (see manifests/base/rbac.yaml for who uses what).
COMMON_GRANTS = {
    ("", "pods", v) for v in ("get", "list", "watch", "patch")
} | {
    ("", "services", v) for v in ("get", "list", "watch", "create", "patch", "delete")
} | {
    ("events.k8s.io", "events", v) for v in ("create", "patch")
} | {
    # controller routes of the SNI modes (gateway, traefik, ingress-nginx)
    (g, r, v) for (g, r) in (("gateway.networking.k8s.io", "tlsroutes"), ("traefik.io", "ingressroutetcps"),
                             ("networking.k8s.io", "ingresses"))
    for v in ("get", "list", "watch", "create", "patch", "delete")
}
HOST_KEY_VERBS = {"get", "list", "create", "delete"}
# The Secret the documented hostKeys.ca.secretName names (README, manifests/base/rbac.yaml).
HOST_CA_SECRET = "session-ssh-host-ca"


def check_rbac(name: str, objs: list[dict], sa: tuple[str, str], ns: str, self_managed: dict | None) -> None:
    grants = rbac_grants(objs, sa)
    # manifests/prepull: get on its one DaemonSet, by name, only when it is installed.
    prepull = ("ns:" + ns, "apps", "daemonsets", "get", PREPULL_APP)
    if find_opt(objs, "DaemonSet", PREPULL_APP):
        if prepull not in grants:
            err(name, f"missing the pre-pull grant {prepull}")
    grants.discard(prepull)
    got_cluster = {(g, r, v) for (s, g, r, v, n) in grants if s == "cluster" and n == "*"
                   and r != "secrets"}
    if got_cluster != COMMON_GRANTS:
        err(name, "cluster-wide grants differ from the webhook's needs: "
                  f"extra {sorted(got_cluster - COMMON_GRANTS)}, missing {sorted(COMMON_GRANTS - got_cluster)}")
    # Host keys: secrets in session namespaces, never more verbs. The base and its overlays
    # bind them nowhere (an admin binds them per session namespace); examples bind them per
    # namespace, and only Kubeflow (profile namespaces come and go) cluster-wide.
    host_scopes = {}
    for (s, g, r, v, n) in grants:
        if g == "" and r == "secrets" and n == "*" and not (self_managed and s == "ns:" + self_managed["ns"] and v == "create"):
            host_scopes.setdefault(s, set()).add(v)
    if "cluster" in host_scopes and "kubeflow" not in name:
        err(name, "host-key Secret rights are bound cluster-wide (every Secret readable)")
    if "examples" in name and not host_scopes:
        err(name, "no scope grants the host-key Secret rights")
    for s, verbs in host_scopes.items():
        if verbs != HOST_KEY_VERBS:
            err(name, f"host-key Secret verbs in {s} are {sorted(verbs)}, want {sorted(HOST_KEY_VERBS)}")
    named = {(s, g, r, v, n) for (s, g, r, v, n) in grants if n != "*"}
    # Optional host CA (hostKeys.ca): get on the one CA Secret, by name, in the webhook's namespace.
    host_ca = ("ns:" + ns, "", "secrets", "get", HOST_CA_SECRET)
    if host_ca not in named:
        err(name, f"missing the host CA grant {host_ca}")
    named.discard(host_ca)
    if self_managed:
        want = {("ns:" + self_managed["ns"], "", "secrets", v, self_managed["secret"]) for v in ("get", "update", "patch")} | {
            ("cluster", "admissionregistration.k8s.io", "mutatingwebhookconfigurations", v, self_managed["mwc"]) for v in ("get", "patch")}
        if named != want:
            err(name, f"by-name grants for self-managed TLS: extra {sorted(named - want)}, missing {sorted(want - named)}")
        if ("ns:" + self_managed["ns"], "", "secrets", "create", "*") not in grants:
            err(name, "self-managed TLS needs secrets create in its namespace")
    elif named:
        err(name, f"grants by name that only self-managed TLS needs: {sorted(named)}")
    other = {x for x in grants if x[2] not in ("pods", "services", "events", "secrets", "mutatingwebhookconfigurations",
                                            "tlsroutes", "ingressroutetcps", "ingresses")}
    if other:
        err(name, f"unexpected grants: {sorted(other)}")


def check(name: str, objs: list[dict], check_config_bin: str | None) -> None:
    by_kind: dict[str, list[dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    deps = [d for d in by_kind.get("Deployment", []) if d["metadata"]["name"] == WEBHOOK_APP]
    mwcs = by_kind.get("MutatingWebhookConfiguration", [])
    if len(deps) != 1 or len(mwcs) != 1:
        err(name, f"expected one Deployment {WEBHOOK_APP} and one MutatingWebhookConfiguration, "
                  f"got {len(deps)} and {len(mwcs)}")
        return
    dep, mwc = deps[0], mwcs[0]
    ns = dep["metadata"]["namespace"]
    labels, c = check_deployment(name, dep)
    pod = dep["spec"]["template"]["spec"]
    args = c.get("args") or []

    # Everything that selects the webhook's pods must select them; the gateway's objects
    # (named after its Deployment) must select the gateway's pods.
    gateway = find_opt(objs, "Deployment", GATEWAY_APP)
    gw_labels = gateway["spec"]["template"]["metadata"].get("labels", {}) if gateway else {}
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        objs_k = [o for o in by_kind.get(kind, []) if o["metadata"].get("namespace") == ns]
        if not objs_k:
            err(name, f"no {kind} in namespace {ns}")
        for o in objs_k:
            sel = o["spec"].get("podSelector") if kind == "NetworkPolicy" else o["spec"].get("selector")
            sel = sel if kind != "Service" else {"matchLabels": sel}
            if o["metadata"]["name"] == GATEWAY_APP:
                if not gateway or not match_selector(sel, gw_labels):
                    err(name, f"{kn(o)} does not select the gateway pods")
            elif not match_selector(sel, labels):
                err(name, f"{kn(o)} does not select the webhook pods")
    if gateway:
        check_gateway(name, gateway)
    for pdb in by_kind.get("PodDisruptionBudget", []):
        if pdb["spec"].get("minAvailable") != 1:
            err(name, f"{kn(pdb)}: minAvailable must be 1")

    # The admission path: MWC -> Service port 443 -> container port 8443.
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]): o for o in by_kind.get("Service", [])}
    svc_ref, sans = None, []
    if len(mwc["webhooks"]) != 1:
        err(name, f"{kn(mwc)}: expected one webhook")
    for wh in mwc["webhooks"]:
        w = f"{kn(mwc)} webhook {wh['name']}"
        expect = {"admissionReviewVersions": ["v1"], "failurePolicy": "Ignore",
                  "sideEffects": "NoneOnDryRun", "reinvocationPolicy": "IfNeeded"}
        for k, v in expect.items():
            if wh.get(k) != v:
                err(name, f"{w}: {k} must be {v}, is {wh.get(k)}")
        if not 1 <= wh.get("timeoutSeconds", 10) <= 5:
            err(name, f"{w}: timeoutSeconds must be a few seconds (1-5)")
        rules = wh.get("rules") or []
        if [(r.get("operations"), r.get("apiGroups"), r.get("apiVersions"), r.get("resources")) for r in rules] \
                != [(["CREATE"], [""], ["v1"], ["pods"])]:
            err(name, f"{w}: rules must be exactly pods CREATE")
        if not wh.get("namespaceSelector"):
            err(name, f"{w}: no namespaceSelector (it would mutate every namespace)")
        if match_selector(wh.get("objectSelector"), labels):
            err(name, f"{w}: objectSelector matches the webhook's own pods")
        if match_selector(wh.get("objectSelector"), {"session-ssh.io/inject": "false"}):
            err(name, f"{w}: objectSelector does not exclude session-ssh.io/inject=false")
        if not match_selector(wh.get("objectSelector"), {"component": "singleuser-server"}):
            err(name, f"{w}: objectSelector excludes an ordinary session pod")
        cc = wh["clientConfig"]
        svc_ref = cc.get("service")
        if svc_ref:
            svc = services.get((svc_ref["namespace"], svc_ref["name"]))
            if svc_ref.get("path") != "/mutate":
                err(name, f"{w}: path must be /mutate")
            if svc is None:
                err(name, f"{w}: Service {svc_ref['namespace']}/{svc_ref['name']} not in the rendered set")
            else:
                port = next((p for p in svc["spec"]["ports"] if p["port"] == svc_ref.get("port", 443)), None)
                cports = {p["name"]: p["containerPort"] for p in c.get("ports") or []}
                target = None if port is None else cports.get(port.get("targetPort"), port.get("targetPort"))
                if target != 8443:
                    err(name, f"{w}: Service port {svc_ref.get('port', 443)} does not reach container port 8443")
                sans = [f"{svc_ref['name']}{s}" for s in
                        ("", f".{svc_ref['namespace']}", f".{svc_ref['namespace']}.svc",
                         f".{svc_ref['namespace']}.svc.cluster.local")]

    # TLS mode: self-managed (flags + emptyDir) or cert-manager (Secret from a Certificate).
    vols = {v["name"]: v for v in pod.get("volumes") or []}
    tls_mount = next((m for m in c.get("volumeMounts") or []
                      if m["mountPath"] == os.path.dirname(flag(args, "--tls-cert") or "/x/none")), None)
    tls_vol = vols.get(tls_mount["name"]) if tls_mount else None
    if tls_vol is None:
        err(name, f"{kn(dep)}: no volume mounted at the directory of --tls-cert")
    sa = (ns, pod.get("serviceAccountName", "default"))
    if not any(o["metadata"]["name"] == sa[1] and o["metadata"].get("namespace") == ns
               for o in by_kind.get("ServiceAccount", [])):
        err(name, f"ServiceAccount {sa} of the Deployment is not in the rendered set")
    certs = by_kind.get("Certificate", [])
    if "--self-managed-tls" in args:
        secret = flag(args, "--tls-secret") or ""
        s_ns, _, s_name = secret.partition("/")
        if flag(args, "--webhook-config") != mwc["metadata"]["name"]:
            err(name, f"--webhook-config must name MutatingWebhookConfiguration {mwc['metadata']['name']}")
        if svc_ref and flag(args, "--service") != f"{svc_ref['name']}.{svc_ref['namespace']}":
            err(name, "--service must be NAME.NAMESPACE of the webhook's Service")
        if s_ns != ns or not s_name:
            err(name, f"--tls-secret {secret!r} must be {ns}/NAME")
        if tls_vol is not None and "emptyDir" not in tls_vol:
            err(name, "self-managed TLS writes its files into an emptyDir")
        if certs:
            err(name, "self-managed TLS and cert-manager Certificates in one install")
        check_rbac(name, objs, sa, ns, {"ns": s_ns, "secret": s_name, "mwc": mwc["metadata"]["name"]})
    else:
        ann = (mwc["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from", "")
        cert = next((o for o in certs if f"{o['metadata']['namespace']}/{o['metadata']['name']}" == ann), None)
        if cert is None:
            err(name, "without --self-managed-tls the MWC needs cert-manager.io/inject-ca-from naming a Certificate")
        else:
            if svc_ref and sorted(cert["spec"].get("dnsNames") or []) != sorted(sans):
                err(name, f"{kn(cert)}: dnsNames must be exactly {sans}")
            if ((tls_vol or {}).get("secret") or {}).get("secretName") != cert["spec"]["secretName"]:
                err(name, f"{kn(dep)}: the TLS volume must be Secret {cert['spec']['secretName']}")
        check_rbac(name, objs, sa, ns, None)

    prepull = find_opt(objs, "DaemonSet", PREPULL_APP)
    if prepull:
        check_prepull(name, prepull, c, ns)

    # The webhook's config, as the pod will read it.
    cm_name = ((vols.get("config") or {}).get("configMap") or {}).get("name")
    cm = next((o for o in by_kind.get("ConfigMap", []) if o["metadata"]["name"] == cm_name
               and o["metadata"].get("namespace") == ns), None)
    if cm is None or "config.yaml" not in (cm.get("data") or {}):
        err(name, f"{kn(dep)}: ConfigMap {cm_name} with key config.yaml not in the rendered set")
        return
    text = cm["data"]["config.yaml"]
    cfg = yaml.safe_load(text)
    if not isinstance(cfg, dict):
        err(name, f"{kn(cm)}: config.yaml is not a YAML mapping")
    else:
        ports = cfg.get("ports") or {}
        for pol in (o for o in by_kind.get("NetworkPolicy", []) if o["metadata"]["name"] == SESSIONS_POLICY):
            check_sessions_policy(name, pol, ports.get("ssh", 2222),
                                  ports.get("sshTls", 2443))
    if isinstance(cfg, dict) and prepull:
        # The webhook opens its gate only when the DaemonSet runs the configured image.
        image = ((cfg.get("initContainer") or {}).get("image")) or "ghcr.io/session-ssh/init-sshd:0.1.0"
        ds_image = prepull["spec"]["template"]["spec"]["containers"][0]["image"]
        if ds_image != image:
            err(name, f"{kn(prepull)}: image {ds_image} is not the config's initContainer.image {image}")
    if check_config_bin:
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(text)
        try:
            r = subprocess.run([check_config_bin, "check-config", "--config", f.name],
                               capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(f.name)
        if r.returncode != 0:
            err(name, f"{kn(cm)}: check-config failed: {(r.stderr or r.stdout).strip()}")
        else:
            print(f"  check-config OK for {kn(cm)}")
        check_serve_flags(name, dep, args, check_config_bin)


def check_serve_flags(name: str, dep: dict, args: list[str], bin_path: str) -> None:
    """Every flag the Deployment passes must be one `session-ssh-webhook serve` knows."""
    import re
    r = subprocess.run([bin_path, "serve", "--help"], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        if os.environ.get("REQUIRE_CHECK_CONFIG") == "1":
            err(name, f"{bin_path} has no working `serve --help`: {(r.stderr or r.stdout).strip()[:300]}")
        else:
            print(f"  SKIP serve flags: {bin_path} has no `serve` command yet")
        return
    unknown = [a for a in args[1:] if a.startswith("--")
               and not re.search(r"(?<![\w-])" + re.escape(a.split("=", 1)[0]) + r"(?![\w-])", r.stdout)]
    if unknown:
        err(name, f"{kn(dep)}: `serve` does not know {unknown}")
    else:
        print(f"  serve --help knows all {sum(a.startswith('--') for a in args)} flags of {kn(dep)}")


def check_prepull(name: str, ds: dict, webhook: dict, ns: str) -> None:
    """The pre-pull DaemonSet runs `init-sshd idle` like the webhook runs (non-root,
    read-only root, no capabilities), on every node, and the webhook is told its name."""
    pod = ds["spec"]["template"]["spec"]
    if len(pod["containers"]) != 1:
        err(name, f"{kn(ds)}: expected exactly one container")
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        err(name, f"{kn(ds)}: container must be non-root, read-only root, no privilege escalation, drop ALL")
    if c.get("command") != ["/init-sshd", "idle"]:
        err(name, f"{kn(ds)}: command must be [/init-sshd, idle], is {c.get('command')}")
    if pod.get("automountServiceAccountToken") is not False:
        err(name, f"{kn(ds)}: automountServiceAccountToken must be false (it needs no API)")
    if {"operator": "Exists"} not in (pod.get("tolerations") or []):
        err(name, f"{kn(ds)}: must tolerate every taint (sessions may run on tainted nodes)")
    env = {e["name"]: e.get("value") for e in webhook.get("env") or []}
    if env.get("SESSION_SSH_INIT_IMAGE_DAEMONSET") != f"{ns}/{PREPULL_APP}":
        err(name, f"the webhook's SESSION_SSH_INIT_IMAGE_DAEMONSET must be {ns}/{PREPULL_APP}")


SESSIONS_POLICY = "session-ssh-sessions"


def check_sessions_policy(name: str, pol: dict, ssh: int, ssh_tls: int | None) -> None:
    """The per-namespace fence: session pods' SSH ports reachable only from the entrances,
    every other port as open as without it."""
    spec = pol["spec"]
    exprs = (spec.get("podSelector") or {}).get("matchExpressions") or []
    if {"key": "session-ssh.io/session-id", "operator": "Exists"} not in exprs:
        err(name, f"{kn(pol)}: must select the session pods (session-ssh.io/session-id Exists)")
    if spec.get("policyTypes") != ["Ingress"]:
        err(name, f"{kn(pol)}: policyTypes must be [Ingress] (egress stays the platform's)")
    ssh_ports = {ssh} | ({ssh_tls} if ssh_tls else set())
    open_tcp = set()
    for rule in spec.get("ingress") or []:
        if rule.get("from"):
            continue
        for p in rule.get("ports") or []:
            if p.get("protocol", "TCP") != "TCP":
                continue
            lo = p["port"]
            hi = p.get("endPort", lo)
            open_tcp.update(range(lo, hi + 1))
    if open_tcp & ssh_ports:
        err(name, f"{kn(pol)}: SSH ports {sorted(open_tcp & ssh_ports)} open to every source")
    missing = set(range(1, 65536)) - ssh_ports - open_tcp
    if missing:
        err(name, f"{kn(pol)}: closes {len(missing)} non-SSH TCP ports (e.g. {min(missing)}) the notebook may need")
    gw = [r for r in spec.get("ingress") or [] if any(p.get("port") == ssh for p in r.get("ports") or [])]
    if not any(((f.get("podSelector") or {}).get("matchLabels") or {}).get("app.kubernetes.io/name") == GATEWAY_APP
               for r in gw for f in r.get("from") or []):
        err(name, f"{kn(pol)}: the SSH gateway is not let in on {ssh}")


def find_opt(objs: list[dict], kind: str, name: str) -> dict | None:
    return next((o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name), None)


def check_gateway(name: str, dep: dict) -> None:
    """The gateway runs like the webhook: non-root, read-only root, no capabilities."""
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    sc = c.get("securityContext", {})
    if not (sc.get("runAsNonRoot") and sc.get("readOnlyRootFilesystem")
            and sc.get("allowPrivilegeEscalation") is False
            and sc.get("capabilities", {}).get("drop") == ["ALL"]):
        err(name, f"{kn(dep)}: container must be non-root, read-only root, no privilege escalation, drop ALL")
    if dep["spec"].get("replicas", 1) < 2:
        err(name, f"{kn(dep)}: needs at least 2 replicas")


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    return next(o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name))


def container(objs: list[dict]) -> dict:
    return find(objs, "Deployment", WEBHOOK_APP)["spec"]["template"]["spec"]["containers"][0]


def wh(objs: list[dict]) -> dict:
    return find(objs, "MutatingWebhookConfiguration")["webhooks"][0]


def add_rule(objs: list[dict], rule: dict) -> None:
    find(objs, "ClusterRole", "session-ssh-webhook")["rules"].append(rule)


# Each breaks one thing the checks must catch: (description, mutation, expected text in an error).
MUTATIONS = [
    ("unknown field", lambda o: container(o)["securityContext"].update(bogus=1), "bogus"),
    ("wrong type", lambda o: container(o).update(ports=[{"name": "https", "containerPort": "8443"}]), "schema"),
    ("unknown kind", lambda o: o.append({"apiVersion": "example.com/v1", "kind": "Widget",
                                         "metadata": {"name": "w"}}), "no schema"),
    ("root", lambda o: container(o)["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
    ("writable root", lambda o: container(o)["securityContext"].update(readOnlyRootFilesystem=False),
     "readOnlyRootFilesystem"),
    ("failurePolicy", lambda o: wh(o).update(failurePolicy="Fail"), "failurePolicy"),
    ("sideEffects", lambda o: wh(o).update(sideEffects="None"), "sideEffects"),
    ("self-injection", lambda o: wh(o).update(objectSelector={}), "own pods"),
    ("opt-out ignored", lambda o: wh(o)["objectSelector"]["matchExpressions"].pop(), "inject=false"),
    ("service port", lambda o: find(o, "Service")["spec"]["ports"][0].update(targetPort=9090), "8443"),
    ("probe", lambda o: container(o)["readinessProbe"]["httpGet"].update(path="/"), "readinessProbe"),
    ("extra verb", lambda o: add_rule(o, {"apiGroups": [""], "resources": ["pods"], "verbs": ["delete"]}),
     "extra"),
    ("wildcard", lambda o: add_rule(o, {"apiGroups": ["*"], "resources": ["*"], "verbs": ["get"]}), "wildcard"),
    ("secrets list everywhere", lambda o: add_rule(o, {"apiGroups": [""], "resources": ["secrets"],
                                                        "verbs": ["update"]}), "Secret verbs"),
    ("host CA by name", lambda o: find(o, "Role", "session-ssh-webhook-host-ca")["rules"][0].update(
        resourceNames=["other"]), "host CA grant"),
    ("host CA verbs", lambda o: find(o, "Role", "session-ssh-webhook-host-ca")["rules"][0].update(
        verbs=["get", "list"]), "session-ssh-host-ca"),
    ("pdb", lambda o: find(o, "PodDisruptionBudget")["spec"].update(minAvailable=0), "minAvailable"),
    ("selector", lambda o: find(o, "Service")["spec"].update(selector={"app": "x"}), "does not select"),
]
SELF_MANAGED_MUTATIONS = [
    ("tls secret name", lambda o: find(o, "Role", "session-ssh-webhook-tls")["rules"][0].update(
        resourceNames=["other"]), "by-name grants"),
    ("webhook-config flag", lambda o: container(o)["args"].__setitem__(
        container(o)["args"].index("--webhook-config") + 1, "other"), "--webhook-config"),
]
SESSIONS_POLICY_MUTATIONS = [
    ("sessions policy opens ssh", lambda o: find(o, "NetworkPolicy", SESSIONS_POLICY)["spec"]["ingress"][0]["ports"][0]
     .update(endPort=2222), "open to every source"),
    ("sessions policy closes a port", lambda o: find(o, "NetworkPolicy", SESSIONS_POLICY)["spec"]["ingress"][0]["ports"]
     .pop(2), "non-SSH TCP ports"),
]
PREPULL_MUTATIONS = [
    ("prepull image", lambda o: find(o, "DaemonSet", PREPULL_APP)["spec"]["template"]["spec"]["containers"][0]
     .update(image="other:1"), "initContainer.image"),
    ("prepull env", lambda o: container(o).update(env=[e for e in container(o)["env"]
                                                    if e["name"] != "SESSION_SSH_INIT_IMAGE_DAEMONSET"]),
     "SESSION_SSH_INIT_IMAGE_DAEMONSET"),
    ("prepull grant", lambda o: find(o, "Role", "session-ssh-webhook-prepull")["rules"][0].update(
        resourceNames=["other"]), "pre-pull grant"),
    ("prepull root", lambda o: find(o, "DaemonSet", PREPULL_APP)["spec"]["template"]["spec"]["containers"][0]
     ["securityContext"].update(readOnlyRootFilesystem=False), "read-only root"),
]
CERT_MANAGER_MUTATIONS = [
    ("SANs", lambda o: find(o, "Certificate", "session-ssh-webhook")["spec"]["dnsNames"].pop(), "dnsNames"),
    ("inject-ca-from", lambda o: find(o, "MutatingWebhookConfiguration")["metadata"].update(annotations={}),
     "inject-ca-from"),
]


def self_test(rendered: list[dict], version: str) -> int:
    """Prove the checks can fail: every mutation must produce the expected error."""
    import copy
    cert_manager = any(o["kind"] == "Certificate" for o in rendered)
    cases = MUTATIONS + (CERT_MANAGER_MUTATIONS if cert_manager else SELF_MANAGED_MUTATIONS)
    if any(o["kind"] == "DaemonSet" and o["metadata"]["name"] == PREPULL_APP for o in rendered):
        cases += PREPULL_MUTATIONS
    if any(o["kind"] == "NetworkPolicy" and o["metadata"]["name"] == SESSIONS_POLICY for o in rendered):
        cases += SESSIONS_POLICY_MUTATIONS
    failed = 0
    for desc, mutate, expect in cases:
        objs = copy.deepcopy(rendered)
        mutate(objs)
        ERRORS.clear()
        schema_check("self-test", objs, version)
        check("self-test", objs, None)
        if not any(expect in e for e in ERRORS):
            print(f"SELF-TEST FAILED: breaking '{desc}' was not caught (want '{expect}', got {ERRORS})")
            failed += 1
    ERRORS.clear()
    print(f"  self-test: {len(cases) - failed} of {len(cases)} deliberate breakages caught")
    return 1 if failed else 0


def documented_defaults(config_path: str, bin_path: str) -> int:
    """The commented-out fields of the base config must be the real defaults.

    Uncomments every `# key: value` line after `platform:`, drops trailing
    comments, and requires check-config to print the same effective config for
    both files: a default changed in config.rs then fails here instead of
    leaving a stale comment in front of every admin.
    """
    import re
    text = open(config_path).read()
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("platform:"))
    out = []
    for line in lines[start:]:
        m = re.match(r"^(\s*)# ?(\s*[A-Za-z][A-Za-z0-9]*:.*)$", line)
        if m:
            line = m.group(1) + m.group(2)
        elif line.lstrip().startswith("#"):
            continue
        out.append(re.sub(r"\s+#\s.*$", "", line))
    effective = []
    for t in (text, "\n".join(out) + "\n"):
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            f.write(t)
        try:
            r = subprocess.run([bin_path, "check-config", "--config", f.name],
                               capture_output=True, text=True, timeout=60)
        finally:
            os.unlink(f.name)
        if r.returncode != 0:
            print(f"ERROR {config_path}: with its comments uncommented, check-config fails: {r.stderr.strip()}")
            return 1
        effective.append(r.stdout)
    if effective[0] != effective[1]:
        print(f"ERROR {config_path}: the documented defaults in its comments are not check-config's defaults")
        return 1
    print(f"  {config_path}: documented defaults are the effective defaults")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--k8s-version", required=True)
    ap.add_argument("--name", required=True, help="the overlay, for messages")
    ap.add_argument("--check-config", help="session-ssh-webhook binary")
    ap.add_argument("--self-test", action="store_true",
                    help="break the rendered objects on purpose and require every break to be caught")
    ap.add_argument("--documented-defaults", action="store_true",
                    help="RENDERED is a commented config; its commented fields must be the defaults")
    ap.add_argument("rendered")
    a = ap.parse_args()
    if a.documented_defaults:
        return documented_defaults(a.rendered, a.check_config)
    with open(a.rendered) as f:
        objs = [o for o in yaml.safe_load_all(f) if o]
    if a.self_test:
        return self_test(objs, a.k8s_version)
    ok, delegated = schema_check(a.name, objs, a.k8s_version)
    check(a.name, objs, a.check_config)
    for e in ERRORS:
        print(e)
    print(f"  {a.name}: {len(objs)} objects, {ok} strict against Kubernetes {a.k8s_version} schemas, "
          f"{delegated} cert-manager objects left to crdcheck, {len(ERRORS)} errors")
    return 1 if ERRORS else 0


if __name__ == "__main__":
    sys.exit(main())
