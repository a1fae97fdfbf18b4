//! Command-line interface. Every setting is a flag whose help names its
//! environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use valora_telemetry::LogFormat;

/// VALORA mesh: the marketplace and auth services, their mutual-TLS
/// identities, and the gRPC / grpc-web edge in front of them.
#[derive(Debug, Parser)]
#[command(name = "valora", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the edge and every service in one process for development,
    /// connected over real mutual TLS on loopback.
    Dev(DevArgs),
    /// Runs one component.
    #[command(subcommand)]
    Serve(ServeCommand),
    /// Applies database migrations (run with the database owner role).
    Migrate(MigrateArgs),
    /// Manages mesh certificates.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Manages users in the auth database.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manages API keys in the auth database (for operators).
    #[command(subcommand)]
    Apikey(ApiKeyCommand),
    /// Manages the auth service's token signing keys.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// Checks audit trails.
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recomputes a service's audit hash chain and reports the first broken
    /// or missing link; exits with 1 when the trail was tampered with.
    Verify {
        /// The service whose trail to check.
        service: MigrationTarget,
        /// Database URL (any role that may read the audit tables).
        #[arg(long, value_name = "URL")]
        database_url: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Imports users with Passlib pbkdf2_sha256 hashes from a CSV file with
    /// the header `email,password_hash,display_name` (display_name
    /// optional); bad lines are reported by number and skipped.
    Import {
        /// The CSV file.
        file: PathBuf,
        #[command(flatten)]
        db: AuthDbArgs,
    },
    /// Grants the ADMIN role to the user with this email.
    GrantAdmin {
        email: String,
        #[command(flatten)]
        db: AuthDbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ApiKeyCommand {
    /// Creates a key and prints its secret once.
    Create {
        /// Name that says what the key is for.
        #[arg(long)]
        name: String,
        /// Comma-separated scopes: marketplace:read, marketplace:write, admin.
        #[arg(long, value_delimiter = ',', required = true)]
        scopes: Vec<String>,
        /// Email of the user who owns the key; operator keys have none.
        #[arg(long)]
        owner: Option<String>,
        /// Lifetime in seconds; the key does not expire when unset.
        #[arg(long, value_name = "SECONDS")]
        ttl_seconds: Option<u64>,
        #[command(flatten)]
        db: AuthDbArgs,
    },
    /// Lists every key, without secrets.
    List {
        #[command(flatten)]
        db: AuthDbArgs,
    },
    /// Issues a successor; the old key works for the grace period.
    Rotate {
        /// Key id (16 hex digits).
        id: String,
        /// How long the old key keeps working, in seconds.
        #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
        grace_seconds: u64,
        #[command(flatten)]
        db: AuthDbArgs,
    },
    /// Revokes a key at once.
    Revoke {
        /// Key id (16 hex digits).
        id: String,
        #[command(flatten)]
        db: AuthDbArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// Writes a new Ed25519 signing key; it signs new tokens within seconds,
    /// and older keys keep verifying until removed.
    NewSigningKey {
        /// The signing key folder.
        #[arg(long, env = "AUTH_SIGNING_KEYS_DIR", value_name = "DIR")]
        dir: PathBuf,
    },
}

/// The auth database and the key pepper, for operator commands.
#[derive(Debug, Clone, Args)]
pub struct AuthDbArgs {
    /// Database of the auth service.
    #[arg(long, env = "AUTH_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub auth_database_url: String,

    #[command(flatten)]
    pub pepper: PepperArgs,
}

/// The server secret that keys stored API key hashes.
#[derive(Debug, Clone, Args)]
pub struct PepperArgs {
    /// At least 32 bytes of secret; AUTH_API_KEY_PEPPER_FILE names a file
    /// holding it instead.
    #[arg(long, env = "AUTH_API_KEY_PEPPER", hide_env_values = true, value_name = "SECRET")]
    pub api_key_pepper: Option<String>,

    /// File holding the pepper.
    #[arg(long, env = "AUTH_API_KEY_PEPPER_FILE", value_name = "FILE")]
    pub api_key_pepper_file: Option<PathBuf>,
}

/// Where access tokens come from and whom they are for.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// `iss` claim of access tokens.
    #[arg(long, env = "AUTH_TOKEN_ISSUER", default_value = "valora-auth", value_name = "ISSUER")]
    pub token_issuer: String,

    /// `aud` claim of access tokens.
    #[arg(long, env = "AUTH_TOKEN_AUDIENCE", default_value = "valora", value_name = "AUDIENCE")]
    pub token_audience: String,
}

/// Settings of the auth service.
#[derive(Debug, Clone, Args)]
pub struct AuthSettings {
    #[command(flatten)]
    pub tokens: TokenArgs,

    #[command(flatten)]
    pub pepper: PepperArgs,

    /// Folder of Ed25519 PKCS#8 PEM signing keys; the file whose name
    /// sorts last signs.
    #[arg(long, env = "AUTH_SIGNING_KEYS_DIR", value_name = "DIR")]
    pub signing_keys_dir: Option<PathBuf>,

    /// Lifetime of access tokens, in seconds.
    #[arg(long, env = "AUTH_ACCESS_TOKEN_TTL_SECONDS", default_value_t = 900, value_name = "SECONDS")]
    pub access_token_ttl_seconds: u64,

    /// Lifetime of refresh tokens, in seconds.
    #[arg(long, env = "AUTH_REFRESH_TOKEN_TTL_SECONDS", default_value_t = 30 * 24 * 3600, value_name = "SECONDS")]
    pub refresh_token_ttl_seconds: u64,

    /// argon2id memory per hash, in KiB.
    #[arg(long, env = "AUTH_ARGON2_MEMORY_KIB", default_value_t = 19 * 1024, value_name = "KIB")]
    pub argon2_memory_kib: u32,

    /// argon2id iterations.
    #[arg(long, env = "AUTH_ARGON2_ITERATIONS", default_value_t = 2, value_name = "COUNT")]
    pub argon2_iterations: u32,

    /// argon2id lanes.
    #[arg(long, env = "AUTH_ARGON2_PARALLELISM", default_value_t = 1, value_name = "COUNT")]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once; 0 means one per CPU core.
    #[arg(long, env = "AUTH_HASH_CONCURRENCY", default_value_t = 0, value_name = "COUNT")]
    pub hash_concurrency: usize,

    /// Shortest password, in characters after Unicode normalisation.
    #[arg(long, env = "AUTH_PASSWORD_MIN_CHARS", default_value_t = 15, value_name = "CHARS")]
    pub password_min_chars: usize,

    /// Longest password, in characters after Unicode normalisation.
    #[arg(long, env = "AUTH_PASSWORD_MAX_CHARS", default_value_t = 128, value_name = "CHARS")]
    pub password_max_chars: usize,
}

#[derive(Debug, Subcommand)]
pub enum ServeCommand {
    /// Runs the public edge.
    Edge(EdgeArgs),
    /// Runs the marketplace service.
    Marketplace(MarketplaceArgs),
    /// Runs the auth service.
    Auth(AuthArgs),
}

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Writes a development CA and leaf certificates for edge, auth,
    /// marketplace and engineer.
    Dev(CertsDevArgs),
}

/// Settings every long-running command shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Folder of the mesh CA bundle (ca.pem) and each identity's NAME.pem
    /// and NAME.key.
    #[arg(long, env = "VALORA_CERTS_DIR", default_value = "./certs-dev", value_name = "DIR")]
    pub certs_dir: PathBuf,

    /// Address of the admin HTTP endpoint (/metrics, /healthz, /readyz).
    #[arg(long, env = "VALORA_ADMIN_ADDR", default_value = "127.0.0.1:9090", value_name = "HOST:PORT")]
    pub admin_addr: SocketAddr,

    /// Log output: "human" or "json". RUST_LOG sets the level filter.
    #[arg(long, env = "VALORA_LOG_FORMAT", default_value = "human", value_name = "FORMAT")]
    pub log_format: LogFormat,

    /// Seconds that in-flight calls may run after SIGTERM before the
    /// process exits.
    #[arg(long, env = "VALORA_DRAIN_SECONDS", default_value_t = 20, value_name = "SECONDS")]
    pub drain_seconds: u64,

    /// Seconds between SIGTERM and closing the listeners, during which
    /// health reports NOT_SERVING so that load balancers stop sending
    /// calls; then in-flight calls drain.
    #[arg(long, env = "VALORA_SHUTDOWN_DELAY_SECONDS", default_value_t = 2, value_name = "SECONDS")]
    pub shutdown_delay_seconds: u64,

    /// Health turns NOT_SERVING and readiness fails when this process's
    /// mesh certificate expires within this many seconds.
    #[arg(long, env = "VALORA_CERT_EXPIRY_THRESHOLD_SECONDS", default_value_t = 3600, value_name = "SECONDS")]
    pub cert_expiry_threshold_seconds: u64,

    /// Largest request message accepted, in bytes (after grpc-web-text
    /// decoding); larger ones get RESOURCE_EXHAUSTED.
    #[arg(long, env = "VALORA_MAX_MESSAGE_BYTES", default_value_t = 4 * 1024 * 1024, value_name = "BYTES")]
    pub max_message_bytes: usize,

    #[command(flatten)]
    pub headers: HeaderArgs,

    /// Accept a PostgreSQL URL without sslmode=verify-full, verify-ca or
    /// require (development is always allowed).
    #[arg(long, env = "VALORA_DATABASE_ALLOW_PLAINTEXT", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub database_allow_plaintext: bool,
}

