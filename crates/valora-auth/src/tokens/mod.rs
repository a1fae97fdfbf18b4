//! Access tokens (JWTs) and refresh tokens.

pub mod refresh;
pub mod signing;

use serde::{Deserialize, Serialize};

/// Claims of an access token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The user id.
    pub sub: String,
    pub exp: i64,
    pub iat: i64,
    pub nbf: i64,
    /// Unique token id.
    pub jti: String,
    /// `USER` or `ADMIN`.
    pub role: String,
}
