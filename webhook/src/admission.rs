//! HTTP in/out of the admission webhook: decode an AdmissionReview v1, call the pure
//! [`patch::mutate`], encode the response. No decision is made here except "is this a pod
//! CREATE at all".

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{
    AdmissionRequest, AdmissionReview, META_API_VERSION_V1, META_KIND, Operation,
};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Config;
use crate::hostkey::{self, SecretRef};
use crate::metrics::{Metrics, outcome};
use crate::patch::{self, ImageGate, Mutation};

/// The apiserver never sends more than 3 MiB (its own request limit); anything larger
/// is not from it.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// Why a request body is not an admission request we can answer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not JSON at all.
    #[error("request body is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// The old API version.
    #[error(
        "AdmissionReview admission.k8s.io/v1beta1 is not supported: set admissionReviewVersions: [\"v1\"] in the MutatingWebhookConfiguration"
    )]
    V1beta1,
    /// JSON, but another kind or version.
    #[error(
        "expected kind AdmissionReview, apiVersion admission.k8s.io/v1; got kind {kind:?}, apiVersion {api_version:?}"
    )]
    NotAReview {
        /// The `kind` found.
        kind: String,
        /// The `apiVersion` found.
        api_version: String,
    },
    /// An AdmissionReview without `request`.
    #[error("AdmissionReview has no request")]
    NoRequest,
    /// An AdmissionReview whose request does not have the v1 shape.
    #[error("invalid AdmissionReview v1 request: {0}")]
    BadRequest(serde_json::Error),
    /// The response could not be encoded (not expected to happen).
    #[error("encoding the AdmissionReview response: {0}")]
    Encode(serde_json::Error),
    /// Body over [`MAX_BODY_BYTES`] (or unreadable).
    #[error("request body larger than {MAX_BODY_BYTES} bytes or unreadable")]
    TooLarge,
}

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Bounded metric label.
    fn reason(&self) -> &'static str {
        match self {
            Error::NotJson(_) => "not-json",
            Error::V1beta1 => "v1beta1",
            Error::NotAReview { .. } => "not-a-review",
            Error::NoRequest => "no-request",
            Error::BadRequest(_) => "bad-request",
            Error::TooLarge => "too-large",
            Error::Encode(_) => "encode",
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The mutation config.
    pub config: Arc<Config>,
    /// Where decisions are counted.
    pub metrics: Arc<Metrics>,
    /// For the host-key Secret; None (no cluster): pods get a fresh key at install.
    pub client: Option<kube::Client>,
    /// The init image's pre-pull DaemonSet, when one is configured.
    pub prepull: Option<Arc<crate::prepull::PrePull>>,
}

impl AppState {
    /// State with fresh metrics.
    pub fn new(config: Config) -> Self {
        AppState {
            config: Arc::new(config),
            metrics: Arc::new(Metrics::default()),
            client: None,
            prepull: None,
        }
    }

    /// Same state, creating host-key Secrets through `client`.
    pub fn with_client(mut self, client: Option<kube::Client>) -> Self {
        self.client = client;
        self
    }
}

impl std::fmt::Debug for AppState {
    // kube::Client has no Debug; say whether there is one.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .field("metrics", &self.metrics)
            .field("client", &self.client.is_some())
            .field("prepull", &self.prepull)
            .finish()
    }
}

/// Admission waits this long for the host-key Secret, a third of the manifests' webhook
/// timeout (3 s): after that the pod is still admitted injected and install generates a
/// key. Waiting as long as the apiserver would make a slow Secret create cost the pod its
/// SSH altogether (failurePolicy Ignore admits it unmutated).
const HOST_KEY_TIMEOUT: Duration = Duration::from_secs(1);

/// `POST /mutate`. Everything else is 404 / 405 (axum's defaults).
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/mutate", post(mutate_handler))
        .with_state(state)
}

async fn mutate_handler(State(state): State<AppState>, body: Body) -> Response {
    let start = Instant::now();
    // Limit here rather than with a layer so oversize bodies are logged and counted too.
    let result = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => {
            let gate = state.prepull.as_ref().map(|p| p.gate()).unwrap_or_default();
            review_gated(&bytes, &state.config, &gate)
        }
        Err(_) => Err(Error::TooLarge),
    };
    let mut host_key = "none";
    if let Ok(d) = &result
        && let Some(r) = &d.host_key
    {
        host_key = ensure_host_key(&state, &d.namespace, &d.pod, r).await;
    }
    let elapsed = start.elapsed();
    match result {
        Ok(decision) => {
            log_decision(&decision, host_key, elapsed);
            state
                .metrics
                .observe(decision.outcome, decision.reason, elapsed);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                decision.body,
            )
                .into_response()
        }
        Err(err) => {
            warn!(
                outcome = outcome::ERROR,
                reason = err.reason(),
                latency_us = elapsed.as_micros() as u64,
                error = %err,
                "admission request refused"
            );
            state.metrics.observe(outcome::ERROR, err.reason(), elapsed);
            let status = match err {
                Error::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::BAD_REQUEST,
            };
            (status, format!("{err}\n")).into_response()
        }
    }
}

