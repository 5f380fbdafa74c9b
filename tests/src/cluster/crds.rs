//! The route CRDs of the SNI ingress modes (Gateway API TLSRoute, Traefik IngressRouteTCP;
//! unchanged copies in tests/data/crds), applied as an admin would and waited for.

// Test support code: a panic with its message is the failure report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::Api;
use serde::Deserialize;

use super::wait_for;

/// Installs the route CRDs the SNI modes use (test data from their Go modules).
pub async fn install_route_crds(client: &kube::Client) {
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let dir = crate::repo_root().join("tests/data/crds");
    for file in [
        "gateway.networking.k8s.io_tlsroutes.yaml",
        "traefik.io_ingressroutetcps.yaml",
    ] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_yaml::Value::deserialize(doc).unwrap();
            if value.is_null() {
                continue;
            }
            let crd: CustomResourceDefinition = serde_yaml::from_value(value).unwrap();
            apply_crd(&crds, &crd).await;
        }
    }
}

/// Applies a CRD and waits until the apiserver serves it.
pub async fn apply_crd(crds: &Api<CustomResourceDefinition>, crd: &CustomResourceDefinition) {
    use kube::api::{Patch, PatchParams};
    let name = crd.metadata.name.clone().unwrap();
    crds.patch(
        &name,
        &PatchParams::apply("e2e").force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap();
    wait_for("CRD established", Duration::from_secs(60), || {
        let crds = crds.clone();
        let name = name.clone();
        async move {
            let c = crds.get(&name).await?;
            let ok = c
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(ok.then_some(()))
        }
    })
    .await
    .unwrap();
}
