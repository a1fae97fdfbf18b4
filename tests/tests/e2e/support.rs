//! Test support: free ports, a running development mesh as a real process,
//! clients, external tools and fresh PostgreSQL databases.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use valora_proto::auth::v1::auth_service_client::AuthServiceClient;
use valora_proto::marketplace::v1::marketplace_service_client::MarketplaceServiceClient;

/// The static API key the test meshes accept.
pub const KEY: &str = "e2e-static-key-0123456789abcdef0123456789";
/// A second accepted key, for overlap during rotation.
pub const SECOND_KEY: &str = "e2e-second-key-abcdef0123456789abcdef01234";

/// A webhook sealing key (64 hex digits) for `valora serve marketplace`.
pub const WEBHOOK_KEY: &str = "5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e5e";

/// Whether this run is CI, where missing infrastructure fails tests.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A port that was free a moment ago on 127.0.0.1, chosen below Linux's
/// ephemeral range (32768 and up) so that outgoing connections of other
/// tests do not take it in the meantime.
pub fn free_port() -> u16 {
    loop {
        let port = 20_000 + (rand_u16() % 12_000);
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn rand_u16() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    hasher.finish() as u16
}

/// Options of a development mesh.
#[derive(Clone, Debug, Default)]
pub struct MeshOptions {
    /// `MARKETPLACE_DATABASE_URL`; SQLite in the state folder when `None`.
    pub database_url: Option<String>,
    /// Static keys; [`KEY`] when `None`, and no key at all with `Some("")`.
    pub api_keys: Option<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
}

/// Ports and folders of a mesh, kept across restarts.
#[derive(Debug)]
pub struct MeshLayout {
    pub dir: tempfile::TempDir,
    pub edge: SocketAddr,
    pub marketplace: SocketAddr,
    pub auth: SocketAddr,
    pub admin: SocketAddr,
}

impl MeshLayout {
    pub fn new() -> Self {
        let mut layout = Self {
            dir: tempfile::tempdir().expect("temporary folder"),
            edge: SocketAddr::from(([127, 0, 0, 1], 0)),
            marketplace: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth: SocketAddr::from(([127, 0, 0, 1], 0)),
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        layout.new_ports();
        layout
    }

    /// Picks fresh ports, keeping the folders.
    pub fn new_ports(&mut self) {
        let port = || SocketAddr::from(([127, 0, 0, 1], free_port()));
        self.edge = port();
        self.marketplace = port();
        self.auth = port();
        self.admin = port();
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }
}

/// A `valora dev` process; killed when dropped.
pub struct DevMesh {
    pub layout: MeshLayout,
    child: Option<Child>,
    log: PathBuf,
    out: PathBuf,
}

impl DevMesh {
    /// Starts a mesh on fresh ports and waits until it serves.
    pub async fn start(options: MeshOptions) -> Self {
        Self::start_in(MeshLayout::new(), options).await
    }

    /// Starts a mesh on an existing layout (after [`DevMesh::stop`]). When a
    /// port was taken between choosing and binding it, retries on new ports.
    pub async fn start_in(mut layout: MeshLayout, options: MeshOptions) -> Self {
        for _ in 0..3 {
            match Self::try_start_in(layout, &options).await {
                Ok(mesh) => return mesh,
                Err(returned) => {
                    layout = returned;
                    layout.new_ports();
                }
            }
        }
        Self::try_start_in(layout, &options).await.unwrap_or_else(|_| panic!("no free ports after four tries"))
    }

    async fn try_start_in(layout: MeshLayout, options: &MeshOptions) -> Result<Self, MeshLayout> {
        let run = std::fs::read_dir(layout.dir.path()).map(|d| d.count()).unwrap_or(0);
        let log = layout.dir.path().join(format!("stderr-{run}.log"));
        let out = layout.dir.path().join(format!("stdout-{run}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_valora-e2e-node"));
        command
            .arg("dev")
            .args(["--edge-addr", &layout.edge.to_string()])
            .args(["--marketplace-addr", &layout.marketplace.to_string()])
            .args(["--auth-addr", &layout.auth.to_string()])
            .args(["--admin-addr", &layout.admin.to_string()])
            .args(["--state-dir", &layout.state_dir().display().to_string()])
            .args(["--certs-dir", &layout.certs_dir().display().to_string()])
            .args(["--drain-seconds", "5"])
            .current_dir(layout.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (name, _) in std::env::vars() {
            if name.starts_with("VALORA_") || name.starts_with("MARKETPLACE_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", "info");
        // Cheap password hashing keeps debug-build tests fast; the cost
        // parameters do not change behaviour.
        command.env("AUTH_ARGON2_MEMORY_KIB", "1024");
        command.env("AUTH_ARGON2_ITERATIONS", "1");
        command.env("VALORA_SHUTDOWN_DELAY_SECONDS", "0");
        // Rate limits are off unless a test turns them on.
        for limit in ["PER_KEY", "PER_USER", "FAILURES_PER_ADDRESS", "METHODS"] {
            command.env(format!("VALORA_RATE_LIMIT_{limit}"), "off");
        }
        match options.api_keys.as_deref() {
            None => {
                command.env("MARKETPLACE_API_KEY", format!("{KEY},{SECOND_KEY}"));
            }
            Some("") => {}
            Some(keys) => {
                command.env("MARKETPLACE_API_KEY", keys);
            }
        }
        if let Some(url) = &options.database_url {
            command.env("MARKETPLACE_DATABASE_URL", url);
        }
        for (name, value) in &options.env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start valora dev");
        let mut mesh = Self { layout, child: Some(child), log, out };
        match mesh.wait_until_serving().await {
            Ok(()) => Ok(mesh),
            Err(()) => {
                mesh.child = None;
                let layout = std::mem::replace(&mut mesh.layout, MeshLayout::new());
                Err(layout)
            }
        }
    }

    /// `Err` when the process exited because a port was taken.
    async fn wait_until_serving(&mut self) -> Result<(), ()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    if self.logs().contains("Address already in use") {
                        return Err(());
                    }
                    panic!("valora dev exited with {status}; log:\n{}", self.logs());
                }
            }
            if self.edge_health("").await == Some(1)
                && tcp_open(self.layout.marketplace)
                && tcp_open(self.layout.auth)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                panic!("valora dev did not start in time; log:\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The serving status the edge reports for `service` (1 is SERVING).
    pub async fn edge_health(&self, service: &str) -> Option<i32> {
        let channel = Channel::from_shared(format!("http://{}", self.layout.edge))
            .ok()?
            .connect_timeout(Duration::from_millis(500))
            .connect()
            .await
            .ok()?;
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        let request = tonic_health::pb::HealthCheckRequest { service: service.to_owned() };
        client.check(request).await.ok().map(|r| r.get_ref().status)
    }

    /// The edge as `host:port`.
    pub fn edge(&self) -> String {
        self.layout.edge.to_string()
    }

    /// Everything the process logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Everything the process printed on standard output so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// The auth service's SQLite URL in the state folder.
    pub fn auth_database_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.layout.state_dir().join("auth.db").display())
    }

    /// An auth client through the edge with `key` and optional bearer token.
    pub async fn auth_client(&self, key: &str, bearer: Option<&str>) -> AuthServiceClient<tonic::service::interceptor::InterceptedService<Channel, KeyInterceptor>> {
        let channel = Channel::from_shared(format!("http://{}", self.layout.edge))
            .expect("edge URI")
            .connect()
            .await
            .expect("connect to the edge");
        let mut interceptor = KeyInterceptor::new(key);
        interceptor.bearer(bearer);
        AuthServiceClient::with_interceptor(channel, interceptor)
    }

    /// A marketplace client through the edge with `key` and a bearer token.
    pub async fn user_client(&self, key: &str, bearer: &str) -> MarketplaceServiceClient<tonic::service::interceptor::InterceptedService<Channel, KeyInterceptor>> {
        let channel = Channel::from_shared(format!("http://{}", self.layout.edge))
            .expect("edge URI")
            .connect()
            .await
            .expect("connect to the edge");
        let mut interceptor = KeyInterceptor::new(key);
        interceptor.bearer(Some(bearer));
        MarketplaceServiceClient::with_interceptor(channel, interceptor)
    }

    /// A marketplace client through the edge with `key` (none when empty).
    pub async fn client(&self, key: &str) -> MarketplaceServiceClient<tonic::service::interceptor::InterceptedService<Channel, KeyInterceptor>> {
        let channel = Channel::from_shared(format!("http://{}", self.layout.edge))
            .expect("edge URI")
            .connect()
            .await
            .expect("connect to the edge");
        MarketplaceServiceClient::with_interceptor(channel, KeyInterceptor::new(key))
    }

    /// Kills the process with SIGKILL (no drain) and returns the layout for
    /// a restart.
    pub fn kill(mut self) -> MeshLayout {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        std::mem::replace(&mut self.layout, MeshLayout::new())
    }

    /// Sends SIGTERM without waiting.
    pub fn signal_term(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        }
    }

    /// Waits up to `limit` for the process to exit; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM and waits for the process to exit; returns the layout
    /// for a restart.
    pub fn stop(mut self) -> MeshLayout {
        self.terminate();
        let layout = std::mem::replace(&mut self.layout, MeshLayout::new());
        layout
    }

    fn terminate(&mut self) {
        let Some(mut child) = self.child.take() else { return };
        let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for DevMesh {
    fn drop(&mut self) {
        self.terminate();
    }
}

fn tcp_open(addr: SocketAddr) -> bool {
    std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Adds `x-api-key` (and, when set, `authorization`) to every call.
#[derive(Clone)]
pub struct KeyInterceptor {
    key: String,
    authorization: Option<String>,
}

impl KeyInterceptor {
    /// Sends `key` (nothing when empty).
    pub fn new(key: &str) -> Self {
        Self { key: key.to_owned(), authorization: None }
    }

    /// Sends `Authorization: Bearer TOKEN` too.
    pub fn bearer(&mut self, token: Option<&str>) {
        self.authorization = token.map(|t| format!("Bearer {t}"));
    }
}

impl Interceptor for KeyInterceptor {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if !self.key.is_empty() {
            let value: MetadataValue<_> = self.key.parse().map_err(|_| tonic::Status::internal("bad key"))?;
            request.metadata_mut().insert("x-api-key", value);
        }
        if let Some(bearer) = &self.authorization {
            let value: MetadataValue<_> = bearer.parse().map_err(|_| tonic::Status::internal("bad token"))?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

/// Finds an external tool on PATH. Fails in CI when it is missing; outside
/// CI returns `None` so that the caller can skip with a message.
pub fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).map(|dir| dir.join(name)).find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(!in_ci(), "{name} is required in CI but is not on PATH; .ci/run installs it");
        eprintln!("skipping: {name} is not installed");
    }
    found
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// A fresh PostgreSQL database, dropped at the end of the test.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

/// Connection URL of the PostgreSQL server used by tests.
pub fn postgres_admin_url() -> String {
    std::env::var("VALORA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

impl PgDatabase {
    /// Creates a database; `None` (outside CI only) when PostgreSQL is not
    /// reachable.
    pub async fn create() -> Option<Self> {
        use sea_orm::{ConnectionTrait, Database};
        let admin_url = postgres_admin_url();
        let admin = match Database::connect(&admin_url).await {
            Ok(db) => db,
            Err(error) => {
                assert!(!in_ci(), "PostgreSQL at {admin_url} is required in CI: {error}");
                eprintln!("skipping the PostgreSQL run: {error}");
                return None;
            }
        };
        let name = format!("valora_e2e_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create a test database");
        let base = admin_url.rsplit_once('/').map(|(base, _)| base).unwrap_or(&admin_url);
        Some(Self { url: format!("{base}/{name}"), admin_url, name })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs outside any async context guarantee, so a small runtime
        // on its own thread does the cleanup.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                use sea_orm::{ConnectionTrait, Database};
                let admin = Database::connect(&admin_url).await.ok()?;
                admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await.ok()
            })
        })
        .join();
    }
}

/// Runs the `valora` command to completion (killed after 30 s) with only
/// the given `VALORA_*` / `MARKETPLACE_*` variables set.
pub fn run_valora(args: &[&str], env: &[(&str, &str)], dir: &Path) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_valora-e2e-node"));
    command.args(args).current_dir(dir).stdin(Stdio::null());
    for (name, _) in std::env::vars() {
        if name.starts_with("VALORA_") || name.starts_with("MARKETPLACE_") {
            command.env_remove(name);
        }
    }
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start valora");
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("collect output");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("collect output");
    panic!(
        "valora {args:?} did not exit in time:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A long-running `valora` process (`serve`, usually) with its stderr in a
/// log file; stopped with SIGTERM when dropped.
pub struct Served {
    child: Option<Child>,
    log: PathBuf,
}

impl Served {
    /// Starts `valora ARGS` in `dir`, logging to `dir/NAME.log`, with only
    /// the given settings: inherited `VALORA_*`, `MARKETPLACE_*` and
    /// `AUTH_*` variables are removed.
    pub fn start<S: AsRef<std::ffi::OsStr>>(dir: &Path, name: &str, args: &[S], env: &[(&str, &str)]) -> Self {
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(env!("CARGO_BIN_EXE_valora-e2e-node"));
        command
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the log file"));
        for (name, _) in std::env::vars() {
            if name.starts_with("VALORA_") || name.starts_with("MARKETPLACE_") || name.starts_with("AUTH_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command.env("RUST_LOG", "info").env("VALORA_SHUTDOWN_DELAY_SECONDS", "0");
        for (name, value) in env {
            command.env(name, value);
        }
        Self { child: Some(command.spawn().expect("start valora")), log }
    }

    /// Returns the process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(Child::id).expect("the process was stopped")
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        self.child.as_mut().is_none_or(|child| child.try_wait().ok().flatten().is_some())
    }

    /// Waits until `addr` accepts connections; panics with the log when
    /// the process exits first or `limit` passes.
    pub async fn wait_listening(&mut self, addr: SocketAddr, limit: Duration) {
        let started = Instant::now();
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            assert!(!self.exited(), "the process exited before listening on {addr}:\n{}", self.logs());
            assert!(started.elapsed() < limit, "nothing listened on {addr} within {limit:?}:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the process with SIGKILL and returns once it is gone, so its
    /// sockets are closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// Stops `child` with SIGTERM, and with SIGKILL when it has not exited 10
/// seconds later.
pub fn terminate(mut child: Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The body of a plain HTTP GET, such as an admin endpoint's.
pub async fn http_get(url: &str) -> String {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let response = client.get(url.parse().expect("URL")).await.expect("HTTP GET");
    let body = response.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}