/// Create the session's host-key Secret before the pod exists (its volume is optional, so
/// every failure here only costs the stable key, never the pod). Returns the outcome for
/// the decision's log line; failures also get a warning with the reason.
async fn ensure_host_key(
    state: &AppState,
    namespace: &str,
    pod: &str,
    r: &SecretRef,
) -> &'static str {
    let Some(client) = state.client.clone() else {
        return "no-client";
    };
    match tokio::time::timeout(HOST_KEY_TIMEOUT, hostkey::ensure(client, namespace, r)).await {
        Ok(Ok(how)) => how.as_str(),
        Ok(Err(err)) => {
            warn!(
                ns = %namespace,
                pod = %pod,
                secret = %r.name,
                error = %err,
                "host-key Secret not made; the session generates its own key"
            );
            "failed"
        }
        Err(_) => {
            warn!(
                ns = %namespace,
                pod = %pod,
                secret = %r.name,
                timeout_ms = HOST_KEY_TIMEOUT.as_millis() as u64,
                "host-key Secret timed out; the session generates its own key"
            );
            "timed-out"
        }
    }
}

/// The one log line per admission request.
fn log_decision(d: &Decision, host_key: &str, elapsed: Duration) {
    let secret = d.host_key.as_ref().map_or("", |r| r.name.as_str());
    let identity = d
        .host_key
        .as_ref()
        .map_or("", |r| r.identity.display.as_str());
    info!(
        ns = %d.namespace,
        pod = %d.pod,
        uid = %d.uid,
        operation = %d.operation,
        dry_run = d.dry_run,
        outcome = d.outcome,
        reason = d.reason,
        patch_ops = d.patch_ops,
        warnings = d.warnings,
        host_key,
        host_key_secret = secret,
        host_key_identity = identity,
        latency_us = elapsed.as_micros() as u64,
        "admission decision"
    );
}

/// One answered admission request.
#[derive(Debug)]
pub struct Decision {
    /// Encoded AdmissionReview response.
    pub body: Bytes,
    /// Metric/log outcome.
    pub outcome: &'static str,
    /// Metric/log reason (bounded).
    pub reason: &'static str,
    /// Number of JSON patch operations sent.
    pub patch_ops: usize,
    /// Number of warnings sent.
    pub warnings: usize,
    /// For the log line.
    pub namespace: String,
    /// Pod name, or `generateName` + `*`.
    pub pod: String,
    /// Request uid.
    pub uid: String,
    /// Request operation.
    pub operation: String,
    /// Whether the request was a dry run (same answer; only the host-key Secret is skipped).
    pub dry_run: bool,
    /// The host-key Secret the patch mounts, to create before answering. None on dryRun.
    pub host_key: Option<SecretRef>,
}

/// The fields needed to route the request, read without building the object.
#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "apiVersion", default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    request: Option<EnvelopeRequest>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeRequest {
    kind: Option<Gvk>,
    sub_resource: Option<String>,
    operation: Option<String>,
}

#[derive(Deserialize)]
struct Gvk {
    #[serde(default)]
    group: String,
    #[serde(default)]
    version: String,
    #[serde(default)]
    kind: String,
}

/// Decode, decide, encode. Pure apart from the clock: the handler and the benchmark call it.
pub fn review(body: &[u8], cfg: &Config) -> Result<Decision> {
    review_gated(body, cfg, &ImageGate::Open)
}

/// [`review`] behind the init image's gate (`prepull`).
pub fn review_gated(body: &[u8], cfg: &Config, gate: &ImageGate) -> Result<Decision> {
    // A cheap first pass (the object is skipped, not built) to route and to give
    // precise errors; the second pass builds exactly the type we need.
    let env: Envelope = serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            Error::BadRequest(e)
        } else {
            Error::NotJson(e)
        }
    })?;
    if env.api_version == "admission.k8s.io/v1beta1" {
        return Err(Error::V1beta1);
    }
    if env.api_version != META_API_VERSION_V1 || env.kind != META_KIND {
        return Err(Error::NotAReview {
            kind: env.kind,
            api_version: env.api_version,
        });
    }
    let req = env.request.ok_or(Error::NoRequest)?;
    let is_pod = req
        .kind
        .as_ref()
        .is_some_and(|k| k.group.is_empty() && k.version == "v1" && k.kind == "Pod")
        && req.sub_resource.as_deref().unwrap_or("").is_empty();
    let is_create = req.operation.as_deref() == Some("CREATE");
    if !is_pod || !is_create {
        let reason = if is_pod { "operation" } else { "not-a-pod" };
        return allow_untouched(body, reason);
    }
    match serde_json::from_slice::<AdmissionReview<Pod>>(body) {
        Ok(review) => {
            let req: AdmissionRequest<Pod> = review.try_into().map_err(|_| Error::NoRequest)?;
            decide_pod(&req, cfg, gate)
        }
        // The review is fine but the object is not a valid Pod: admit it unchanged
        // (the apiserver will judge the pod itself), never block on our parser.
        Err(pod_err) => match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
            Ok(review) => {
                let req: AdmissionRequest<DynamicObject> =
                    review.try_into().map_err(|_| Error::NoRequest)?;
                let warning =
                    format!("session-ssh: not injected: pod could not be read: {pod_err}");
                finish(
                    &req,
                    Answer::allow(vec![warning]),
                    outcome::ERROR,
                    "invalid-pod",
                )
            }
            Err(e) => Err(Error::BadRequest(e)),
        },
    }
}

