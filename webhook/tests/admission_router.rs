//! The admission router, one test per edge, driven with `tower::ServiceExt::oneshot`
//! (no sockets).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure should panic

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use session_ssh_webhook::admission::{self, AppState, MAX_BODY_BYTES};
use session_ssh_webhook::config::{Config, Platform};
use tower::ServiceExt;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/jupyterhub-alice.pod.yaml"
);

fn state() -> AppState {
    AppState::new(Config::preset(Platform::Jupyterhub))
}

fn alice() -> Value {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let mut pod: Value = serde_yaml::from_str(&text).unwrap();
    pod["metadata"]["namespace"] = json!("jhub");
    pod
}

fn review(object: Value, kind: &str, resource: &str, operation: &str, dry_run: bool) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "", "version": "v1", "kind": kind},
            "resource": {"group": "", "version": "v1", "resource": resource},
            "requestKind": {"group": "", "version": "v1", "kind": kind},
            "requestResource": {"group": "", "version": "v1", "resource": resource},
            "name": object["metadata"]["name"].as_str().unwrap_or(""),
            "namespace": "jhub",
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:jhub:hub", "groups": ["system:serviceaccounts"]},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"}
        }
    })
}

async fn send(state: AppState, method: Method, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .unwrap();
    let res = admission::router(state).oneshot(req).await.unwrap();
    let status = res.status();
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, bytes.to_vec())
}

async fn post_json(state: AppState, v: &Value) -> (StatusCode, Value) {
    let (status, body) = send(
        state,
        Method::POST,
        "/mutate",
        serde_json::to_vec(v).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    (status, serde_json::from_slice(&body).unwrap())
}

fn decoded_patch(response: &Value) -> Vec<Value> {
    assert_eq!(response["response"]["patchType"], "JSONPatch");
    let b64 = response["response"]["patch"].as_str().unwrap();
    serde_json::from_slice(&STANDARD.decode(b64).unwrap()).unwrap()
}

#[tokio::test]
async fn jupyterhub_pod_create_gets_the_patch() {
    let st = state();
    let pod = alice();
    let (_, res) = post_json(
        st.clone(),
        &review(pod.clone(), "Pod", "pods", "CREATE", false),
    )
    .await;
    assert_eq!(res["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(res["kind"], "AdmissionReview");
    assert_eq!(
        res["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert_eq!(res["response"]["allowed"], true);
    let ops = decoded_patch(&res);
    assert!(ops.len() > 3, "{ops:?}");
    // The patch applies to the original and yields a pod with our init container.
    let patch: json_patch::Patch = serde_json::from_value(Value::Array(ops)).unwrap();
    let mut doc = pod;
    json_patch::patch(&mut doc, &patch).unwrap();
    let mutated: k8s_openapi::api::core::v1::Pod = serde_json::from_value(doc).unwrap();
    let spec = mutated.spec.unwrap();
    let init = spec.init_containers.unwrap();
    assert_eq!(init.last().unwrap().name, "session-ssh-install");
    assert_eq!(
        mutated.metadata.annotations.unwrap()["session-ssh.io/status"],
        "injected"
    );
    assert_eq!(st.metrics.requests("injected", "injected"), 1);
    let text = st.metrics.render().unwrap();
    assert!(
        text.contains("session_ssh_admission_duration_seconds_count 1\n"),
        "{text}"
    );
}

#[tokio::test]
async fn dry_run_gets_the_same_patch() {
    let pod = alice();
    let (_, wet) = post_json(
        state(),
        &review(pod.clone(), "Pod", "pods", "CREATE", false),
    )
    .await;
    let (_, dry) = post_json(state(), &review(pod, "Pod", "pods", "CREATE", true)).await;
    assert_eq!(decoded_patch(&wet), decoded_patch(&dry));
}

#[tokio::test]
async fn pod_not_selected_is_allowed_without_patch() {
    let st = state();
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "plain", "namespace": "jhub"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]}
    });
    let (_, res) = post_json(st.clone(), &review(pod, "Pod", "pods", "CREATE", false)).await;
    assert_eq!(res["response"]["allowed"], true);
    assert!(res["response"].get("patch").is_none(), "{res}");
    assert_eq!(st.metrics.requests("skipped", "not-selected"), 1);
}

#[tokio::test]
async fn update_is_allowed_unchanged() {
    let st = state();
    let (_, res) = post_json(st.clone(), &review(alice(), "Pod", "pods", "UPDATE", false)).await;
    assert_eq!(res["response"]["allowed"], true);
    assert!(res["response"].get("patch").is_none(), "{res}");
    assert_eq!(st.metrics.requests("allowed", "operation"), 1);
}

#[tokio::test]
async fn non_pod_is_allowed_unchanged() {
    let st = state();
    let svc = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "s", "namespace": "jhub"},
        "spec": {"ports": [{"port": 80}]}
    });
    let (_, res) = post_json(
        st.clone(),
        &review(svc, "Service", "services", "CREATE", false),
    )
    .await;
    assert_eq!(res["response"]["allowed"], true);
    assert_eq!(
        res["response"]["uid"],
        "705ab4f5-6393-11e8-b7cc-42010a800002"
    );
    assert!(res["response"].get("patch").is_none(), "{res}");
    assert_eq!(st.metrics.requests("allowed", "not-a-pod"), 1);
}

