//! Golden files: `fixtures/<case>.pod.yaml` (a Pod, or a workload for `inject`) in,
//! `<case>.patch.json` and `<case>.mutated.yaml` out. `UPDATE_GOLDEN=1` rewrites them.
//! The config is `<case>.config.yaml` when present, else the preset named by the case's
//! prefix (`jupyterhub-`, `renku-`, `kubeflow-`), else `generic`.
//!
//! Also checked for every case: the patch applied to the input gives the mutated
//! document, which parses as the k8s-openapi type; a second pass is a no-op; and, with
//! `kubernetes-validate` (`KUBERNETES_VALIDATE` or the repo's `.venv`), every input and
//! output passes `kubernetes-validate --strict` for Kubernetes 1.35 (k8s-openapi v1_35).

// Test helpers outside #[test] fns: clippy's allow-unwrap-in-tests does not reach them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use serde_json::Value;
use session_ssh_webhook::config::{Config, Platform};
use session_ssh_webhook::inject::{self, Document};
use session_ssh_webhook::patch::SessionId;

/// What each case must come out as (a case without an entry fails the test).
const EXPECTED: &[(&str, &str)] = &[
    ("edge-already-injected", "not injected (already-injected)"),
    ("edge-annotation-escaping", "injected"),
    ("edge-bare-generatename", "injected"),
    // SSH without the metrics port (a sidecar has 9122), and without scrape annotations.
    ("edge-metrics-port-taken", "injected"),
    ("edge-port-taken", "not injected (port-taken)"),
    // The pod's own prometheus.io annotations are kept; the metrics port is added.
    ("edge-prometheus-annotated", "injected"),
    ("edge-workload-deployment", "injected"),
    ("jupyterhub-alice", "injected"),
    ("jupyterhub-high-uid-readonly", "injected"),
    ("jupyterhub-host-ca", "injected"),
    ("jupyterhub-poststart-exec", "injected"),
    (
        "jupyterhub-poststart-httpget",
        "not injected (unsupported-post-start)",
    ),
    ("kubeflow-notebook", "injected"),
    ("renku-amalthea", "injected"),
    ("renku-statefulset", "injected"),
];

/// Session id given to `generateName` pods, so their golden files are stable.
const GOLDEN_RANDOM_ID: &str = "0badc0ffee0ddba1";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn cases() -> Vec<String> {
    let mut cases: Vec<String> = std::fs::read_dir(fixtures())
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".pod.yaml").map(str::to_owned)
        })
        .collect();
    cases.sort();
    cases
}

fn config_for(case: &str) -> Config {
    let file = fixtures().join(format!("{case}.config.yaml"));
    if file.exists() {
        return Config::load(&file).unwrap();
    }
    let platform = [
        ("jupyterhub-", Platform::Jupyterhub),
        ("renku-", Platform::Renku),
        ("kubeflow-", Platform::Kubeflow),
    ]
    .into_iter()
    .find(|(p, _)| case.starts_with(p))
    .map_or(Platform::Generic, |(_, p)| p);
    Config::preset(platform)
}

fn run(case: &str, text: &str) -> Vec<Document> {
    let cfg = config_for(case);
    inject::inject_text_with(
        text,
        case,
        &cfg,
        &SessionId::DeriveOr(GOLDEN_RANDOM_ID.into()),
    )
    .unwrap_or_else(|e| panic!("{case}: {e}"))
}

/// Compare with the golden file, or write it under UPDATE_GOLDEN=1.
fn golden(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => failures.push(format!(
            "{} differs (UPDATE_GOLDEN=1 to accept):\n{}",
            path.display(),
            first_difference(&expected, actual)
        )),
        Err(e) => failures.push(format!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            path.display()
        )),
    }
}

fn first_difference(expected: &str, actual: &str) -> String {
    let (e, a): (Vec<_>, Vec<_>) = (expected.lines().collect(), actual.lines().collect());
    let i = e.iter().zip(&a).take_while(|(x, y)| x == y).count();
    format!(
        "line {}:\n  golden: {:?}\n  actual: {:?}",
        i + 1,
        e.get(i),
        a.get(i)
    )
}

/// The mutated document parses as its k8s-openapi type (Pod or workload).
fn parses_typed(case: &str, doc: &Value) {
    let kind = doc["kind"].as_str().unwrap_or_default();
    let res = match kind {
        "Pod" => serde_json::from_value::<Pod>(doc.clone()).map(|_| ()),
        "Deployment" => serde_json::from_value::<Deployment>(doc.clone()).map(|_| ()),
        "StatefulSet" => serde_json::from_value::<StatefulSet>(doc.clone()).map(|_| ()),
        other => panic!("{case}: add a typed check for kind {other}"),
    };
    res.unwrap_or_else(|e| panic!("{case}: mutated {kind} does not parse: {e}"));
}

/// `edge-already-injected.pod.yaml` is `jupyterhub-alice.mutated.yaml` behind a comment
/// header; UPDATE_GOLDEN=1 refreshes it (run it twice after the output changes). Called from
/// `golden_files`, not a test of its own, so it never races with that test's reads.
fn already_injected_fixture_is_current(failures: &mut Vec<String>) {
    let header = "# Edge case: the jupyterhub-alice pod after injection (a copy of jupyterhub-alice.mutated.yaml):\n\
                  # a reinvoked webhook or a second `inject` must leave it as it is.\n";
    let mutated =
        std::fs::read_to_string(fixtures().join("jupyterhub-alice.mutated.yaml")).unwrap();
    let path = fixtures().join("edge-already-injected.pod.yaml");
    let want = format!("{header}{mutated}");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap();
    if have != want {
        failures.push(format!(
            "{} is stale: run UPDATE_GOLDEN=1 twice",
            path.display()
        ));
    }
}

