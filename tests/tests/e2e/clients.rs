//! The client kit against a real `valora dev`: valora-client's example
//! programs, a server of another identity refused with both identities
//! named, and every snippet of docs/clients.md run as written.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use tonic::Code;
use valora_client::marketplace::v1::{
    BillingInterval, CreateListingRequest, CreatePlanRequest, ListListingsRequest, Money, PublishListingRequest,
};
use valora_client::{Calls, ClientError, Identity, MeshChannelBuilder, explain, identity_mismatch, marketplace_client};

use crate::python::generate_clients;
use crate::support::{DevMesh, KEY, MeshOptions, repo_root, tool};

/// Time limit of one run of an example program or snippet.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// The example programs of valora-client by name, built once per test run.
///
/// `cargo test -p valora-e2e` builds no example of another package, and a
/// binary found under target/ may be missing or older than the source. So
/// the first caller runs `cargo build -p valora-client --examples` with the
/// cargo that runs the tests, in the same target folder and profile (a
/// no-op when the examples are fresh), and takes the paths from cargo's
/// JSON messages, which are right whatever the target folder. Cargo holds
/// no lock on the target folder while tests run, so this build waits only
/// for other cargo commands.
fn examples() -> &'static HashMap<String, PathBuf> {
    static EXAMPLES: OnceLock<HashMap<String, PathBuf>> = OnceLock::new();
    EXAMPLES.get_or_init(build_examples)
}

fn build_examples() -> HashMap<String, PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "-p", "valora-client", "--examples", "--message-format=json-render-diagnostics"])
        .current_dir(repo_root())
        .stdin(Stdio::null());
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    let output = command.output().expect("run cargo build -p valora-client --examples");
    assert!(
        output.status.success(),
        "cargo build -p valora-client --examples failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut examples = HashMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let is_example = message["reason"] == "compiler-artifact"
            && message["target"]["kind"].as_array().is_some_and(|kinds| kinds.iter().any(|k| k == "example"));
        if let (true, Some(name), Some(path)) =
            (is_example, message["target"]["name"].as_str(), message["executable"].as_str())
        {
            examples.insert(name.to_owned(), PathBuf::from(path));
        }
    }
    for name in ["list_published_listings", "rotate_plan", "mesh_quickstart"] {
        assert!(examples.contains_key(name), "cargo built no example {name}: {examples:?}");
    }
    examples
}

/// Runs `program` in `dir` with only the given `VALORA_*` and
/// `MARKETPLACE_*` variables set.
async fn run_program(program: &Path, args: &[&str], env: &[(&str, String)], dir: &Path) -> Output {
    let mut command = tokio::process::Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null()).kill_on_drop(true);
    for (name, _) in std::env::vars() {
        if name.starts_with("VALORA_") || name.starts_with("MARKETPLACE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{} did not finish within {RUN_TIMEOUT:?}", program.display()))
        .unwrap_or_else(|error| panic!("cannot start {}: {error}", program.display()))
}

