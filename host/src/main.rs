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

#[derive(Args)]
struct GlobalArgs {
    /// Server configuration file (TOML).
    #[arg(long, short, global = true, env = "RAPPORT_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL; overrides the config file (sqlite://PATH or postgres://...).
    #[arg(long, global = true, env = "RAPPORT_DATABASE_URL")]
    database: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP server.
    Serve {
        /// Address to listen on (e.g. 127.0.0.1:8080); overrides `[server] listen`.
        #[arg(long, env = "RAPPORT_LISTEN")]
        listen: Option<std::net::SocketAddr>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Bulk-import data into a tenant.
    #[command(subcommand)]
    Import(rapport::import::ImportCommand),
    /// Work with the plugin manifest.
    #[command(subcommand)]
    Manifest(ManifestCommand),
    /// Score every customer of a tenant now, in this process: fit the
    /// tenant's active scoring plugins (or --plugin), then rescore and store
    /// everyone, with a progress bar (same as `POST /v1/scoring/jobs`).
    Score {
        #[arg(long)]
        tenant: String,
        /// Only this scoring plugin.
        #[arg(long)]
        plugin: Option<String>,
        /// Score as of this date (YYYY-MM-DD, UTC midnight, or RFC 3339):
        /// the "now" the plugins see, for historical data such as CDNOW.
        #[arg(long, value_parser = parse_as_of)]
        as_of: Option<i64>,
    },
    /// Plugin authors' tools: run one call against a fixture, scaffold a crate.
    #[command(subcommand)]
    Plugin(plugin_tool::PluginCommand),
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
    match cli.command {
        Command::Serve { listen } => {
            let mut config = cli.global.config()?;
            if let Some(listen) = listen {
                config.server.listen = listen;
            }
            rapport::server::serve(&config).await
        }
        Command::Migrate => {
            cli.global.store().await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Tenant(TenantCommand::Create { name, id }) => {
            let tenant = cli.global.store().await?.create_tenant(&name, id.as_deref()).await?;
            println!("{}", tenant.id);
            Ok(())
        }
        Command::Tenant(TenantCommand::List) => {
            for t in cli.global.store().await?.list_tenants().await? {
                println!("{}\t{}", t.id, t.name);
            }
            Ok(())
        }
        Command::Key(KeyCommand::Create { tenant, role, name }) => {
            let tenant = tenant.map(TenantId::from_operator);
            let key = cli
                .global
                .store()
                .await?
                .create_key(tenant.as_ref(), role, &name)
                .await?;
            println!("{}", key.token);
            eprintln!(
                "key {} ({}) created; the token above is not shown again",
                key.key.id,
                role.as_str()
            );
            Ok(())
        }
        Command::Key(KeyCommand::Revoke { tenant, key_id }) => {
            let tenant = tenant.map(TenantId::from_operator);
            cli.global.store().await?.revoke_key(tenant.as_ref(), &key_id).await?;
            println!("revoked {key_id}");
            Ok(())
        }
        Command::Import(cmd) => rapport::import::run(&cli.global.store().await?, cmd).await,
        Command::Manifest(ManifestCommand::Check { file }) => check_manifest(&cli.global.config()?, &file),
        Command::Score { tenant, plugin, as_of } => {
            score_tenant(&cli.global, TenantId::from_operator(tenant), plugin.as_deref(), as_of).await
        }
        // Dispatched in `main` before this point.
        Command::Plugin(_) => Ok(()),
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
    let job = state.plugins.create_scoring_job(&tenant, plugin).await?;
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
    let job = state
        .plugins
        .run_job_with_progress(&tenant, &job.id, as_of, &progress)
        .await?;
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
        Some(error) => anyhow::bail!("scoring job {} failed: {error}", job.id),
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
