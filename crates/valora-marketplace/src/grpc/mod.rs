//! gRPC handlers: translate requests, call the domain, translate results.

mod convert;
mod status;
mod webhooks;

pub use webhooks::WebhookApi;

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio::sync::watch;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::{Request, Response, Status};
use valora_mesh::Principal;
use valora_mesh::guard::CallContext;
use valora_proto::marketplace::v1 as pb;
use valora_proto::marketplace::v1::marketplace_service_server::MarketplaceService;

use crate::access;
use crate::service::Marketplace;

/// The tonic implementation of `valora.marketplace.v1.MarketplaceService`.
#[derive(Clone, Debug)]
pub struct MarketplaceApi {
    marketplace: Marketplace,
    shutdown: watch::Receiver<bool>,
}

impl MarketplaceApi {
    /// Serves `marketplace`; open watch streams end with UNAVAILABLE when
    /// `shutdown` turns true, so that clients reconnect elsewhere.
    pub fn new(marketplace: Marketplace, shutdown: watch::Receiver<bool>) -> Self {
        Self { marketplace, shutdown }
    }
}

/// The principal the guard layer attached to the request.
pub(crate) fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<CallContext>()
        .ok_or_else(|| Status::unauthenticated("missing caller credentials"))?
        .require_principal()
        .cloned()
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchListingEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl MarketplaceService for MarketplaceApi {
    async fn create_listing(
        &self,
        request: Request<pb::CreateListingRequest>,
    ) -> Result<Response<pb::CreateListingResponse>, Status> {
        let caller = principal(&request)?;
        let new = convert::new_listing(request.get_ref())?;
        let listing = self.marketplace.create_listing(&caller, new).await?;
        Ok(Response::new(pb::CreateListingResponse { listing: Some(convert::listing_to_pb(&listing)) }))
    }

    async fn get_listing(
        &self,
        request: Request<pb::GetListingRequest>,
    ) -> Result<Response<pb::GetListingResponse>, Status> {
        let caller = principal(&request)?;
        let id = convert::id("id", &request.get_ref().id)?;
        let listing = self.marketplace.get_listing(&caller, &id).await?;
        Ok(Response::new(pb::GetListingResponse { listing: Some(convert::listing_to_pb(&listing)) }))
    }

    async fn list_listings(
        &self,
        request: Request<pb::ListListingsRequest>,
    ) -> Result<Response<pb::ListListingsResponse>, Status> {
        let caller = principal(&request)?;
        let message = request.get_ref();
        let filter = convert::listing_filter(message)?;
        let page = self
            .marketplace
            .list_listings(&caller, &filter, message.page_size, &message.page_token)
            .await?;
        Ok(Response::new(pb::ListListingsResponse {
            listings: page.items.iter().map(convert::listing_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn update_listing(
        &self,
        request: Request<pb::UpdateListingRequest>,
    ) -> Result<Response<pb::UpdateListingResponse>, Status> {
        let caller = principal(&request)?;
        let (id, version, changes) = convert::listing_changes(request.get_ref())?;
        let listing = self.marketplace.update_listing(&caller, &id, version, changes).await?;
        Ok(Response::new(pb::UpdateListingResponse { listing: Some(convert::listing_to_pb(&listing)) }))
    }

    async fn publish_listing(
        &self,
        request: Request<pb::PublishListingRequest>,
    ) -> Result<Response<pb::PublishListingResponse>, Status> {
        let caller = principal(&request)?;
        let id = convert::id("id", &request.get_ref().id)?;
        let listing = self.marketplace.publish_listing(&caller, &id).await?;
        Ok(Response::new(pb::PublishListingResponse { listing: Some(convert::listing_to_pb(&listing)) }))
    }

    async fn archive_listing(
        &self,
        request: Request<pb::ArchiveListingRequest>,
    ) -> Result<Response<pb::ArchiveListingResponse>, Status> {
        let caller = principal(&request)?;
        let id = convert::id("id", &request.get_ref().id)?;
        let listing = self.marketplace.archive_listing(&caller, &id).await?;
        Ok(Response::new(pb::ArchiveListingResponse { listing: Some(convert::listing_to_pb(&listing)) }))
    }

    async fn create_plan(
        &self,
        request: Request<pb::CreatePlanRequest>,
    ) -> Result<Response<pb::CreatePlanResponse>, Status> {
        let caller = principal(&request)?;
        let (listing_id, new) = convert::new_plan(request.get_ref())?;
        let plan = self.marketplace.create_plan(&caller, &listing_id, new).await?;
        Ok(Response::new(pb::CreatePlanResponse { plan: Some(convert::plan_to_pb(&plan)) }))
    }

    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        let caller = principal(&request)?;
        let message = request.get_ref();
        let listing_id = convert::id("listing_id", &message.listing_id)?;
        let page = self
            .marketplace
            .list_plans(&caller, &listing_id, message.page_size, &message.page_token)
            .await?;
        Ok(Response::new(pb::ListPlansResponse {
            plans: page.items.iter().map(convert::plan_to_pb).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn rotate_plan(
        &self,
        request: Request<pb::RotatePlanRequest>,
    ) -> Result<Response<pb::RotatePlanResponse>, Status> {
        let caller = principal(&request)?;
        let (plan_id, successor) = convert::successor(request.get_ref())?;
        let (retired, new) = self.marketplace.rotate_plan(&caller, &plan_id, successor).await?;
        Ok(Response::new(pb::RotatePlanResponse {
            retired_plan: Some(convert::plan_to_pb(&retired)),
            new_plan: Some(convert::plan_to_pb(&new)),
        }))
    }

    type WatchListingEventsStream = WatchStream;

    async fn watch_listing_events(
        &self,
        request: Request<pb::WatchListingEventsRequest>,
    ) -> Result<Response<Self::WatchListingEventsStream>, Status> {
        let caller = principal(&request)?;
        access::ensure_can_read(&caller)?;
        let listing_id = match request.get_ref().listing_id.as_str() {
            "" => None,
            id => {
                let id = convert::id("listing_id", id)?;
                // Subscribing to a listing the caller cannot see is NOT_FOUND.
                self.marketplace.get_listing(&caller, &id).await?;
                Some(id)
            }
        };
        let events = BroadcastStream::new(self.marketplace.events().subscribe());
        let stream = events.filter_map(move |item| {
            let reply = match item {
                Ok(event) => {
                    let wanted = listing_id.as_ref().is_none_or(|id| *id == event.listing.id)
                        && access::can_see(&caller, &event.listing);
                    wanted.then(|| Ok(convert::event_to_pb(&event)))
                }
                Err(BroadcastStreamRecvError::Lagged(missed)) => Some(Err(Status::aborted(format!(
                    "the watcher fell {missed} events behind and they were dropped; \
                     read the current state and watch again"
                )))),
            };
            futures::future::ready(reply)
        });
        let mut shutdown = self.shutdown.clone();
        let stopped = async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let farewell = futures::stream::once(async {
            Err(Status::unavailable("the server is shutting down; watch again"))
        });
        Ok(Response::new(Box::pin(stream.take_until(stopped).chain(farewell))))
    }
}
