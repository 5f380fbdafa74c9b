use super::validate::is_quantity;
use super::*;

fn load(text: &str) -> Result<Config> {
    Config::from_yaml(text, "cfg.yaml")
}

#[test]
fn empty_file_is_generic_preset() {
    let c = load("").unwrap();
    assert_eq!(c, Config::preset(Platform::Generic));
    assert!(c.selector.require_opt_in);
}

#[test]
fn platform_preset_and_override() {
    let c = load("platform: jupyterhub\ninitContainer:\n  image: reg/x:1\n").unwrap();
    assert_eq!(c.session_container.names, vec!["notebook"]);
    assert_eq!(c.init_container.image, "reg/x:1");
    // Untouched siblings keep the preset value.
    assert_eq!(c.init_container.binary, "/init-sshd");
    assert_eq!(
        c.keys.user_secret.as_deref(),
        Some("ssh-keys-{hub.jupyter.org/username}")
    );
}

#[test]
fn match_labels_are_replaced_not_merged() {
    let c = load("platform: jupyterhub\nselector:\n  matchLabels:\n    app: lab\n").unwrap();
    assert_eq!(
        c.selector.match_labels,
        BTreeMap::from([("app".to_owned(), "lab".to_owned())])
    );
}

#[test]
fn null_disables_an_optional_default() {
    let c = load("keys:\n  annotation: null\nports:\n  sshTls: null\n  metrics: null\n").unwrap();
    assert_eq!(c.keys.annotation, None);
    assert_eq!(c.ports.ssh_tls, None);
    assert_eq!(c.ports.metrics, None);
    assert_eq!(load("").unwrap().ports.metrics, Some(9122));
}

#[test]
fn unknown_field_is_named_with_its_path() {
    let e = load("initContainer:\n  imagee: x\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cfg.yaml: field `initContainer"), "{e}");
    assert!(e.contains("imagee"), "{e}");
    let e = load("bogus: 1\n").unwrap_err().to_string();
    assert!(e.contains("bogus"), "{e}");
}

#[test]
fn wrong_type_names_file_and_field() {
    let e = load("ports:\n  ssh: twentytwo\n").unwrap_err().to_string();
    assert!(e.starts_with("cfg.yaml: field `ports.ssh`"), "{e}");
    let e = load("keys:\n  files: /not/a/list\n")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("cfg.yaml: field `keys.files`"), "{e}");
    let e = load("ports:\n  ssh: 70000\n").unwrap_err().to_string();
    assert!(e.contains("`ports.ssh`"), "{e}");
}

#[test]
fn bad_platform_and_enum_values() {
    let e = load("platform: jupyter\n").unwrap_err().to_string();
    assert!(e.starts_with("cfg.yaml: field `platform`"), "{e}");
    let e = load("initContainer:\n  imagePullPolicy: Sometimes\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`initContainer.imagePullPolicy`"), "{e}");
}

#[test]
fn semantic_errors_name_the_field() {
    let cases = [
        ("mountPath: relative/dir\n", "mountPath"),
        ("ports:\n  ssh: 2443\n", "ports.sshTls"),
        ("ports:\n  metrics: 2222\n", "ports.metrics"),
        ("ports:\n  metrics: 2443\n", "ports.metrics"),
        ("ports:\n  metrics: 0\n", "ports.metrics"),
        ("keys:\n  files: [\"/a/../b\"]\n", "keys.files[0]"),
        (
            "keys:\n  userSecret: \"keys-{unclosed\"\n",
            "keys.userSecret",
        ),
        (
            "keys:\n  extraSecrets: [\"Bad_Name\"]\n",
            "keys.extraSecrets[0]",
        ),
        (
            "initContainer:\n  resources:\n    limits:\n      memory: lots\n",
            "initContainer.resources.limits.memory",
        ),
        ("initContainer:\n  image: \"\"\n", "initContainer.image"),
        (
            "initContainer:\n  resources:\n    limits:\n      memory: 4Mi\n",
            "initContainer.resources.limits.memory",
        ),
        ("volumeSizeLimit: 1Mi\n", "volumeSizeLimit"),
        ("volumeSizeLimit: \"30000000\"\n", "volumeSizeLimit"),
        (
            "gateway:\n  userCaPublicKey: \"ssh-ed25519 not-base64\"\n",
            "gateway.userCaPublicKey",
        ),
        ("gateway:\n  hubTokenLogin: true\n", "gateway.hubTokenLogin"),
        ("gateway:\n  host: \"ssh://hub.org\"\n", "gateway.host"),
        ("gateway:\n  port: 0\n", "gateway.port"),
        ("server:\n  maxStartups: 0\n", "server.maxStartups"),
        (
            "ports:\n  sshTls: null\ningress:\n  mode: traefik\n  hostTemplate: \"{pod}.x.org\"\n",
            "ports.sshTls",
        ),
        (
            "server:\n  detachedBufferBytes: 100\n",
            "server.detachedBufferBytes",
        ),
        ("server:\n  idleTimeout: 5\n", "server.idleTimeout"),
        (
            "gateway:\n  hostPublicKey: \"ssh-ed25519 x\"\n",
            "gateway.hostPublicKey",
        ),
    ];
    for (text, path) in cases {
        let e = load(text).unwrap_err().to_string();
        assert!(
            e.starts_with(&format!("cfg.yaml: field `{path}`")),
            "{text} -> {e}"
        );
    }
}

