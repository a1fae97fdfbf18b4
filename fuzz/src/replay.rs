//! Replays a fuzz target's committed corpus through its entry function, so
//! that every seed runs as a regular test.

use std::path::{Path, PathBuf};

/// `fuzz/corpus/TARGET`, seen from a crate folder under `crates/`.
pub fn corpus_dir(manifest_dir: &str, target: &str) -> PathBuf {
    Path::new(manifest_dir).join("../../fuzz/corpus").join(target)
}

/// Feeds every file of `target`'s corpus to `entry` and fails, naming the
/// files, when any of them panics. Returns the number of files.
pub fn replay(manifest_dir: &str, target: &str, entry: fn(&[u8])) -> usize {
    let dir = corpus_dir(manifest_dir, target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "the corpus {} is empty", dir.display());
    let mut panicked = Vec::new();
    for file in &files {
        let data = std::fs::read(file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
        if std::panic::catch_unwind(|| entry(&data)).is_err() {
            panicked.push(file.file_name().unwrap_or_default().to_string_lossy().into_owned());
        }
    }
    assert!(
        panicked.is_empty(),
        "{} of {} corpus files of {target} panicked (messages above): {panicked:?}; reproduce one with \
         `cargo fuzz run --sanitizer none {target} fuzz/corpus/{target}/FILE` from the repository root",
        panicked.len(),
        files.len(),
    );
    files.len()
}
