//! Who may read and change listings.
//!
//! Reading published listings needs only a valid API key. Drafts and
//! archived listings are visible to their seller and to administrators; to
//! anyone else they answer NOT_FOUND, exactly like a missing listing, so
//! their existence does not leak. Changing a listing or its plans needs its
//! seller or an administrator (PERMISSION_DENIED otherwise).

use valora_mesh::Principal;
use valora_mesh::principal::{SCOPE_MARKETPLACE_READ, SCOPE_MARKETPLACE_WRITE};

use crate::domain::{Listing, ListingStatus, MarketplaceError};
use crate::store::Visibility;

/// Requires a key that may read.
pub fn ensure_can_read(principal: &Principal) -> Result<(), MarketplaceError> {
    if principal.user.is_some()
        || principal.has_scope(SCOPE_MARKETPLACE_READ)
        || principal.has_scope(SCOPE_MARKETPLACE_WRITE)
    {
        Ok(())
    } else {
        Err(MarketplaceError::PermissionDenied(format!(
            "API key {} lacks the {SCOPE_MARKETPLACE_READ} scope",
            principal.key_id
        )))
    }
}

/// Requires a signed-in user or a key with the write scope.
pub fn ensure_can_write(principal: &Principal) -> Result<(), MarketplaceError> {
    if principal.user.is_some() || principal.has_scope(SCOPE_MARKETPLACE_WRITE) {
        Ok(())
    } else {
        Err(MarketplaceError::PermissionDenied(format!(
            "changing marketplace data needs a signed-in user or an API key with the \
             {SCOPE_MARKETPLACE_WRITE} scope; key {} has neither",
            principal.key_id
        )))
    }
}

/// Whether `principal` may see `listing`.
pub fn can_see(principal: &Principal, listing: &Listing) -> bool {
    listing.status == ListingStatus::Published || owns(principal, listing) || principal.is_admin()
}

/// Returns the listing when visible, NOT_FOUND otherwise.
pub fn visible(principal: &Principal, listing: Option<Listing>, id: &str) -> Result<Listing, MarketplaceError> {
    match listing {
        Some(listing) if can_see(principal, &listing) => Ok(listing),
        _ => Err(MarketplaceError::NotFound(format!("listing {id}"))),
    }
}

/// Requires that `principal` may change `listing`: NOT_FOUND when it may not
/// even see it, PERMISSION_DENIED when it sees but does not own it.
pub fn ensure_can_change(principal: &Principal, listing: &Listing) -> Result<(), MarketplaceError> {
    ensure_can_write(principal)?;
    if !can_see(principal, listing) {
        return Err(MarketplaceError::NotFound(format!("listing {}", listing.id)));
    }
    if owns(principal, listing) || principal.is_admin() {
        Ok(())
    } else {
        Err(MarketplaceError::PermissionDenied(format!(
            "listing {} belongs to another seller",
            listing.id
        )))
    }
}

/// The listings a principal may see in searches.
pub fn visibility(principal: &Principal) -> Visibility {
    if principal.is_admin() {
        Visibility::All
    } else {
        Visibility::PublishedAndOwn(principal.actor_id())
    }
}

fn owns(principal: &Principal, listing: &Listing) -> bool {
    listing.seller_id == principal.actor_id()
}
