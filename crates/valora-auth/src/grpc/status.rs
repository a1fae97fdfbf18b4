//! The one conversion from [`AuthError`] to a gRPC status.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::domain::AuthError;

impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        let message = error.to_string();
        match error {
            AuthError::Invalid(violations) => {
                let mut details = ErrorDetails::new();
                for violation in violations {
                    details.add_bad_request_violation(violation.field, violation.description);
                }
                Status::with_error_details(Code::InvalidArgument, message, details)
            }
            AuthError::Unauthenticated(_) => Status::unauthenticated(message),
            AuthError::PermissionDenied(_) => Status::permission_denied(message),
            AuthError::NotFound(_) => Status::not_found(message),
            AuthError::AlreadyExists(_) => Status::already_exists(message),
            AuthError::FailedPrecondition(_) => Status::failed_precondition(message),
            AuthError::Aborted(_) => Status::aborted(message),
            AuthError::Throttled(seconds) => {
                let details = ErrorDetails::with_retry_info(Some(Duration::from_secs(seconds)));
                let mut status = Status::with_error_details(Code::ResourceExhausted, message, details);
                if let Ok(value) = MetadataValue::try_from(seconds.to_string()) {
                    status.metadata_mut().insert("retry-after", value);
                }
                status
            }
            AuthError::Unavailable(detail) => {
                tracing::warn!(error = %detail, "auth database unavailable");
                Status::unavailable("the auth database is unavailable; retry later")
            }
            AuthError::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                Status::internal("internal error")
            }
        }
    }
}
