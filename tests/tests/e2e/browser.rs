//! A real browser calls the edge with grpc-web: headless Chromium runs a
//! page built from `proto/` with protobuf-es and Connect-ES, driven by
//! `tests/browser/run.mjs`, which prints what the page saw as JSON.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::{DevMesh, KEY, MeshOptions, free_port, in_ci, repo_root, tool};

/// Debian's Chromium, which `.ci/run` installs.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Time limit of one run.mjs run, above run.mjs's own limit of 120 s.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);
/// Listings run.mjs creates while the page watches WatchListingEvents.
const WATCHED_LISTINGS: usize = 3;

/// Reports a missing `requirement`: a skip outside CI, a failure in CI.
fn missing(requirement: &str) {
    assert!(!in_ci(), "{requirement} is required in CI but is missing; .ci/run installs it");
    eprintln!("skipping: {requirement} is missing");
}

/// Returns the node binary when node, Chromium and the npm packages of
/// `tests/browser` are all installed.
fn browser_tools() -> Option<PathBuf> {
    let node = tool("node")?;
    if !Path::new(CHROMIUM).is_file() {
        missing(&format!("Chromium at {CHROMIUM} (Debian package chromium)"));
        return None;
    }
    let modules = repo_root().join("tests/browser/node_modules");
    if !modules.is_dir() {
        missing(&format!("{} (run npm ci in tests/browser)", modules.display()));
        return None;
    }
    Some(node)
}

/// Runs `node tests/browser/run.mjs` from the repository root and returns
/// the JSON line it prints.
async fn run_browser(node: &Path, edge: &str, allowed_port: u16, disallowed_port: u16) -> Value {
    let mut command = tokio::process::Command::new(node);
    command
        .arg("tests/browser/run.mjs")
        .arg(edge)
        .arg(KEY)
        .arg(allowed_port.to_string())
        .arg(disallowed_port.to_string())
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("run.mjs did not finish within {RUN_TIMEOUT:?}"))
        .expect("start node tests/browser/run.mjs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "run.mjs failed before the scenarios completed ({}):\nstderr:\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    let line = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .unwrap_or_else(|error| panic!("run.mjs printed no JSON line ({error}):\n{stdout}\nstderr:\n{stderr}"))
}

/// Asserts that a page call succeeded and returns its result.
fn succeeded<'a>(result: &'a Value, call: &str) -> &'a Value {
    assert_eq!(result["ok"], true, "{call} failed in the browser: {result:#}");
    result
}

/// Asserts that a page call failed with the gRPC status `code` (a name of
/// Connect's `Code` enum) and returns the status message.
fn failed_with<'a>(result: &'a Value, code: &str, call: &str) -> &'a str {
    assert_eq!(result["ok"], false, "{call} succeeded in the browser but should fail with {code}: {result:#}");
    assert_eq!(result["code"], code, "{call} failed with the wrong status code: {result:#}");
    result["message"].as_str().unwrap_or_default()
}

fn number(value: &Value, field: &str) -> f64 {
    value.as_f64().unwrap_or_else(|| panic!("{field} is not a number: {value}"))
}

fn string<'a>(value: &'a Value, field: &str) -> &'a str {
    value.as_str().unwrap_or_else(|| panic!("{field} is not a string: {value}"))
}

fn array<'a>(value: &'a Value, field: &str) -> &'a Vec<Value> {
    value.as_array().unwrap_or_else(|| panic!("{field} is not an array: {value}"))
}

#[tokio::test]
async fn chromium_grpc_web_through_edge() {
    let Some(node) = browser_tools() else { return };
    let allowed_port = free_port();
    let disallowed_port = free_port();
    assert_ne!(allowed_port, disallowed_port, "free_port returned the same port twice");
    let allowed_origin = format!("http://127.0.0.1:{allowed_port}");
    let mesh = DevMesh::start(MeshOptions {
        env: vec![("VALORA_CORS_ALLOW_ORIGINS".into(), allowed_origin.clone())],
        ..Default::default()
    })
    .await;

    let report = run_browser(&node, &format!("http://{}", mesh.edge()), allowed_port, disallowed_port).await;
    eprintln!("browser report: {report}");

    assert_eq!(report["allowedOrigin"], allowed_origin.as_str(), "run.mjs served the page on another origin");
    let page_errors = array(&report["allowedBrowser"]["pageErrors"], "allowedBrowser.pageErrors");
    assert!(page_errors.is_empty(), "the page threw uncaught errors: {page_errors:?}");

    check_unary_calls(&report);
    check_watch_stream(&report);
    check_error_statuses(&report);
    check_disallowed_origin(&report);
}

/// Checks that ListListings and CreateListing work from the allowed origin.
fn check_unary_calls(report: &Value) {
    succeeded(&report["listBefore"], "ListListings");
    let created = succeeded(&report["create"], "CreateListing");
    let id = string(&created["id"], "create.id");
    assert!(!id.is_empty(), "CreateListing returned an empty id: {created:#}");
    assert!(
        string(&created["title"], "create.title").starts_with("Browser listing "),
        "CreateListing returned another title: {created:#}"
    );
    let listed = succeeded(&report["listAfterCreate"], "ListListings after CreateListing");
    let ids = array(&listed["ids"], "listAfterCreate.ids");
    assert_eq!(ids.len(), 1, "ListListings with the listing's nonce should find exactly the new listing: {listed:#}");
    assert_eq!(ids[0], id, "ListListings found another listing than the one created: {listed:#}");
}

