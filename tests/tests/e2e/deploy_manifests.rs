//! Production packaging: the Dockerfile and the Kubernetes manifests under
//! deploy/kubernetes.
//!
//! kubectl's built-in kustomize renders every kustomization there (the base
//! and each overlay). kubernetes-validate checks each rendered object
//! against the Kubernetes JSON schemas it ships, strictly (an unknown field
//! fails), for the oldest and the newest Kubernetes release the manifests
//! target. Those schemas do not cover cert-manager's resources, so
//! deploy/kubernetes/check_cert_manager.py checks them against
//! cert-manager's models. The other tests read the rendered objects and
//! check what the mesh relies on. Pods are hardened and probed on the admin
//! port, and their grace period outlasts the shutdown. Certificate files
//! land where VALORA_CERTS_DIR expects them, and secrets come from Secret
//! objects. Network policies allow the mesh's own paths and no other.
//! hadolint lints the Dockerfile, but no image is built here.
//!
//! The tools come from tests/requirements.txt. Outside CI a missing tool
//! skips the tests that need it, with a message.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::support::{in_ci, repo_root, tool};

const MANIFESTS: &str = "deploy/kubernetes";
const NAMESPACE: &str = "valora";
/// The oldest Kubernetes release the manifests target, and the newest one
/// whose schemas kubernetes-validate 1.37.0 ships.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.31.0", "1.37.0"];
/// Each component: its name (Deployment `valora-NAME`, mesh identity
/// `spiffe://valora.internal/NAME`), the port of its main listener and the
/// variable that sets the listener's address.
const COMPONENTS: [(&str, u16, &str); 3] = [
    ("edge", 8080, "VALORA_EDGE_ADDR"),
    ("auth", 50051, "VALORA_AUTH_ADDR"),
    ("marketplace", 50052, "VALORA_MARKETPLACE_ADDR"),
];
const ADMIN_PORT: u16 = 9090;
/// Defaults of VALORA_SHUTDOWN_DELAY_SECONDS and VALORA_DRAIN_SECONDS
/// (crates/valora/src/cli.rs).
const DEFAULT_SHUTDOWN_DELAY_SECONDS: u64 = 2;
const DEFAULT_DRAIN_SECONDS: u64 = 20;
/// Variables that would put a secret's value in the pod spec. The manifests
/// use their `_FILE` variants instead.
const SECRET_VALUE_VARIABLES: [&str; 3] = [
    "MARKETPLACE_API_KEY",
    "AUTH_API_KEY_PEPPER",
    "MARKETPLACE_WEBHOOK_KEY",
];
/// URLs that contain passwords, read from Secrets through `secretKeyRef`.
const SECRET_URL_VARIABLES: [&str; 4] = [
    "MARKETPLACE_DATABASE_URL",
    "AUTH_DATABASE_URL",
    "VALORA_MIGRATE_DATABASE_URL",
    "VALORA_REDIS_URL",
];

/// One kustomization rendered by kubectl: its folder, the YAML in a
/// temporary file, and the objects.
struct Rendered {
    dir: PathBuf,
    file: tempfile::NamedTempFile,
    objects: Vec<Value>,
}

impl Rendered {
    /// Returns the folder relative to the repository root, for messages.
    fn name(&self) -> String {
        self.dir
            .strip_prefix(repo_root())
            .unwrap_or(&self.dir)
            .display()
            .to_string()
    }

    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }

    fn get(&self, kind: &str, name: &str) -> &Value {
        self.objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{}: no {kind} named {name}", self.name()))
    }

    fn is_production(&self) -> bool {
        self.dir.ends_with("overlays/production")
    }
}

/// Lists the folders under deploy/kubernetes that contain a
/// kustomization.yaml, sorted.
fn kustomizations() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        if dir.join("kustomization.yaml").is_file() {
            found.push(dir.to_path_buf());
        }
        for entry in std::fs::read_dir(dir).expect("read a manifests folder") {
            let path = entry.expect("folder entry").path();
            if path.is_dir() {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(&repo_root().join(MANIFESTS), &mut found);
    found.sort();
    found
}

/// Python program that prints the YAML documents of the file named by its
/// argument as one JSON array, with PyYAML (a dependency of
/// kubernetes-validate).
const YAML_TO_JSON: &str = "import json, sys, yaml\njson.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)";

fn yaml_to_json(python: &Path, file: &Path) -> Option<Vec<Value>> {
    let output = Command::new(python)
        .args(["-c", YAML_TO_JSON])
        .arg(file)
        .output()
        .expect("run python3");
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("No module named 'yaml'") && !in_ci() {
            eprintln!(
                "skipping: Python's yaml module is not installed (pip install -r tests/requirements.txt)"
            );
            return None;
        }
        panic!("parsing {} as YAML failed:\n{stderr}", file.display());
    }
    Some(serde_json::from_slice(&output.stdout).expect("python3 printed JSON"))
}

/// Renders every kustomization under deploy/kubernetes once for all tests.
/// Returns `None` outside CI when kubectl, python3 or PyYAML is missing.
fn render_all() -> Option<&'static [Rendered]> {
    static RENDERED: OnceLock<Option<Vec<Rendered>>> = OnceLock::new();
    RENDERED.get_or_init(render_kustomizations).as_deref()
}

