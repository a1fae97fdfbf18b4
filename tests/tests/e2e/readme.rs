//! The README's grpcurl walkthrough runs as written.

use std::process::Command;

use crate::support::{DevMesh, KEY, MeshOptions, repo_root, tool};

/// The shell block between the walkthrough markers of README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).expect("README.md");
    let start = readme.find("<!-- walkthrough:start -->").expect("start marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("end marker");
    let block = &readme[start..end];
    let body = block.split_once("```sh\n").expect("sh block").1;
    body.split_once("```").expect("block end").0.to_owned()
}

#[tokio::test]
async fn readme_walkthrough_runs_as_written() {
    if tool("grpcurl").is_none() || tool("jq").is_none() {
        return;
    }
    let mesh = DevMesh::start(MeshOptions::default()).await;
    // The block reads the key from the development key file and talks to
    // the default edge address; point both at this test's mesh.
    let workdir = mesh.layout.dir.path();
    std::fs::create_dir_all(workdir.join(".valora")).unwrap();
    std::fs::write(workdir.join(".valora/dev-api-key"), format!("{KEY}\n")).unwrap();
    let script = walkthrough().replace("EDGE=127.0.0.1:8080", &format!("EDGE={}", mesh.edge()));
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(workdir)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "walkthrough failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("LISTING_STATUS_PUBLISHED"), "{stdout}");
    assert!(stdout.contains("Vintage camera"), "{stdout}");
}