/// Values of the security headers set on every response.
#[derive(Debug, Clone, Args)]
pub struct HeaderArgs {
    /// Strict-Transport-Security; max-age must be at least 31536000 (one
    /// year) and includeSubDomains present.
    #[arg(long, env = "VALORA_HEADER_STRICT_TRANSPORT_SECURITY", default_value = "max-age=63072000; includeSubDomains", value_name = "VALUE")]
    pub header_strict_transport_security: String,

    /// Content-Security-Policy.
    #[arg(long, env = "VALORA_HEADER_CONTENT_SECURITY_POLICY", default_value = "default-src 'none'; frame-ancestors 'none'", value_name = "VALUE")]
    pub header_content_security_policy: String,

    /// X-Frame-Options: DENY or SAMEORIGIN.
    #[arg(long, env = "VALORA_HEADER_X_FRAME_OPTIONS", default_value = "DENY", value_name = "VALUE")]
    pub header_x_frame_options: String,

    /// Referrer-Policy.
    #[arg(long, env = "VALORA_HEADER_REFERRER_POLICY", default_value = "no-referrer", value_name = "VALUE")]
    pub header_referrer_policy: String,
}

/// The authorization policy of internal services.
#[derive(Debug, Clone, Args)]
pub struct PolicyArgs {
    /// TOML file declaring which identity may call which service or method;
    /// the built-in policy (docs/identity.md) when unset.
    #[arg(long, env = "VALORA_POLICY_FILE", value_name = "FILE")]
    pub policy_file: Option<PathBuf>,
}

