//! `valora users import`: users with Passlib `pbkdf2_sha256` hashes from a
//! CSV file with the header `email,password_hash[,display_name]`.
//!
//! Each bad line is reported with its line number and skipped; the rest of
//! the file still imports.

use std::io::Read;

use crate::domain::AuthError;
use crate::service::Auth;

/// What an import did.
#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    /// Line number (1 is the header) and reason of each rejected line.
    pub rejected: Vec<(u64, String)>,
}

/// A file that cannot be imported at all.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("the CSV header must name the columns email and password_hash (display_name is optional); found {0:?}")]
    Header(Vec<String>),
    #[error("cannot read the CSV file: {0}")]
    Read(String),
}

/// Imports every line of `input`.
pub async fn import_csv(auth: &Auth, input: impl Read) -> Result<ImportReport, ImportError> {
    let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).flexible(true).from_reader(input);
    let headers: Vec<String> =
        reader.headers().map_err(|e| ImportError::Read(e.to_string()))?.iter().map(str::to_owned).collect();
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(email_at), Some(hash_at)) = (column("email"), column("password_hash")) else {
        return Err(ImportError::Header(headers));
    };
    let name_at = column("display_name");

    let mut report = ImportReport::default();
    for record in reader.records() {
        let record = match record {
            Ok(record) => record,
            Err(error) => {
                let line = error.position().map_or(0, |p| p.line());
                report.rejected.push((line, format!("unreadable line: {}", error.kind_summary())));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let field = |at: Option<usize>| at.and_then(|i| record.get(i)).unwrap_or_default();
        match auth.import_user(field(Some(email_at)), field(Some(hash_at)), field(name_at)).await {
            Ok(_) => report.imported += 1,
            Err(error @ (AuthError::Invalid(_) | AuthError::AlreadyExists(_))) => {
                report.rejected.push((line, error.to_string()));
            }
            Err(error) => report.rejected.push((line, format!("not imported: {error}"))),
        }
    }
    Ok(report)
}

trait KindSummary {
    fn kind_summary(&self) -> String;
}

impl KindSummary for csv::Error {
    /// The error without the line's content, which may hold a hash.
    fn kind_summary(&self) -> String {
        match self.kind() {
            csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".to_owned(),
            csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
                format!("{len} fields where the header has {expected_len}")
            }
            _ => "malformed CSV".to_owned(),
        }
    }
}
