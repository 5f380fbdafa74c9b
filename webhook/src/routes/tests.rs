use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{Pod, Service};

use super::*;
use crate::hostname::{Error, check_host_template, dns_label, render_host};
use crate::naming::{is_dns_label, is_dns_subdomain};

#[test]
fn valid_pod_names_are_kept() {
    assert_eq!(service_name("jupyter-alice"), "jupyter-alice");
    assert_eq!(service_name("a"), "a");
}

#[test]
fn dotted_names_are_sanitized_with_a_hash() {
    let a = service_name("jupyter-alice.smith");
    let b = service_name("jupyter-alice-smith");
    assert!(a.starts_with("jupyter-alice-smith-"), "{a}");
    assert_eq!(a.len(), "jupyter-alice-smith-".len() + 8);
    assert!(is_dns1035_label(&a));
    // The unaltered neighbour keeps its name; the two never collide.
    assert_eq!(b, "jupyter-alice-smith");
    assert_ne!(a, b);
    assert_ne!(service_name("x.y"), service_name("x-y."));
}

#[test]
fn names_starting_with_a_digit_get_a_letter() {
    let n = service_name("1pod");
    assert!(n.starts_with("s-1pod-"), "{n}");
    assert!(is_dns1035_label(&n));
}

#[test]
fn long_names_fit_in_63_and_stay_distinct() {
    let base = "a".repeat(250);
    let names: HashSet<String> = (0..50)
        .map(|i| service_name(&format!("{base}{i:03}")))
        .collect();
    assert_eq!(names.len(), 50);
    for n in &names {
        assert!(n.len() <= 63 && is_dns1035_label(n), "{n}");
    }
    // A 64-character valid label is too long for a Service and is cut too.
    let n = service_name(&"b".repeat(64));
    assert_eq!(n.len(), 63);
    // A name of dots only still gives a valid name.
    let n = service_name("...");
    assert!(is_dns1035_label(&n), "{n}");
}

#[test]
fn dns_labels_keep_valid_values_and_hash_others() {
    assert_eq!(dns_label("alice"), "alice");
    assert_eq!(dns_label("2nd"), "2nd");
    let a = dns_label("Alice");
    let b = dns_label("alice_");
    assert!(a.starts_with("alice-") && is_dns_label(&a), "{a}");
    assert!(is_dns_label(&b), "{b}");
    assert_ne!(a, dns_label("ALICE"));
    let e = dns_label("");
    assert_eq!(e.len(), 8);
    assert!(is_dns_label(&dns_label("-x-")));
    assert!(dns_label(&"z".repeat(100)).len() <= 63);
}

fn labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("hub.jupyter.org/username".to_owned(), "alice".to_owned()),
        ("hub.jupyter.org/servername".to_owned(), "".to_owned()),
        ("odd".to_owned(), "Bob_Smith".to_owned()),
    ])
}

#[test]
fn host_templates_render() {
    let h = render_host(
        "{pod}.{namespace}.ssh.example.org",
        "jupyter-alice",
        "jhub",
        "0123456789abcdef",
        &labels(),
    );
    assert_eq!(h.as_deref(), Ok("jupyter-alice.jhub.ssh.example.org"));
    let h = render_host(
        "{label:hub.jupyter.org/username}.ssh.example.org",
        "p",
        "n",
        "id",
        &labels(),
    );
    assert_eq!(h.as_deref(), Ok("alice.ssh.example.org"));
    // A dotted pod name stays one label.
    let h = render_host("{pod}.ssh.example.org", "a.b", "n", "id", &labels()).unwrap();
    assert_eq!(h.split('.').count(), 4, "{h}");
    assert!(h.starts_with("a-b-"));
    // An altered label value gets a hash: Bob_Smith and bob-smith do not collide.
    let odd = render_host("{label:odd}.x.org", "p", "n", "id", &labels()).unwrap();
    let mut other = labels();
    other.insert("odd".to_owned(), "bob-smith".to_owned());
    let plain = render_host("{label:odd}.x.org", "p", "n", "id", &other).unwrap();
    assert_eq!(plain, "bob-smith.x.org");
    assert_ne!(odd, plain);
    // An empty label value still yields a valid host.
    let h = render_host(
        "{label:hub.jupyter.org/username}-{label:hub.jupyter.org/servername}.ssh.example.org",
        "p",
        "n",
        "id",
        &labels(),
    )
    .unwrap();
    assert!(is_dns_subdomain(&h), "{h}");
    // Long values joined with literal text are cut to 63 per label.
    let h = render_host(
        "{pod}-{session-id}.example.org",
        &"p".repeat(63),
        "n",
        "0123456789abcdef",
        &labels(),
    )
    .unwrap();
    assert!(is_dns_subdomain(&h), "{h}");
}

