//! Password hashing with argon2id, off the async runtime, on a few
//! dedicated threads of lower CPU priority.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use tokio::sync::oneshot;

use super::passlib::Pbkdf2Sha256;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Argon2Settings {
    /// Memory per hash, in KiB.
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for Argon2Settings {
    /// OWASP's Password Storage Cheat Sheet's first argon2id option:
    /// 19 MiB of memory, 2 iterations, 1 degree of parallelism.
    fn default() -> Self {
        Self { memory_kib: 19 * 1024, iterations: 2, parallelism: 1 }
    }
}

/// The outcome of checking a password against a stored hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verification {
    Invalid,
    /// Correct; `rehash` when the stored hash is legacy or uses other
    /// parameters than the current ones.
    Valid { rehash: bool },
}

/// A hashing failure, which is a server fault, never the caller's.
#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("invalid argon2 settings: {0}")]
    Settings(String),
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing task failed: {0}")]
    Task(String),
}

/// How much lower than the rest of the process the hashing threads'
/// CPU priority is, in nice steps. At 10 steps the kernel gives a
/// runnable thread of the process about nine times a hashing thread's
/// share of a busy core.
pub const HASH_NICE_STEPS: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// Password hasher and verifier that runs on `concurrency` dedicated
/// threads. Each hash takes `memory_kib`, so a fixed thread count bounds
/// the memory a login storm can take.
///
/// The threads run [`HASH_NICE_STEPS`] below the process, so the async
/// runtime's threads run first whenever they have work, and hashes use the
/// CPU that is left. Hashes wait in a queue for a free thread, and one
/// whose caller has gone by then is skipped. The threads end when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Hasher {
    argon2: Arc<Argon2<'static>>,
    settings: Argon2Settings,
    jobs: mpsc::Sender<Job>,
    /// A hash of a random password, verified for unknown users so that their
    /// logins cost the same as real ones.
    dummy: Arc<String>,
}

impl Hasher {
    /// Builds a hasher and its dummy hash.
    pub fn new(settings: Argon2Settings, concurrency: usize) -> Result<Self, HashError> {
        let params = Params::new(settings.memory_kib, settings.iterations, settings.parallelism, None)
            .map_err(|e| HashError::Settings(e.to_string()))?;
        let argon2 = Arc::new(Argon2::new(Algorithm::Argon2id, Version::V0x13, params));
        let random = valora_mesh::apikey::hex(&rand::random::<[u8; 24]>());
        let dummy = argon2
            .hash_password(random.as_bytes())
            .map_err(|e| HashError::Hash(e.to_string()))?
            .to_string();
        Ok(Self { argon2, settings, jobs: start_threads(concurrency.max(1))?, dummy: Arc::new(dummy) })
    }

    /// The current settings.
    pub fn settings(&self) -> Argon2Settings {
        self.settings
    }

    /// Hashes a normalised password into a PHC string.
    pub async fn hash(&self, password: String) -> Result<String, HashError> {
        let argon2 = self.argon2.clone();
        self.blocking(move || {
            argon2
                .hash_password(password.as_bytes())
                .map(|h| h.to_string())
                .map_err(|e| HashError::Hash(e.to_string()))
        })
        .await?
    }

    /// Checks a password against a stored hash: `password` is the raw
    /// input, which is NFKC-normalised for argon2id hashes (they were made
    /// from normalised passwords) and tried both ways for legacy hashes,
    /// whose system may not have normalised. With no stored hash (unknown
    /// user), the dummy hash is checked instead and the answer is
    /// `Invalid`, at the same cost.
    pub async fn verify(&self, raw: String, stored: Option<String>) -> Result<Verification, HashError> {
        let password = super::policy::normalize(&raw);
        let argon2 = self.argon2.clone();
        let dummy = self.dummy.clone();
        let current = self.settings;
        self.blocking(move || match stored {
            None => {
                let _ = verify_argon2(&argon2, &password, &dummy, current);
                Verification::Invalid
            }
            Some(stored) if stored.starts_with("$pbkdf2-sha256$") => {
                match Pbkdf2Sha256::parse(&stored) {
                    Ok(legacy) if legacy.verify(&raw) || legacy.verify(&password) => {
                        Verification::Valid { rehash: true }
                    }
                    _ => Verification::Invalid,
                }
            }
            Some(stored) => verify_argon2(&argon2, &password, &stored, current),
        })
        .await
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let (done, outcome) = oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller went away while the job was queued (a client
            // that gave up, for example), so the hash is not needed.
            if !done.is_closed() {
                let _ = done.send(work());
            }
        });
        self.jobs.send(job).map_err(|_| HashError::Task("no hashing thread is running".into()))?;
        outcome.await.map_err(|_| HashError::Task("the hashing thread panicked".into()))
    }
}

/// Starts `count` hashing threads that take jobs from one queue.
fn start_threads(count: usize) -> Result<mpsc::Sender<Job>, HashError> {
    let (sender, receiver) = mpsc::channel::<Job>();
    let receiver = Arc::new(Mutex::new(receiver));
    for index in 0..count {
        let receiver = receiver.clone();
        std::thread::Builder::new()
            .name(format!("argon2-{index}"))
            .spawn(move || {
                lower_priority();
                loop {
                    // The lock is held only while waiting for the next job.
                    let next = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
                    let Ok(job) = next else { return };
                    // A panic drops the job's sender, which fails its call;
                    // the thread stays for the next job.
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(job));
                }
            })
            .map_err(|e| HashError::Task(format!("cannot start a hashing thread: {e}")))?;
    }
    Ok(sender)
}

