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
            .acquire_timeout(Duration::from_secs(30))
            // A connection must come back from a request exactly as it was
            // lent: outside any transaction. `begin_write` cannot leak one
            // (see there), but any future dropped between a `BEGIN` reaching
            // the database and sqlx building its `Transaction` would leave
            // the connection at non-zero depth, holding SQLite's write lock
            // while idle, and every later `begin_with` on it fails. Such a
            // connection is closed (closing rolls the transaction back) and
            // the pool opens a fresh one.
            .after_release(|conn, _meta| Box::pin(async move { released_clean(conn).await }));
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
    ///
    /// Cancel-safe: see [`Db::begin_with`].
    pub async fn begin_write(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.begin_with(Some("BEGIN IMMEDIATE")).await,
            Backend::Postgres => self.begin_with(None).await,
        }
    }

    /// Starts a plain (deferred) transaction, cancel-safe like
    /// [`Db::begin_write`].
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        self.begin_with(None).await
    }

    /// Acquires a connection and begins a transaction on it in a task of its
    /// own, which the caller awaits.
    ///
    /// sqlx's begin is not cancel-safe: a caller dropped after the `BEGIN`
    /// ran but before the `Transaction` exists (SQLite's begin has a second
    /// await point after a custom `BEGIN`, and `BEGIN IMMEDIATE` itself can
    /// wait `busy_timeout` for the lock) leaves the connection inside a
    /// transaction that no one will end. That is how a client hanging up on
    /// a batch ingest poisoned a pooled connection (`begin_with at non-zero
    /// transaction depth`, then `database is locked` everywhere). Run to
    /// completion in its own task, the begin always yields a `Transaction`;
    /// if nobody awaits it any more it is dropped there, which rolls it back
    /// and returns the connection to the pool. Past this point sqlx is
    /// cancel-safe: dropping a `Transaction` at any await point queues its
    /// rollback ahead of the connection's release.
    async fn begin_with(&self, statement: Option<&'static str>) -> Result<Transaction<'static, Any>, sqlx::Error> {
        let pool = self.pool.clone();
        let begin = tokio::spawn(async move {
            match statement {
                Some(statement) => pool.begin_with(statement).await,
                None => pool.begin().await,
            }
        });
        begin
            .await
            .map_err(|e| sqlx::Error::Io(std::io::Error::other(format!("begin task failed: {e}"))))?
    }

    /// Refreshes the planner's statistics where they are missing or stale
    /// (SQLite `PRAGMA optimize`, PostgreSQL `ANALYZE`), so plans do not
    /// depend on autovacuum's timing. Cheap when nothing changed; the server
    /// runs it on a schedule ([`OPTIMIZE_INTERVAL`]) and imports after
    /// loading.
    pub async fn optimize(&self) -> Result<(), sqlx::Error> {
        match self.backend {
            // 0x10002: also analyze tables never analyzed before (a fresh
            // database), with the analysis limit optimize sets so it stays
            // bounded on a large table.
            Backend::Sqlite => sqlx::query("PRAGMA optimize = 0x10002").execute(&self.pool).await?,
            Backend::Postgres => sqlx::query("ANALYZE").execute(&self.pool).await?,
        };
        Ok(())
    }

    /// Liveness of the database, for `/readyz`.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map(|_| ())
    }
}

/// How often the server refreshes planner statistics ([`Db::optimize`]).
pub const OPTIMIZE_INTERVAL: Duration = Duration::from_secs(15 * 60);

/// `after_release`: keep a connection only if it is outside any transaction.
async fn released_clean(conn: &mut sqlx::AnyConnection) -> Result<bool, sqlx::Error> {
    use sqlx::Connection;
    // SQLite runs commands on a worker thread in order: a round trip makes
    // sure a `BEGIN` or a dropped transaction's rollback still queued there
    // has run before the depth is read. PostgreSQL's depth is kept in the
    // connection itself, so the check costs nothing there (the pool pings
    // every released connection anyway).
    if conn.backend_name() == "SQLite" {
        conn.ping().await?;
    }
    if conn.is_in_transaction() {
        tracing::warn!("a connection came back inside a transaction; closing it");
        return Ok(false);
    }
    Ok(true)
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