#[test]
fn host_template_errors() {
    assert_eq!(
        render_host("{label:missing}.x.org", "p", "n", "id", &labels()),
        Err(Error::MissingLabel("missing".to_owned()))
    );
    assert!(check_host_template("{pod}.ssh.example.org").is_ok());
    assert!(check_host_template("{label:hub.jupyter.org/username}-x.example.org").is_ok());
    assert!(check_host_template("ssh.example.org").is_err());
    assert!(check_host_template("{user}.example.org").is_err());
    assert!(check_host_template("{pod}.Example.org").is_err());
    assert!(check_host_template("{pod.example.org").is_err());
    assert!(check_host_template("pod}.example.org").is_err());
    assert!(check_host_template("{label:}.example.org").is_err());
}

fn pod(tls: bool) -> Pod {
    let mut ports = vec![serde_json::json!({"name": "session-ssh", "containerPort": 2222})];
    if tls {
        ports.push(serde_json::json!({"name": "session-ssh-tls", "containerPort": 2443}));
    }
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "jupyter-alice.x", "namespace": "jhub", "uid": "u-1"},
        "spec": {"containers": [{"name": "notebook", "ports": ports}]},
        "status": {"hostIP": "10.0.0.7"},
    }))
    .unwrap()
}

#[test]
fn service_selects_by_session_id_and_is_owned_by_the_pod() {
    let s = service(
        &pod(true),
        "svc",
        "0123456789abcdef",
        "u-1",
        IngressMode::None,
    );
    assert_eq!(s["spec"]["type"], "ClusterIP");
    assert_eq!(s["spec"]["selector"][SESSION_ID], "0123456789abcdef");
    assert_eq!(s["spec"]["ports"][0]["port"], 22);
    assert_eq!(s["spec"]["ports"][0]["targetPort"], "session-ssh");
    assert_eq!(s["spec"]["ports"][1]["name"], "ssh-tls");
    assert_eq!(s["spec"]["ports"][1]["port"], 443);
    let owner = &s["metadata"]["ownerReferences"][0];
    assert_eq!(owner["uid"], "u-1");
    assert_eq!(owner["name"], "jupyter-alice.x");
    assert_eq!(owner["controller"], true);
    assert_eq!(owner["blockOwnerDeletion"], false);
    // It parses as a Service.
    let _: Service = serde_json::from_value(s).unwrap();
    let s = service(&pod(false), "svc", "id", "u-1", IngressMode::Nodeport);
    assert_eq!(s["spec"]["type"], "NodePort");
    assert_eq!(s["spec"]["ports"].as_array().map(Vec::len), Some(1));
    let s = service(&pod(false), "svc", "id", "u-1", IngressMode::Loadbalancer);
    assert_eq!(s["spec"]["type"], "LoadBalancer");
}

fn applied(node_port: Option<i32>, lb: Option<&str>) -> Service {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "svc", "namespace": "jhub"},
        "spec": {"ports": [{"name": "ssh", "port": 22, "nodePort": node_port}]},
        "status": {"loadBalancer": {"ingress": lb.map(|ip| vec![serde_json::json!({"ip": ip})])}},
    }))
    .unwrap()
}

