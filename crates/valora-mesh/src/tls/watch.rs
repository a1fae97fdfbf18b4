//! Reloading TLS material when its files change, and watching expiry.
//!
//! The folders holding the files are watched rather than the files, so a
//! Kubernetes secret update (a symlink swap of the whole folder) is seen.
//! A periodic reload catches anything a file system does not report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::MeshTls;
use super::material::unix_now;

/// How long to wait for a burst of file events to settle before reloading.
const SETTLE: Duration = Duration::from_millis(300);
/// Reload even without file events this often.
const POLL: Duration = Duration::from_secs(30);
/// Expiry is checked and the gauge updated this often.
const EXPIRY_CHECK: Duration = Duration::from_secs(30);
/// Below this remaining validity a warning is logged.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(7 * 24 * 3600);
/// Interval between repeated expiry warnings.
const WARNING_INTERVAL: Duration = Duration::from_secs(3600);

/// Watches `dirs` and sends a signal for every change of a file in them.
/// Returns no watcher when the platform offers none, and the caller then
/// relies on its periodic reload.
fn watch_changes(dirs: &[PathBuf]) -> (Option<RecommendedWatcher>, mpsc::UnboundedReceiver<()>) {
    let (tx, rx) = mpsc::unbounded_channel::<()>();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| is_change(&event)) {
            let _ = tx.send(());
        }
    });
    let mut watcher = match watcher {
        Ok(watcher) => watcher,
        Err(error) => {
            tracing::warn!(%error, "file watching unavailable; reloading certificates every 30 s");
            return (None, rx);
        }
    };
    for dir in dirs {
        if let Err(error) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), %error, "cannot watch certificate folder");
        }
    }
    (Some(watcher), rx)
}

/// Reports whether `event` may have changed a file. Opening, reading and
/// closing a file without writing are not changes: the reload itself opens
/// every file, so counting those events would make each reload trigger the
/// next. Closing a file after writing is one.
fn is_change(event: &notify::Event) -> bool {
    use notify::event::{AccessKind, AccessMode};
    match event.kind {
        notify::EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        notify::EventKind::Access(_) => false,
        _ => true,
    }
}

impl MeshTls {
    /// Seconds until the current leaf expires (negative once expired).
    pub fn seconds_to_expiry(&self) -> i64 {
        self.current.load().leaf.not_after - unix_now()
    }

    /// Whether the leaf expires within `threshold`.
    pub fn expires_within(&self, threshold: Duration) -> bool {
        self.seconds_to_expiry() < i64::try_from(threshold.as_secs()).unwrap_or(i64::MAX)
    }

    /// Starts reloading on file changes and exporting the expiry gauge
    /// `valora_certificate_expiry_seconds`. Runs until the runtime stops.
    pub fn spawn_watcher(self: &Arc<Self>) {
        let (watcher, mut rx) = watch_changes(&self.files.dirs());
        let tls = self.clone();
        tokio::spawn(async move {
            // The watcher stops when dropped, so this task keeps it.
            let _watcher = watcher;
            let mut poll = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        if event.is_none() {
                            return;
                        }
                        tokio::time::sleep(SETTLE).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = poll.tick() => {}
                }
                tls.reload_and_log();
            }
        });

        let tls = self.clone();
        tokio::spawn(async move {
            let mut last_warning: Option<Instant> = None;
            let mut tick = tokio::time::interval(EXPIRY_CHECK);
            loop {
                tick.tick().await;
                tls.report_expiry(&mut last_warning);
            }
        });
    }

    fn reload_and_log(&self) {
        let identity = self.identity();
        match self.reload() {
            Ok(None) => {}
            Ok(Some(leaf)) => {
                tracing::info!(
                    %identity,
                    serial = %leaf.serial,
                    not_after = leaf.not_after,
                    "certificate reloaded; new connections use it"
                );
                metrics::counter!("valora_certificate_reloads_total", "identity" => identity.name().to_owned(), "result" => "ok")
                    .increment(1);
            }
            Err(error) => {
                tracing::error!(
                    %identity,
                    error = %error,
                    "new certificate material rejected; keeping the current certificate"
                );
                metrics::counter!("valora_certificate_reloads_total", "identity" => identity.name().to_owned(), "result" => "rejected")
                    .increment(1);
            }
        }
    }

    fn report_expiry(&self, last_warning: &mut Option<Instant>) {
        let identity = self.identity();
        let remaining = self.seconds_to_expiry();
        metrics::gauge!("valora_certificate_expiry_seconds", "identity" => identity.name().to_owned())
            .set(remaining as f64);
        let soon = remaining < EXPIRY_WARNING.as_secs() as i64;
        let due = last_warning.is_none_or(|at| at.elapsed() >= WARNING_INTERVAL);
        if soon && due {
            tracing::warn!(%identity, seconds_left = remaining, "certificate expires in less than 7 days");
            *last_warning = Some(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to `within` for a signal, then drains any others.
    async fn signalled(rx: &mut mpsc::UnboundedReceiver<()>, within: Duration) -> bool {
        let got = tokio::time::timeout(within, rx.recv()).await.is_ok();
        while rx.try_recv().is_ok() {}
        got
    }

    #[tokio::test]
    async fn reading_files_is_not_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tls.crt");
        std::fs::write(&file, "first").unwrap();
        let (watcher, mut rx) = watch_changes(&[dir.path().to_path_buf()]);
        assert!(watcher.is_some(), "inotify is available on Linux");

        for _ in 0..3 {
            std::fs::read(&file).unwrap();
        }
        assert!(!signalled(&mut rx, Duration::from_millis(500)).await, "reading signalled a change");

        std::fs::write(&file, "second").unwrap();
        assert!(signalled(&mut rx, Duration::from_secs(5)).await, "writing signalled no change");
    }

    /// A Kubernetes secret volume: the files are links through `..data`,
    /// itself a link to a dated folder, and an update renames a new
    /// `..data` link over the old one.
    #[tokio::test]
    async fn secret_volume_update_is_a_change() {
        use std::os::unix::fs::symlink;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("..2026_12_04_old")).unwrap();
        std::fs::write(root.join("..2026_12_04_old/tls.crt"), "old").unwrap();
        symlink("..2026_12_04_old", root.join("..data")).unwrap();
        symlink("..data/tls.crt", root.join("tls.crt")).unwrap();
        let (_watcher, mut rx) = watch_changes(&[root.to_path_buf()]);

        std::fs::read(root.join("tls.crt")).unwrap();
        assert!(!signalled(&mut rx, Duration::from_millis(500)).await, "reading through the links signalled a change");

        std::fs::create_dir(root.join("..2026_12_05_new")).unwrap();
        std::fs::write(root.join("..2026_12_05_new/tls.crt"), "new").unwrap();
        // Only the swap below counts: the new folder's own events go first.
        signalled(&mut rx, Duration::from_millis(500)).await;
        symlink("..2026_12_05_new", root.join("..data_tmp")).unwrap();
        std::fs::rename(root.join("..data_tmp"), root.join("..data")).unwrap();
        assert!(signalled(&mut rx, Duration::from_secs(5)).await, "the link swap signalled no change");
        assert_eq!(std::fs::read_to_string(root.join("tls.crt")).unwrap(), "new");
    }
}