#[test]
fn golden_files() {
    let mut failures = Vec::new();
    already_injected_fixture_is_current(&mut failures);
    let cases = cases();
    assert!(cases.len() >= 10, "fixtures missing: {cases:?}");
    for case in &cases {
        let input = fixtures().join(format!("{case}.pod.yaml"));
        let text = std::fs::read_to_string(&input).unwrap();
        let docs = run(case, &text);
        assert_eq!(docs.len(), 1, "{case}: one document per fixture");

        let outcome = &docs[0].targets[0].outcome;
        match EXPECTED.iter().find(|(c, _)| c == case) {
            Some((_, want)) => assert_eq!(outcome, want, "{case}"),
            None => panic!("{case}: add its expected outcome to EXPECTED (got {outcome:?})"),
        }

        // Patch applied to the original == the mutated document, which parses.
        let original: Value = serde_yaml::from_str(&text).unwrap();
        let mut patched = original.clone();
        json_patch::patch(&mut patched, &docs[0].patch.0).unwrap();
        assert_eq!(patched, docs[0].mutated, "{case}");
        parses_typed(case, &docs[0].mutated);

        let patch_json = inject::render_patches(&docs).unwrap();
        let mutated_yaml = inject::render_yaml(&docs).unwrap();
        golden(
            &fixtures().join(format!("{case}.patch.json")),
            &patch_json,
            &mut failures,
        );
        golden(
            &fixtures().join(format!("{case}.mutated.yaml")),
            &mutated_yaml,
            &mut failures,
        );

        // A second pass (webhook reinvocation, `inject` twice) is a no-op.
        let again = run(case, &mutated_yaml);
        assert!(
            again[0].patch.0.is_empty(),
            "{case}: second pass patched: {:?}",
            again[0].patch
        );
        assert_eq!(again[0].mutated, docs[0].mutated, "{case}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_expected_case_has_a_fixture() {
    let cases = cases();
    for (case, _) in EXPECTED {
        assert!(
            cases.iter().any(|c| c == case),
            "fixture {case}.pod.yaml missing"
        );
    }
}

/// A PyPI tool of the test suite: `env` (the test script sets it), else the repo's `.venv`
/// that `scripts/setup.sh --tests` makes.
fn tool(env: &str, name: &str) -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../.venv/bin")
        .join(name);
    std::env::var_os(env)
        .map(PathBuf::from)
        .or_else(|| venv.exists().then_some(venv))
}

/// Strict schema validation of every fixture and golden output, with
/// `KUBERNETES_VALIDATE` (the test script sets it) or else the repo's `.venv` that
/// `scripts/setup.sh --tests` makes; once either is there, any failure fails the test.
#[test]
fn kubernetes_validate_strict() {
    let Some(exe) = tool("KUBERNETES_VALIDATE", "kubernetes-validate") else {
        eprintln!("KUBERNETES_VALIDATE not set and no .venv: strict schema validation not run");
        return;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            n.ends_with(".pod.yaml") || n.ends_with(".mutated.yaml")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 20, "too few files to validate: {files:?}");
    // kubernetes-validate needs metadata.name for its report (the schema does not): a
    // generateName pod is validated as a copy named the way the API server would name it.
    let tmp = tempfile::tempdir().unwrap();
    let files: Vec<PathBuf> = files
        .into_iter()
        .map(|f| {
            let mut doc: Value =
                serde_yaml::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            if doc.pointer("/metadata/name").is_some() {
                return f;
            }
            let generate = doc
                .pointer("/metadata/generateName")
                .and_then(Value::as_str)
                .unwrap_or("x-")
                .to_owned();
            doc["metadata"]["name"] = Value::String(format!("{generate}a1b2c"));
            let copy = tmp.path().join(f.file_name().unwrap());
            std::fs::write(&copy, serde_yaml::to_string(&doc).unwrap()).unwrap();
            copy
        })
        .collect();
    let out = Command::new(&exe)
        .args(["--strict", "--kubernetes-version", "1.35.0", "--no-warn"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {exe:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Belt and braces: every file must be reported as valid.
    for f in &files {
        let name = f.to_string_lossy();
        assert!(
            stdout
                .lines()
                .any(|l| l.contains(name.as_ref()) && l.contains(" passed for resource ")),
            "{name} not reported as validated:\n{stdout}\n{stderr}"
        );
    }
}

/// The JupyterHub fixtures are KubeSpawner's own output, not hand edits: regenerating
/// them with the pinned `jupyterhub-kubespawner` (`SESSION_SSH_PYTHON`, set by the test
/// script, or the repo's `.venv`) gives the committed files byte for byte.
#[test]
fn kubespawner_fixtures_are_what_make_pod_generates() {
    let Some(python) = tool("SESSION_SSH_PYTHON", "python") else {
        eprintln!("SESSION_SSH_PYTHON not set and no .venv: KubeSpawner fixtures not regenerated");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(&python)
        .arg(fixtures().join("gen_kubespawner.py"))
        .arg(tmp.path())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    assert!(
        out.status.success(),
        "gen_kubespawner.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut n = 0;
    for e in std::fs::read_dir(tmp.path()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_owned();
        let fresh = std::fs::read_to_string(&path).unwrap();
        let committed = std::fs::read_to_string(fixtures().join(&name)).unwrap_or_default();
        assert!(
            fresh == committed,
            "{name:?} differs from what make_pod generates now (rerun gen_kubespawner.py):\n{}",
            first_difference(&committed, &fresh)
        );
        n += 1;
    }
    assert_eq!(
        n, 5,
        "gen_kubespawner.py should write the 5 JupyterHub cases"
    );
}