#[test]
fn endpoints_per_mode() {
    let p = pod(true);
    let e = endpoint(IngressMode::None, None, &applied(None, None), &p).unwrap();
    assert_eq!((e.host.as_str(), e.port), ("svc.jhub.svc", 22));
    let e = endpoint(IngressMode::Nodeport, None, &applied(Some(30022), None), &p).unwrap();
    assert_eq!((e.host.as_str(), e.port), ("10.0.0.7", 30022));
    let e = endpoint(
        IngressMode::Nodeport,
        Some("a.example.org".to_owned()),
        &applied(Some(30022), None),
        &p,
    )
    .unwrap();
    assert_eq!((e.host.as_str(), e.port), ("a.example.org", 30022));
    assert_eq!(
        endpoint(IngressMode::Nodeport, None, &applied(None, None), &p),
        None
    );
    assert_eq!(
        endpoint(IngressMode::Loadbalancer, None, &applied(None, None), &p),
        None
    );
    let e = endpoint(
        IngressMode::Loadbalancer,
        None,
        &applied(None, Some("192.0.2.1")),
        &p,
    )
    .unwrap();
    assert_eq!((e.host.as_str(), e.port), ("192.0.2.1", 22));
}

#[test]
fn ssh_config_block() {
    let ep = Endpoint {
        host: "a.example.org".to_owned(),
        port: 443,
        sni: true,
    };
    let c = ssh_config("a.example.org", &ep);
    assert!(c.starts_with("Host a.example.org\n    HostName a.example.org\n    Port 443\n"));
    assert!(c.contains(
        "ProxyCommand openssl s_client -quiet -no_ign_eof -nocommands -verify_quiet -connect %h:443 -servername %h"
    ));
    assert!(c.contains("ServerAliveInterval 30"));
    assert!(!c.contains("StrictHostKeyChecking"));
    let plain = ssh_config("s", &Endpoint { sni: false, ..ep });
    assert!(!plain.contains("ProxyCommand"));
    let a = annotations(
        "s",
        &Endpoint {
            host: "h".into(),
            port: 22,
            sni: false,
        },
    );
    assert_eq!(a[SSH_HOST], "h");
    assert_eq!(a[SSH_PORT], "22");
}