/// Asserts that a run succeeded and returns its standard output.
fn succeeded(output: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Creates a listing with a plan through the edge and publishes it.
async fn publish_listing(mesh: &DevMesh, title: &str) {
    let mut client = mesh.client(KEY).await;
    let price = Money { currency_code: "EUR".to_owned(), amount_minor: 4200 };
    let listing = client
        .create_listing(CreateListingRequest {
            title: title.to_owned(),
            description: "Published by the clients test".to_owned(),
            category: "tests".to_owned(),
            price: Some(price.clone()),
        })
        .await
        .expect("CreateListing")
        .into_inner()
        .listing
        .expect("a listing");
    client
        .create_plan(CreatePlanRequest {
            listing_id: listing.id.clone(),
            name: "Buy now".to_owned(),
            price: Some(price),
            interval: BillingInterval::OneTime.into(),
        })
        .await
        .expect("CreatePlan");
    client.publish_listing(PublishListingRequest { id: listing.id }).await.expect("PublishListing");
}

/// Settings of the examples that call the marketplace directly.
fn direct_env(mesh: &DevMesh, address: String) -> Vec<(&'static str, String)> {
    vec![
        ("VALORA_MARKETPLACE_ADDR", address),
        ("VALORA_CERTS_DIR", mesh.layout.certs_dir().display().to_string()),
        ("MARKETPLACE_API_KEY", KEY.to_owned()),
    ]
}

/// The line of `stdout` that starts with `prefix`.
fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find(|line| line.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line starts with {prefix:?}:\n{stdout}"))
}

#[tokio::test]
async fn example_programs_run_against_a_dev_mesh() {
    let examples = examples();
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let title = format!("Listed by the example {}", uuid::Uuid::new_v4().simple());
    publish_listing(&mesh, &title).await;
    let dir = mesh.layout.dir.path();

    // list_published_listings calls through the edge.
    let env = [("VALORA_EDGE_URL", format!("http://{}", mesh.edge())), ("MARKETPLACE_API_KEY", KEY.to_owned())];
    let output = run_program(&examples["list_published_listings"], &[], &env, dir).await;
    let stdout = succeeded(&output, "list_published_listings");
    assert!(stdout.contains(&title), "{stdout}");
    assert!(stdout.contains("1 published listings"), "{stdout}");

    // rotate_plan calls the marketplace directly. The first run creates the
    // listing and its plan; the second finds them and rotates again.
    let env = direct_env(&mesh, mesh.layout.marketplace.to_string());
    let output = run_program(&examples["rotate_plan"], &[], &env, dir).await;
    let first = succeeded(&output, "rotate_plan");
    assert!(first.contains("created listing \"Rotate plan example\""), "{first}");
    assert!(first.contains("created plan"), "{first}");
    let retired = line(&first, "retired plan: ");
    assert!(retired.contains("revision 1 1000 EUR Retired"), "{first}");
    let new = line(&first, "new plan: ");
    assert!(new.contains("revision 2 1100 EUR Active"), "{first}");

    let output = run_program(&examples["rotate_plan"], &[], &env, dir).await;
    let second = succeeded(&output, "rotate_plan, second run");
    assert!(!second.contains("created"), "the second run created again:\n{second}");
    assert_eq!(line(&second, "listing "), line(&first, "listing "), "the second run used another listing");
    assert!(line(&second, "retired plan: ").contains("revision 2 1100 EUR Retired"), "{second}");
    assert!(line(&second, "new plan: ").contains("revision 3 1200 EUR Active"), "{second}");
}

#[tokio::test]
async fn a_server_of_another_identity_is_refused_naming_both() {
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let marketplace = mesh.layout.marketplace.to_string();
    // The marketplace's port, but the client expects the auth service.
    let builder = MeshChannelBuilder::new(&marketplace)
        .certs_dir(mesh.layout.certs_dir())
        .identity(Identity::engineer())
        .target(Identity::auth());
    let expected = "spiffe://valora.internal/auth";
    let presented = "spiffe://valora.internal/marketplace";

    // The lazily connecting channel fails the first call.
    let mut client = marketplace_client(builder.build().unwrap(), Calls::new().api_key(KEY).unwrap());
    let status = client.list_listings(ListListingsRequest::default()).await.expect_err("a call to the wrong server");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let explanation = explain(&status);
    assert!(
        explanation.contains(&format!("expected {expected}, the server presented {presented}")),
        "explain() does not name both identities: {explanation}"
    );
    let mismatch = identity_mismatch(&status).expect("identity_mismatch finds the mismatch");
    assert_eq!((mismatch.expected, mismatch.presented), (Identity::auth(), Identity::marketplace()));
    let error = ClientError::from(status);
    assert!(error.to_string().contains(presented) && error.to_string().contains(expected), "{error}");

    // connect() finds it with its handshake, before any call.
    let error = builder.connect().await.expect_err("connect to the wrong server");
    assert!(matches!(error, ClientError::IdentityMismatch { .. }), "{error}");
    assert_eq!(
        error.to_string(),
        format!("the server at {marketplace} presented identity {presented}, expected {expected}")
    );

    // The same certificates reach the marketplace when it is the target.
    let channel = builder.target(Identity::marketplace()).connect().await.expect("connect to the marketplace");
    let mut client = marketplace_client(channel, Calls::new().api_key(KEY).unwrap());
    client.list_listings(ListListingsRequest::default()).await.expect("ListListings");

    // An example program pointed at the auth service's port reports both
    // identities too.
    let env = direct_env(&mesh, mesh.layout.auth.to_string());
    let output = run_program(&examples()["mesh_quickstart"], &[], &env, mesh.layout.dir.path()).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "mesh_quickstart accepted the auth service as the marketplace");
    assert!(
        stderr.contains("expected spiffe://valora.internal/marketplace, the server presented spiffe://valora.internal/auth"),
        "{stderr}"
    );
}

