//! Fresh, migrated stores for tests: a SQLite file in a temporary folder, or a
//! PostgreSQL database of its own, both removed at teardown.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::RngCore;
use sqlx::Connection;
use store::Store;
use store_postgres::{PgOptions, PgStore};
use store_sqlite::{SqliteOptions, SqliteStore};

/// Environment variable that overrides the PostgreSQL admin URL.
pub const PG_URL_ENV: &str = "VIGIL_TEST_PG_URL";
/// The admin URL used when [`PG_URL_ENV`] is unset.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A store made fresh for one test and removed after it.
pub trait StoreFixture: Sized + Send + 'static {
    fn create() -> impl Future<Output = Self> + Send;
    fn store(&self) -> Arc<dyn Store>;
    fn teardown(self) -> impl Future<Output = ()> + Send;
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0_u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

/// A fresh temporary directory, removed by [`TempDir::remove`].
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("vigil-test-{}", random_hex(8)));
        std::fs::create_dir_all(&dir).expect("create temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Default for TempDir {
    fn default() -> Self {
        TempDir::new()
    }
}

/// A migrated SQLite store in a temporary folder.
#[derive(Debug)]
pub struct SqliteFixture {
    pub dir: TempDir,
    pub store: Arc<SqliteStore>,
}

impl SqliteFixture {
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("vigil.db")
    }
}

impl StoreFixture for SqliteFixture {
    async fn create() -> Self {
        let dir = TempDir::new();
        let store = SqliteStore::open(&dir.path().join("vigil.db"), SqliteOptions::default())
            .await
            .expect("open sqlite store");
        store.migrate().await.expect("migrate sqlite store");
        SqliteFixture {
            dir,
            store: Arc::new(store),
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn teardown(self) {
        self.store.close().await;
        self.dir.remove();
    }
}

/// The admin URL for PostgreSQL tests.
pub fn pg_admin_url() -> String {
    std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())
}

/// `url` with its database name replaced by `db`.
pub fn pg_url_for(url: &str, db: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let root = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(q) => format!("{root}/{db}?{q}"),
        None => format!("{root}/{db}"),
    }
}

/// A migrated PostgreSQL store in a database of its own (`vigil_test_<hex>`),
/// dropped at teardown.
#[derive(Debug)]
pub struct PgFixture {
    pub admin_url: String,
    pub db_name: String,
    pub store: Arc<PgStore>,
}

impl PgFixture {
    /// Creates an empty database and returns its name; fails the test loudly
    /// when PostgreSQL cannot be reached (these tests are never skipped).
    pub async fn create_database(admin_url: &str) -> String {
        let mut admin = sqlx::PgConnection::connect(admin_url).await.unwrap_or_else(|e| {
            panic!(
                "PostgreSQL is required for these tests and is unreachable at {admin_url} ({e}); \
                 start it (pg_ctlcluster --skip-systemctl-redirect <version> main start) \
                 or set {PG_URL_ENV}"
            )
        });
        let name = format!("vigil_test_{}", random_hex(8));
        // The name is ours (hex only); identifiers cannot be bound as parameters.
        sqlx::Executor::execute(&mut admin, format!("CREATE DATABASE \"{name}\"").as_str())
            .await
            .expect("create test database");
        let _ = admin.close().await;
        name
    }

    /// Drops a test database, best effort.
    pub async fn drop_database(admin_url: &str, name: &str) {
        if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
            let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
            let _ = sqlx::Executor::execute(&mut admin, sql.as_str()).await;
            let _ = admin.close().await;
        }
    }

    /// The URL of this fixture's own database.
    pub fn url(&self) -> String {
        pg_url_for(&self.admin_url, &self.db_name)
    }
}

impl StoreFixture for PgFixture {
    async fn create() -> Self {
        let admin_url = pg_admin_url();
        let db_name = PgFixture::create_database(&admin_url).await;
        let opts = PgOptions {
            max_connections: 8,
            ..PgOptions::default()
        };
        let store = PgStore::connect(&pg_url_for(&admin_url, &db_name), opts)
            .await
            .expect("connect postgres store");
        store.migrate().await.expect("migrate postgres store");
        PgFixture {
            admin_url,
            db_name,
            store: Arc::new(store),
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        self.store.clone()
    }

    async fn teardown(self) {
        self.store.close().await;
        PgFixture::drop_database(&self.admin_url, &self.db_name).await;
    }
}

#[cfg(test)]
mod tests {
    use super::pg_url_for;

    #[test]
    fn pg_urls_swap_the_database() {
        assert_eq!(
            pg_url_for("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            pg_url_for("postgres://u@h:5432", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            pg_url_for("postgres://u@h/db?sslmode=disable", "x"),
            "postgres://u@h/x?sslmode=disable"
        );
    }
}
