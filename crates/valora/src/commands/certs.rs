//! `valora certs dev`.

use anyhow::Context as _;
use valora_mesh::pki::{self, PkiOutcome};

use crate::cli::CertsDevArgs;

pub(crate) fn run(args: &CertsDevArgs) -> anyhow::Result<()> {
    let outcome = pki::write_dev_pki(&args.certs_dir, args.rotate)
        .with_context(|| format!("cannot write certificates to {}", args.certs_dir.display()))?;
    let dir = args.certs_dir.display();
    match outcome {
        PkiOutcome::Created => println!(
            "wrote a new development CA and leaf certificates for edge, auth, marketplace and \
             engineer to {dir} (private keys are mode 0600)"
        ),
        PkiOutcome::Rotated => println!(
            "issued fresh leaf certificates under the existing CA in {dir}; running services \
             pick them up without a restart"
        ),
    }
    Ok(())
}
