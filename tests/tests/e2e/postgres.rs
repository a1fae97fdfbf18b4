//! PostgreSQL as production runs it, each test on a private cluster of its
//! own: TLS with certificate checks, the rejection of plaintext, an outage
//! and the recovery from it, and a point-in-time-recovery drill.
//!
//! A private cluster lives in a temporary folder and listens on a free port
//! of 127.0.0.1. PostgreSQL refuses to run as root, so when the tests run as
//! root its programs run as the `postgres` user through `runuser`. Outside
//! CI the tests skip with a message when the PostgreSQL programs, `runuser`
//! or the `postgres` user are missing; in CI they fail.

use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tonic::Code;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use valora_mesh::identity::Identity;
use valora_mesh::tls::{MeshTls, TlsFiles, mesh_channel};
use valora_proto::marketplace::v1::marketplace_service_client::MarketplaceServiceClient;
use valora_proto::marketplace::v1::{CreateListingRequest, GetListingRequest, Listing, Money};

use crate::support::{KEY, KeyInterceptor, WEBHOOK_KEY, free_port, in_ci, repo_root, run_valora, terminate, tool};

/// Generous bound on how long the marketplace may take to turn a database
/// outage into UNAVAILABLE, and to serve again once the database is back.
/// The pool's acquire timeout is 3 seconds, so both are expected well within.
const OUTAGE_BOUND: Duration = Duration::from_secs(10);

/// Client deadline of each call, so that a hanging call fails the test
/// instead of blocking it.
const CALL_DEADLINE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------
// PostgreSQL programs

/// The PostgreSQL programs and the user that runs them.
#[derive(Clone, Debug)]
pub struct PgTools {
    /// Folder with `initdb`, `pg_ctl`, `psql` and the other programs.
    pub bin_dir: PathBuf,
    /// `runuser` and the uid and gid of `postgres` when the tests run as
    /// root; `None` when they run as another user, who runs PostgreSQL
    /// directly.
    owner: Option<(PathBuf, u32, u32)>,
}

impl PgTools {
    /// Finds the programs and the user to run them as. Returns `None`
    /// (outside CI only) when something is missing.
    pub fn find() -> Option<Self> {
        let Some(bin_dir) = pg_bin_dir() else {
            assert!(
                !in_ci(),
                "PostgreSQL's programs (initdb, pg_ctl) are required in CI; install PostgreSQL or set VALORA_TEST_PG_BINDIR"
            );
            eprintln!("skipping: PostgreSQL's programs (initdb, pg_ctl) were not found; set VALORA_TEST_PG_BINDIR");
            return None;
        };
        let is_root = std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false);
        if !is_root {
            return Some(Self { bin_dir, owner: None });
        }
        // runuser lives in /usr/sbin, which a non-login PATH may lack.
        let runuser = ["/usr/sbin/runuser", "/sbin/runuser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
            .or_else(|| tool("runuser"))?;
        let Some((uid, gid)) = postgres_user() else {
            assert!(!in_ci(), "the postgres user is required in CI to run PostgreSQL as non-root");
            eprintln!("skipping: running as root and there is no postgres user to run PostgreSQL as");
            return None;
        };
        Some(Self { bin_dir, owner: Some((runuser, uid, gid)) })
    }

    /// Builds a command that runs PostgreSQL's `program` as the cluster
    /// owner in `dir`, without the caller's `PG*` variables.
    pub fn command(&self, program: &str, dir: &Path) -> Command {
        let path = self.bin_dir.join(program);
        let mut command = if let Some((runuser, _, _)) = &self.owner {
            let mut runuser = Command::new(runuser);
            runuser.args(["-u", "postgres", "--"]).arg(path);
            runuser
        } else {
            Command::new(path)
        };
        command.current_dir(dir).stdin(Stdio::null());
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("PG") {
                command.env_remove(name);
            }
        }
        command
    }

    /// Makes the cluster owner the owner of `path`.
    fn hand_over(&self, path: &Path) {
        if let Some((_, uid, gid)) = self.owner {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
        }
    }
}

/// `VALORA_TEST_PG_BINDIR`, else the newest `/usr/lib/postgresql/*/bin`
/// (Debian's layout), else `pg_config --bindir`.
fn pg_bin_dir() -> Option<PathBuf> {
    let has_programs = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("VALORA_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|d| has_programs(d));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_programs(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Some(dir);
    }
    let output = Command::new("pg_config").arg("--bindir").output().ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    Some(dir).filter(|d| has_programs(d))
}

