//! Generated message types, clients and servers of VALORA's gRPC API.
//!
//! The `.proto` sources live in the repository's `proto/` folder. The file
//! descriptor set, with every import included, backs server reflection.

#![allow(unreachable_pub, clippy::all, reason = "generated code")]

/// Encoded `FileDescriptorSet` of every VALORA proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/valora_descriptor.bin"));

pub mod marketplace {
    pub mod v1 {
        tonic::include_proto!("valora.marketplace.v1");
    }
}
