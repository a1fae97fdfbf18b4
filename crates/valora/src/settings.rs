//! Turning command-line settings into checked values, with errors that name
//! the setting, the problem and the fix.

use std::fmt;
use std::path::Path;

use http::HeaderValue;
use valora_mesh::apikey::StaticKeys;
use valora_mesh::security_headers::SecurityHeaders;

use crate::cli::{HeaderArgs, KeyArgs};

/// A setting that cannot be used.
#[derive(Debug)]
pub(crate) struct SettingError {
    /// Environment variable and flag, such as `VALORA_EDGE_ADDR (--edge-addr)`.
    pub(crate) setting: String,
    pub(crate) problem: String,
    pub(crate) fix: String,
}

impl SettingError {
    pub(crate) fn new(setting: impl Into<String>, problem: impl Into<String>, fix: impl Into<String>) -> Self {
        Self { setting: setting.into(), problem: problem.into(), fix: fix.into() }
    }
}

impl fmt::Display for SettingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.setting, self.problem, self.fix)
    }
}

impl std::error::Error for SettingError {}

const KEYS_SETTING: &str = "MARKETPLACE_API_KEY (--api-keys)";
const KEYS_FILE_SETTING: &str = "MARKETPLACE_API_KEY_FILE (--api-keys-file)";

/// Reads the static API keys from the variable or the file; `None` when
/// neither is set.
pub(crate) fn static_keys(args: &KeyArgs) -> Result<Option<StaticKeys>, SettingError> {
    match (&args.api_keys, &args.api_keys_file) {
        (Some(_), Some(_)) => Err(SettingError::new(
            KEYS_SETTING,
            "is set together with MARKETPLACE_API_KEY_FILE",
            "set only one of them",
        )),
        (Some(list), None) => parse_keys(list, KEYS_SETTING).map(Some),
        (None, Some(path)) => read_keys_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Reads and parses a key file (one list, commas or line breaks between
/// keys).
pub(crate) fn read_keys_file(path: &Path) -> Result<StaticKeys, SettingError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        SettingError::new(
            KEYS_FILE_SETTING,
            format!("cannot read {}: {e}", path.display()),
            "point it at a readable file",
        )
    })?;
    parse_keys_file_text(&text)
}

/// Parses the content of a key file.
fn parse_keys_file_text(text: &str) -> Result<StaticKeys, SettingError> {
    let list = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(",");
    if list.is_empty() {
        return Err(SettingError::new(KEYS_FILE_SETTING, "contains no keys", "add at least one key, one per line"));
    }
    parse_keys(&list, KEYS_FILE_SETTING)
}

/// Starts re-reading `MARKETPLACE_API_KEY_FILE` every 2 s. A changed,
/// valid list replaces `keys` in every clone.
pub(crate) fn reload_keys_file(path: &Path, keys: &StaticKeys) {
    keys.spawn_file_reload(path.to_owned(), KEYS_FILE_SETTING, |text| {
        parse_keys_file_text(text).map_err(|e| format!("{}; {}", e.problem, e.fix))
    });
}

fn parse_keys(list: &str, setting: &str) -> Result<StaticKeys, SettingError> {
    StaticKeys::parse(list).map_err(|e| {
        SettingError::new(setting, e.to_string(), "the key values are not shown here")
    })
}

/// Checks a production database URL: PostgreSQL must use TLS.
///
/// `sslmode=verify-full` is the production setting: it encrypts and checks
/// the server's certificate and host name. `verify-ca` and `require` are
/// accepted with a warning (`require` encrypts but does not stop a man in
/// the middle). Anything else (`disable`, `allow`, `prefer` or no sslmode)
/// is refused unless `allow_plaintext` is set.
pub(crate) fn production_database_url(
    setting: &str,
    url: &str,
    allow_plaintext: bool,
) -> Result<String, SettingError> {
    let url = database_url(setting, url)?;
    if url.starts_with("sqlite:") {
        return Ok(url);
    }
    let mode = url
        .split_once('?')
        .map(|(_, query)| query)
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("sslmode="))
        .unwrap_or("prefer")
        .to_owned();
    match mode.as_str() {
        "verify-full" => {}
        "verify-ca" => tracing::warn!(setting, "sslmode=verify-ca does not check the server's host name; use verify-full"),
        "require" => tracing::warn!(
            setting,
            "sslmode=require encrypts but does not authenticate the server, so it does not stop a man in the middle; use verify-full"
        ),
        _ if allow_plaintext => {
            tracing::warn!(setting, sslmode = %mode, "database connection may be unencrypted (VALORA_DATABASE_ALLOW_PLAINTEXT=true)");
        }
        _ => {
            return Err(SettingError::new(
                setting,
                format!("uses sslmode={mode}, which may send data and passwords in the clear"),
                "add sslmode=verify-full&sslrootcert=CA_FILE, or set VALORA_DATABASE_ALLOW_PLAINTEXT=true for a trusted network",
            ));
        }
    }
    Ok(url)
}

/// Rejects database URLs that are neither PostgreSQL nor SQLite.
pub(crate) fn database_url(setting: &str, url: &str) -> Result<String, SettingError> {
    let scheme = url.split_once("://").map(|(s, _)| s).unwrap_or_default();
    match scheme {
        "postgres" | "postgresql" | "sqlite" => Ok(url.to_owned()),
        _ => Err(SettingError::new(
            setting,
            "is not a postgres:// or sqlite:// URL",
            "use postgres://USER@HOST/DB?sslmode=verify-full or sqlite://PATH?mode=rwc",
        )),
    }
}

/// Checks the security header settings.
pub(crate) fn security_headers(args: &HeaderArgs) -> Result<SecurityHeaders, SettingError> {
    let value = |setting: &str, value: &str| {
        HeaderValue::from_str(value).map_err(|_| {
            SettingError::new(setting, format!("{value:?} is not a valid header value"), "use visible ASCII only")
        })
    };
    let hsts = &args.header_strict_transport_security;
    let max_age = hsts
        .split(';')
        .filter_map(|part| part.trim().strip_prefix("max-age="))
        .find_map(|age| age.trim().parse::<u64>().ok());
    if max_age.is_none_or(|age| age < 31_536_000) || !hsts.to_ascii_lowercase().contains("includesubdomains") {
        return Err(SettingError::new(
            "VALORA_HEADER_STRICT_TRANSPORT_SECURITY",
            format!("{hsts:?} needs max-age of at least 31536000 (one year) and includeSubDomains"),
            "for example \"max-age=63072000; includeSubDomains\"",
        ));
    }
    let frame = args.header_x_frame_options.to_ascii_uppercase();
    if frame != "DENY" && frame != "SAMEORIGIN" {
        return Err(SettingError::new(
            "VALORA_HEADER_X_FRAME_OPTIONS",
            format!("{:?} is not DENY or SAMEORIGIN", args.header_x_frame_options),
            "use DENY",
        ));
    }
    Ok(SecurityHeaders {
        strict_transport_security: value("VALORA_HEADER_STRICT_TRANSPORT_SECURITY", hsts)?,
        content_security_policy: value(
            "VALORA_HEADER_CONTENT_SECURITY_POLICY",
            &args.header_content_security_policy,
        )?,
        x_content_type_options: HeaderValue::from_static("nosniff"),
        x_frame_options: value("VALORA_HEADER_X_FRAME_OPTIONS", &frame)?,
        referrer_policy: value("VALORA_HEADER_REFERRER_POLICY", &args.header_referrer_policy)?,
    })
}