/// Checks that WatchListingEvents delivers each event while the stream stays
/// open, so the event of listing N reaches the page before listing N+1 is
/// requested.
fn check_watch_stream(report: &Value) {
    let watch = &report["watch"];
    assert_eq!(
        watch["start"]["opened"], true,
        "WatchListingEvents sent no response headers within 10 s: {:#}",
        watch["start"]
    );
    let steps = array(&watch["steps"], "watch.steps");
    assert_eq!(steps.len(), WATCHED_LISTINGS, "run.mjs ran another number of watch steps: {watch:#}");
    let received = &watch["stop"]["events"];
    let events = array(received, "watch.stop.events");
    for (index, step) in steps.iter().enumerate() {
        succeeded(&step["created"], &format!("CreateListing {} during the watch", index + 1));
        assert_eq!(
            step["eventSeen"], true,
            "the event of listing {} did not reach the page within 5 s, so the next listing was created \
             without it: the stream is not delivered incrementally. Events: {received:#}",
            index + 1
        );
    }
    assert_eq!(
        events.len(),
        WATCHED_LISTINGS,
        "the page should receive one event per listing created during the watch: {received:#}"
    );

    for (index, (step, event)) in steps.iter().zip(events).enumerate() {
        let listing = index + 1;
        let created = &step["created"];
        assert_eq!(event["type"], "CREATED", "event {listing} has the wrong type: {event:#}");
        assert_eq!(event["listingId"], created["id"], "event {listing} is about another listing: {event:#}");
        let arrived = number(&event["arrivedAt"], "arrivedAt");
        let requested = number(&created["requestedAt"], "requestedAt");
        assert!(
            arrived > requested,
            "event {listing} arrived at {arrived} before its listing was requested at {requested}"
        );
        if let Some(next) = steps.get(index + 1) {
            let next_requested = number(&next["created"]["requestedAt"], "requestedAt");
            assert!(
                arrived < next_requested,
                "event {listing} arrived at {arrived}, after listing {} was requested at {next_requested}: \
                 the stream held the event back",
                listing + 1
            );
        }
    }

    let stopped = number(&watch["stop"]["stoppedAt"], "stoppedAt");
    let last = number(&events[WATCHED_LISTINGS - 1]["arrivedAt"], "arrivedAt");
    assert!(last < stopped, "the last event arrived at {last}, after the page cancelled the stream at {stopped}");
    let end = &watch["stop"]["end"];
    assert_eq!(
        end["code"], "Canceled",
        "the stream should stay open until the page cancels it, but it ended otherwise: {end:#}"
    );
}

/// Checks that error statuses, sent as trailers-only responses, reach the
/// page script with their code, message and details through CORS.
fn check_error_statuses(report: &Value) {
    let errors = &report["errors"];

    let wrong_key = &errors["wrongKey"];
    let message = failed_with(wrong_key, "Unauthenticated", "ListListings with a wrong API key");
    assert!(message.contains("invalid API key"), "the wrong-key message does not say why: {wrong_key:#}");
    let sent_key = string(&errors["wrongKeySent"], "errors.wrongKeySent");
    assert!(!message.contains(sent_key), "the wrong-key message contains the key: {wrong_key:#}");

    failed_with(&errors["unknownId"], "NotFound", "GetListing of an unknown id");

    let empty_title = &errors["emptyTitle"];
    let message = failed_with(empty_title, "InvalidArgument", "CreateListing with an empty title");
    assert!(message.contains("title"), "the InvalidArgument message does not name the field title: {empty_title:#}");
    let details = array(&empty_title["detailTypes"], "emptyTitle.detailTypes");
    assert!(
        details.iter().any(|detail| detail == "google.rpc.BadRequest"),
        "the page could not read the google.rpc.BadRequest details (grpc-status-details-bin): {empty_title:#}"
    );
}

/// Checks that the page on the disallowed origin cannot call the edge. The
/// CORS preflight fails, so the browser never sends the call itself.
fn check_disallowed_origin(report: &Value) {
    let disallowed = &report["disallowed"];
    for call in ["list", "create"] {
        let result = &disallowed[call];
        assert_eq!(result["ok"], false, "{call} from the disallowed origin succeeded: {result:#}");
        assert!(
            string(&result["cause"], "cause").contains("Failed to fetch"),
            "{call} from the disallowed origin failed, but not as fetch does when CORS blocks a request: {result:#}"
        );
    }
    let console = array(&disallowed["browser"]["console"], "disallowed.browser.console");
    assert!(
        console.iter().any(|line| line.as_str().is_some_and(|text| text.contains("blocked by CORS policy"))),
        "Chromium did not report a CORS block on the disallowed origin; its console: {console:#?}"
    );
    let visible = succeeded(&disallowed["createVisibleFromAllowedOrigin"], "ListListings of the blocked listing");
    let ids = array(&visible["ids"], "createVisibleFromAllowedOrigin.ids");
    assert!(ids.is_empty(), "CreateListing from the disallowed origin reached the marketplace: {visible:#}");
}