fn allow_untouched(body: &[u8], reason: &'static str) -> Result<Decision> {
    let review: AdmissionReview<DynamicObject> =
        serde_json::from_slice(body).map_err(Error::BadRequest)?;
    let req: AdmissionRequest<DynamicObject> = review.try_into().map_err(|_| Error::NoRequest)?;
    finish(&req, Answer::allow(Vec::new()), outcome::ALLOWED, reason)
}

fn decide_pod(req: &AdmissionRequest<Pod>, cfg: &Config, gate: &ImageGate) -> Result<Decision> {
    let Some(pod) = req.object.as_ref() else {
        let warning = "session-ssh: not injected: the request carries no pod".to_owned();
        return finish(
            req,
            Answer::allow(vec![warning]),
            outcome::ERROR,
            "no-object",
        );
    };
    // The mutation is pure and tested, but a panic on some unforeseen pod must still
    // admit the pod rather than drop the apiserver's connection.
    let mutation = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        patch::mutate_gated(pod, cfg, patch::SessionId::Derive, gate)
    }));
    let (outcome, reason, patch, warnings, host_key) = match mutation {
        Ok(Mutation::Patch {
            patch,
            warnings,
            host_key,
        }) => (outcome::INJECTED, "injected", patch, warnings, host_key),
        Ok(Mutation::Skip {
            reason,
            warnings,
            patch,
        }) => (outcome::SKIPPED, reason.as_str(), patch, warnings, None),
        Err(_) => {
            let warning = "session-ssh: not injected: internal error (see webhook log)".to_owned();
            return finish(req, Answer::allow(vec![warning]), outcome::ERROR, "panic");
        }
    };
    let mut answer = Answer::allow(warnings);
    if !patch.0.is_empty() {
        answer.patch_ops = patch.0.len();
        answer.patch = Some(STANDARD.encode(serde_json::to_vec(&patch).map_err(Error::Encode)?));
        answer.patch_type = Some("JSONPatch");
    }
    let mut decision = finish(req, answer, outcome, reason)?;
    // The plan named the Secret the patched pod mounts. A dry run must have no side
    // effects (sideEffects: NoneOnDryRun).
    if !req.dry_run {
        decision.host_key = host_key;
    }
    Ok(decision)
}

/// The `response` of an AdmissionReview v1, encoded as the apiserver's own Go types are:
/// `patch` is a base64 string. (kube-core's `AdmissionResponse` writes `patch` as an
/// array of numbers, which is accepted but three to four times larger.)
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    uid: String,
    allowed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    warnings: Vec<String>,
    #[serde(skip)]
    patch_ops: usize,
}

impl Answer {
    fn allow(warnings: Vec<String>) -> Self {
        Answer {
            uid: String::new(),
            allowed: true,
            patch: None,
            patch_type: None,
            warnings,
            patch_ops: 0,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a Answer,
}

fn finish<T>(
    req: &AdmissionRequest<T>,
    mut answer: Answer,
    outcome: &'static str,
    reason: &'static str,
) -> Result<Decision>
where
    T: kube::Resource,
{
    answer.uid.clone_from(&req.uid);
    let out = ReviewOut {
        api_version: META_API_VERSION_V1,
        kind: META_KIND,
        response: &answer,
    };
    let body = serde_json::to_vec(&out).map_err(Error::Encode)?;
    Ok(Decision {
        body: Bytes::from(body),
        outcome,
        reason,
        patch_ops: answer.patch_ops,
        warnings: answer.warnings.len(),
        namespace: req.namespace.clone().unwrap_or_default(),
        pod: req
            .object
            .as_ref()
            .map(PodName::display_name)
            .unwrap_or_else(|| req.name.clone()),
        uid: req.uid.clone(),
        operation: operation_name(&req.operation).to_owned(),
        dry_run: req.dry_run,
        host_key: None,
    })
}

/// Name for the log line: `name`, or `generateName*` when the apiserver has not named it yet.
trait PodName {
    fn display_name(&self) -> String;
}

impl<T: kube::Resource> PodName for T {
    fn display_name(&self) -> String {
        let meta = self.meta();
        match (&meta.name, &meta.generate_name) {
            (Some(n), _) if !n.is_empty() => n.clone(),
            (_, Some(g)) => format!("{g}*"),
            _ => String::new(),
        }
    }
}

fn operation_name(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}