#[test]
fn not_yaml_and_not_a_mapping() {
    assert!(matches!(load("a: [1,"), Err(Error::Yaml { .. })));
    assert!(matches!(load("- 1\n"), Err(Error::Field { .. })));
    let e = Config::load(Path::new("/nonexistent/cfg.yaml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/cfg.yaml: cannot read")
    );
}

#[test]
fn effective_yaml_lists_every_field_and_round_trips() {
    for p in [
        Platform::Jupyterhub,
        Platform::Renku,
        Platform::Kubeflow,
        Platform::Generic,
    ] {
        let c = Config::preset(p);
        let y = c.to_yaml();
        for field in [
            "platform:",
            "selector:",
            "matchLabels:",
            "hasLabels:",
            "requireOptIn:",
            "sessionContainer:",
            "nameFromLabel:",
            "names:",
            "fallbackToFirst:",
            "initContainer:",
            "image:",
            "imagePullPolicy:",
            "binary:",
            "runAsUser:",
            "runAsGroup:",
            "resources:",
            "requests:",
            "limits:",
            "cpu:",
            "memory:",
            "mountPath:",
            "volumeSizeLimit:",
            "ports:",
            "ssh:",
            "sshTls:",
            "metrics:",
            "keys:",
            "files:",
            "userSecret:",
            "annotation:",
            "extraSecrets:",
            "gateway:",
            "userCaPublicKey:",
        ] {
            assert!(y.contains(field), "{field} missing in {y}");
        }
        assert_eq!(load(&y).unwrap(), c);
    }
}

#[test]
fn quantities() {
    for ok in ["10m", "64Mi", "1", "0.5", "2Gi"] {
        assert!(is_quantity(ok), "{ok}");
    }
    for bad in ["", "m", "1.2.3", "5 Mi", "lots", "-1"] {
        assert!(!is_quantity(bad), "{bad}");
    }
}

#[test]
fn deep_override_keeps_siblings_and_lists_replace() {
    let c = load(
        "platform: renku\ninitContainer:\n  resources:\n    limits:\n      memory: 128Mi\nkeys:\n  files: []\n",
    )
    .unwrap();
    let preset = Config::preset(Platform::Renku);
    assert_eq!(
        c.init_container.resources.limits.memory.as_deref(),
        Some("128Mi")
    );
    assert_eq!(
        c.init_container.resources.limits.cpu,
        preset.init_container.resources.limits.cpu
    );
    assert_eq!(
        c.init_container.resources.requests,
        preset.init_container.resources.requests
    );
    assert!(c.keys.files.is_empty());
    assert_eq!(c.session_container, preset.session_container);
}

#[test]
fn an_empty_key_is_named_in_the_error() {
    // Found by the config fuzz target: `!!!\t:\t` is a mapping whose only key is "".
    let e = Config::from_yaml("!!!\t:\t", "cfg.yaml")
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("cfg.yaml: field `\"\"`: unknown field"),
        "{e}"
    );
}