/// Static API keys.
#[derive(Debug, Clone, Args)]
pub struct KeyArgs {
    /// Static API keys, comma-separated (a new key and the old one overlap
    /// during rotation); each at least 32 characters. MARKETPLACE_API_KEY_FILE
    /// names a file to read them from instead.
    #[arg(long = "api-keys", env = "MARKETPLACE_API_KEY", hide_env_values = true, value_name = "KEYS")]
    pub api_keys: Option<String>,

    /// File holding the static API keys, one a line. It is re-read every
    /// 2 seconds: a changed, valid list takes effect at once, while an
    /// unreadable or invalid one is logged and the previous keys stay.
    /// During rotation, list the old and the new key together.
    #[arg(long = "api-keys-file", env = "MARKETPLACE_API_KEY_FILE", value_name = "FILE")]
    pub api_keys_file: Option<PathBuf>,
}

/// Settings of the edge.
#[derive(Debug, Clone, Args)]
pub struct EdgeSettings {
    /// Address of the public listener.
    #[arg(long, env = "VALORA_EDGE_ADDR", default_value = "127.0.0.1:8080", value_name = "HOST:PORT")]
    pub edge_addr: SocketAddr,

    /// Browser origins allowed by CORS, comma-separated exact origins such
    /// as https://app.example.com. Empty allows none.
    #[arg(long, env = "VALORA_CORS_ALLOW_ORIGINS", default_value = "", value_name = "ORIGINS")]
    pub cors_allow_origins: String,

    /// PEM certificate chain of the public listener; with --tls-key, the
    /// edge serves TLS instead of cleartext.
    #[arg(long, env = "VALORA_EDGE_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of the public listener.
    #[arg(long, env = "VALORA_EDGE_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    #[command(flatten)]
    pub rate_limits: RateLimitArgs,
}

/// Edge rate limits; each is COUNT/second, COUNT/minute, COUNT/hour or off.
#[derive(Debug, Clone, Args)]
pub struct RateLimitArgs {
    /// Calls per API key.
    #[arg(long, env = "VALORA_RATE_LIMIT_PER_KEY", default_value = "50/second", value_name = "RATE")]
    pub rate_limit_per_key: String,

