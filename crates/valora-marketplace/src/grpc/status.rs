//! The one conversion from [`MarketplaceError`] to a gRPC status.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::MarketplaceError;

impl From<MarketplaceError> for Status {
    fn from(error: MarketplaceError) -> Self {
        match error {
            MarketplaceError::Invalid(violations) => {
                let message = MarketplaceError::Invalid(violations.clone()).to_string();
                let mut details = ErrorDetails::new();
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            MarketplaceError::NotFound(what) => Status::not_found(format!("{what} not found")),
            MarketplaceError::FailedPrecondition(reason) => Status::failed_precondition(reason),
            MarketplaceError::Aborted(reason) => Status::aborted(reason),
            MarketplaceError::PermissionDenied(reason) => Status::permission_denied(reason),
            MarketplaceError::Unauthenticated(reason) => Status::unauthenticated(reason),
            MarketplaceError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "database unavailable");
                Status::unavailable("the marketplace database is unavailable; retry later")
            }
            MarketplaceError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
