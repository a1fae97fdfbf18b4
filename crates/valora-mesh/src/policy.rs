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

/// Services that are not in `proto/` but may appear in grants.
const INFRASTRUCTURE_SERVICES: [&str; 2] =
    ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("policy {source_name}: {problem}")]
pub struct PolicyError {
    /// The file, or "built-in" for the defaults.
    pub source_name: String,
    pub problem: String,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    #[serde(default)]
    mode: Option<String>,
    /// Identities beyond the built-in edge, auth, marketplace and engineer.
    #[serde(default)]
    identities: Vec<String>,
    #[serde(default, rename = "grant")]
    grants: Vec<GrantEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantEntry {
    caller: String,
    service: String,
    #[serde(default)]
    methods: Vec<String>,
}

impl Policy {
    /// Parses a TOML policy, checking every identity, service and method
    /// against what exists. `source_name` names the file in errors.
    pub fn from_toml(text: &str, source_name: &str) -> Result<Self, PolicyError> {
        let fail = |problem: String| PolicyError { source_name: source_name.to_owned(), problem };
        let file: PolicyFile = toml::from_str(text).map_err(|e| fail(e.to_string()))?;
        let mode = match file.mode.as_deref() {
            None | Some("enforce") => PolicyMode::Enforce,
            Some("audit") => PolicyMode::Audit,
            Some(other) => {
                return Err(fail(format!("mode {other:?} is unknown; use \"enforce\" or \"audit\"")));
            }
        };
        let mut known: Vec<Identity> = crate::pki::dev_identities().to_vec();
        for name in &file.identities {
            known.push(Identity::from_name(name).map_err(|e| fail(e.to_string()))?);
        }
        let mut policy = Policy::new(mode);
        for (index, entry) in file.grants.iter().enumerate() {
            let grant_fail = |problem: String| fail(format!("grant {}: {problem}", index + 1));
            let caller: Identity = entry.caller.parse().map_err(|e: crate::identity::IdentityError| grant_fail(e.to_string()))?;
            if !known.contains(&caller) {
                return Err(grant_fail(format!(
                    "unknown identity {caller}; declare it in `identities` first"
                )));
            }
            let methods = known_methods(&entry.service).ok_or_else(|| {
                grant_fail(format!("unknown service {:?}", entry.service))
            })?;
            let wildcard = entry.methods.is_empty() || entry.methods.iter().any(|m| m == "*");
            if wildcard {
                policy = policy.allow_service(caller.clone(), &entry.service);
                continue;
            }
            for method in &entry.methods {
                if methods.as_ref().is_some_and(|known| !known.contains(method)) {
                    return Err(grant_fail(format!(
                        "unknown method {method:?} of {}",
                        entry.service
                    )));
                }
                policy = policy.allow(Grant {
                    caller: caller.clone(),
                    service: entry.service.clone(),
                    method: Some(method.clone()),
                });
            }
        }
        Ok(policy)
    }

    /// Reads a policy file.
    pub fn from_file(path: &std::path::Path) -> Result<Self, PolicyError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| PolicyError { source_name: name.clone(), problem: format!("cannot read: {e}") })?;
        Self::from_toml(&text, &name)
    }

    /// Fails when a method of `service` is covered by no grant, so that a
    /// served method is never silently unreachable.
    pub fn ensure_covers(&self, service: &str, source_name: &str) -> Result<(), PolicyError> {
        let methods = valora_proto::methods_of(service).unwrap_or_default();
        let missing: Vec<&String> = methods.iter().filter(|m| !self.covers(service, m)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
        Err(PolicyError {
            source_name: source_name.to_owned(),
            problem: format!("no grant for {service} method(s) {list}; add a grant or the service cannot be called"),
        })
    }
}

/// `Some(methods)` for a VALORA service, `Some(None)` for an infrastructure
/// service whose methods are not listed, `None` when unknown.
fn known_methods(service: &str) -> Option<Option<Vec<String>>> {
    if INFRASTRUCTURE_SERVICES.contains(&service) {
        return Some(None);
    }
    valora_proto::methods_of(service).map(Some)
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
    fn policy_files_are_checked() {
        let ok = r#"
            mode = "audit"
            identities = ["billing"]
            [[grant]]
            caller = "billing"
            service = "valora.marketplace.v1.MarketplaceService"
            methods = ["GetListing"]
            [[grant]]
            caller = "spiffe://valora.internal/edge"
            service = "valora.marketplace.v1.MarketplaceService"
        "#;
        let policy = Policy::from_toml(ok, "test").unwrap();
        assert_eq!(policy.mode(), PolicyMode::Audit);
        let billing = Identity::from_name("billing").unwrap();
        let service = "valora.marketplace.v1.MarketplaceService";
        assert_eq!(policy.check(&billing, service, "GetListing"), Decision::Allow);
        assert_eq!(policy.check(&billing, service, "CreateListing"), Decision::WouldDeny);
        assert!(policy.ensure_covers(service, "test").is_ok());

        let cases = [
            ("[[grant]]\ncaller = \"stranger\"\nservice = \"valora.marketplace.v1.MarketplaceService\"", "unknown identity"),
            ("[[grant]]\ncaller = \"edge\"\nservice = \"nope.Service\"", "unknown service"),
            ("[[grant]]\ncaller = \"edge\"\nservice = \"valora.marketplace.v1.MarketplaceService\"\nmethods = [\"Steal\"]", "unknown method"),
            ("mode = \"lenient\"", "mode"),
            ("colour = \"blue\"", "unknown field"),
        ];
        for (text, expected) in cases {
            let error = Policy::from_toml(text, "bad.toml").unwrap_err();
            assert!(error.to_string().contains(expected), "{text}: {error}");
            assert!(error.to_string().contains("bad.toml"), "{error}");
        }
    }

    #[test]
    fn uncovered_methods_are_reported() {
        let service = "valora.marketplace.v1.MarketplaceService";
        let policy = Policy::new(PolicyMode::Enforce).allow(Grant {
            caller: Identity::edge(),
            service: service.into(),
            method: Some("GetListing".into()),
        });
        let error = policy.ensure_covers(service, "built-in").unwrap_err();
        assert!(error.problem.contains("CreateListing"), "{error}");
        assert!(!error.problem.contains("GetListing,"), "{error}");
    }

    #[test]
    fn grpc_paths_split_strictly() {
        assert_eq!(split_grpc_path("/a.S/Get"), Some(("a.S", "Get")));
        for bad in ["a.S/Get", "/a.S", "/a.S/", "//Get", "/a.S/Get/x"] {
            assert_eq!(split_grpc_path(bad), None, "{bad}");
        }
    }
}
