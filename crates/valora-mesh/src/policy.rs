//! Which workload identity may call which gRPC method.

use std::collections::BTreeMap;

use crate::identity::Identity;

/// One grant: a caller may call a whole service or one method of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub caller: Identity,
    /// Full service name, such as `valora.marketplace.v1.MarketplaceService`.
    pub service: String,
    /// A method name, or `None` for every method of the service.
    pub method: Option<String>,
}

/// Whether denials are enforced or only reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PolicyMode {
    /// Calls without a grant get PERMISSION_DENIED.
    #[default]
    Enforce,
    /// Calls without a grant are logged and counted, then allowed, so that a
    /// new policy can be rolled out safely.
    Audit,
}

/// The outcome of a policy check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// No grant, and the policy enforces.
    Deny,
    /// No grant, but the policy is in audit mode.
    WouldDeny,
}

/// An authorization policy: a caller may call what a grant lists, and
/// nothing else.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    mode: PolicyMode,
    /// service name -> grants for that service.
    grants: BTreeMap<String, Vec<Grant>>,
}

impl Policy {
    /// An empty policy that denies everything.
    pub fn new(mode: PolicyMode) -> Self {
        Self { mode, grants: BTreeMap::new() }
    }

    /// Adds a grant.
    pub fn allow(mut self, grant: Grant) -> Self {
        self.grants.entry(grant.service.clone()).or_default().push(grant);
        self
    }

    /// Grants `caller` every method of `service`.
    pub fn allow_service(self, caller: Identity, service: &str) -> Self {
        self.allow(Grant { caller, service: service.to_owned(), method: None })
    }

    /// The policy mode.
    pub fn mode(&self) -> PolicyMode {
        self.mode
    }

    /// Every grant, in service order.
    pub fn grants(&self) -> impl Iterator<Item = &Grant> {
        self.grants.values().flatten()
    }

    /// Decides whether `caller` may call `service`/`method`.
    pub fn check(&self, caller: &Identity, service: &str, method: &str) -> Decision {
        let granted = self.grants.get(service).is_some_and(|grants| {
            grants.iter().any(|g| {
                &g.caller == caller && g.method.as_deref().is_none_or(|m| m == method)
            })
        });
        match (granted, self.mode) {
            (true, _) => Decision::Allow,
            (false, PolicyMode::Enforce) => Decision::Deny,
            (false, PolicyMode::Audit) => Decision::WouldDeny,
        }
    }

    /// Whether some grant names `service` (any method).
    pub fn covers(&self, service: &str, method: &str) -> bool {
        self.grants.get(service).is_some_and(|grants| {
            grants.iter().any(|g| g.method.as_deref().is_none_or(|m| m == method))
        })
    }
}

/// Splits a gRPC path `/package.Service/Method` into service and method.
pub fn split_grpc_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix('/')?;
    let (service, method) = rest.split_once('/')?;
    if service.is_empty() || method.is_empty() || method.contains('/') {
        return None;
    }
    Some((service, method))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_by_service_and_method() {
        let policy = Policy::new(PolicyMode::Enforce)
            .allow_service(Identity::edge(), "a.S")
            .allow(Grant { caller: Identity::engineer(), service: "a.S".into(), method: Some("Get".into()) });
        assert_eq!(policy.check(&Identity::edge(), "a.S", "Put"), Decision::Allow);
        assert_eq!(policy.check(&Identity::engineer(), "a.S", "Get"), Decision::Allow);
        assert_eq!(policy.check(&Identity::engineer(), "a.S", "Put"), Decision::Deny);
        assert_eq!(policy.check(&Identity::auth(), "a.S", "Get"), Decision::Deny);
    }

    #[test]
    fn audit_mode_reports_instead_of_denying() {
        let policy = Policy::new(PolicyMode::Audit);
        assert_eq!(policy.check(&Identity::edge(), "a.S", "Get"), Decision::WouldDeny);
    }

    #[test]
    fn grpc_paths_split_strictly() {
        assert_eq!(split_grpc_path("/a.S/Get"), Some(("a.S", "Get")));
        for bad in ["a.S/Get", "/a.S", "/a.S/", "//Get", "/a.S/Get/x"] {
            assert_eq!(split_grpc_path(bad), None, "{bad}");
        }
    }
}