fn render_kustomizations() -> Option<Vec<Rendered>> {
    let kubectl = tool("kubectl")?;
    let python = tool("python3")?;
    let dirs = kustomizations();
    assert!(
        dirs.len() >= 2,
        "expected the base and at least one overlay under {MANIFESTS}, found {dirs:?}"
    );
    let mut rendered = Vec::new();
    for dir in dirs {
        let output = Command::new(&kubectl)
            .arg("kustomize")
            .arg(&dir)
            .output()
            .expect("run kubectl kustomize");
        assert!(
            output.status.success(),
            "kubectl kustomize {} failed:\n{}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let mut file = tempfile::Builder::new()
            .suffix(".yaml")
            .tempfile()
            .expect("create a temporary file");
        file.write_all(&output.stdout)
            .expect("write the rendered manifests");
        let objects = yaml_to_json(&python, file.path())?;
        assert!(
            !objects.is_empty(),
            "kubectl kustomize {} rendered nothing",
            dir.display()
        );
        rendered.push(Rendered { dir, file, objects });
    }
    Some(rendered)
}

fn deployment_name(component: &str) -> String {
    format!("valora-{component}")
}

/// Returns the pod spec of the Deployment `valora-COMPONENT` and its only
/// container.
fn pod_and_container<'a>(rendered: &'a Rendered, component: &str) -> (&'a Value, &'a Value) {
    let deployment = rendered.get("Deployment", &deployment_name(component));
    let pod = &deployment["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(
        containers.len(),
        1,
        "{}: valora-{component} should run one container",
        rendered.name()
    );
    (pod, &containers[0])
}

fn env_entry<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    env_entry(container, name)?.get("value")?.as_str()
}

fn env_seconds(container: &Value, name: &str, default: u64) -> u64 {
    env_value(container, name).map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
    })
}

/// Reads the UID the image runs as from the runtime stage's `USER UID:GID`.
fn dockerfile_uid() -> u64 {
    let dockerfile =
        std::fs::read_to_string(repo_root().join("Dockerfile")).expect("read Dockerfile");
    let user = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back()
        .expect("a USER instruction");
    user.split(':')
        .next()
        .and_then(|uid| uid.trim().parse().ok())
        .expect("USER names a numeric UID")
}

#[test]
fn dockerfile_passes_hadolint() {
    let Some(hadolint) = tool("hadolint") else {
        return;
    };
    let output = Command::new(hadolint)
        .arg("Dockerfile")
        .current_dir(repo_root())
        .output()
        .expect("run hadolint");
    assert!(
        output.status.success(),
        "hadolint Dockerfile failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn dockerfile_matches_workspace() {
    let root = repo_root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).expect("read Dockerfile");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("read Cargo.toml");
    let rust_version = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("rust-version = "))
        .map(|v| v.trim_matches('"'))
        .expect("Cargo.toml sets rust-version");

    let stages: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        stages.len(),
        2,
        "expected a build and a runtime stage, found {stages:?}"
    );
    assert!(
        stages[0].starts_with(&format!("FROM rust:{rust_version}-")),
        "the build stage should use the workspace's Rust {rust_version}: {}",
        stages[0]
    );
    assert!(
        stages[1].contains("distroless/cc-debian12") || stages[1].contains("debian:bookworm-slim"),
        "the runtime stage should be Debian 12 like the build stage: {}",
        stages[1]
    );

    let runtime = dockerfile.split(stages[1]).nth(1).expect("runtime stage");
    assert!(
        dockerfile_uid() >= 1000,
        "the image should run as a non-root, non-system UID"
    );
    assert!(
        runtime.contains("ENTRYPOINT [\"valora\"]"),
        "the entry point should be the valora binary"
    );
    let exposed: Vec<&str> = runtime
        .lines()
        .filter_map(|l| l.strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .collect();
    for port in COMPONENTS.iter().map(|c| c.1).chain([ADMIN_PORT]) {
        assert!(
            exposed.contains(&port.to_string().as_str()),
            "port {port} is not exposed: {exposed:?}"
        );
    }
}

#[test]
fn service_roles_copy_matches_docs() {
    let root = repo_root();
    let docs = std::fs::read_to_string(root.join("docs/sql/service-roles.sql"))
        .expect("read docs/sql/service-roles.sql");
    let copy = std::fs::read_to_string(root.join(MANIFESTS).join("base/service-roles.sql"))
        .expect("read deploy/kubernetes/base/service-roles.sql");
    assert!(
        docs == copy,
        "deploy/kubernetes/base/service-roles.sql differs from docs/sql/service-roles.sql; copy the docs file over it"
    );
}