/// Lowest priority a nice value can express.
#[cfg(target_os = "linux")]
const NICEST: i32 = 19;

/// Lowers the calling thread's CPU priority by [`HASH_NICE_STEPS`], or to
/// the lowest priority when the process is already close to it.
///
/// On Linux the nice value belongs to each thread, and process id 0 names
/// the calling thread. Lowering needs no privilege. A failure only costs
/// latency, so it is logged and hashing goes on.
#[cfg(target_os = "linux")]
fn lower_priority() {
    let lowered = rustix::process::getpriority_process(None).and_then(|nice| {
        let target = (nice + HASH_NICE_STEPS).min(NICEST);
        rustix::process::setpriority_process(None, target).map(|()| (nice, target))
    });
    match lowered {
        Ok((nice, target)) if target - nice < HASH_NICE_STEPS => tracing::warn!(
            process_nice = nice,
            hashing_nice = target,
            "the process runs at a nice value so high that password hashing gets little or no lower priority; \
             start it at nice 9 or lower"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot lower the priority of a password hashing thread"),
    }
}

/// Elsewhere the nice value may belong to the whole process, so hashing
/// threads keep the process's priority.
#[cfg(not(target_os = "linux"))]
fn lower_priority() {}

fn verify_argon2(argon2: &Argon2<'_>, password: &str, stored: &str, current: Argon2Settings) -> Verification {
    let Ok(parsed) = PasswordHash::new(stored) else { return Verification::Invalid };
    // Verification uses the parameters recorded in the stored hash.
    if argon2.verify_password(password.as_bytes(), &parsed).is_err() {
        return Verification::Invalid;
    }
    let outdated = Params::try_from(&parsed).map_or(true, |p| {
        p.m_cost() != current.memory_kib || p.t_cost() != current.iterations || p.p_cost() != current.parallelism
    }) || parsed.algorithm.as_str() != "argon2id";
    Verification::Valid { rehash: outdated }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap(memory_kib: u32) -> Argon2Settings {
        Argon2Settings { memory_kib, iterations: 1, parallelism: 1 }
    }

    #[tokio::test]
    async fn hashes_verify_and_report_outdated_parameters() {
        let old = Hasher::new(cheap(1024), 2).unwrap();
        let hash = old.hash("correct horse battery staple".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert_eq!(old.verify("correct horse battery staple".into(), Some(hash.clone())).await.unwrap(), Verification::Valid { rehash: false });
        assert_eq!(old.verify("wrong".into(), Some(hash.clone())).await.unwrap(), Verification::Invalid);

        let new = Hasher::new(cheap(2048), 2).unwrap();
        assert_eq!(new.verify("correct horse battery staple".into(), Some(hash)).await.unwrap(), Verification::Valid { rehash: true });
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn hashing_threads_run_at_lower_priority() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let hasher = Hasher::new(cheap(1024), 1).unwrap();
        let hashing = hasher.blocking(|| rustix::process::getpriority_process(None).unwrap()).await.unwrap();
        assert_eq!(hashing, (own + HASH_NICE_STEPS).min(NICEST));
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own, "the caller's priority is unchanged");
    }

    #[tokio::test]
    async fn hashes_queue_for_the_threads() {
        let hasher = Hasher::new(cheap(1024), 2).unwrap();
        let hashes = futures::future::join_all((0..6).map(|i| hasher.hash(format!("password number {i}")))).await;
        for (i, hash) in hashes.into_iter().enumerate() {
            let hash = hash.unwrap();
            assert_eq!(hasher.verify(format!("password number {i}"), Some(hash)).await.unwrap(), Verification::Valid { rehash: false });
        }
    }

    #[tokio::test]
    async fn queued_work_of_a_departed_caller_is_skipped() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let hasher = Hasher::new(cheap(1024), 1).unwrap();
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (started, running) = oneshot::channel();
        let busy = tokio::spawn({
            let hasher = hasher.clone();
            async move {
                let work = move || {
                    started.send(()).unwrap();
                    wait.recv().unwrap()
                };
                hasher.blocking(work).await.unwrap()
            }
        });
        // The only thread is busy from here on.
        running.await.unwrap();
        let ran = Arc::new(AtomicBool::new(false));
        let queued = {
            let ran = ran.clone();
            hasher.blocking(move || ran.store(true, Ordering::SeqCst))
        };
        // Polled once, so the job is queued behind the busy one, then dropped.
        assert!(futures::poll!(Box::pin(queued)).is_pending());
        release.send(()).unwrap();
        busy.await.unwrap();
        hasher.blocking(|| ()).await.unwrap();
        assert!(!ran.load(Ordering::SeqCst), "the departed caller's work ran");
    }

    #[tokio::test]
    async fn unknown_users_are_invalid() {
        let hasher = Hasher::new(cheap(1024), 1).unwrap();
        assert_eq!(hasher.verify("anything".into(), None).await.unwrap(), Verification::Invalid);
        assert_eq!(hasher.verify("anything".into(), Some("garbage".into())).await.unwrap(), Verification::Invalid);
    }
}
