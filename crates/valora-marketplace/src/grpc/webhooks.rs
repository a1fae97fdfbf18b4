//! gRPC handlers of `valora.marketplace.v1.WebhookService`.

use tonic::{Request, Response, Status};
use valora_proto::marketplace::v1 as pb;
use valora_proto::marketplace::v1::webhook_service_server::WebhookService;

use super::convert::timestamp;
use super::principal;
use crate::domain::MarketplaceError;
use crate::page;
use crate::webhooks::endpoints::{DeliveryRecord, Endpoint, Webhooks};

/// The tonic implementation of the webhook service.
#[derive(Clone, Debug)]
pub struct WebhookApi {
    webhooks: Webhooks,
}

impl WebhookApi {
    pub fn new(webhooks: Webhooks) -> Self {
        Self { webhooks }
    }
}

fn endpoint_to_pb(endpoint: &Endpoint) -> pb::WebhookEndpoint {
    pb::WebhookEndpoint {
        id: endpoint.id.clone(),
        owner_id: endpoint.owner_id.clone(),
        url: endpoint.url.clone(),
        event_types: endpoint.event_types.clone(),
        status: match endpoint.status.as_str() {
            "ACTIVE" => pb::WebhookEndpointStatus::Active,
            _ => pb::WebhookEndpointStatus::Failing,
        } as i32,
        failure_reason: endpoint.failure_reason.clone(),
        create_time: Some(timestamp(endpoint.create_time)),
        previous_secret_expire_time: endpoint.previous_secret_expire_time.map(timestamp),
    }
}

fn delivery_to_pb(record: &DeliveryRecord) -> pb::WebhookDelivery {
    let d = &record.delivery;
    pb::WebhookDelivery {
        id: d.id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        status: match d.status.as_str() {
            "PENDING" => pb::WebhookDeliveryStatus::Pending,
            "DELIVERED" => pb::WebhookDeliveryStatus::Delivered,
            _ => pb::WebhookDeliveryStatus::Failed,
        } as i32,
        create_time: Some(timestamp(d.create_time)),
        next_attempt_time: (d.status == "PENDING").then(|| timestamp(d.next_attempt_time)),
        attempts: record
            .attempts
            .iter()
            .map(|a| pb::WebhookAttempt {
                attempt: a.attempt,
                time: Some(timestamp(a.time)),
                status_code: a.status_code.unwrap_or(0),
                error: a.error.clone(),
                duration_ms: a.duration_ms,
            })
            .collect(),
    }
}

fn id(field: &str, value: &str) -> Result<String, Status> {
    Ok(super::convert::id(field, value)?)
}

fn grace(value: Option<&prost_types::Duration>) -> Result<Option<std::time::Duration>, Status> {
    match value {
        None => Ok(None),
        Some(d) if d.seconds < 0 || d.nanos < 0 => {
            Err(MarketplaceError::invalid("grace_period", "must not be negative").into())
        }
        Some(d) => Ok(Some(std::time::Duration::new(d.seconds as u64, d.nanos as u32))),
    }
}

#[tonic::async_trait]
impl WebhookService for WebhookApi {
    async fn create_webhook_endpoint(
        &self,
        request: Request<pb::CreateWebhookEndpointRequest>,
    ) -> Result<Response<pb::CreateWebhookEndpointResponse>, Status> {
        let caller = principal(&request)?;
        let m = request.get_ref();
        let (endpoint, secret) = self.webhooks.create(&caller, &m.url, &m.event_types).await?;
        Ok(Response::new(pb::CreateWebhookEndpointResponse {
            endpoint: Some(endpoint_to_pb(&endpoint)),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn list_webhook_endpoints(
        &self,
        request: Request<pb::ListWebhookEndpointsRequest>,
    ) -> Result<Response<pb::ListWebhookEndpointsResponse>, Status> {
        let caller = principal(&request)?;
        let endpoints = self.webhooks.list(&caller).await?;
        Ok(Response::new(pb::ListWebhookEndpointsResponse { endpoints: endpoints.iter().map(endpoint_to_pb).collect() }))
    }

    async fn delete_webhook_endpoint(
        &self,
        request: Request<pb::DeleteWebhookEndpointRequest>,
    ) -> Result<Response<pb::DeleteWebhookEndpointResponse>, Status> {
        let caller = principal(&request)?;
        let id = id("id", &request.get_ref().id)?;
        self.webhooks.delete(&caller, &id).await?;
        Ok(Response::new(pb::DeleteWebhookEndpointResponse {}))
    }

    async fn rotate_webhook_secret(
        &self,
        request: Request<pb::RotateWebhookSecretRequest>,
    ) -> Result<Response<pb::RotateWebhookSecretResponse>, Status> {
        let caller = principal(&request)?;
        let m = request.get_ref();
        let id = id("id", &m.id)?;
        let (endpoint, secret) = self.webhooks.rotate(&caller, &id, grace(m.grace_period.as_ref())?).await?;
        Ok(Response::new(pb::RotateWebhookSecretResponse {
            endpoint: Some(endpoint_to_pb(&endpoint)),
            secret: secret.expose().to_owned(),
        }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let caller = principal(&request)?;
        let m = request.get_ref();
        let endpoint_id = id("endpoint_id", &m.endpoint_id)?;
        let limit = page::page_size(m.page_size)?;
        let scope = page::scope(&["deliveries", &caller.actor_id(), &endpoint_id]);
        let before = match page::decode(&m.page_token, &scope)? {
            None => None,
            Some(position) => Some(position.parse::<i64>().map_err(|_| {
                MarketplaceError::invalid("page_token", "is not a next_page_token of this request")
            })?),
        };
        let mut records = self.webhooks.deliveries(&caller, &endpoint_id, before, limit + 1).await?;
        let next_page_token = if records.len() as u64 > limit {
            records.truncate(limit as usize);
            records.last().map(|r| page::encode(&r.delivery.outbox_seq.to_string(), &scope)).unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: records.iter().map(delivery_to_pb).collect(),
            next_page_token,
        }))
    }
}
