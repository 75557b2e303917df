//! The database handle: one `sqlx::Any` pool over SQLite (embedded default) or
//! PostgreSQL (shared by several nodes), chosen by the URL scheme.
//!
//! Both backends run the same SQL: `$N` placeholders (SQLite accepts them),
//! BIGINT/TEXT/BOOLEAN columns, times as epoch milliseconds, JSON as TEXT.
//! Only the migrations are kept per backend, under `host/migrations/`.

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{Any, AnyPool, Executor, Transaction};

/// Which engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A cloneable handle on the pool. Cheap to clone (the pool is an `Arc`).
#[derive(Clone, Debug)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects without migrating. `sqlite://` URLs create the file if needed.
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        install_default_drivers();
        let backend: Backend = url.parse()?;
        let url = match backend {
            // mode=rwc: create the file on first start, like any embedded DB.
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode=rwc")
            }
            _ => url.to_string(),
        };
        let options = AnyPoolOptions::new()
            .max_connections(match backend {
                // SQLite has a single writer anyway; a few readers suffice.
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30));
        let options = if backend == Backend::Postgres {
            options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // Prepared statements are cached per connection. Left to
                    // itself PostgreSQL switches a statement to a generic
                    // plan, and one chosen while the tables were nearly empty
                    // (a fresh tenant, an import's first batch) can scan the
                    // whole tenant on every idempotency or customer lookup;
                    // with autovacuum slow to re-analyze, an import became
                    // quadratic (542 s for CDNOW instead of ~43 s). Planning
                    // each execution with its real parameters costs little
                    // next to that.
                    conn.execute("SET plan_cache_mode = force_custom_plan").await?;
                    Ok(())
                })
            })
        } else if backend == Backend::Sqlite {
            options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    // WAL lets readers run beside the writer; busy_timeout makes
                    // a second writer wait instead of failing; foreign keys are
                    // off by default in SQLite and our tenant scoping relies on them.
                    conn.execute(
                        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                         PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 30000;",
                    )
                    .await?;
                    Ok(())
                })
            })
        } else {
            options
        };
        let pool = options.connect(&url).await.map_err(DbError::Connect)?;
        Ok(Db { pool, backend })
    }

    /// Connects and applies pending migrations.
    pub async fn open(url: &str) -> Result<Db, DbError> {
        let db = Db::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> Result<(), DbError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&self.pool).await?,
        }
        Ok(())
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Starts a transaction that will write.
    ///
    /// On SQLite this is `BEGIN IMMEDIATE`: the write lock is taken up front,
    /// so two writers queue on `busy_timeout` instead of one failing with
    /// SQLITE_BUSY when it upgrades from reader to writer. PostgreSQL gets a
    /// plain `BEGIN`; its writers serialise on row locks (`UPDATE ... WHERE`).
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Liveness of the database, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}

impl FromStr for Backend {
    type Err = DbError;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            Err(DbError::UnsupportedUrl(url.to_string()))
        }
    }
}
