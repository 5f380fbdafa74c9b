//! The test control plane does what the end-to-end tests rely on: it stores and
//! validates pods, issues ServiceAccount tokens, enforces RBAC, garbage-collects
//! through ownerReferences, deletes namespaces, and stops leaving nothing behind.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodSpec, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use session_ssh_tests::cluster::{self, ControlPlane};

const GC_TIMEOUT: Duration = Duration::from_secs(60);

fn pod(name: &str) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "notebook".into(),
                image: Some("quay.io/jupyter/base-notebook:latest".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn pod_is_stored_pending_with_service_account_defaults() {
    let cp = cluster::shared().unwrap();
    let client = cp.client().await.unwrap();
    let ns = cluster::unique_name("smoke-pod");
    cluster::create_namespace(&client, &ns, &[]).await.unwrap();

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let stored = pods
        .create(&PostParams::default(), &pod("nb"))
        .await
        .unwrap();
    let spec = stored.spec.unwrap();
    // The ServiceAccount admission plugin ran: default SA and its projected token volume.
    assert_eq!(spec.service_account_name.as_deref(), Some("default"));
    assert!(
        spec.volumes
            .unwrap_or_default()
            .iter()
            .any(|v| v.name.starts_with("kube-api-access-")),
        "no projected service-account volume"
    );
    // No scheduler, no kubelet: the pod stays unscheduled.
    let got = pods.get("nb").await.unwrap();
    assert_eq!(got.status.and_then(|s| s.phase).as_deref(), Some("Pending"));
    assert!(got.spec.and_then(|s| s.node_name).is_none());

    // The apiserver's own validation is on.
    let mut bad = pod("bad");
    if let Some(spec) = bad.spec.as_mut() {
        spec.containers[0].name = "Not_A_DNS_Label".into();
    }
    let err = pods.create(&PostParams::default(), &bad).await.unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422),
        "invalid pod accepted or wrong error: {err}"
    );
}

#[tokio::test]
async fn token_request_and_rbac() {
    let cp = cluster::shared().unwrap();
    let admin = cp.client().await.unwrap();
    let ns = cluster::unique_name("smoke-rbac");
    cluster::create_namespace(&admin, &ns, &[]).await.unwrap();
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some("robot".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();

    let token = cluster::service_account_token(&admin, &ns, "robot", 600)
        .await
        .unwrap();
    assert_eq!(token.split('.').count(), 3, "not a JWT: {token}");

    // The token authenticates, and RBAC (not AlwaysAllow) decides: no role, no pods.
    let robot = cp.token_client(&token).await.unwrap();
    let err = Api::<Pod>::namespaced(robot.clone(), &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 403 && s.message.contains(&format!("system:serviceaccount:{ns}:robot"))),
        "expected 403 for the service account, got {err}"
    );
    // A garbage token is rejected outright.
    let nobody = cp.token_client("not-a-token").await.unwrap();
    let err = Api::<Pod>::namespaced(nobody, &ns)
        .list(&Default::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err}"
    );
}

#[tokio::test]
async fn garbage_collector_follows_owner_references_and_namespace_delete_completes() {
    let cp = cluster::shared().unwrap();
    let client = cp.client().await.unwrap();
    let ns = cluster::unique_name("smoke-gc");
    cluster::create_namespace(&client, &ns, &[]).await.unwrap();

    let pods = Api::<Pod>::namespaced(client.clone(), &ns);
    let owner = pods
        .create(&PostParams::default(), &pod("owner"))
        .await
        .unwrap();
    let cms = Api::<ConfigMap>::namespaced(client.clone(), &ns);
    let owned = |name: &str, uid: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "Pod".into(),
                name: "owner".into(),
                uid: uid.into(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    let uid = owner.metadata.uid.clone().unwrap();
    cms.create(&PostParams::default(), &owned("owned", &uid))
        .await
        .unwrap();
    // Control: a ConfigMap without owner must survive the collection.
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("unowned".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // While the owner exists the dependent stays (give the collector time to act wrongly).
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(cms.get_opt("owned").await.unwrap().is_some());

    pods.delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    cluster::wait_for("owned ConfigMap collected", GC_TIMEOUT, || async {
        Ok(cms.get_opt("owned").await?.is_none().then_some(()))
    })
    .await
    .unwrap();
    assert!(
        cms.get_opt("unowned").await.unwrap().is_some(),
        "the collector removed a ConfigMap without owner"
    );

    cluster::delete_namespace(&client, &ns, Duration::from_secs(120))
        .await
        .unwrap();
}

#[tokio::test]
async fn own_control_plane_stops_on_sigterm_and_leaves_nothing() {
    let mut cp = ControlPlane::start().unwrap();
    let dir = cp.dir().to_path_buf();
    let kubeconfig = cp.kubeconfig().to_path_buf();
    assert!(dir.is_dir() && kubeconfig.is_file());
    let client = cp.client().await.unwrap();
    let version = client.apiserver_version().await.unwrap();
    // The release the Rust side is compiled for (k8s-openapi feature v1_35).
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "35")
    );

    let pid = cp.pid();
    assert!(
        cp.stop(),
        "control plane did not exit 0 on SIGTERM\n{}",
        cp.log_tail(40)
    );
    assert!(!dir.exists(), "state dir left behind: {}", dir.display());
    assert!(!kubeconfig.exists(), "kubeconfig left behind");
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} still there"
    );
}

#[tokio::test]
async fn control_plane_stops_when_its_parent_goes_away() {
    let mut cp = ControlPlane::start().unwrap();
    let dir = cp.dir().to_path_buf();
    // What the kernel does to the pipe when the test process dies.
    let status = cp.close_stdin_and_wait(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "no clean exit on stdin EOF: {status:?}\n{}",
        cp.log_tail(40)
    );
    assert!(!dir.exists(), "state dir left behind: {}", dir.display());
}
