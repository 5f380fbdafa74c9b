//! The route objects of the SNI modes: each passes TLS on the ingress's port 443 through,
//! unterminated, to the session Service's `ssh-tls` port, chosen by the TLS SNI name.
//! One object per pod, named like its Service and owned by the pod.

use k8s_openapi::api::core::v1::Pod;
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::config::{Ingress, IngressMode};

use super::owned_metadata;

/// Annotation that makes ingress-nginx pass TLS through by SNI.
pub const NGINX_PASSTHROUGH: &str = "nginx.ingress.kubernetes.io/ssl-passthrough";

/// The kind each SNI mode makes, in the order the controller visits them.
pub fn kinds() -> [(IngressMode, ApiResource); 3] {
    let ar = |g: &str, v: &str, k: &str, plural: &str| {
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), plural)
    };
    [
        (
            IngressMode::Gateway,
            ar("gateway.networking.k8s.io", "v1", "TLSRoute", "tlsroutes"),
        ),
        (
            IngressMode::Traefik,
            ar(
                "traefik.io",
                "v1alpha1",
                "IngressRouteTCP",
                "ingressroutetcps",
            ),
        ),
        (
            IngressMode::IngressNginx,
            ar("networking.k8s.io", "v1", "Ingress", "ingresses"),
        ),
    ]
}

/// TLSRoute versions, newest first: the controller uses the newest the cluster serves
/// (the spec fields it writes are the same in all three).
pub const TLSROUTE_VERSIONS: [&str; 3] = ["v1", "v1alpha3", "v1alpha2"];

/// The TLSRoute kind at `version`.
pub fn tlsroute(version: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("gateway.networking.k8s.io", version, "TLSRoute"),
        "tlsroutes",
    )
}

/// The route object of `mode` for a pod whose Service is `name`, reached as `host`.
/// None for the modes without a route object.
pub fn route(
    mode: IngressMode,
    cfg: &Ingress,
    pod: &Pod,
    name: &str,
    session_id: &str,
    uid: &str,
    host: &str,
) -> Option<Value> {
    let ar = kinds().into_iter().find(|(m, _)| *m == mode)?.1;
    route_as(&ar, mode, cfg, pod, name, session_id, uid, host)
}

/// [`route`] as the kind `ar` (a TLSRoute of the version the cluster serves).
#[allow(clippy::too_many_arguments)]
pub fn route_as(
    ar: &ApiResource,
    mode: IngressMode,
    cfg: &Ingress,
    pod: &Pod,
    name: &str,
    session_id: &str,
    uid: &str,
    host: &str,
) -> Option<Value> {
    let mut metadata = owned_metadata(pod, name, session_id, uid);
    let spec = match mode {
        IngressMode::Gateway => {
            let parents: Vec<Value> = cfg
                .gateway
                .parent_refs
                .iter()
                .map(|p| {
                    let mut r = json!({ "name": p.name });
                    if let Some(ns) = &p.namespace {
                        r["namespace"] = json!(ns);
                    }
                    if let Some(s) = &p.section_name {
                        r["sectionName"] = json!(s);
                    }
                    r
                })
                .collect();
            json!({
                "parentRefs": parents,
                "hostnames": [host],
                "rules": [{ "backendRefs": [{ "name": name, "port": 443 }] }],
            })
        }
        IngressMode::Traefik => json!({
            "entryPoints": cfg.traefik.entry_points,
            "routes": [{
                "match": format!("HostSNI(`{host}`)"),
                "services": [{ "name": name, "port": 443 }],
            }],
            "tls": { "passthrough": true },
        }),
        IngressMode::IngressNginx => {
            metadata["annotations"] = json!({ NGINX_PASSTHROUGH: "true" });
            let mut spec = json!({
                "rules": [{
                    "host": host,
                    "http": { "paths": [{
                        "path": "/",
                        "pathType": "Prefix",
                        "backend": { "service": { "name": name, "port": { "name": "ssh-tls" } } },
                    }] },
                }],
            });
            if let Some(class) = &cfg.ingress_nginx.class_name {
                spec["ingressClassName"] = json!(class);
            }
            spec
        }
        IngressMode::None | IngressMode::Nodeport | IngressMode::Loadbalancer => return None,
    };
    Some(json!({
        "apiVersion": ar.api_version,
        "kind": ar.kind,
        "metadata": metadata,
        "spec": spec,
    }))
}