/// A fenced block of docs/clients.md and its `<!-- snippet: KIND ARG -->`
/// marker.
#[derive(Debug)]
struct Snippet {
    kind: String,
    argument: String,
    body: String,
}

/// The kinds of snippet this file knows how to check.
const KINDS: [&str; 6] = ["rust", "browser", "generate", "python", "grpcurl-edge", "grpcurl-direct"];

/// Every fenced block of docs/clients.md with its marker. A block without
/// a marker on the line before it (blank lines aside) fails the test, so
/// that no snippet goes unchecked.
fn snippets() -> Vec<Snippet> {
    let path = repo_root().join("docs/clients.md");
    let text = std::fs::read_to_string(&path).expect("docs/clients.md");
    let mut snippets = Vec::new();
    let mut marker: Option<(String, String)> = None;
    let mut open: Option<(String, String, Vec<&str>)> = None;
    for (index, line) in text.lines().enumerate() {
        if let Some((kind, argument, body)) = open.as_mut() {
            if line.trim_start().starts_with("```") {
                let mut text = body.join("\n");
                text.push('\n');
                snippets.push(Snippet { kind: kind.clone(), argument: argument.clone(), body: text });
                open = None;
            } else {
                body.push(line);
            }
            continue;
        }
        if line.trim_start().starts_with("```") {
            let (kind, argument) = marker.take().unwrap_or_else(|| {
                panic!("docs/clients.md:{}: a fenced block without a <!-- snippet: KIND --> marker", index + 1)
            });
            open = Some((kind, argument, Vec::new()));
        } else if let Some(inner) = line.trim().strip_prefix("<!-- snippet:").and_then(|l| l.strip_suffix("-->")) {
            let mut words = inner.split_whitespace();
            let kind = words.next().unwrap_or_default().to_owned();
            marker = Some((kind, words.collect::<Vec<_>>().join(" ")));
        } else if !line.trim().is_empty() {
            marker = None;
        }
    }
    assert!(open.is_none(), "docs/clients.md ends inside a fenced block");
    snippets
}

/// The one snippet of `kind`.
fn snippet(kind: &str) -> Snippet {
    let mut found: Vec<Snippet> = snippets().into_iter().filter(|s| s.kind == kind).collect();
    assert_eq!(found.len(), 1, "docs/clients.md should have exactly one {kind} snippet");
    found.remove(0)
}

/// Replaces the development default `from` in a snippet, which must
/// contain it.
fn substitute(body: &str, from: &str, to: &str) -> String {
    assert!(body.contains(from), "the snippet no longer contains {from:?}:\n{body}");
    body.replace(from, to)
}

/// Prepares the mesh's folder like a repository where `valora dev` runs:
/// the key in `.valora/dev-api-key` and the certificates in `certs-dev/`.
fn dev_layout(mesh: &DevMesh) -> &Path {
    let dir = mesh.layout.dir.path();
    std::fs::create_dir_all(dir.join(".valora")).unwrap();
    std::fs::write(dir.join(".valora/dev-api-key"), format!("{KEY}\n")).unwrap();
    if !dir.join("certs-dev").exists() {
        std::os::unix::fs::symlink(mesh.layout.certs_dir(), dir.join("certs-dev")).unwrap();
    }
    dir
}

/// Runs a shell snippet with bash in `dir`, stopping at the first failure.
async fn run_shell(script: &str, dir: &Path) -> Output {
    run_program(Path::new("bash"), &["-euo", "pipefail", "-c", script], &[], dir).await
}

#[test]
fn every_docs_snippet_is_marked_with_a_known_kind() {
    let kinds: BTreeSet<String> = snippets().iter().map(|s| s.kind.clone()).collect();
    let known: BTreeSet<String> = KINDS.iter().map(|k| (*k).to_owned()).collect();
    assert_eq!(kinds, known, "docs/clients.md has other snippet kinds than this test checks");
}

