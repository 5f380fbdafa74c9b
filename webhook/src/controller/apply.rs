//! The controller's writes for one session: read what must be read, apply what
//! [`super::desired`] computed. Every error returns to `reconcile`, which alone keeps the
//! failure count.

use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde_json::Value;
use session_ssh_contract::names;
use tracing::{debug, info, warn};

use super::desired::{self, Session};
use super::discover::RouteKind;
use super::{Ctx, PENDING, RESYNC, Result, kube};
use crate::routes::{self, Endpoint, MANAGER, sni};

/// Everything for one session: Service, route, connection info (and certificate).
pub(super) async fn sync(pod: &Pod, s: &Session, ctx: &Ctx) -> Result<Action> {
    let cfg = &ctx.config;
    let services = Api::<Service>::namespaced(ctx.client.clone(), &s.ns);
    if !service_is_ours(&services, pod, s, ctx).await? {
        return Ok(Action::requeue(RESYNC));
    }
    let (service, no_tls_backend) = desired::service(pod, s, cfg);
    if no_tls_backend {
        warn!(ns = %s.ns, pod = %s.name, mode = cfg.ingress.mode.as_str(),
            "pod has no session-ssh-tls port (ports.sshTls null when it was injected): its route has no backend");
    }
    let applied = services
        .patch(
            &s.service,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&service),
        )
        .await
        .map_err(kube("apply Service"))?;
    info!(ns = %s.ns, pod = %s.name, service = %s.service, mode = cfg.ingress.mode.as_str(), "Service applied");
    let host = match desired::host(pod, s, cfg) {
        Some(Ok(h)) => Some(h),
        Some(Err(err)) => {
            warn!(ns = %s.ns, pod = %s.name, error = %err, "host template not rendered; using the mode's address");
            None
        }
        None => None,
    };
    let routed = sync_routes(ctx, pod, s, host.as_deref()).await?;
    let endpoint = routes::endpoint(cfg.ingress.mode, host, &applied, pod).filter(|_| routed);
    match endpoint {
        Some(ep) => {
            publish(ctx, pod, s, &ep).await?;
            Ok(Action::requeue(RESYNC))
        }
        None => {
            // Info from an earlier mode or address would send users to the wrong place.
            let empty = Default::default();
            let withdraw = routes::CONNECTION_ANNOTATIONS;
            if let Some(patch) = desired::annotation_patch(pod, &s.uid, &empty, &withdraw) {
                annotate(ctx, s, &patch).await?;
                info!(ns = %s.ns, pod = %s.name, "stale connection info removed");
            }
            // Pending addresses come by a Service status change or the node binding (both
            // trigger a reconcile); the periodic retry is only a safety net.
            debug!(ns = %s.ns, pod = %s.name, mode = cfg.ingress.mode.as_str(), "address not known yet");
            // A missing route kind is asked again at most once a minute (discover.rs).
            let again = if cfg.ingress.mode.is_sni() && routed {
                RESYNC
            } else {
                PENDING
            };
            Ok(Action::requeue(again))
        }
    }
}

/// Never take over a Service that belongs to another pod (a hand-made one, or a crafted
/// name equal to another pod's sanitized name): forcing the apply would.
async fn service_is_ours(
    services: &Api<Service>,
    pod: &Pod,
    s: &Session,
    ctx: &Ctx,
) -> Result<bool> {
    let Some(existing) = services
        .get_opt(&s.service)
        .await
        .map_err(kube("get Service"))?
    else {
        return Ok(true);
    };
    let owner = existing
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| o.uid.clone());
    if owner.as_deref() == Some(s.uid.as_str()) {
        return Ok(true);
    }
    warn!(ns = %s.ns, pod = %s.name, service = %s.service, owner = ?owner,
        "Service name taken by an object this pod does not own; not touching it");
    ctx.event(
        pod,
        EventType::Warning,
        "ServiceNameTaken",
        format!(
            "Service {} exists and belongs to another owner; no SSH route made",
            s.service
        ),
    )
    .await;
    Ok(false)
}

