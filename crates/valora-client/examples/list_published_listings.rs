//! Lists every published listing, page by page, THROUGH THE EDGE.
//!
//! Settings, from environment variables:
//!
//! - `VALORA_EDGE_URL`: the edge, `http://HOST:PORT` (cleartext HTTP/2, as
//!   `valora dev` serves it) or `https://HOST[:PORT]` (TLS, checked against
//!   the system's roots); default `http://127.0.0.1:8080`.
//! - `VALORA_EDGE_CA`: optional PEM file of the CA that signed an
//!   `https://` edge's certificate, trusted instead of the system's roots.
//! - `MARKETPLACE_API_KEY`: the API key sent in `x-api-key` (required); for
//!   `valora dev`, the content of `.valora/dev-api-key`.
//!
//! Prints one line per listing (id, price, title), then a count.
//!
//! ```sh
//! MARKETPLACE_API_KEY=$(cat .valora/dev-api-key) \
//!   cargo run -p valora-client --example list_published_listings
//! ```

use valora_client::marketplace::v1::{ListListingsRequest, ListingStatus};
use valora_client::{Calls, ClientError, EdgeChannelBuilder, marketplace_client};

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("list_published_listings: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ClientError> {
    let url = std::env::var("VALORA_EDGE_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".to_owned());
    let key = std::env::var("MARKETPLACE_API_KEY").map_err(|_| ClientError::Missing {
        setting: "MARKETPLACE_API_KEY",
        hint: "set it to the API key, such as $(cat .valora/dev-api-key)",
    })?;

    let mut edge = EdgeChannelBuilder::new(url);
    if let Ok(ca) = std::env::var("VALORA_EDGE_CA") {
        edge = edge.ca_file(ca);
    }
    let mut marketplace = marketplace_client(edge.build()?, Calls::new().api_key(&key)?);

    let mut count = 0;
    let mut page_token = String::new();
    loop {
        let request = ListListingsRequest {
            status: ListingStatus::Published.into(),
            page_size: 100,
            page_token,
            ..Default::default()
        };
        let page = marketplace.list_listings(request).await?.into_inner();
        for listing in &page.listings {
            let price = listing
                .price
                .as_ref()
                .map(|p| format!("{} {}", p.amount_minor, p.currency_code))
                .unwrap_or_default();
            println!("{}\t{}\t{}", listing.id, price, listing.title);
        }
        count += page.listings.len();
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    println!("{count} published listings");
    Ok(())
}