#[tokio::test]
async fn docs_rust_snippet_is_an_example_that_runs() {
    let rust = snippet("rust");
    let file = repo_root().join(&rust.argument);
    let source = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    assert_eq!(rust.body, source, "the Rust snippet of docs/clients.md differs from {}", rust.argument);
    let name = file.file_stem().and_then(|s| s.to_str()).expect("example name");
    let program = &examples()[name];

    let mesh = DevMesh::start(MeshOptions::default()).await;
    publish_listing(&mesh, "Counted by the Rust snippet").await;
    let env = direct_env(&mesh, mesh.layout.marketplace.to_string());
    let output = run_program(program, &[], &env, mesh.layout.dir.path()).await;
    let stdout = succeeded(&output, name);
    assert_eq!(stdout.trim(), "1 listings visible");
}

#[test]
fn docs_browser_snippet_is_the_tested_page_code() {
    // The browser test (browser.rs) runs tests/browser/src/app.ts in
    // Chromium; every excerpt the documentation shows must be in it as is.
    let browser = snippet("browser");
    let page = std::fs::read_to_string(repo_root().join(&browser.argument)).expect("the page source");
    let excerpts: Vec<&str> = browser.body.split("// …\n").collect();
    assert!(excerpts.len() > 1, "the browser snippet has no excerpts");
    for excerpt in excerpts {
        assert!(
            page.contains(excerpt),
            "this excerpt of the browser snippet is not in {}:\n{excerpt}",
            browser.argument
        );
    }
}

#[tokio::test]
async fn docs_python_snippet_runs_with_the_generated_code() {
    let generate = snippet("generate");
    assert_eq!(
        generate.body, "proto/generate.sh\n",
        "generate_clients runs proto/generate.sh; keep the documented command and the test together"
    );
    let Some(generated) = generate_clients() else { return };
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let title = format!("Listed by the Python snippet {}", uuid::Uuid::new_v4().simple());
    publish_listing(&mesh, &title).await;
    let dir = dev_layout(&mesh);

    let python = substitute(&snippet("python").body, "\"127.0.0.1:8080\"", &format!("\"{}\"", mesh.edge()));
    std::fs::write(dir.join("list_published.py"), python).unwrap();
    let mut command = tokio::process::Command::new("python3");
    command
        .arg("list_published.py")
        .env("PYTHONPATH", generated.python())
        .current_dir(dir)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("the Python snippet finished in time")
        .expect("start python3");
    let stdout = succeeded(&output, "the Python snippet");
    assert!(stdout.contains(&title), "{stdout}");
}

#[tokio::test]
async fn docs_grpcurl_snippets_run() {
    if tool("grpcurl").is_none() {
        return;
    }
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let title = format!("Listed by the grpcurl snippets {}", uuid::Uuid::new_v4().simple());
    publish_listing(&mesh, &title).await;
    let dir = dev_layout(&mesh);

    let edge = substitute(&snippet("grpcurl-edge").body, "EDGE=127.0.0.1:8080", &format!("EDGE={}", mesh.edge()));
    let output = run_shell(&edge, dir).await;
    let stdout = succeeded(&output, "the grpcurl snippet through the edge");
    assert!(stdout.contains("valora.marketplace.v1.MarketplaceService"), "{stdout}");
    assert!(stdout.contains(&title), "{stdout}");

    let direct = substitute(
        &snippet("grpcurl-direct").body,
        "MARKETPLACE=127.0.0.1:50052",
        &format!("MARKETPLACE={}", mesh.layout.marketplace),
    );
    let output = run_shell(&direct, dir).await;
    let stdout = succeeded(&output, "the grpcurl snippet with the engineer certificate");
    assert!(stdout.contains("valora.marketplace.v1.MarketplaceService"), "{stdout}");
    assert!(stdout.contains(&title), "{stdout}");

    // The same command refuses a server of another identity: the auth
    // service's certificate is not the marketplace's.
    let wrong = direct.replace(
        &format!("MARKETPLACE={}", mesh.layout.marketplace),
        &format!("MARKETPLACE={}", mesh.layout.auth),
    );
    let output = run_shell(&wrong, dir).await;
    assert!(!output.status.success(), "grpcurl accepted the auth service as the marketplace");
}