/// The connection annotations (known_hosts line, host certificate) written on the pod.
async fn publish(ctx: &Ctx, pod: &Pod, s: &Session, ep: &Endpoint) -> Result<()> {
    let cfg = &ctx.config;
    // The session's stable host key, so users can pin it (no trust on first use).
    let published = crate::hostkey::published_key(ctx.client.clone(), pod, &cfg.host_keys).await;
    let mut wanted = desired::connection(s, ep, cfg, published.as_deref());
    // Certificates only for pods whose server reads them (admitted while a CA was
    // configured); a CA turned off withdraws them.
    let mut withdraw: Vec<&str> = Vec::new();
    match &ctx.ca {
        Some(src) if desired::reads_certificate(pod) => {
            if let Some(key) = &published {
                let req = desired::cert_request(pod, s, ep, cfg);
                wanted.extend(certify(ctx, src, pod, key, &req).await);
            }
        }
        _ => {
            if ctx.ca.is_some() {
                debug!(ns = %s.ns, pod = %s.name, "admitted before the host CA was configured; no certificate until restarted");
            }
            withdraw = vec![names::HOST_CERTIFICATE, names::CERT_AUTHORITY];
        }
    }
    let Some(patch) = desired::annotation_patch(pod, &s.uid, &wanted, &withdraw) else {
        return Ok(());
    };
    annotate(ctx, s, &patch).await?;
    info!(ns = %s.ns, pod = %s.name, host = %ep.host, port = ep.port, "connection info published");
    ctx.event(
        pod,
        EventType::Normal,
        "SSHRoute",
        format!(
            "ssh {}:{} (ingress mode {}, Service {})",
            ep.host,
            ep.port,
            cfg.ingress.mode.as_str(),
            s.service
        ),
    )
    .await;
    Ok(())
}

/// A merge patch of our annotations only.
async fn annotate(ctx: &Ctx, s: &Session, patch: &Value) -> Result<()> {
    Api::<Pod>::namespaced(ctx.client.clone(), &s.ns)
        .patch(&s.name, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .map_err(kube("annotate pod"))?;
    Ok(())
}

/// Apply the route of the configured SNI mode as the kind the cluster serves; delete this
/// pod's routes of the other modes (left from an earlier config). A kind the cluster lacks
/// (no CRD) or the webhook may not read counts as absent for the cleanup. False when the
/// mode needs a route and none could be made: the reason goes on the pod.
async fn sync_routes(ctx: &Ctx, pod: &Pod, s: &Session, host: Option<&str>) -> Result<bool> {
    let cfg = &ctx.config.ingress;
    let mut routed = true;
    match ctx.route_kind.get(&ctx.client).await {
        RouteKind::NotNeeded => route_error(ctx, pod, s, None).await?,
        RouteKind::Missing(why) => {
            routed = false;
            route_error(ctx, pod, s, Some(&why)).await?;
        }
        RouteKind::Served(ar) => {
            route_error(ctx, pod, s, None).await?;
            match host {
                None => {
                    warn!(ns = %s.ns, pod = %s.name, mode = cfg.mode.as_str(), "no hostname for the route");
                }
                Some(host) => {
                    let route = sni::route_as(
                        &ar,
                        cfg.mode,
                        cfg,
                        pod,
                        &s.service,
                        &s.session_id,
                        &s.uid,
                        host,
                    );
                    if let Some(route) = route {
                        Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &s.ns, &ar)
                            .patch(
                                &s.service,
                                &PatchParams::apply(MANAGER).force(),
                                &Patch::Apply(&route),
                            )
                            .await
                            .map_err(kube("apply route"))?;
                        info!(ns = %s.ns, pod = %s.name, kind = %ar.kind, version = %ar.version, %host, "route applied");
                    }
                }
            }
        }
    }
    for (mode, ar) in sni::kinds() {
        if mode == cfg.mode {
            continue;
        }
        let api = Api::<DynamicObject>::namespaced_with(ctx.client.clone(), &s.ns, &ar);
        let existing = match api.get_opt(&s.service).await {
            Ok(o) => o,
            Err(kube::Error::Api(e)) if e.code == 403 || e.code == 404 => {
                debug!(ns = %s.ns, kind = %ar.kind, code = e.code, "route kind not readable; no cleanup");
                None
            }
            Err(e) => return Err(kube("get route")(e)),
        };
        let owned = existing.is_some_and(|o| {
            o.owner_references()
                .iter()
                .any(|r| r.uid == s.uid && r.controller == Some(true))
        });
        if owned {
            match api.delete(&s.service, &DeleteParams::default()).await {
                Ok(_) => {
                    info!(ns = %s.ns, pod = %s.name, kind = %ar.kind, "route of another mode deleted")
                }
                // (another replica deleted it first: done)
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(kube("delete route")(e)),
            }
        }
    }
    Ok(routed)
}

