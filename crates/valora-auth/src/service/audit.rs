//! Audit events of the auth service.

use std::sync::Mutex;
use std::time::Instant;

use sea_orm::ConnectionTrait;
use valora_audit::{Appended, AuditEvent, Outcome};

use super::Auth;
use crate::domain::AuthError;

/// Prefix of the auth service's audit tables.
pub const AUDIT_PREFIX: &str = "auth";
/// Failure events written per second at most; a flood of failures is
/// counted in `valora_audit_dropped_total` instead of filling the table.
const FAILURES_PER_SECOND: f64 = 50.0;

/// A token bucket for failure events.
#[derive(Debug)]
pub(crate) struct FailureBudget {
    state: Mutex<(f64, Instant)>,
}

impl Default for FailureBudget {
    fn default() -> Self {
        Self { state: Mutex::new((FAILURES_PER_SECOND, Instant::now())) }
    }
}

impl FailureBudget {
    fn take(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (tokens, last) = *state;
        let refilled = (tokens + last.elapsed().as_secs_f64() * FAILURES_PER_SECOND).min(FAILURES_PER_SECOND);
        if refilled < 1.0 {
            *state = (refilled, Instant::now());
            return false;
        }
        *state = (refilled - 1.0, Instant::now());
        true
    }
}

/// An event with the current call's peer and client address filled in.
pub(crate) fn event(action: &str, outcome: Outcome, actor: &str, target: &str, reason: &str, details: serde_json::Value) -> AuditEvent {
    let call = valora_mesh::guard::current_call();
    AuditEvent {
        action: action.to_owned(),
        outcome: Some(outcome),
        actor: actor.to_owned(),
        peer: call.as_ref().map(|c| c.peer.to_string()).unwrap_or_default(),
        client_addr: call.and_then(|c| c.client_addr).unwrap_or_default(),
        target: target.to_owned(),
        reason: reason.to_owned(),
        details,
    }
}

impl Auth {
    /// Writes an event in `txn`; log it with [`valora_audit::log_committed`]
    /// after the commit.
    pub(crate) async fn audit_in(&self, txn: &impl ConnectionTrait, event: AuditEvent) -> Result<Appended, AuditError> {
        valora_audit::append(txn, AUDIT_PREFIX, "auth", event).await.map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Writes and logs a failure event on its own, within the failure
    /// budget. A write error is logged, never returned: the failure being
    /// recorded is what the caller reports.
    pub(crate) async fn audit_failure(&self, event: AuditEvent) {
        metrics::counter!("valora_auth_failures_total", "component" => "auth", "reason" => event.reason.clone()).increment(1);
        if !self.failure_budget.take() {
            metrics::counter!("valora_audit_dropped_total", "component" => "auth").increment(1);
            return;
        }
        match valora_audit::append(self.store.db(), AUDIT_PREFIX, "auth", event).await {
            Ok(appended) => valora_audit::log_committed(&appended),
            Err(error) => tracing::warn!(%error, "audit event not written"),
        }
    }
}

type AuditError = AuthError;
