//! A Python grpcio client, generated from `proto/`, calls through the edge.

use std::process::Command;

use crate::support::{DevMesh, KEY, MeshOptions, in_ci, repo_root};

const CLIENT: &str = r#"
import sys
import grpc
sys.path.insert(0, sys.argv[1])
from valora.marketplace.v1 import marketplace_pb2 as pb, marketplace_pb2_grpc as rpc

channel = grpc.insecure_channel(sys.argv[2])
stub = rpc.MarketplaceServiceStub(channel)
key = [("x-api-key", sys.argv[3])]
created = stub.CreateListing(pb.CreateListingRequest(
    title="From Python", category="books",
    price=pb.Money(currency_code="GBP", amount_minor=999)), metadata=key)
listed = stub.ListListings(pb.ListListingsRequest(query="python"), metadata=key)
assert [l.id for l in listed.listings] == [created.listing.id], listed
try:
    stub.ListListings(pb.ListListingsRequest(), metadata=[("x-api-key", "wrong")])
    raise SystemExit("a wrong key was accepted")
except grpc.RpcError as error:
    assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error.code()
print("ok", created.listing.id)
"#;

fn python_has_grpc_tools() -> bool {
    Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn python_grpcio_client_through_edge() {
    if !python_has_grpc_tools() {
        assert!(!in_ci(), "python3 with grpcio and grpcio-tools is required in CI");
        eprintln!("skipping: python3 with grpcio and grpcio-tools is not installed");
        return;
    }
    let mesh = DevMesh::start(MeshOptions::default()).await;
    let out = tempfile::tempdir().unwrap();
    let proto = repo_root().join("proto");
    let generated = Command::new("python3")
        .args(["-m", "grpc_tools.protoc"])
        .arg(format!("-I{}", proto.display()))
        .arg(format!("--python_out={}", out.path().display()))
        .arg(format!("--grpc_python_out={}", out.path().display()))
        .arg(proto.join("valora/marketplace/v1/marketplace.proto"))
        .status()
        .expect("run grpc_tools.protoc");
    assert!(generated.success(), "code generation failed");
    let output = Command::new("python3")
        .args(["-c", CLIENT])
        .arg(out.path())
        .arg(mesh.edge())
        .arg(KEY)
        .output()
        .expect("run the Python client");
    assert!(
        output.status.success(),
        "Python client failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).starts_with("ok "));
}