    /// Calls per signed-in user.
    #[arg(long, env = "VALORA_RATE_LIMIT_PER_USER", default_value = "20/second", value_name = "RATE")]
    pub rate_limit_per_user: String,

    /// Failed calls (missing or bad credentials) per client address; after
    /// that, the address is refused before any credential check.
    #[arg(long, env = "VALORA_RATE_LIMIT_FAILURES_PER_ADDRESS", default_value = "30/minute", value_name = "RATE")]
    pub rate_limit_failures_per_address: String,

    /// Calls per client address to single methods, as SERVICE/METHOD=RATE
    /// pairs separated by commas.
    #[arg(
        long,
        env = "VALORA_RATE_LIMIT_METHODS",
        default_value = "valora.auth.v1.AuthService/Login=10/minute,valora.auth.v1.AuthService/Register=5/minute",
        value_name = "LIST"
    )]
    pub rate_limit_methods: String,

    /// Proxies (addresses or CIDR networks, comma-separated) whose
    /// X-Forwarded-For is believed; the client address is then the
    /// right-most hop that is not one of them.
    #[arg(long, env = "VALORA_TRUSTED_PROXIES", default_value = "", value_name = "NETWORKS")]
    pub trusted_proxies: String,

    /// Redis that edges share their rate limit counts through; limits are
    /// per edge process when unset.
    #[arg(long, env = "VALORA_REDIS_URL", hide_env_values = true, value_name = "URL")]
    pub redis_url: Option<String>,

    /// Longest wait for Redis per decision, in milliseconds, before the
    /// edge falls back to its own counts.
    #[arg(long, env = "VALORA_REDIS_TIMEOUT_MS", default_value_t = 50, value_name = "MILLISECONDS")]
    pub redis_timeout_ms: u64,

    /// Prefix of every Redis key the edge writes.
    #[arg(long, env = "VALORA_REDIS_PREFIX", default_value = "valora:", value_name = "PREFIX")]
    pub redis_prefix: String,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub edge: EdgeSettings,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Folder for development state: SQLite databases and the generated
    /// API key.
    #[arg(long, env = "VALORA_STATE_DIR", default_value = "./.valora", value_name = "DIR")]
    pub state_dir: PathBuf,

    /// Address of the marketplace service's mutual-TLS listener.
    #[arg(long, env = "VALORA_MARKETPLACE_ADDR", default_value = "127.0.0.1:50052", value_name = "HOST:PORT")]
    pub marketplace_addr: SocketAddr,

    /// Database of the marketplace service; SQLite under the state folder
    /// when unset.
    #[arg(long, env = "MARKETPLACE_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub marketplace_database_url: Option<String>,

    /// Address of the auth service's mutual-TLS listener.
    #[arg(long, env = "VALORA_AUTH_ADDR", default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    pub auth_addr: SocketAddr,

    /// Database of the auth service; SQLite under the state folder when
    /// unset.
    #[arg(long, env = "AUTH_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub auth_database_url: Option<String>,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

#[derive(Debug, Args)]
pub struct EdgeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub edge: EdgeSettings,
    #[command(flatten)]
    pub keys: KeyArgs,

    /// Marketplace replicas: comma-separated HOST:PORT entries; a host
    /// may be a DNS name resolving to several replicas, looked up again
    /// every few seconds.
    #[arg(long, env = "VALORA_MARKETPLACE_ADDR", default_value = "127.0.0.1:50052", value_name = "HOST:PORT,...")]
    pub marketplace_addr: String,

    /// Auth replicas, listed like the marketplace's.
    #[arg(long, env = "VALORA_AUTH_ADDR", default_value = "127.0.0.1:50051", value_name = "HOST:PORT,...")]
    pub auth_addr: String,

    #[command(flatten)]
    pub tokens: TokenArgs,
}

#[derive(Debug, Args)]
pub struct MarketplaceArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,

    /// Address of the marketplace service's mutual-TLS listener.
    #[arg(long, env = "VALORA_MARKETPLACE_ADDR", default_value = "127.0.0.1:50052", value_name = "HOST:PORT")]
    pub marketplace_addr: SocketAddr,

    /// Database URL: postgres://USER@HOST/DB?sslmode=verify-full in
    /// production, or sqlite://PATH?mode=rwc.
    #[arg(long, env = "MARKETPLACE_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub marketplace_database_url: String,

    /// Auth replicas, which verify issued API keys: comma-separated
    /// HOST:PORT entries, each host an address or DNS name.
    #[arg(long, env = "VALORA_AUTH_ADDR", default_value = "127.0.0.1:50051", value_name = "HOST:PORT,...")]
    pub auth_addr: String,

    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