/// uid and gid of the `postgres` user.
fn postgres_user() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let output = Command::new("id").args([flag, "postgres"]).output().ok()?;
        if !output.status.success() {
            return None;
        }
        String::from_utf8_lossy(&output.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

// ---------------------------------------------------------------------------
// Test certificates

/// A certificate authority generated for one test; nothing is written to
/// the repository.
pub struct TestCa {
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn generate(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(2);
        let cert = params.self_signed(&key).expect("self-signed CA");
        Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// Issues a server certificate for `names` (DNS names or IP addresses,
    /// each becomes a subject alternative name). Returns the certificate
    /// and its private key as PEM.
    pub fn issue_server(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().expect("server key");
        let sans: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(sans).expect("server certificate parameters");
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("postgres"));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(1);
        let cert = params.signed_by(&key, &self.issuer).expect("server certificate");
        (cert.pem(), key.serialize_pem())
    }
}

// ---------------------------------------------------------------------------
// A private PostgreSQL cluster

/// Options of a private cluster.
#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Subject alternative names of the server certificate. `Some` turns
    /// TLS on and makes `pg_hba.conf` reject connections without TLS.
    pub tls_names: Option<Vec<&'static str>>,
    /// Archive every completed WAL segment to [`PrivatePostgres::archive_dir`].
    pub archive_wal: bool,
}