#[tokio::test]
async fn pod_subresource_is_allowed_unchanged() {
    let mut r = review(alice(), "Pod", "pods", "CREATE", false);
    r["request"]["subResource"] = json!("binding");
    let (_, res) = post_json(state(), &r).await;
    assert!(res["response"].get("patch").is_none(), "{res}");
}

#[tokio::test]
async fn unreadable_pod_is_admitted_with_a_warning() {
    let st = state();
    let mut pod = alice();
    pod["spec"]["containers"] = json!("not a list");
    let (_, res) = post_json(st.clone(), &review(pod, "Pod", "pods", "CREATE", false)).await;
    assert_eq!(res["response"]["allowed"], true);
    assert!(res["response"].get("patch").is_none(), "{res}");
    let warning = res["response"]["warnings"][0].as_str().unwrap();
    assert!(warning.contains("pod could not be read"), "{warning}");
    assert_eq!(st.metrics.requests("error", "invalid-pod"), 1);
}

#[tokio::test]
async fn wrong_path_is_404() {
    let (status, _) = send(state(), Method::POST, "/validate", b"{}".to_vec()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_method_is_405() {
    let (status, _) = send(state(), Method::GET, "/mutate", Vec::new()).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
}

async fn bad(body: &[u8]) -> String {
    let st = state();
    let (status, out) = send(st.clone(), Method::POST, "/mutate", body.to_vec()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        st.metrics
            .render()
            .unwrap()
            .matches("outcome=\"error\"")
            .count(),
        1,
        "{text}"
    );
    text
}

#[tokio::test]
async fn not_json_is_400() {
    assert!(bad(b"\x00\xffhello").await.contains("not JSON"));
    assert!(bad(b"").await.contains("not JSON"));
    assert!(bad(b"{\"apiVersion\": ").await.contains("not JSON"));
}

#[tokio::test]
async fn json_that_is_not_a_review_is_400() {
    let text = bad(br#"{"apiVersion":"v1","kind":"Pod"}"#).await;
    assert!(text.contains("expected kind AdmissionReview"), "{text}");
    let text = bad(b"[1,2,3]").await;
    assert!(text.contains("AdmissionReview"), "{text}");
    let text = bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).await;
    assert!(text.contains("no request"), "{text}");
    let text = bad(
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}}"#,
    )
    .await;
    assert!(
        text.contains("invalid AdmissionReview v1 request"),
        "{text}"
    );
    let text = bad(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"kind":"Pod"}}"#).await;
    assert!(
        text.contains("invalid AdmissionReview v1 request"),
        "{text}"
    );
}

#[tokio::test]
async fn v1beta1_is_400_with_a_hint() {
    let mut r = review(alice(), "Pod", "pods", "CREATE", false);
    r["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let text = bad(&serde_json::to_vec(&r).unwrap()).await;
    assert!(text.contains("v1beta1 is not supported"), "{text}");
    assert!(text.contains("admissionReviewVersions"), "{text}");
}

#[tokio::test]
async fn oversize_body_is_413() {
    let st = state();
    let mut body =
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","pad":""#.to_vec();
    body.resize(MAX_BODY_BYTES + 1, b'a');
    let (status, _) = send(st.clone(), Method::POST, "/mutate", body).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(st.metrics.requests("error", "too-large"), 1);
}

#[tokio::test]
async fn generate_name_pod_is_injected() {
    let mut pod = alice();
    let obj = pod["metadata"].as_object_mut().unwrap();
    obj.remove("name");
    obj.insert("generateName".into(), json!("jupyter-alice-"));
    let (_, res) = post_json(state(), &review(pod, "Pod", "pods", "CREATE", false)).await;
    assert!(!decoded_patch(&res).is_empty());
}

#[tokio::test]
async fn apiserver_timeout_query_is_accepted() {
    // The apiserver calls `/mutate?timeout=10s`.
    let body = serde_json::to_vec(&review(alice(), "Pod", "pods", "CREATE", false)).unwrap();
    let (status, out) = send(state(), Method::POST, "/mutate?timeout=10s", body).await;
    assert_eq!(status, StatusCode::OK);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert!(!decoded_patch(&v).is_empty());
}
