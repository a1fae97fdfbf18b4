//! Rotates the pricing plan of a listing, calling the marketplace DIRECTLY
//! over mutual TLS with the engineer certificate (not through the edge).
//!
//! Settings, from environment variables:
//!
//! - `VALORA_MARKETPLACE_ADDR`: the marketplace's mutual-TLS listener,
//!   `HOST:PORT`; default `127.0.0.1:50052`, as `valora dev` listens.
//! - `VALORA_CERTS_DIR`: the certificate folder holding `ca.pem`,
//!   `engineer.pem` and `engineer.key`; default `certs-dev`, where
//!   `valora dev` writes them.
//! - `MARKETPLACE_API_KEY`: the API key sent in `x-api-key` (required).
//!   Direct callers need a key like callers of the edge; for `valora dev`,
//!   the content of `.valora/dev-api-key`.
//!
//! The example works on the newest listing titled "Rotate plan example"
//! that the key can see, and creates it (a draft) if there is none. It gives
//! the listing a plan if it has no active one, rotates the active plan to a
//! price 1.00 higher, and prints the retired plan and its successor.
//!
//! ```sh
//! MARKETPLACE_API_KEY=$(cat .valora/dev-api-key) \
//!   cargo run -p valora-client --example rotate_plan
//! ```

use valora_client::marketplace::v1::{
    BillingInterval, CreateListingRequest, CreatePlanRequest, ListListingsRequest, ListPlansRequest,
    Listing, Money, Plan, PlanStatus, RotatePlanRequest,
};
use valora_client::{Calls, ClientError, Identity, MarketplaceClient, MeshChannelBuilder, marketplace_client};

/// Title of the listing this example creates and finds again.
const TITLE: &str = "Rotate plan example";

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("rotate_plan: {error}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), ClientError> {
    let address = std::env::var("VALORA_MARKETPLACE_ADDR").unwrap_or_else(|_| "127.0.0.1:50052".to_owned());
    let certs = std::env::var("VALORA_CERTS_DIR").unwrap_or_else(|_| "certs-dev".to_owned());
    let key = std::env::var("MARKETPLACE_API_KEY").map_err(|_| ClientError::Missing {
        setting: "MARKETPLACE_API_KEY",
        hint: "set it to the API key, such as $(cat .valora/dev-api-key)",
    })?;

    // connect() makes one handshake first, so a wrong address, certificate
    // or server identity is reported here, before any call.
    let channel = MeshChannelBuilder::new(address)
        .certs_dir(certs)
        .identity(Identity::engineer())
        .target(Identity::marketplace())
        .connect()
        .await?;
    let mut marketplace = marketplace_client(channel, Calls::new().api_key(&key)?);

    let listing = match find_listing(&mut marketplace).await? {
        Some(listing) => listing,
        None => create_listing(&mut marketplace).await?,
    };
    let plan = match active_plan(&mut marketplace, &listing.id).await? {
        Some(plan) => plan,
        None => create_plan(&mut marketplace, &listing.id).await?,
    };

    let price = plan.price.clone().unwrap_or_default();
    let rotated = marketplace
        .rotate_plan(RotatePlanRequest {
            plan_id: plan.id.clone(),
            price: Some(Money { amount_minor: price.amount_minor + 100, ..price }),
            ..Default::default()
        })
        .await?
        .into_inner();
    println!("listing {} \"{}\"", listing.id, listing.title);
    for (label, plan) in [("retired", &rotated.retired_plan), ("new", &rotated.new_plan)] {
        if let Some(plan) = plan {
            println!("{label} plan: {}", describe(plan));
        }
    }
    Ok(())
}

/// The newest listing titled [`TITLE`] that the caller can see.
async fn find_listing(marketplace: &mut MarketplaceClient) -> Result<Option<Listing>, ClientError> {
    let mut found = None;
    let mut page_token = String::new();
    loop {
        let request = ListListingsRequest { query: TITLE.to_owned(), page_size: 100, page_token, ..Default::default() };
        let page = marketplace.list_listings(request).await?.into_inner();
        // Listings come oldest first, so the last match is the newest.
        found = page.listings.into_iter().rfind(|l| l.title == TITLE).or(found);
        if page.next_page_token.is_empty() {
            return Ok(found);
        }
        page_token = page.next_page_token;
    }
}

async fn create_listing(marketplace: &mut MarketplaceClient) -> Result<Listing, ClientError> {
    let request = CreateListingRequest {
        title: TITLE.to_owned(),
        description: "Created by the rotate_plan example of valora-client".to_owned(),
        category: "examples".to_owned(),
        price: Some(eur(1000)),
    };
    let listing = marketplace.create_listing(request).await?.into_inner().listing;
    println!("created listing \"{TITLE}\"");
    listing.ok_or_else(|| tonic_error("CreateListing returned no listing"))
}

/// The ACTIVE plan of a listing, if it has one.
async fn active_plan(marketplace: &mut MarketplaceClient, listing_id: &str) -> Result<Option<Plan>, ClientError> {
    let mut page_token = String::new();
    loop {
        let request = ListPlansRequest { listing_id: listing_id.to_owned(), page_size: 100, page_token };
        let page = marketplace.list_plans(request).await?.into_inner();
        if let Some(plan) = page.plans.into_iter().find(|p| p.status() == PlanStatus::Active) {
            return Ok(Some(plan));
        }
        if page.next_page_token.is_empty() {
            return Ok(None);
        }
        page_token = page.next_page_token;
    }
}

async fn create_plan(marketplace: &mut MarketplaceClient, listing_id: &str) -> Result<Plan, ClientError> {
    let request = CreatePlanRequest {
        listing_id: listing_id.to_owned(),
        name: "Monthly".to_owned(),
        price: Some(eur(1000)),
        interval: BillingInterval::Month.into(),
    };
    let plan = marketplace.create_plan(request).await?.into_inner().plan;
    println!("created plan \"Monthly\"");
    plan.ok_or_else(|| tonic_error("CreatePlan returned no plan"))
}

fn eur(amount_minor: i64) -> Money {
    Money { currency_code: "EUR".to_owned(), amount_minor }
}

fn describe(plan: &Plan) -> String {
    let price = plan.price.as_ref().map(|p| format!("{} {}", p.amount_minor, p.currency_code)).unwrap_or_default();
    format!(
        "{} \"{}\" revision {} {} {:?}",
        plan.id,
        plan.name,
        plan.revision,
        price,
        plan.status()
    )
}

fn tonic_error(message: &str) -> ClientError {
    ClientError::Call(valora_client::tonic::Status::internal(message))
}