impl PgOptions {
    /// TLS on, with a server certificate for `names`.
    pub fn tls(names: &[&'static str]) -> Self {
        Self { tls_names: Some(names.to_vec()), ..Self::default() }
    }
}

/// A PostgreSQL cluster in a temporary folder, started on a free port of
/// 127.0.0.1 with trust authentication. Dropping it stops the server and
/// removes the folder.
pub struct PrivatePostgres {
    tools: PgTools,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl PrivatePostgres {
    /// Creates and starts a cluster. Returns `None` (outside CI only) when
    /// the PostgreSQL programs cannot be run.
    pub fn create(options: PgOptions) -> Option<Self> {
        let tools = PgTools::find()?;
        let dir = tempfile::Builder::new().prefix("valora-pg-").tempdir().expect("temporary folder");
        tools.hand_over(dir.path());
        let postgres = Self { tools, dir, port: free_port() };
        postgres.init(&options);
        postgres.start();
        Some(postgres)
    }

    fn init(&self, options: &PgOptions) {
        let data = self.data_dir();
        // --no-sync: the cluster is thrown away after the test.
        let output = self
            .command("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])
            .output()
            .expect("run initdb");
        assert!(output.status.success(), "initdb failed:\n{}", String::from_utf8_lossy(&output.stderr));

        let mut config = format!(
            "\n# PrivatePostgres\n\
             listen_addresses = '127.0.0.1'\n\
             port = {port}\n\
             unix_socket_directories = '{socket_dir}'\n\
             max_connections = 40\n\
             shared_buffers = 16MB\n\
             log_connections = on\n",
            port = self.port,
            socket_dir = self.dir.path().display(),
        );
        let mut hba = String::from("local all all trust\nlocal replication all trust\n");
        if let Some(names) = &options.tls_names {
            let ca = TestCa::generate("VALORA e2e PostgreSQL CA");
            let (cert_pem, key_pem) = ca.issue_server(names);
            std::fs::write(self.ca_file(), &ca.cert_pem).expect("write the CA certificate");
            self.write_owned(&data.join("server.crt"), &cert_pem, 0o644);
            // PostgreSQL rejects a key file that others may read.
            self.write_owned(&data.join("server.key"), &key_pem, 0o600);
            config.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            hba.push_str(
                "hostssl all all 127.0.0.1/32 trust\n\
                 hostssl replication all 127.0.0.1/32 trust\n\
                 hostnossl all all 127.0.0.1/32 reject\n\
                 hostnossl replication all 127.0.0.1/32 reject\n",
            );
        } else {
            hba.push_str("host all all 127.0.0.1/32 trust\nhost replication all 127.0.0.1/32 trust\n");
        }
        if options.archive_wal {
            let archive = self.archive_dir();
            std::fs::create_dir(&archive).expect("create the WAL archive folder");
            self.tools.hand_over(&archive);
            config.push_str(&format!(
                "wal_level = replica\narchive_mode = on\narchive_command = 'test ! -f {dir}/%f && cp %p {dir}/%f'\n",
                dir = archive.display()
            ));
        }
        append(&data.join("postgresql.conf"), &config);
        std::fs::write(data.join("pg_hba.conf"), hba).expect("write pg_hba.conf");
    }

    /// Writes a new file with `mode` and gives it to the cluster owner.
    fn write_owned(&self, path: &Path, contents: &str, mode: u32) {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
        file.write_all(contents.as_bytes()).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.tools.hand_over(path);
    }

    fn command(&self, program: &str) -> Command {
        self.tools.command(program, self.dir.path())
    }

    fn pg_ctl(&self, args: &[&str]) -> Output {
        self.command("pg_ctl")
            .arg("-D")
            .arg(self.data_dir())
            .args(args)
            .output()
            .expect("run pg_ctl")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) {
        let log = self.log_file().display().to_string();
        let output = self.pg_ctl(&["-l", &log, "-w", "-t", "60", "start"]);
        assert!(
            output.status.success(),
            "pg_ctl start failed:\n{}{}\nserver log:\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
            self.log()
        );
    }

    /// Stops the server with a fast shutdown: open sessions are ended and
    /// the server exits cleanly.
    pub fn stop(&self) {
        let output = self.pg_ctl(&["-m", "fast", "-w", "-t", "60", "stop"]);
        assert!(
            output.status.success(),
            "pg_ctl stop failed:\n{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Sends SIGKILL to the postmaster, as a crash would, and waits until it
    /// and its child processes are gone, so that [`Self::start`] can run
    /// crash recovery.
    pub fn kill(&self) {
        let pid = self.postmaster_pid().expect("postmaster.pid names a running server");
        let children = child_pids(pid);
        let status = Command::new("kill").args(["-KILL", &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill -KILL {pid} failed");
        // A new postmaster does not start while the old one still exists,
        // even as a zombie, so this waits until the process is reaped. Children
        // exit when they notice that the postmaster died.
        let deadline = Instant::now() + Duration::from_secs(30);
        while process_exists(pid) || children.iter().any(|&child| process_running(child)) {
            assert!(Instant::now() < deadline, "postmaster {pid} or its children {children:?} still exist 30 s after SIGKILL");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Builds a URL for the database `postgres` as user `postgres` on
    /// `host` (which must reach 127.0.0.1) with the query parameters
    /// `params`.
    pub fn url(&self, host: &str, params: &[(&str, &str)]) -> String {
        let query: Vec<String> = params.iter().map(|(name, value)| format!("{name}={value}")).collect();
        let mut url = format!("postgres://postgres@{host}:{}/postgres", self.port);
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// Builds a URL with `sslmode=MODE` that trusts the CA certificate in
    /// `ca`.
    pub fn tls_url(&self, host: &str, mode: &str, ca: &Path) -> String {
        let ca = ca.to_str().expect("UTF-8 path");
        self.url(host, &[("sslmode", mode), ("sslrootcert", ca)])
    }

    /// Runs one SQL statement through the Unix socket and returns its
    /// unaligned output.
    pub fn sql(&self, statement: &str) -> String {
        let output = self
            .command("psql")
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres"])
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-c", statement])
            .output()
            .expect("run psql");
        assert!(output.status.success(), "{statement}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Runs one SQL statement (or `-f FILE` when `statement` starts with
    /// `-f `) as `user` on `database`; `Err` holds psql's error output.
    pub fn psql(&self, user: &str, database: &str, statement: &str) -> Result<String, String> {
        let mut command = self.command("psql");
        command
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", user, "-d", database])
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string()]);
        match statement.strip_prefix("-f ") {
            Some(file) => command.args(["-f", file]),
            None => command.args(["-c", statement]),
        };
        let output = command.output().expect("run psql");
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Returns the path of the CA certificate that signed the server
    /// certificate (TLS only).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    pub fn archive_dir(&self) -> PathBuf {
        self.dir.path().join("wal-archive")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_file()).unwrap_or_default()
    }

    fn postmaster_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir().join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let Some(pid) = self.postmaster_pid() else { return };
        let stopped = self.pg_ctl(&["-m", "immediate", "-w", "-t", "30", "stop"]).status.success();
        if !stopped && process_exists(pid) {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        // The TempDir removes the folder.
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    file.write_all(text.as_bytes()).expect("append");
}

/// State letter and parent pid of a process, from `/proc/PID/stat`.
fn process_stat(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in brackets may contain spaces and brackets.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let parent = fields.next()?.parse().ok()?;
    Some((state, parent))
}

fn process_exists(pid: u32) -> bool {
    process_stat(pid).is_some()
}

/// Checks whether `pid` exists and is not a zombie.
fn process_running(pid: u32) -> bool {
    process_stat(pid).is_some_and(|(state, _)| state != 'Z')
}

fn child_pids(parent: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_string_lossy().parse::<u32>().ok())
        .filter(|&pid| process_stat(pid).is_some_and(|(_, ppid)| ppid == parent))
        .collect()
}

// ---------------------------------------------------------------------------
// `valora serve marketplace`

/// A folder with development mesh certificates, from which
/// `valora serve marketplace` runs.
struct ServeFolder {
    dir: tempfile::TempDir,
}

impl ServeFolder {
    fn new() -> Self {
        let folder = Self { dir: tempfile::tempdir().expect("temporary folder") };
        let certs = folder.certs_dir().display().to_string();
        let output = run_valora(&["certs", "dev", "--certs-dir", &certs], &[], folder.dir.path());
        assert!(output.status.success(), "valora certs dev failed:\n{}", String::from_utf8_lossy(&output.stderr));
        folder
    }

    fn certs_dir(&self) -> PathBuf {
        self.dir.path().join("certs")
    }

    /// Runs `valora migrate marketplace` against `url`.
    fn migrate(&self, url: &str) {
        let output = run_valora(&["migrate", "marketplace", "--database-url", url], &[], self.dir.path());
        assert!(
            output.status.success(),
            "valora migrate marketplace failed on {url}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn serve_args(&self, addr: SocketAddr, admin: SocketAddr) -> Vec<String> {
        let auth = SocketAddr::from(([127, 0, 0, 1], free_port()));
        [
            "serve",
            "marketplace",
            "--certs-dir",
            &self.certs_dir().display().to_string(),
            "--marketplace-addr",
            &addr.to_string(),
            "--admin-addr",
            &admin.to_string(),
            "--auth-addr",
            &auth.to_string(),
            "--drain-seconds",
            "1",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// Runs `valora serve marketplace` on `url` expecting it to exit at
    /// start-up; returns its output and how long it ran.
    fn serve_expecting_exit(&self, url: &str, env: &[(&str, &str)]) -> (Output, Duration) {
        let args = self.serve_args(local_addr(), local_addr());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut all_env = vec![
            ("MARKETPLACE_API_KEY", KEY),
            ("MARKETPLACE_DATABASE_URL", url),
            ("MARKETPLACE_WEBHOOK_KEY", WEBHOOK_KEY),
            ("RUST_LOG", "info"),
        ];
        all_env.extend_from_slice(env);
        let started = Instant::now();
        let output = run_valora(&args, &all_env, self.dir.path());
        (output, started.elapsed())
    }

    /// Starts `valora serve marketplace` on `url` and waits until its
    /// `/readyz` returns 200.
    async fn serve(&self, url: &str, env: &[(&str, &str)]) -> Marketplace {
        let addr = local_addr();
        let admin = local_addr();
        let log = self.dir.path().join(format!("marketplace-{}.log", addr.port()));
        let mut command = Command::new(env!("CARGO_BIN_EXE_valora-e2e-node"));
        command
            .args(self.serve_args(addr, admin))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (name, _) in std::env::vars() {
            if name.starts_with("VALORA_") || name.starts_with("MARKETPLACE_") || name == "RUST_LOG" {
                command.env_remove(name);
            }
        }
        command
            .env("RUST_LOG", "info")
            .env("MARKETPLACE_API_KEY", KEY)
            .env("MARKETPLACE_DATABASE_URL", url)
            .env("MARKETPLACE_WEBHOOK_KEY", WEBHOOK_KEY);
        for (name, value) in env {
            command.env(name, value);
        }
        let child = command.spawn().expect("start valora serve marketplace");
        let mut marketplace = Marketplace { child: Some(child), addr, admin, certs: self.certs_dir(), log };
        let ready_after = marketplace.wait_ready(Duration::from_secs(60)).await;
        eprintln!("valora serve marketplace: /readyz returned 200 {ready_after:.2?} after start");
        marketplace
    }
}

fn local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

type MarketplaceClient = MarketplaceServiceClient<InterceptedService<Channel, KeyInterceptor>>;

/// A running `valora serve marketplace`; stopped when dropped.
struct Marketplace {
    child: Option<Child>,
    addr: SocketAddr,
    admin: SocketAddr,
    certs: PathBuf,
    log: PathBuf,
}

impl Marketplace {
    async fn wait_ready(&mut self, limit: Duration) -> Duration {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                panic!("valora serve marketplace exited with {status}; log:\n{}", self.logs());
            }
            if readyz(self.admin).await.is_some_and(|(status, _)| status == 200) {
                return started.elapsed();
            }
            assert!(started.elapsed() < limit, "/readyz did not return 200 in {limit:?}; log:\n{}", self.logs());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|child| child.try_wait().ok().flatten())
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Builds a direct client with the engineer certificate and the static
    /// key.
    fn client(&self) -> MarketplaceClient {
        let files = TlsFiles::in_dir(&self.certs, &Identity::engineer());
        let tls = MeshTls::load(files, &Identity::engineer()).expect("engineer certificate");
        let channel = mesh_channel(&tls, &self.addr.to_string(), &Identity::marketplace()).expect("mesh channel");
        MarketplaceServiceClient::with_interceptor(channel, KeyInterceptor::new(KEY))
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Marketplace {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}

/// `GET /readyz` on the admin address: status and body, or `None` when it
/// fails or takes longer than 10 seconds.
async fn readyz(admin: SocketAddr) -> Option<(u16, String)> {
    use http_body_util::{BodyExt, Empty};
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Empty<bytes::Bytes>>();
    let uri = format!("http://{admin}/readyz").parse().ok()?;
    let fetch = async {
        let response = client.get(uri).await.ok()?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.ok()?.to_bytes();
        Some((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), fetch).await.ok().flatten()
}

fn with_deadline<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(CALL_DEADLINE);
    request
}

async fn create_listing(client: &mut MarketplaceClient, title: &str) -> Result<Listing, tonic::Status> {
    let request = CreateListingRequest {
        title: title.to_owned(),
        description: "written through a private PostgreSQL".to_owned(),
        category: "books".to_owned(),
        price: Some(Money { currency_code: "EUR".to_owned(), amount_minor: 1500 }),
    };
    let response = client.create_listing(with_deadline(request)).await?;
    Ok(response.into_inner().listing.expect("CreateListing returns the listing"))
}

async fn get_listing(client: &mut MarketplaceClient, id: &str) -> Result<Listing, tonic::Status> {
    let response = client.get_listing(with_deadline(GetListingRequest { id: id.to_owned() })).await?;
    Ok(response.into_inner().listing.expect("GetListing returns the listing"))
}

fn stderr_text(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// ---------------------------------------------------------------------------
// TLS to the database

#[tokio::test]
async fn postgres_tls_verify_full_connects() {
    let Some(postgres) = PrivatePostgres::create(PgOptions::tls(&["localhost", "127.0.0.1"])) else { return };
    let url = postgres.tls_url("localhost", "verify-full", &postgres.ca_file());
    let folder = ServeFolder::new();
    folder.migrate(&url);

    let marketplace = folder.serve(&url, &[]).await;
    let (status, body) = readyz(marketplace.admin).await.expect("/readyz answers");
    assert_eq!(status, 200, "{body}");
    let mut client = marketplace.client();
    let created = create_listing(&mut client, "Over verified TLS").await.expect("CreateListing");
    let read = get_listing(&mut client, &created.id).await.expect("GetListing");
    assert_eq!(read, created);

    // pg_hba.conf rejects connections without TLS, and the server logs
    // the protocol of each one it accepts.
    let log = postgres.log();
    let tls_line = log.lines().find(|line| line.contains("connection authorized") && line.contains("SSL enabled"));
    assert!(tls_line.is_some(), "PostgreSQL logged no TLS connection:\n{log}");
    eprintln!("PostgreSQL: {}", tls_line.unwrap_or_default());
    assert!(!marketplace.logs().contains("sslmode=verify-ca"), "verify-full must not warn:\n{}", marketplace.logs());
}

#[tokio::test]
async fn postgres_tls_wrong_ca_is_refused() {
    let Some(postgres) = PrivatePostgres::create(PgOptions::tls(&["localhost", "127.0.0.1"])) else { return };
    let folder = ServeFolder::new();
    let other_ca = folder.dir.path().join("other-ca.pem");
    std::fs::write(&other_ca, TestCa::generate("another CA").cert_pem).expect("write the other CA");

    // With the right CA the same server accepts, so only the CA differs below.
    folder.migrate(&postgres.tls_url("localhost", "verify-full", &postgres.ca_file()));

    let url = postgres.tls_url("localhost", "verify-full", &other_ca);
    let (output, took) = folder.serve_expecting_exit(&url, &[]);
    let stderr = stderr_text(&output);
    eprintln!("wrong CA: exited with {} after {took:.2?}:\n{stderr}", output.status);
    assert!(!output.status.success(), "started with an untrusted server certificate:\n{stderr}");
    assert!(stderr.contains("MARKETPLACE_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("invalid peer certificate: UnknownIssuer"), "{stderr}");
    assert!(!stderr.contains("marketplace listening"), "{stderr}");
}

#[tokio::test]
async fn postgres_tls_wrong_host_is_refused() {
    // The certificate names localhost only, so 127.0.0.1, the address that
    // localhost resolves to, is a host name it does not cover.
    let Some(postgres) = PrivatePostgres::create(PgOptions::tls(&["localhost"])) else { return };
    let ca = postgres.ca_file();
    let folder = ServeFolder::new();

    // The name in the certificate connects, and so does 127.0.0.1 when the
    // host name is not checked: the CA and the server are fine.
    folder.migrate(&postgres.tls_url("localhost", "verify-full", &ca));
    folder.migrate(&postgres.tls_url("127.0.0.1", "verify-ca", &ca));

    let url = postgres.tls_url("127.0.0.1", "verify-full", &ca);
    let (output, took) = folder.serve_expecting_exit(&url, &[]);
    let stderr = stderr_text(&output);
    eprintln!("wrong host: exited with {} after {took:.2?}:\n{stderr}", output.status);
    assert!(!output.status.success(), "started although the certificate does not name 127.0.0.1:\n{stderr}");
    assert!(stderr.contains("MARKETPLACE_DATABASE_URL"), "{stderr}");
    assert!(stderr.contains("certificate not valid for name \"127.0.0.1\""), "{stderr}");
    assert!(!stderr.contains("marketplace listening"), "{stderr}");
}

#[tokio::test]
async fn plaintext_database_refused_outside_development() {
    let Some(postgres) = PrivatePostgres::create(PgOptions::default()) else { return };
    let folder = ServeFolder::new();
    let password = "not-a-real-password-4b1d";
    let cases = [
        (format!("postgres://postgres:{password}@127.0.0.1:{}/postgres?sslmode=disable", postgres.port), "disable"),
        (postgres.url("127.0.0.1", &[("sslmode", "allow")]), "allow"),
        (postgres.url("127.0.0.1", &[("sslmode", "prefer")]), "prefer"),
        (postgres.url("127.0.0.1", &[]), "prefer"),
    ];
    for (url, mode) in &cases {
        let (output, took) = folder.serve_expecting_exit(url, &[]);
        let stderr = stderr_text(&output);
        eprintln!("{url:?}: exited with {} after {took:.2?}: {}", output.status, stderr.lines().last().unwrap_or_default());
        assert!(!output.status.success(), "{url}: started:\n{stderr}");
        // The process logs the error as an event, then prints it as its
        // last line.
        let message = stderr.lines().last().unwrap_or_default();
        assert!(message.starts_with("valora: MARKETPLACE_DATABASE_URL: "), "{url}: {stderr}");
        assert!(message.contains(&format!("sslmode={mode}")), "{url}: {message}");
        assert!(message.contains("VALORA_DATABASE_ALLOW_PLAINTEXT"), "{url}: {message}");
        assert!(!stderr.contains(password), "{url}: the password was printed:\n{stderr}");
        assert!(!stderr.contains("marketplace listening"), "{stderr}");
    }
    // The refusal comes before any connection attempt.
    let log = postgres.log();
    assert!(!log.contains("connection received"), "a refused URL reached PostgreSQL:\n{log}");

    let url = postgres.url("127.0.0.1", &[("sslmode", "disable")]);
    folder.migrate(&url);
    let marketplace = folder.serve(&url, &[("VALORA_DATABASE_ALLOW_PLAINTEXT", "true")]).await;
    let mut client = marketplace.client();
    let created = create_listing(&mut client, "Over a trusted network").await.expect("CreateListing");
    assert_eq!(get_listing(&mut client, &created.id).await.expect("GetListing"), created);
    let logs = marketplace.logs();
    let warning = logs.lines().find(|line| line.contains("VALORA_DATABASE_ALLOW_PLAINTEXT=true"));
    assert!(warning.is_some(), "no warning about the plaintext connection:\n{logs}");
    eprintln!("allowed with a warning: {}", warning.unwrap_or_default());
}

// ---------------------------------------------------------------------------
// Outage and recovery

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// SIGKILL to the postmaster, then crash recovery at start.
    Crash,
    /// `pg_ctl stop -m fast`.
    FastShutdown,
}

#[tokio::test]
async fn database_outage_gives_unavailable_then_recovers() {
    let started = Instant::now();
    let Some(postgres) = PrivatePostgres::create(PgOptions::tls(&["localhost", "127.0.0.1"])) else { return };
    let url = postgres.tls_url("127.0.0.1", "verify-full", &postgres.ca_file());
    let folder = ServeFolder::new();
    folder.migrate(&url);
    let mut marketplace = folder.serve(&url, &[]).await;
    let pid = marketplace.pid();
    let mut client = marketplace.client();
    let listing = create_listing(&mut client, "Outlives outages").await.expect("CreateListing");

    for outage in [Outage::Crash, Outage::FastShutdown] {
        ride_out(&postgres, &marketplace, &mut client, &listing, outage).await;
        assert!(marketplace.exit_status().is_none(), "{outage:?}: the marketplace exited:\n{}", marketplace.logs());
        assert_eq!(marketplace.pid(), pid);
    }
    eprintln!("database_outage_gives_unavailable_then_recovers took {:.2?}", started.elapsed());
}

/// Takes PostgreSQL down, checks that calls fail with UNAVAILABLE, brings
/// it back and checks that the same process serves again.
async fn ride_out(
    postgres: &PrivatePostgres,
    marketplace: &Marketplace,
    client: &mut MarketplaceClient,
    listing: &Listing,
    outage: Outage,
) {
    let began = Instant::now();
    match outage {
        Outage::Crash => postgres.kill(),
        Outage::FastShutdown => postgres.stop(),
    }
    let down = Instant::now();
    let down_after = down - began;

    // Calls made while PostgreSQL is down, three reads and a write at
    // once, fail with UNAVAILABLE; /readyz turns 503 meanwhile.
    let mut calls = tokio::task::JoinSet::new();
    for call in 0..4 {
        let mut client = client.clone();
        let id = listing.id.clone();
        calls.spawn(async move {
            let call_began = Instant::now();
            let result = if call < 3 {
                get_listing(&mut client, &id).await.map(|_| ())
            } else {
                create_listing(&mut client, "Written during an outage").await.map(|_| ())
            };
            (result, call_began.elapsed(), down.elapsed())
        });
    }
    let ready = readyz(marketplace.admin).await;
    let outcomes = calls.join_all().await;
    for (result, _, _) in &outcomes {
        let status = result.as_ref().expect_err("a call succeeded while PostgreSQL was down");
        assert_eq!(status.code(), Code::Unavailable, "{outage:?}: {status:?}");
    }
    let latencies: Vec<Duration> = outcomes.iter().map(|(_, latency, _)| *latency).collect();
    let detected_after = outcomes.iter().map(|(_, _, finished)| *finished).min().expect("four calls");
    let message = outcomes[0].0.as_ref().err().map(|s| s.message().to_owned()).unwrap_or_default();
    let (ready_status, ready_body) = ready.expect("/readyz answers during the outage");
    assert_eq!(ready_status, 503, "{outage:?}: /readyz during the outage: {ready_body}");
    eprintln!(
        "{outage:?}: PostgreSQL down after {down_after:.2?}; first UNAVAILABLE {detected_after:.2?} after that; \
         latencies of 3 reads and 1 write made at once {latencies:.2?}; message: {message}"
    );
    eprintln!("{outage:?}: /readyz during the outage: {ready_status} {}", ready_body.replace('\n', " | "));
    assert!(detected_after <= OUTAGE_BOUND, "{outage:?}: UNAVAILABLE only after {detected_after:?}");

    // PostgreSQL comes back; the same process serves again.
    let restart_began = Instant::now();
    postgres.start();
    let accepting_after = restart_began.elapsed();
    let mut failures_meanwhile = 0;
    let served_after = loop {
        match get_listing(client, &listing.id).await {
            Ok(read) => {
                assert_eq!(&read, listing, "{outage:?}: the listing changed");
                break restart_began.elapsed();
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{outage:?}: while recovering: {status:?}");
                failures_meanwhile += 1;
            }
        }
        assert!(
            restart_began.elapsed() < Duration::from_secs(60),
            "{outage:?}: not serving 60 s after PostgreSQL started; log:\n{}",
            marketplace.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{outage:?}: PostgreSQL accepting connections {accepting_after:.2?} after pg_ctl start; first successful read \
         {served_after:.2?} after pg_ctl start, {:.2?} after PostgreSQL accepted connections \
         ({failures_meanwhile} UNAVAILABLE calls in between)",
        served_after.saturating_sub(accepting_after)
    );
    assert!(served_after <= OUTAGE_BOUND, "{outage:?}: serving again only after {served_after:?}");
    create_listing(client, "Written after the outage").await.expect("CreateListing after recovery");
    let (ready_status, ready_body) = readyz(marketplace.admin).await.expect("/readyz answers after recovery");
    assert_eq!(ready_status, 200, "{outage:?}: /readyz after recovery: {ready_body}");
}

// ---------------------------------------------------------------------------
// WAL archiving and point-in-time recovery

#[tokio::test]
async fn private_postgres_archives_wal_segments() {
    let Some(postgres) = PrivatePostgres::create(PgOptions { archive_wal: true, ..PgOptions::default() }) else {
        return;
    };
    postgres.sql("CREATE TABLE archived (n integer)");
    postgres.sql("INSERT INTO archived SELECT generate_series(1, 1000)");
    let segment = postgres.sql("SELECT pg_walfile_name(pg_switch_wal())");
    let archived = postgres.archive_dir().join(&segment);
    let began = Instant::now();
    while !archived.is_file() {
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "{segment} not archived after 30 s: {}",
            postgres.sql("SELECT * FROM pg_stat_archiver")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("WAL segment {segment} archived {:.2?} after the switch", began.elapsed());
}

#[test]
fn pitr_drill_restores_to_a_point_in_time() {
    let Some(tools) = PgTools::find() else { return };
    for program in ["pg_basebackup", "pg_verifybackup", "psql"] {
        if !tools.bin_dir.join(program).is_file() {
            assert!(!in_ci(), "{program} is required in CI next to initdb in {}", tools.bin_dir.display());
            eprintln!("skipping: {program} is not in {}", tools.bin_dir.display());
            return;
        }
    }
    let script = repo_root().join("scripts/pitr-drill.sh");
    let mode = std::fs::metadata(&script).expect("scripts/pitr-drill.sh exists").permissions().mode();
    assert_ne!(mode & 0o111, 0, "scripts/pitr-drill.sh is not executable");
    let source_port = free_port();
    let restore_port = std::iter::repeat_with(free_port).find(|&port| port != source_port).expect("a second port");

    let started = Instant::now();
    let mut child = Command::new(&script)
        .env("PG_BINDIR", &tools.bin_dir)
        .env("PITR_PORT", source_port.to_string())
        .env("PITR_RESTORE_PORT", restore_port.to_string())
        .env_remove("PITR_KEEP")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run scripts/pitr-drill.sh");
    let deadline = started + Duration::from_secs(300);
    while child.try_wait().expect("wait for the drill").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let output = child.wait_with_output().expect("drill output");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("{stdout}{stderr}pitr-drill.sh exited with {} after {took:.2?}", output.status);
    assert!(output.status.success(), "the drill failed");
    assert!(stdout.contains("recovery stopping before commit"), "recovery did not stop at T");
    assert!(stdout.contains("PASSED"), "the drill did not report success");
    let work = stdout
        .lines()
        .find_map(|line| line.split_once("working folder: ").map(|(_, path)| PathBuf::from(path.trim())))
        .expect("the drill names its working folder");
    assert!(!work.exists(), "the drill left {} behind", work.display());
}