#[test]
fn manifests_pass_kubernetes_schemas() {
    let Some(rendered) = render_all() else { return };
    let Some(validate) = tool("kubernetes-validate") else {
        return;
    };
    for r in rendered {
        let mut command = Command::new(&validate);
        command.args(["--strict", "--quiet"]);
        for version in KUBERNETES_VERSIONS {
            command.args(["--kubernetes-version", version]);
        }
        let output = command
            .arg(r.file.path())
            .output()
            .expect("run kubernetes-validate");
        let stdout = String::from_utf8_lossy(&output.stdout);
        for line in stdout.lines() {
            assert!(
                !line.starts_with("ERROR") && !line.starts_with("FATAL"),
                "{}: {line}",
                r.name()
            );
            // kubernetes-validate only warns about a kind it has no schema
            // for. check_cert_manager.py covers cert-manager's kinds, but
            // any other kind would go unchecked.
            if line.starts_with("WARN") {
                assert!(
                    line.contains("with api version cert-manager.io/v1 "),
                    "{}: a kind without a schema, so unchecked: {line}",
                    r.name()
                );
            }
        }
        assert!(
            output.status.success(),
            "{}: kubernetes-validate failed with {}:\n{stdout}{}",
            r.name(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn cert_manager_objects_pass_models() {
    let Some(rendered) = render_all() else { return };
    let Some(python) = tool("python3") else {
        return;
    };
    let script = repo_root().join(MANIFESTS).join("check_cert_manager.py");
    for r in rendered {
        let output = Command::new(&python)
            .arg(&script)
            .arg(r.file.path())
            .output()
            .expect("run check_cert_manager.py");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        if output.status.code() == Some(3) {
            assert!(
                !in_ci(),
                "{stderr}; .ci/run installs tests/requirements.txt"
            );
            eprintln!("skipping: {stderr}");
            return;
        }
        assert!(
            output.status.success(),
            "{}: check_cert_manager.py failed:\n{stdout}{stderr}",
            r.name()
        );
        let expected = r
            .objects
            .iter()
            .filter(|o| {
                o["apiVersion"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("cert-manager.io/"))
            })
            .count();
        assert!(
            expected >= 4,
            "{}: expected an Issuer and three Certificates, found {expected}",
            r.name()
        );
        assert!(
            stdout.contains(&format!(
                "{expected} cert-manager objects checked, 0 invalid"
            )),
            "{}: not every cert-manager object was checked:\n{stdout}",
            r.name()
        );
    }
}

#[test]
fn pods_are_hardened() {
    let Some(rendered) = render_all() else { return };
    let uid = dockerfile_uid();
    for r in rendered {
        let namespace = r.get("Namespace", NAMESPACE);
        assert_eq!(
            namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "restricted",
            "{}: the namespace should enforce the restricted Pod Security Standard",
            r.name()
        );
        let mut pods: Vec<(String, &Value)> = COMPONENTS
            .iter()
            .map(|(component, _, _)| {
                (
                    deployment_name(component),
                    &r.get("Deployment", &deployment_name(component))["spec"]["template"]["spec"],
                )
            })
            .collect();
        pods.push((
            "valora-migrate".into(),
            &r.get("Job", "valora-migrate")["spec"]["template"]["spec"],
        ));
        for (name, pod) in pods {
            let context = &pod["securityContext"];
            assert_eq!(
                pod["automountServiceAccountToken"],
                false,
                "{}: {name} mounts an API token",
                r.name()
            );
            assert_eq!(
                context["runAsNonRoot"],
                true,
                "{}: {name} runAsNonRoot",
                r.name()
            );
            assert_eq!(
                context["runAsUser"],
                uid,
                "{}: {name} should run as the image's UID {uid}",
                r.name()
            );
            assert_eq!(
                context["seccompProfile"]["type"],
                "RuntimeDefault",
                "{}: {name} seccomp profile",
                r.name()
            );
            let containers = pod["containers"].as_array().into_iter().flatten();
            let init_containers = pod["initContainers"].as_array().into_iter().flatten();
            for container in containers.chain(init_containers) {
                let label = format!("{}: {name}/{}", r.name(), container["name"]);
                let security = &container["securityContext"];
                assert_eq!(
                    security["allowPrivilegeEscalation"], false,
                    "{label} allowPrivilegeEscalation"
                );
                assert_eq!(
                    security["readOnlyRootFilesystem"], true,
                    "{label} readOnlyRootFilesystem"
                );
                assert_eq!(
                    security["capabilities"]["drop"],
                    serde_json::json!(["ALL"]),
                    "{label} capabilities"
                );
                assert_ne!(security["runAsNonRoot"], false, "{label} runAsNonRoot");
                assert!(
                    container["lifecycle"]["preStop"].is_null(),
                    "{label} has a preStop hook"
                );
                for quantity in ["requests", "limits"] {
                    for resource in ["cpu", "memory"] {
                        assert!(
                            !container["resources"][quantity][resource].is_null(),
                            "{label} sets no {resource} {quantity}"
                        );
                    }
                }
                for mount in container["volumeMounts"].as_array().into_iter().flatten() {
                    assert_eq!(
                        mount["readOnly"], true,
                        "{label}: mount {} is writable",
                        mount["mountPath"]
                    );
                }
            }
        }
    }
}

#[test]
fn deployments_listen_probe_and_drain() {
    let Some(rendered) = render_all() else { return };
    for r in rendered {
        for (component, port, address_variable) in COMPONENTS {
            let label = format!("{}: valora-{component}", r.name());
            let deployment = r.get("Deployment", &deployment_name(component));
            let (pod, container) = pod_and_container(r, component);

            assert_eq!(
                container["args"],
                serde_json::json!(["serve", component]),
                "{label} args"
            );
            assert!(
                deployment["spec"]["replicas"].is_null(),
                "{label}: the autoscaler, not the Deployment, sets replicas"
            );
            assert_eq!(
                deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0,
                "{label}: a rolling update should start new pods before stopping old ones"
            );

            // Listeners bind every interface of the pod.
            assert_eq!(
                env_value(container, address_variable),
                Some(format!("0.0.0.0:{port}").as_str()),
                "{label}"
            );
            assert_eq!(
                env_value(container, "VALORA_ADMIN_ADDR"),
                Some(format!("0.0.0.0:{ADMIN_PORT}").as_str()),
                "{label}"
            );
            let ports = container["ports"].as_array().expect("container ports");
            let has_port = |name: &str, number: u16| {
                ports
                    .iter()
                    .any(|p| p["name"] == name && p["containerPort"] == number)
            };
            assert!(
                has_port("grpc", port),
                "{label}: no container port grpc={port}"
            );
            assert!(
                has_port("admin", ADMIN_PORT),
                "{label}: no container port admin={ADMIN_PORT}"
            );

            for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
                let get = &container[probe]["httpGet"];
                assert_eq!(get["path"], path, "{label} {probe} path");
                assert_eq!(get["port"], "admin", "{label} {probe} port");
            }

            // SIGTERM turns health NOT_SERVING for the shutdown delay, then
            // in-flight calls drain: the kubelet must wait for both.
            let delay = env_seconds(
                container,
                "VALORA_SHUTDOWN_DELAY_SECONDS",
                DEFAULT_SHUTDOWN_DELAY_SECONDS,
            );
            let drain = env_seconds(container, "VALORA_DRAIN_SECONDS", DEFAULT_DRAIN_SECONDS);
            let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap_or(30);
            assert!(
                grace > delay + drain,
                "{label}: terminationGracePeriodSeconds {grace} <= delay {delay} + drain {drain}"
            );
            // The admin endpoint closes at SIGTERM, so liveness must tolerate
            // failures for the whole shutdown.
            let liveness = &container["livenessProbe"];
            let period = liveness["periodSeconds"].as_u64().unwrap_or(10);
            let failures = liveness["failureThreshold"].as_u64().unwrap_or(3);
            assert!(
                period * failures > delay + drain,
                "{label}: liveness gives up after {} s, before the {} s shutdown ends",
                period * failures,
                delay + drain
            );
        }
    }
}

#[test]
fn mesh_certificates_reach_certs_dir() {
    let Some(rendered) = render_all() else { return };
    for r in rendered {
        let certificates = r.all("Certificate");
        for (component, _, _) in COMPONENTS {
            let label = format!("{}: valora-{component}", r.name());
            let spiffe_id = format!("spiffe://valora.internal/{component}");
            let matching: Vec<&&Value> = certificates
                .iter()
                .filter(|c| {
                    c["spec"]["uris"]
                        .as_array()
                        .is_some_and(|u| u.contains(&Value::from(spiffe_id.clone())))
                })
                .collect();
            assert_eq!(
                matching.len(),
                1,
                "{label}: expected one Certificate for {spiffe_id}"
            );
            let spec = &matching[0]["spec"];
            assert_eq!(
                spec["uris"],
                serde_json::json!([spiffe_id]),
                "{label}: a certificate carries exactly one SPIFFE ID"
            );
            let dns_name = format!("{component}.valora.internal");
            assert!(
                spec["dnsNames"]
                    .as_array()
                    .is_some_and(|d| d.contains(&Value::from(dns_name.clone()))),
                "{label}: mesh clients verify the DNS name {dns_name}"
            );
            for usage in ["server auth", "client auth"] {
                assert!(
                    spec["usages"]
                        .as_array()
                        .is_some_and(|u| u.contains(&Value::from(usage))),
                    "{label}: the certificate needs the {usage} usage"
                );
            }
            let issuer = &spec["issuerRef"];
            if issuer["kind"] == "Issuer" {
                r.get("Issuer", issuer["name"].as_str().expect("issuer name"));
            }

            // The folder VALORA_CERTS_DIR names contains exactly ca.pem,
            // NAME.pem and NAME.key, projected from the Certificate's Secret.
            let (pod, container) = pod_and_container(r, component);
            let certs_dir = env_value(container, "VALORA_CERTS_DIR").expect("VALORA_CERTS_DIR");
            let mount = container["volumeMounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["mountPath"] == certs_dir))
                .unwrap_or_else(|| panic!("{label}: nothing is mounted at {certs_dir}"));
            assert!(
                mount["subPath"].is_null(),
                "{label}: a subPath mount never sees a renewed certificate"
            );
            let volume = pod["volumes"]
                .as_array()
                .and_then(|v| v.iter().find(|v| v["name"] == mount["name"]))
                .expect("the mounted volume");
            let sources = volume["projected"]["sources"]
                .as_array()
                .expect("a projected volume");
            let mut files = BTreeMap::new();
            for source in sources {
                let (kind, object) = if source["secret"].is_object() {
                    ("secret", &source["secret"])
                } else {
                    ("configMap", &source["configMap"])
                };
                for item in object["items"].as_array().into_iter().flatten() {
                    let from = format!(
                        "{kind} {}/{}",
                        object["name"].as_str().unwrap_or(""),
                        item["key"].as_str().unwrap_or("")
                    );
                    files.insert(item["path"].as_str().expect("item path").to_owned(), from);
                }
            }
            let secret = spec["secretName"].as_str().expect("secretName");
            let expected = BTreeMap::from([
                (
                    format!("{component}.pem"),
                    format!("secret {secret}/tls.crt"),
                ),
                (
                    format!("{component}.key"),
                    format!("secret {secret}/tls.key"),
                ),
            ]);
            for (path, from) in &expected {
                assert_eq!(files.get(path), Some(from), "{label}: {certs_dir}/{path}");
            }
            assert!(
                files.contains_key("ca.pem"),
                "{label}: {certs_dir}/ca.pem is not projected"
            );
            assert_eq!(
                files.len(),
                3,
                "{label}: unexpected files in {certs_dir}: {files:?}"
            );
        }
    }
}

#[test]
fn budgets_and_autoscalers_cover_deployments() {
    let Some(rendered) = render_all() else { return };
    for r in rendered {
        for (component, _, _) in COMPONENTS {
            let name = deployment_name(component);
            let label = format!("{}: {name}", r.name());
            let deployment = r.get("Deployment", &name);
            let selector = &deployment["spec"]["selector"]["matchLabels"];

            let budget = r.get("PodDisruptionBudget", &name);
            assert_eq!(
                &budget["spec"]["selector"]["matchLabels"], selector,
                "{label}: the budget selects other pods"
            );
            assert_eq!(
                budget["spec"]["maxUnavailable"], 1,
                "{label}: maxUnavailable"
            );

            let autoscaler = r.get("HorizontalPodAutoscaler", &name);
            let spec = &autoscaler["spec"];
            assert_eq!(spec["scaleTargetRef"]["kind"], "Deployment", "{label}");
            assert_eq!(spec["scaleTargetRef"]["name"], name.as_str(), "{label}");
            let min = spec["minReplicas"].as_u64().expect("minReplicas");
            let max = spec["maxReplicas"].as_u64().expect("maxReplicas");
            // With one replica a node drain or a rollout would leave none.
            assert!(min >= 2, "{label}: minReplicas {min} < 2");
            assert!(max >= min, "{label}: maxReplicas {max} < minReplicas {min}");
        }
    }
}

#[test]
fn services_route_edge_to_replicas() {
    let Some(rendered) = render_all() else { return };
    for r in rendered {
        for (component, port, _) in COMPONENTS {
            let name = deployment_name(component);
            let label = format!("{}: Service {name}", r.name());
            let service = r.get("Service", &name);
            let pod_labels = &r.get("Deployment", &name)["spec"]["template"]["metadata"]["labels"];
            for (key, value) in service["spec"]["selector"].as_object().expect("selector") {
                assert_eq!(&pod_labels[key], value, "{label}: selects other pods");
            }
            assert!(
                service["spec"]["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["port"] == port)),
                "{label}: no port {port}"
            );
            if component == "edge" {
                assert!(
                    service["spec"]["type"].is_null() || service["spec"]["type"] == "ClusterIP",
                    "{label}: type"
                );
                assert_ne!(
                    service["spec"]["clusterIP"], "None",
                    "{label}: the edge's Service balances itself"
                );
            } else {
                // Headless: DNS returns every ready pod and the clients
                // spread their connections across them.
                assert_eq!(
                    service["spec"]["clusterIP"], "None",
                    "{label} should be headless"
                );
            }
        }

        // Every client reaches the internal services by their Service names.
        let targets = [
            ("edge", "VALORA_MARKETPLACE_ADDR", "marketplace"),
            ("edge", "VALORA_AUTH_ADDR", "auth"),
            ("marketplace", "VALORA_AUTH_ADDR", "auth"),
        ];
        for (client, variable, server) in targets {
            let (_, container) = pod_and_container(r, client);
            let value = env_value(container, variable)
                .unwrap_or_else(|| panic!("{}: valora-{client} sets no {variable}", r.name()));
            let port = COMPONENTS
                .iter()
                .find(|c| c.0 == server)
                .expect("server component")
                .1;
            for entry in value.split(',') {
                let (host, entry_port) = entry.trim().rsplit_once(':').expect("HOST:PORT");
                assert_eq!(
                    host.split('.').next(),
                    Some(deployment_name(server).as_str()),
                    "{}: valora-{client} {variable}={value}",
                    r.name()
                );
                assert_eq!(
                    entry_port,
                    port.to_string(),
                    "{}: valora-{client} {variable}={value}",
                    r.name()
                );
            }
        }
    }
}

#[test]
fn secrets_come_from_secret_objects() {
    let Some(rendered) = render_all() else { return };
    for r in rendered {
        assert!(
            r.all("Secret").is_empty(),
            "{}: Secrets are created outside the repository",
            r.name()
        );
        let mut pods: Vec<&Value> = COMPONENTS
            .iter()
            .map(|(component, _, _)| {
                &r.get("Deployment", &deployment_name(component))["spec"]["template"]["spec"]
            })
            .collect();
        pods.push(&r.get("Job", "valora-migrate")["spec"]["template"]["spec"]);
        for pod in pods {
            let volumes = pod["volumes"].as_array().expect("volumes");
            let containers = pod["containers"].as_array().into_iter().flatten();
            let init_containers = pod["initContainers"].as_array().into_iter().flatten();
            for container in containers.chain(init_containers) {
                let label = format!("{}: container {}", r.name(), container["name"]);
                for variable in SECRET_VALUE_VARIABLES {
                    assert!(
                        env_entry(container, variable).is_none(),
                        "{label} sets {variable}; use {variable}_FILE"
                    );
                }
                for variable in SECRET_URL_VARIABLES {
                    if let Some(entry) = env_entry(container, variable) {
                        assert!(
                            entry["value"].is_null(),
                            "{label}: {variable} is written into the manifest"
                        );
                        assert!(
                            entry["valueFrom"]["secretKeyRef"]["name"].is_string(),
                            "{label}: {variable} is not read from a Secret"
                        );
                    }
                }
                // Each *_FILE and AUTH_SIGNING_KEYS_DIR names a path inside
                // a mounted Secret.
                for entry in container["env"].as_array().into_iter().flatten() {
                    let variable = entry["name"].as_str().unwrap_or("");
                    if !(variable.ends_with("_FILE") || variable == "AUTH_SIGNING_KEYS_DIR") {
                        continue;
                    }
                    let path = entry["value"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{label}: {variable} has no value"));
                    let mount = container["volumeMounts"]
                        .as_array()
                        .and_then(|m| {
                            m.iter().find(|m| {
                                m["mountPath"]
                                    .as_str()
                                    .is_some_and(|p| Path::new(path).starts_with(p))
                            })
                        })
                        .unwrap_or_else(|| {
                            panic!("{label}: {variable}={path} is not inside a mounted volume")
                        });
                    let volume = volumes
                        .iter()
                        .find(|v| v["name"] == mount["name"])
                        .expect("the mounted volume");
                    assert!(
                        volume["secret"]["secretName"].is_string(),
                        "{label}: {variable}={path} is not in a Secret volume"
                    );
                }
            }
        }
    }
}

#[test]
fn migration_job_uses_owner_role() {
    let Some(rendered) = render_all() else { return };
    let docs_sql = std::fs::read_to_string(repo_root().join("docs/sql/service-roles.sql"))
        .expect("read service-roles.sql");
    for r in rendered {
        let job = r.get("Job", "valora-migrate");
        let pod = &job["spec"]["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never", "{}: restartPolicy", r.name());

        let init_containers = pod["initContainers"].as_array().expect("initContainers");
        let migrations: Vec<&Value> = init_containers.iter().map(|c| &c["args"]).collect();
        assert_eq!(
            migrations,
            [
                &serde_json::json!(["migrate", "marketplace"]),
                &serde_json::json!(["migrate", "auth"])
            ],
            "{}: the Job should migrate both services",
            r.name()
        );
        let service_secrets: Vec<String> = [("marketplace", "MARKETPLACE_DATABASE_URL"), ("auth", "AUTH_DATABASE_URL")]
            .iter()
            .map(|(component, variable)| {
                let (_, container) = pod_and_container(r, component);
                env_entry(container, variable).expect("database URL")["valueFrom"]["secretKeyRef"]["name"]
                    .as_str()
                    .expect("Secret name")
                    .to_owned()
            })
            .collect();
        let containers = pod["containers"].as_array().expect("containers");
        for container in init_containers.iter().chain(containers) {
            let label = format!("{}: valora-migrate/{}", r.name(), container["name"]);
            let url = env_entry(container, "VALORA_MIGRATE_DATABASE_URL")
                .unwrap_or_else(|| panic!("{label}: no owner URL"));
            let secret = url["valueFrom"]["secretKeyRef"]["name"]
                .as_str()
                .expect("Secret name");
            assert!(
                !service_secrets.iter().any(|s| s == secret),
                "{label}: migrations need the owner role, not a service role"
            );
        }

        // The grants container applies the rendered copy of the SQL.
        let sql_map = r
            .all("ConfigMap")
            .into_iter()
            .find(|m| m["data"]["service-roles.sql"].is_string())
            .unwrap_or_else(|| panic!("{}: no ConfigMap holds service-roles.sql", r.name()));
        assert_eq!(
            sql_map["data"]["service-roles.sql"],
            docs_sql.as_str(),
            "{}: grants differ from docs/sql",
            r.name()
        );
        let volumes = pod["volumes"].as_array().expect("volumes");
        assert!(
            volumes
                .iter()
                .any(|v| v["configMap"]["name"] == sql_map["metadata"]["name"]),
            "{}: the Job does not mount the grants",
            r.name()
        );
    }
}

/// An end of a connection, for evaluating network policies.
#[derive(Clone, Debug)]
enum Peer {
    /// A pod with these labels in this namespace.
    Pod {
        namespace: String,
        labels: BTreeMap<String, String>,
    },
    /// An address outside the cluster's pods.
    Address(IpAddr),
}

fn mesh_pod(component: &str) -> Peer {
    Peer::Pod {
        namespace: NAMESPACE.into(),
        labels: BTreeMap::from([
            ("app.kubernetes.io/name".into(), "valora".into()),
            ("app.kubernetes.io/component".into(), component.into()),
        ]),
    }
}

fn other_pod(namespace: &str, labels: &[(&str, &str)]) -> Peer {
    Peer::Pod {
        namespace: namespace.into(),
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

fn address(text: &str) -> Peer {
    Peer::Address(text.parse().expect("an IP address"))
}

/// Checks whether `cidr` (such as `10.0.0.0/8` or `fc00::/7`) contains
/// `address`.
fn cidr_contains(cidr: &str, address: IpAddr) -> bool {
    let (network, length) = cidr
        .split_once('/')
        .unwrap_or_else(|| panic!("{cidr} has no prefix length"));
    let network: IpAddr = network
        .parse()
        .unwrap_or_else(|_| panic!("{cidr} is not a network"));
    let length: u32 = length
        .parse()
        .unwrap_or_else(|_| panic!("{cidr} has an invalid prefix length"));
    let (network, address, bits) = match (network, address) {
        (IpAddr::V4(n), IpAddr::V4(a)) => (u128::from(u32::from(n)), u128::from(u32::from(a)), 32),
        (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
        _ => return false,
    };
    length == 0 || network >> (bits - length) == address >> (bits - length)
}

/// Checks whether a label selector selects `labels`. Only `matchLabels` is
/// evaluated, so a selector with `matchExpressions` fails the test.
fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    assert!(
        selector.get("matchExpressions").is_none(),
        "matchExpressions are not evaluated here: {selector}"
    );
    selector["matchLabels"].as_object().is_none_or(|wanted| {
        wanted
            .iter()
            .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    })
}

/// Checks whether one `from` or `to` entry of a policy rule matches `peer`.
fn peer_matches(entry: &Value, peer: &Peer) -> bool {
    if let Some(block) = entry.get("ipBlock") {
        let Peer::Address(address) = peer else {
            return false;
        };
        let excepted = block["except"].as_array().is_some_and(|e| {
            e.iter()
                .any(|c| cidr_contains(c.as_str().expect("except CIDR"), *address))
        });
        return cidr_contains(block["cidr"].as_str().expect("CIDR"), *address) && !excepted;
    }
    let Peer::Pod { namespace, labels } = peer else {
        return false;
    };
    let namespace_matches = match entry.get("namespaceSelector") {
        None => namespace == NAMESPACE,
        Some(selector) => selects(
            selector,
            &BTreeMap::from([("kubernetes.io/metadata.name".into(), namespace.clone())]),
        ),
    };
    namespace_matches && entry.get("podSelector").is_none_or(|s| selects(s, labels))
}

fn port_matches(rule: &Value, protocol: &str, port: u16) -> bool {
    let Some(ports) = rule["ports"].as_array().filter(|p| !p.is_empty()) else {
        return true;
    };
    ports.iter().any(|p| {
        let number = p.get("port").map(|n| {
            n.as_u64()
                .unwrap_or_else(|| panic!("named ports are not evaluated here: {p}"))
        });
        p["protocol"].as_str().unwrap_or("TCP") == protocol
            && number.is_none_or(|n| n == u64::from(port))
    })
}

/// Checks whether the policies that select the pod `subject` for `direction`
/// ("Ingress" or "Egress") allow traffic with `other` on `protocol`/`port`.
/// A pod that no policy selects for that direction allows everything.
fn direction_allows(
    policies: &[&Value],
    direction: &str,
    subject: &BTreeMap<String, String>,
    other: &Peer,
    protocol: &str,
    port: u16,
) -> bool {
    let (rules_key, peers_key) = if direction == "Ingress" {
        ("ingress", "from")
    } else {
        ("egress", "to")
    };
    let selecting: Vec<&&Value> = policies
        .iter()
        .filter(|p| {
            let types = p["spec"]["policyTypes"]
                .as_array()
                .expect("every policy lists its policyTypes");
            types.iter().any(|t| t == direction) && selects(&p["spec"]["podSelector"], subject)
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting
        .iter()
        .flat_map(|p| p["spec"][rules_key].as_array().into_iter().flatten())
        .any(|rule| {
            let peers_match = match rule[peers_key].as_array() {
                None => true,
                Some(peers) => {
                    peers.is_empty() || peers.iter().any(|entry| peer_matches(entry, other))
                }
            };
            peers_match && port_matches(rule, protocol, port)
        })
}

/// Checks whether a connection from `from` to `to` passes both the egress
/// policies of its source and the ingress policies of its destination (for
/// the ends that are pods in the mesh's namespace).
fn connection_allowed(
    policies: &[&Value],
    from: &Peer,
    to: &Peer,
    protocol: &str,
    port: u16,
) -> bool {
    let egress = match from {
        Peer::Pod { namespace, labels } if namespace == NAMESPACE => {
            direction_allows(policies, "Egress", labels, to, protocol, port)
        }
        _ => true,
    };
    let ingress = match to {
        Peer::Pod { namespace, labels } if namespace == NAMESPACE => {
            direction_allows(policies, "Ingress", labels, from, protocol, port)
        }
        _ => true,
    };
    egress && ingress
}

/// Picks an address that the egress rule for `port` in `policy` allows: the
/// first host of its first ipBlock, or a documentation address when the
/// rule allows any address.
fn allowed_destination(policy: &Value, port: u16) -> Peer {
    let rule = policy["spec"]["egress"]
        .as_array()
        .and_then(|rules| {
            rules.iter().find(|rule| {
                rule["ports"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p["port"] == port))
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "{} has no egress rule for port {port}",
                policy["metadata"]["name"]
            )
        });
    let Some(cidr) = rule["to"]
        .as_array()
        .and_then(|to| to.iter().find_map(|e| e["ipBlock"]["cidr"].as_str()))
    else {
        return address("192.0.2.10");
    };
    let network: std::net::Ipv4Addr = cidr
        .split('/')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("an IPv4 network");
    Peer::Address(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(network) + 1)))
}

/// A connection and whether the network policies should allow it.
struct Case {
    name: String,
    from: Peer,
    to: Peer,
    protocol: &'static str,
    port: u16,
    allowed: bool,
}

fn case(
    name: impl Into<String>,
    from: &Peer,
    to: &Peer,
    protocol: &'static str,
    port: u16,
    allowed: bool,
) -> Case {
    Case {
        name: name.into(),
        from: from.clone(),
        to: to.clone(),
        protocol,
        port,
        allowed,
    }
}

#[test]
fn network_policies_allow_mesh_paths_only() {
    let Some(rendered) = render_all() else { return };
    for r in rendered {
        let policies = r.all("NetworkPolicy");
        let default_deny = r.get("NetworkPolicy", "valora-default-deny");
        assert_eq!(
            default_deny["spec"]["podSelector"],
            serde_json::json!({}),
            "{}: default deny selects every pod",
            r.name()
        );
        assert!(
            default_deny["spec"]["ingress"].is_null() && default_deny["spec"]["egress"].is_null(),
            "{}: default deny allows nothing",
            r.name()
        );

        let [edge, auth, marketplace, migrate] =
            ["edge", "auth", "marketplace", "migrate"].map(mesh_pod);
        let database = allowed_destination(r.get("NetworkPolicy", "valora-auth"), 5432);
        let redis = allowed_destination(r.get("NetworkPolicy", "valora-edge"), 6379);
        let client = address("203.0.113.7");
        let receiver = address("198.51.100.20");
        let receiver_v6 = address("2606:4700::1111");
        let kube_dns = other_pod("kube-system", &[("k8s-app", "kube-dns")]);
        let prometheus = other_pod("monitoring", &[("app", "prometheus")]);
        let stranger = other_pod("default", &[("app", "shell")]);

        // One connection a line: name, source, destination, protocol,
        // port, and whether it is allowed.
        #[rustfmt::skip]
        let mut cases = vec![
            case("a client reaches the edge", &client, &edge, "TCP", 8080, true),
            case("a client reaches the marketplace", &client, &marketplace, "TCP", 50052, false),
            case("a client reaches auth", &client, &auth, "TCP", 50051, false),
            case("a client reaches an admin port", &client, &edge, "TCP", ADMIN_PORT, false),
            case("another namespace reaches the marketplace", &stranger, &marketplace, "TCP", 50052, false),
            case("another namespace reaches an admin port", &stranger, &auth, "TCP", ADMIN_PORT, false),
            case("edge reaches the marketplace", &edge, &marketplace, "TCP", 50052, true),
            case("edge reaches auth", &edge, &auth, "TCP", 50051, true),
            case("edge reaches Redis", &edge, &redis, "TCP", 6379, true),
            case("edge reaches PostgreSQL", &edge, &database, "TCP", 5432, false),
            case("edge reaches an admin port", &edge, &auth, "TCP", ADMIN_PORT, false),
            case("edge reaches the internet", &edge, &receiver, "TCP", 443, false),
            case("marketplace reaches auth", &marketplace, &auth, "TCP", 50051, true),
            case("marketplace reaches PostgreSQL", &marketplace, &database, "TCP", 5432, true),
            case("marketplace reaches the edge", &marketplace, &edge, "TCP", 8080, false),
            case("marketplace delivers a webhook", &marketplace, &receiver, "TCP", 443, true),
            case("marketplace delivers a webhook over IPv6", &marketplace, &receiver_v6, "TCP", 443, true),
            case("marketplace delivers to 10/8", &marketplace, &address("10.1.2.3"), "TCP", 443, false),
            case("marketplace delivers to 172.16/12", &marketplace, &address("172.20.0.1"), "TCP", 443, false),
            case("marketplace delivers to 192.168/16", &marketplace, &address("192.168.1.1"), "TCP", 443, false),
            case("marketplace delivers to cloud metadata", &marketplace, &address("169.254.169.254"), "TCP", 443, false),
            case("marketplace delivers to carrier-grade NAT", &marketplace, &address("100.64.0.1"), "TCP", 443, false),
            case("marketplace delivers to loopback", &marketplace, &address("127.0.0.1"), "TCP", 443, false),
            case("marketplace delivers to an IPv6 ULA", &marketplace, &address("fd00:ec2::254"), "TCP", 443, false),
            case("marketplace delivers to a pod", &marketplace, &auth, "TCP", 443, false),
            case("auth reaches PostgreSQL", &auth, &database, "TCP", 5432, true),
            case("auth reaches the marketplace", &auth, &marketplace, "TCP", 50052, false),
            case("auth reaches the internet", &auth, &receiver, "TCP", 443, false),
            case("migrations reach PostgreSQL", &migrate, &database, "TCP", 5432, true),
            case("migrations reach auth", &migrate, &auth, "TCP", 50051, false),
        ];
        for (component, pod) in [
            ("edge", &edge),
            ("auth", &auth),
            ("marketplace", &marketplace),
        ] {
            cases.push(case(
                format!("monitoring scrapes {component}"),
                &prometheus,
                pod,
                "TCP",
                ADMIN_PORT,
                true,
            ));
        }
        for (component, pod) in [
            ("edge", &edge),
            ("auth", &auth),
            ("marketplace", &marketplace),
            ("migrate", &migrate),
        ] {
            cases.push(case(
                format!("{component} resolves names"),
                pod,
                &kube_dns,
                "UDP",
                53,
                true,
            ));
            cases.push(case(
                format!("{component} resolves names over TCP"),
                pod,
                &kube_dns,
                "TCP",
                53,
                true,
            ));
            cases.push(case(
                format!("{component} reaches the internet on 80"),
                pod,
                &receiver,
                "TCP",
                80,
                false,
            ));
        }

        let failures: Vec<String> = cases
            .iter()
            .filter(|c| {
                connection_allowed(&policies, &c.from, &c.to, c.protocol, c.port) != c.allowed
            })
            .map(|c| {
                format!(
                    "{} ({}/{}): expected {}",
                    c.name,
                    c.protocol,
                    c.port,
                    if c.allowed { "allowed" } else { "denied" }
                )
            })
            .collect();
        assert!(
            failures.is_empty(),
            "{}: network policies:\n{}",
            r.name(),
            failures.join("\n")
        );

        // Production names the database's and Redis's networks instead of
        // allowing their ports at any address.
        if r.is_production() {
            for policy in &policies {
                for rule in policy["spec"]["egress"].as_array().into_iter().flatten() {
                    let names_port = |port: u16| {
                        rule["ports"]
                            .as_array()
                            .is_some_and(|p| p.iter().any(|p| p["port"] == port))
                    };
                    if names_port(5432) || names_port(6379) {
                        assert!(
                            rule["to"].as_array().is_some_and(|to| !to.is_empty()),
                            "{}: {} allows PostgreSQL or Redis at any address",
                            r.name(),
                            policy["metadata"]["name"]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn production_overlay_pins_release() {
    let Some(rendered) = render_all() else { return };
    let production = rendered
        .iter()
        .find(|r| r.is_production())
        .expect("overlays/production is rendered");
    for (component, _, _) in COMPONENTS {
        let (_, container) = pod_and_container(production, component);
        let image = container["image"].as_str().expect("image");
        let (repository, reference) = image.rsplit_once([':', '@']).unwrap_or((image, ""));
        assert!(
            repository.contains('/'),
            "valora-{component}: image {image} names no registry"
        );
        assert!(
            !reference.is_empty() && reference != "latest",
            "valora-{component}: image {image} is not pinned to a release"
        );
    }
    let (_, edge) = pod_and_container(production, "edge");
    assert!(
        env_value(edge, "VALORA_CORS_ALLOW_ORIGINS").is_some_and(|v| !v.is_empty()),
        "production sets CORS origins"
    );
    assert!(
        env_value(edge, "VALORA_TRUSTED_PROXIES").is_some_and(|v| !v.is_empty()),
        "production sets trusted proxies"
    );
    assert!(
        env_entry(edge, "VALORA_REDIS_URL").is_some(),
        "production shares rate limits through Redis"
    );
}
