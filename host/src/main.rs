//! The `rapport` command line: serve, migrate, administer tenants and keys,
//! and bulk-import data. Each subcommand is a thin shell over the library.
//! `rapport plugin ...` (plugin authors' tools) lives in `plugin_tool.rs`.

mod plugin_tool;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use rapport::config::Config;
use rapport::db::Db;
use rapport::store::audit::AuditEntry;
use rapport::store::tenants::Role;
use rapport::store::{Store, TenantId};

#[derive(Parser)]
#[command(name = "rapport", version, about = "Rapport CRM server and admin tool")]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

/// Where the server's configuration and database are, given before the
/// subcommand (`rapport --database URL import ...`). Not global: `rapport
/// plugin ...` needs neither, so its help must not offer them; the
/// subcommands that do use them take them too ([`ServerArgs`]).
#[derive(Args)]
struct GlobalArgs {
    /// Server configuration file (TOML).
    #[arg(long, short, env = "RAPPORT_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL; overrides the config file (sqlite://PATH or postgres://...).
    #[arg(long, env = "RAPPORT_DATABASE_URL")]
    database: Option<String>,
}

/// `--config` and `--database` after a subcommand that uses them
/// (`rapport serve --config FILE`); they win over the ones given before it,
/// which win over the environment.
#[derive(Args)]
struct ServerArgs {
    /// Server configuration file (TOML) [env: RAPPORT_CONFIG].
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    /// Database URL; overrides the config file (sqlite://PATH or
    /// postgres://...) [env: RAPPORT_DATABASE_URL].
    #[arg(long, global = true)]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        #[command(flatten)]
        server: ServerArgs,
        /// Address to listen on (e.g. 127.0.0.1:8080); overrides `[server] listen`.
        #[arg(long, env = "RAPPORT_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Manage tenants.
    Tenant {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// Manage API keys.
    Key {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Bulk-import data into a tenant.
    Import {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: rapport::import::ImportCommand,
    },
    /// Work with the plugin manifest.
    Manifest {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: ManifestCommand,
    },
    /// Score every customer of a tenant now, in this process: fit the
    /// tenant's active scoring plugins (or --plugin), then rescore and store
    /// everyone, with a progress bar (same as `POST /v1/scoring/jobs`).
    ///
    /// While the job runs, the servers' background rescore worker leaves the
    /// tenant alone, and the job clears the rescore queue entries of the
    /// customers it scored (an import's backlog): only interactions stored
    /// after the job read a customer get that customer rescored later.
    Score {
        #[command(flatten)]
        server: ServerArgs,
        #[arg(long)]
        tenant: String,
        /// Only this scoring plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// Score as of this date (YYYY-MM-DD, UTC midnight, or RFC 3339),
        /// for historical data such as CDNOW: the plugins see it as "now",
        /// and interactions after it are left out (of the fit and of every
        /// history), so customers are scored as they were on that date. The
        /// date is stored with the job and with each score.
        #[arg(long, value_parser = parse_as_of)]
        as_of: Option<i64>,
    },
    /// Pause, resume or show the background rescore worker of a tenant (on
    /// every node sharing the database; same as `PUT /v1/scoring/worker`).
    Rescoring {
        #[command(flatten)]
        server: ServerArgs,
        #[command(subcommand)]
        command: RescoringCommand,
    },
    /// Plugin authors' tools: run one call against a fixture, scaffold a crate.
    #[command(subcommand)]
    Plugin(plugin_tool::PluginCommand),
}

#[derive(Subcommand)]
enum RescoringCommand {
    /// Stop rescoring the tenant's customers after new interactions; they
    /// stay queued until `resume`.
    Pause {
        #[arg(long)]
        tenant: String,
    },
    /// Rescore the tenant's queued customers again.
    Resume {
        #[arg(long)]
        tenant: String,
    },
    /// Print whether the worker is paused for the tenant, and its queue.
    Status {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum ManifestCommand {
    /// Validate a manifest without starting the server: the file (every
    /// problem as file:line:column: field: message), the artifact digests,
    /// and that each component loads with the capabilities it is granted.
    Check { file: PathBuf },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant and print its id.
    Create {
        name: String,
        /// Choose the id (a slug such as `acme`) instead of a generated one.
        #[arg(long)]
        id: Option<String>,
    },
    /// List tenants.
    List,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key and print its token (shown only once).
    Create {
        /// Tenant id; omit for a platform admin key.
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, value_enum, default_value = "tenant_admin")]
        role: Role,
        #[arg(long, default_value = "")]
        name: String,
    },
    /// Revoke a key.
    Revoke {
        #[arg(long)]
        tenant: Option<String>,
        key_id: String,
    },
}

impl GlobalArgs {
    /// These, overridden by the ones given after the subcommand.
    fn with(self, after: ServerArgs) -> GlobalArgs {
        GlobalArgs {
            config: after.config.or(self.config),
            database: after.database.or(self.database),
        }
    }

    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        if let Some(url) = &self.database {
            config.database.url = url.clone();
        }
        Ok(config)
    }

    async fn store(&self) -> anyhow::Result<Store> {
        let config = self.config()?;
        let db = Db::open(&config.database.url)
            .await
            .with_context(|| format!("opening {}", rapport::server::redact(&config.database.url)))?;
        Ok(Store::new(db))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    rapport::telemetry::init_logging();
    let cli = Cli::parse();
    // Plugin tools have their own exit codes (1: the plugin failed, 2: bad
    // usage or fixture) and need no config or database.
    if let Command::Plugin(command) = cli.command {
        return plugin_tool::main(command).await;
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let global = cli.global;
    match cli.command {
        Command::Serve { server, listen } => {
            let mut config = global.with(server).config()?;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            rapport::server::serve(&config).await
        }
        Command::Migrate { server } => {
            global.with(server).store().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant { server, command } => {
            let store = global.with(server).store().await?;
            match command {
                TenantCommand::Create { name, id } => {
                    let tenant = store.create_tenant(&name, id.as_deref()).await?;
                    println!("{}", tenant.id);
                }
                TenantCommand::List => {
                    for t in store.list_tenants().await? {
                        println!("{}\t{}", t.id, t.name);
                    }
                }
            }
            Ok(())
        }
        Command::Key { server, command } => key_command(&global.with(server).store().await?, command).await,
        Command::Import { server, command } => rapport::import::run(&global.with(server).store().await?, command).await,
        Command::Manifest {
            server,
            command: ManifestCommand::Check { file },
        } => check_manifest(&global.with(server).config()?, &file),
        Command::Score {
            server,
            tenant,
            plugin,
            as_of,
        } => {
            score_tenant(
                &global.with(server),
                TenantId::from_operator(tenant),
                plugin.as_deref(),
                as_of,
            )
            .await
        }
        Command::Rescoring { server, command } => {
            let store = global.with(server).store().await?;
            let (tenant, state) = match command {
                RescoringCommand::Pause { tenant } => {
                    let t = TenantId::from_operator(tenant);
                    let state = store.set_rescore_paused(&t, true).await?;
                    (t, state)
                }
                RescoringCommand::Resume { tenant } => {
                    let t = TenantId::from_operator(tenant);
                    let state = store.set_rescore_paused(&t, false).await?;
                    (t, state)
                }
                RescoringCommand::Status { tenant } => {
                    let t = TenantId::from_operator(tenant);
                    let state = store.rescore_worker_state(&t).await?;
                    (t, state)
                }
            };
            println!(
                "tenant {tenant}: rescore worker {}, {} customer(s) queued{}",
                if state.paused { "paused" } else { "running" },
                state.queued,
                match &state.running_job {
                    Some(job) => format!(", waiting for scoring job {job}"),
                    None => String::new(),
                }
            );
            Ok(())
        }
        // Dispatched in `main` before this point.
        Command::Plugin(_) => Ok(()),
    }
}

async fn key_command(store: &Store, command: KeyCommand) -> anyhow::Result<()> {
    match command {
        KeyCommand::Create { tenant, role, name } => {
            let tenant = tenant.map(TenantId::from_operator);
            let key = store.create_key(tenant.as_ref(), role, &name).await?;
            // The operator acted: no key id (`actor_key_id` null).
            store
                .record_audit(&AuditEntry {
                    tenant: tenant.as_ref(),
                    actor_key_id: None,
                    action: "key.create",
                    target: format!("key:{}", key.key.id),
                    before: None,
                    after: serde_json::to_value(&key.key).ok(),
                })
                .await?;
            println!("{}", key.token);
            eprintln!(
                "key {} ({}) created; the token above is not shown again",
                key.key.id,
                role.as_str()
            );
            Ok(())
        }
        KeyCommand::Revoke { tenant, key_id } => {
            let tenant = tenant.map(TenantId::from_operator);
            let key = store.revoke_key(tenant.as_ref(), &key_id).await?;
            store
                .record_audit(&AuditEntry {
                    tenant: tenant.as_ref(),
                    actor_key_id: None,
                    action: "key.revoke",
                    target: format!("key:{key_id}"),
                    before: None,
                    after: serde_json::to_value(&key).ok(),
                })
                .await?;
            println!("revoked {key_id}");
            Ok(())
        }
    }
}

/// `rapport score`: runs a batch scoring job in-process and prints a summary.
/// `--as-of`: a date (midnight UTC) or an RFC 3339 time, as epoch ms.
fn parse_as_of(text: &str) -> Result<i64, String> {
    use time::format_description::well_known::Rfc3339;
    let parsed = time::OffsetDateTime::parse(text, &Rfc3339).or_else(|_| {
        time::Date::parse(text, time::macros::format_description!("[year]-[month]-[day]"))
            .map(|d| d.midnight().assume_utc())
    });
    parsed
        .map(rapport::store::millis)
        .map_err(|_| format!("{text:?} is neither YYYY-MM-DD nor an RFC 3339 time"))
}

async fn score_tenant(
    global: &GlobalArgs,
    tenant: TenantId,
    plugin: Option<&str>,
    as_of: Option<i64>,
) -> anyhow::Result<()> {
    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
    let state = rapport::server::build_state(&global.config()?).await?;
    let job = state.plugins.create_scoring_job_as_of(&tenant, plugin, as_of).await?;
    let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr()).with_style(
        ProgressStyle::with_template("scoring [{bar:40}] {pos}/{len} customers ({per_sec}, {eta} left)")
            .map(|s| s.progress_chars("=> "))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = std::time::Instant::now();
    let progress = |done: i64, total: i64| {
        bar.set_length(total.max(0) as u64);
        bar.set_position(done.max(0) as u64);
    };
    let job = state.plugins.run_job_with_progress(&tenant, &job.id, &progress).await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "job {}: {} of {} customers scored, {} failed, {:.1} s, {:.0} customers/s",
        job.id,
        job.done - job.failed_customers,
        job.total,
        job.failed_customers,
        secs,
        job.done as f64 / secs.max(1e-9),
    );
    if let Some(fit) = &job.fit_summary {
        println!("fit: {fit}");
    }
    match job.error {
        Some(error) => anyhow::bail!("scoring job {} {}: {error}", job.id, job.status.as_str()),
        None => Ok(()),
    }
}

fn check_manifest(config: &Config, file: &std::path::Path) -> anyhow::Result<()> {
    use rapport::manifest::{Manifest, ManifestError};
    match Manifest::load(file) {
        Ok(m) => {
            // The file is valid; now load every component as the server
            // would, so an ungranted import or a non-component is caught here.
            let runtime = rapport::runtime::Runtime::new(rapport::server::runtime_config(config))?;
            let failures = rapport::plugins::check_components(&m, &runtime);
            for (plugin, reason) in &failures {
                eprintln!("{}: plugin {plugin}: {reason}", file.display());
            }
            if !failures.is_empty() {
                anyhow::bail!("{} of {} plugins cannot be loaded", failures.len(), m.plugins.len());
            }
            println!("ok: {} plugins, {} tenants", m.plugins.len(), m.tenants.len());
            Ok(())
        }
        Err(ManifestError::Invalid { errors }) => {
            for issue in &errors {
                eprintln!("{issue}");
            }
            anyhow::bail!("{}: {} problem(s)", file.display(), errors.len())
        }
        Err(err) => Err(err.into()),
    }
}
