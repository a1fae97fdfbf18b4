//! One module per subcommand.

pub(crate) mod admin;
pub(crate) mod certs;
pub(crate) mod dev;
pub(crate) mod migrate;
pub(crate) mod serve;
