//! The authorization policy file.

use valora_mesh::Identity;
use valora_mesh::policy::{Decision, Policy, PolicyMode};

/// Services that grants may name although `proto/` does not define them.
const INFRASTRUCTURE: [&str; 2] =
    ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// `Policy::from_toml` on arbitrary text.
///
/// Properties of an accepted policy:
/// - every grant names a service of `proto/` (or server reflection) and,
///   for a service of `proto/`, one of its methods or all of them;
/// - every grant allows what it names;
/// - an identity that no grant names is denied everything (or, in audit
///   mode, would be), so the policy denies by default.
///
/// A refusal names the source, as in `policy fuzz.toml: ...`.
pub fn policy_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let policy = match Policy::from_toml(text, "fuzz.toml") {
        Ok(policy) => policy,
        Err(error) => {
            assert!(error.to_string().starts_with("policy fuzz.toml: "), "{error}");
            return;
        }
    };
    let outsider = Identity::from_name("fuzz-outsider").expect("a valid identity name");
    let outsider_granted = policy.grants().any(|grant| grant.caller == outsider);
    let denied = match policy.mode() {
        PolicyMode::Enforce => Decision::Deny,
        PolicyMode::Audit => Decision::WouldDeny,
    };
    for grant in policy.grants() {
        let methods = valora_proto::methods_of(&grant.service);
        assert!(
            methods.is_some() || INFRASTRUCTURE.contains(&grant.service.as_str()),
            "grant for unknown service {:?}",
            grant.service
        );
        if let (Some(methods), Some(method)) = (&methods, &grant.method) {
            assert!(methods.contains(method), "grant for unknown method {method:?} of {}", grant.service);
        }
        let method = grant.method.as_deref().unwrap_or("AnyMethod");
        assert_eq!(policy.check(&grant.caller, &grant.service, method), Decision::Allow, "{grant:?}");
        assert!(policy.covers(&grant.service, method));
        if !outsider_granted {
            assert_eq!(policy.check(&outsider, &grant.service, method), denied);
        }
    }
}