#[derive(Debug, Args)]
pub struct AuthArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub keys: KeyArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub auth: AuthSettings,

    /// Address of the auth service's mutual-TLS listener.
    #[arg(long, env = "VALORA_AUTH_ADDR", default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    pub auth_addr: SocketAddr,

    /// Database URL: postgres://USER@HOST/DB?sslmode=verify-full in
    /// production, or sqlite://PATH?mode=rwc.
    #[arg(long, env = "AUTH_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub auth_database_url: String,
}

/// Settings of webhook delivery.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// 32-byte key (64 hex digits) that seals webhook signing secrets in
    /// the database; MARKETPLACE_WEBHOOK_KEY_FILE names a file holding it.
    #[arg(long, env = "MARKETPLACE_WEBHOOK_KEY", hide_env_values = true, value_name = "HEX")]
    pub webhook_key: Option<String>,

    /// File holding the webhook key.
    #[arg(long, env = "MARKETPLACE_WEBHOOK_KEY_FILE", value_name = "FILE")]
    pub webhook_key_file: Option<PathBuf>,

    /// Allow webhook receivers on 127.0.0.1 and ::1 (and http for them),
    /// for local work and tests; refused outside `valora dev`.
    #[arg(long, env = "VALORA_WEBHOOK_ALLOW_LOOPBACK", default_value_t = false, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub webhook_allow_loopback: bool,

    /// Networks in which webhook receivers may have addresses that are not
    /// public, as comma-separated CIDR networks or single addresses, IPv4
    /// or IPv6 (for example 10.20.0.0/16,fd12::7). A receiver whose URL
    /// names an IP address inside them may also use http. List the
    /// narrowest networks. Start-up fails for 0.0.0.0/0, ::/0 and networks
    /// that contain a cloud metadata or unspecified address.
    #[arg(long, env = "VALORA_WEBHOOK_ALLOW_NETWORKS", default_value = "", value_name = "NETWORKS")]
    pub webhook_allow_networks: String,

    /// Delay after a delivery's first failed attempt, in milliseconds; it
    /// doubles per attempt, up to an hour, with jitter.
    #[arg(long, env = "MARKETPLACE_WEBHOOK_RETRY_BASE_MS", default_value_t = 5000, value_name = "MILLISECONDS")]
    pub webhook_retry_base_ms: u64,

    /// Attempts per delivery before it fails and its endpoint is marked
    /// failing.
    #[arg(long, env = "MARKETPLACE_WEBHOOK_MAX_ATTEMPTS", default_value_t = 10, value_name = "COUNT")]
    pub webhook_max_attempts: i32,

    /// Time limit of one delivery attempt, in milliseconds.
    #[arg(long, env = "MARKETPLACE_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000, value_name = "MILLISECONDS")]
    pub webhook_timeout_ms: u64,
}

/// Which service's migrations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MigrationTarget {
    Marketplace,
    Auth,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The service whose tables to migrate.
    pub service: MigrationTarget,

    /// Database URL with owner rights; defaults to the service's database
    /// variable (MARKETPLACE_DATABASE_URL or AUTH_DATABASE_URL).
    #[arg(long, env = "VALORA_MIGRATE_DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,

    /// The marketplace database, used when --database-url is not given.
    #[arg(long, env = "MARKETPLACE_DATABASE_URL", hide_env_values = true, value_name = "URL", hide = true)]
    pub marketplace_database_url: Option<String>,

    /// The auth database, used when --database-url is not given.
    #[arg(long, env = "AUTH_DATABASE_URL", hide_env_values = true, value_name = "URL", hide = true)]
    pub auth_database_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct CertsDevArgs {
    /// Folder to write the certificates and keys to.
    #[arg(long, env = "VALORA_CERTS_DIR", default_value = "./certs-dev", value_name = "DIR")]
    pub certs_dir: PathBuf,

    /// Keep the existing CA and issue fresh leaf certificates.
    #[arg(long)]
    pub rotate: bool,
}
