//! Generated message types, clients and servers of VALORA's gRPC API.
//!
//! The `.proto` sources live in the repository's `proto/` folder. The file
//! descriptor set, with every import included, backs server reflection.

#![allow(unreachable_pub, clippy::all, reason = "generated code")]

/// Encoded `FileDescriptorSet` of every VALORA proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/valora_descriptor.bin"));

pub mod auth {
    pub mod v1 {
        tonic::include_proto!("valora.auth.v1");
    }
}

pub mod marketplace {
    pub mod v1 {
        tonic::include_proto!("valora.marketplace.v1");
    }
}

/// A gRPC service of the VALORA API and its method names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceInfo {
    /// Full name, such as `valora.marketplace.v1.MarketplaceService`.
    pub name: String,
    pub methods: Vec<String>,
}

/// Every service declared in `proto/`, read from the descriptor set.
pub fn services() -> Vec<ServiceInfo> {
    use prost::Message;
    let Ok(set) = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET) else {
        return Vec::new();
    };
    let mut services = Vec::new();
    for file in set.file.iter().filter(|f| f.package().starts_with("valora.")) {
        for service in &file.service {
            services.push(ServiceInfo {
                name: format!("{}.{}", file.package(), service.name()),
                methods: service.method.iter().map(|m| m.name().to_owned()).collect(),
            });
        }
    }
    services
}

/// The methods of the service named `name`, if it exists.
pub fn methods_of(name: &str) -> Option<Vec<String>> {
    services().into_iter().find(|s| s.name == name).map(|s| s.methods)
}

#[cfg(test)]
mod tests {
    #[test]
    fn descriptor_lists_marketplace_methods() {
        let methods = super::methods_of("valora.marketplace.v1.MarketplaceService").unwrap();
        assert!(methods.contains(&"RotatePlan".to_owned()));
        assert_eq!(methods.len(), 10);
    }
}
