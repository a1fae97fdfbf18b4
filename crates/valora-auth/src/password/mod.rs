//! Password rules and hashes.

pub mod hasher;
pub mod passlib;
pub mod policy;
