//! The identity and monitoring capabilities through the façade, on real SQLite, with a
//! clock the tests move.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test code: a failed unwrap is a failed test"
)]

mod identity;
mod monitoring;
mod proofs;

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use model::{Clock, Timestamp};

/// A clock that stands still until a test moves it.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn advance_secs(&self, s: i64) {
        self.0.fetch_add(s * 1_000_000, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}

pub struct T {
    pub vigil: app::Vigil,
    pub clock: Arc<ManualClock>,
    pub dir: std::path::PathBuf,
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn setup() -> T {
    let dir = std::env::temp_dir().join(format!(
        "vigil-app-it-{}",
        crypto::random_token()
            .replace(['-', '_'], "")
            .get(..12)
            .unwrap()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = Arc::new(
        store_sqlite::SqliteStore::open(
            &dir.join("vigil.db"),
            store_sqlite::SqliteOptions::default(),
        )
        .await
        .unwrap(),
    );
    store::Store::migrate(store.as_ref()).await.unwrap();
    let kf = crypto::KeyFile::generate();
    let source = crypto::KeyFileSource::Inline(kf.to_toml().unwrap());
    // 2026-11-29T12:00:00Z
    let clock = Arc::new(ManualClock(AtomicI64::new(1_796_040_000_000_000)));
    let vigil = app::Vigil::open(store, &kf, source, clock.clone(), app::Config::default())
        .await
        .unwrap();
    T { vigil, clock, dir }
}