#[test]
fn config_ingress_section() {
    use crate::config::Config;
    let c = Config::from_yaml("platform: jupyterhub\n", "c.yaml").unwrap();
    assert_eq!(c.ingress.mode, IngressMode::None);
    assert_eq!(c.ingress.host_template, None);
    assert!(
        c.to_yaml()
            .contains("ingress:\n  mode: none\n  hostTemplate: null\n"),
        "{}",
        c.to_yaml()
    );
    let c = Config::from_yaml(
        "ingress:\n  mode: nodeport\n  hostTemplate: '{pod}.{namespace}.ssh.example.org'\n",
        "c.yaml",
    )
    .unwrap();
    assert_eq!(c.ingress.mode, IngressMode::Nodeport);
    let e = Config::from_yaml("ingress:\n  mode: istio\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("ingress.mode"), "{e}");
    let e = Config::from_yaml("ingress:\n  hostTemplate: ssh.example.org\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("ingress.hostTemplate"), "{e}");
    let e = Config::from_yaml("ingress:\n  tls: true\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("tls"), "{e}");
}

fn sni_config(yaml: &str) -> crate::config::Config {
    crate::config::Config::from_yaml(yaml, "c.yaml").unwrap()
}

#[test]
fn sni_modes_need_a_host_template_and_gateways() {
    use crate::config::Config;
    let e = Config::from_yaml("ingress:\n  mode: traefik\n", "c.yaml").unwrap_err();
    assert!(e.to_string().contains("ingress.hostTemplate"), "{e}");
    let e = Config::from_yaml(
        "ingress:\n  mode: gateway\n  hostTemplate: '{pod}.x.org'\n",
        "c.yaml",
    )
    .unwrap_err();
    assert!(e.to_string().contains("ingress.gateway.parentRefs"), "{e}");
    let c = sni_config("ingress:\n  mode: ingress-nginx\n  hostTemplate: '{pod}.x.org'\n");
    assert_eq!(c.ingress.mode, IngressMode::IngressNginx);
    assert!(c.ingress.mode.is_sni());
    assert_eq!(c.ingress.traefik.entry_points, vec!["websecure".to_owned()]);
    assert_eq!(c.ingress.ingress_nginx.class_name.as_deref(), Some("nginx"));
    assert!(!IngressMode::Nodeport.is_sni());
}

#[test]
fn sni_route_objects() {
    let c = sni_config(
        "ingress:\n  mode: gateway\n  hostTemplate: '{pod}.x.org'\n  gateway:\n    parentRefs:\n    - {name: gw, sectionName: tls}\n",
    );
    let p = pod(true);
    let r = sni::route(
        IngressMode::Gateway,
        &c.ingress,
        &p,
        "svc",
        "id",
        "u-1",
        "h.x.org",
    )
    .unwrap();
    assert_eq!(r["apiVersion"], "gateway.networking.k8s.io/v1");
    assert_eq!(r["kind"], "TLSRoute");
    assert_eq!(r["metadata"]["name"], "svc");
    assert_eq!(r["metadata"]["ownerReferences"][0]["uid"], "u-1");
    assert_eq!(
        r["spec"]["parentRefs"],
        serde_json::json!([{"name": "gw", "sectionName": "tls"}])
    );
    assert_eq!(r["spec"]["hostnames"], serde_json::json!(["h.x.org"]));
    assert_eq!(
        r["spec"]["rules"][0]["backendRefs"][0],
        serde_json::json!({"name": "svc", "port": 443})
    );
    let r = sni::route(
        IngressMode::Traefik,
        &c.ingress,
        &p,
        "svc",
        "id",
        "u-1",
        "h.x.org",
    )
    .unwrap();
    assert_eq!(r["apiVersion"], "traefik.io/v1alpha1");
    assert_eq!(r["spec"]["routes"][0]["match"], "HostSNI(`h.x.org`)");
    assert_eq!(r["spec"]["tls"]["passthrough"], true);
    let r = sni::route(
        IngressMode::IngressNginx,
        &c.ingress,
        &p,
        "svc",
        "id",
        "u-1",
        "h.x.org",
    )
    .unwrap();
    assert_eq!(r["kind"], "Ingress");
    assert_eq!(r["metadata"]["annotations"][sni::NGINX_PASSTHROUGH], "true");
    assert_eq!(r["spec"]["ingressClassName"], "nginx");
    assert_eq!(r["spec"]["rules"][0]["host"], "h.x.org");
    let _: k8s_openapi::api::networking::v1::Ingress = serde_json::from_value(r).unwrap();
    for m in [
        IngressMode::None,
        IngressMode::Nodeport,
        IngressMode::Loadbalancer,
    ] {
        assert_eq!(sni::route(m, &c.ingress, &p, "svc", "id", "u-1", "h"), None);
    }
    // The SNI modes publish 443 with the ProxyCommand, only with a hostname.
    let svc = applied(None, None);
    let e = endpoint(IngressMode::Traefik, Some("h.x.org".into()), &svc, &p).unwrap();
    assert_eq!((e.host.as_str(), e.port, e.sni), ("h.x.org", 443, true));
    assert_eq!(endpoint(IngressMode::Gateway, None, &svc, &p), None);
}

#[test]
fn joined_values_never_collide() {
    let t = "{label:u}-{label:s}.ssh.example.org";
    let render = |u: &str, s: &str| {
        let l = BTreeMap::from([
            ("u".to_owned(), u.to_owned()),
            ("s".to_owned(), s.to_owned()),
        ]);
        render_host(t, "p", "n", "id", &l).unwrap()
    };
    // Plain values keep a predictable name.
    assert_eq!(render("alice", "lab"), "alice-lab.ssh.example.org");
    // `a-b`+`c` and `a`+`b-c` would both read `a-b-c`: hashed apart.
    let x = render("a-b", "c");
    let y = render("a", "b-c");
    assert_ne!(x, y);
    assert!(
        x.starts_with("a-b-c-") && y.starts_with("a-b-c-"),
        "{x} {y}"
    );
    assert!(is_dns_subdomain(&x) && is_dns_subdomain(&y));
    // Adjacent placeholders are ambiguous even without dashes.
    let adj = |u: &str, s: &str| {
        let l = BTreeMap::from([
            ("u".to_owned(), u.to_owned()),
            ("s".to_owned(), s.to_owned()),
        ]);
        render_host("{label:u}{label:s}.x.org", "p", "n", "id", &l).unwrap()
    };
    assert_ne!(adj("ab", "c"), adj("a", "bc"));
    // One placeholder per label stays as it is.
    assert_eq!(
        render_host(
            "{pod}.{namespace}.x.org",
            "a-b",
            "c-d",
            "id",
            &BTreeMap::new()
        )
        .unwrap(),
        "a-b.c-d.x.org"
    );
}
