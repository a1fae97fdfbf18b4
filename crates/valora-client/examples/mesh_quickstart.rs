//! Calls the marketplace directly over mutual TLS as the engineer identity
//! and prints how many listings the API key can see.
//!
//! Settings: `VALORA_MARKETPLACE_ADDR` (default `127.0.0.1:50052`),
//! `VALORA_CERTS_DIR` (default `certs-dev`) and `MARKETPLACE_API_KEY`.

use valora_client::marketplace::v1::ListListingsRequest;
use valora_client::{Calls, ClientError, Identity, MeshChannelBuilder, marketplace_client};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let address = std::env::var("VALORA_MARKETPLACE_ADDR").unwrap_or_else(|_| "127.0.0.1:50052".into());
    let certs = std::env::var("VALORA_CERTS_DIR").unwrap_or_else(|_| "certs-dev".into());
    let key = std::env::var("MARKETPLACE_API_KEY").unwrap_or_default();

    // The engineer's certificate (certs/engineer.pem and .key, checked
    // against certs/ca.pem) is presented; only a server that proves it is
    // spiffe://valora.internal/marketplace is accepted.
    let channel = MeshChannelBuilder::new(address)
        .certs_dir(certs)
        .identity(Identity::engineer())
        .target(Identity::marketplace())
        .build()?;

    // Every call carries the API key, and a 10-second deadline unless the
    // request sets its own.
    let mut marketplace = marketplace_client(channel, Calls::new().api_key(&key)?);
    let response = marketplace.list_listings(ListListingsRequest::default()).await?;
    println!("{} listings visible", response.get_ref().listings.len());
    Ok(())
}