/// The pod's `route-error` annotation: set to `why` (with a warning event when it changes),
/// or removed.
async fn route_error(ctx: &Ctx, pod: &Pod, s: &Session, why: Option<&str>) -> Result<()> {
    let current = pod
        .annotations()
        .get(names::ROUTE_ERROR)
        .map(String::as_str);
    if current == why {
        return Ok(());
    }
    let mut wanted = std::collections::BTreeMap::new();
    if let Some(w) = why {
        wanted.insert(names::ROUTE_ERROR.to_owned(), w.to_owned());
    }
    if let Some(patch) = desired::annotation_patch(pod, &s.uid, &wanted, &[names::ROUTE_ERROR]) {
        annotate(ctx, s, &patch).await?;
    }
    if let Some(w) = why {
        warn!(ns = %s.ns, pod = %s.name, reason = %w, "no SSH route for this session");
        ctx.event(pod, EventType::Warning, "NoSSHRoute", w.to_owned())
            .await;
    }
    Ok(())
}

/// The certificate and CA annotations for a pod: the current certificate kept while it
/// is still good, else a new one. Any good certificate is kept, not only one this
/// replica signed, so replicas that both signed converge on whichever was written last.
/// Empty when there is no usable CA or signing fails (logged; users who pinned the key
/// are not affected).
async fn certify(
    ctx: &Ctx,
    src: &crate::hostca::CaSource,
    pod: &Pod,
    host_public: &str,
    req: &crate::hostca::CertRequest,
) -> Vec<(String, String)> {
    use names::{CERT_AUTHORITY, HOST_CERTIFICATE};
    let Some(ca) = src.get(ctx.client.clone()).await else {
        return Vec::new();
    };
    let now = crate::hostca::unix_now();
    let cert = match pod.annotations().get(HOST_CERTIFICATE) {
        Some(c) if ca.still_good(c, host_public, req, now) => c.clone(),
        _ => match ca.sign(host_public, req, now) {
            Ok(c) => {
                info!(namespace = ?pod.namespace(), pod = %pod.name_any(), principals = ?req.principals,
                    validity_s = req.validity, "host certificate signed");
                c
            }
            Err(err) => {
                warn!(namespace = ?pod.namespace(), pod = %pod.name_any(), error = %err, "host certificate not signed");
                return Vec::new();
            }
        },
    };
    let mut out = vec![(HOST_CERTIFICATE.to_owned(), cert)];
    if let Some(pattern) = ctx.config.host_ca_pattern() {
        out.push((
            CERT_AUTHORITY.to_owned(),
            crate::hostca::authority_line(&pattern, &ca),
        ));
    }
    out
}

impl Ctx {
    /// Publish an event on the pod; a failure only logs (events are a courtesy).
    pub(super) async fn event(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let ev = kube::runtime::events::Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&ev, &pod.object_ref(&())).await {
            debug!(pod = %pod.name_any(), error = %err, "event not published");
        }
    }
}
