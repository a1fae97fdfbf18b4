//! One argon2id hash and one verification with the shipped parameters
//! (19456 KiB, 2 iterations, 1 lane), through the service's hasher and
//! its hashing threads, so the figures include the hand-off to them.
//!
//! Run: `cargo bench -p valora-auth --bench hash`.

use criterion::{Criterion, criterion_group, criterion_main};
use valora_auth::password::hasher::{Argon2Settings, Hasher};

const PASSWORD: &str = "violet-otter-sings-at-dawn";

fn argon2id(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let hasher = Hasher::new(Argon2Settings::default(), 1).expect("hasher");
    let stored = runtime.block_on(hasher.hash(PASSWORD.to_owned())).expect("hash");
    let mut group = c.benchmark_group("argon2id, shipped parameters");
    // About 35 ms per hash: ten samples keep the run under a minute.
    group.sample_size(10);
    group.bench_function("hash one password", |b| {
        b.to_async(&runtime).iter(|| hasher.hash(PASSWORD.to_owned()))
    });
    group.bench_function("verify one password", |b| {
        b.to_async(&runtime).iter(|| hasher.verify(PASSWORD.to_owned(), Some(stored.clone())))
    });
    group.finish();
}

criterion_group!(benches, argon2id);
criterion_main!(benches);
