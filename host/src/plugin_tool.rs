//! `rapport plugin ...`: tools for plugin authors, no server or database.
//!
//! - `rapport plugin run FILE.wasm --input FIXTURE.json` runs one call of a
//!   component against in-memory fixture data, under the same runtime and
//!   limits the server uses, and prints the result, the captured logs, the
//!   time, the fuel used and any limit hit (see `plugin_tool/run.rs`).
//! - `rapport plugin new KIND NAME` scaffolds a plugin crate that builds for
//!   `wasm32-wasip2` and passes its own tests (see `plugin_tool/scaffold.rs`).
//! - `rapport plugin simulate PLUGIN --version V` runs a simulation of a
//!   plugin version on a running server, through its API, and prints the
//!   report (see `plugin_tool/simulate.rs`; a tenant admin's tool, the one
//!   subcommand here that talks to a server).
//!
//! This module belongs to the binary (declared in `main.rs`), not to the
//! library: it is command-line plumbing over `rapport::runtime`, and its
//! exit codes are part of its interface (0 success, 1 the plugin failed,
//! 2 bad usage or fixture), which the tests check by running the binary.

mod run;
mod scaffold;
mod simulate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use rapport::runtime::{Capability, HostPattern, PluginKind};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Run one call of a plugin component against a JSON fixture (tenant,
    /// data, config and the call), with the server's limits, and print the
    /// result, logs, time and fuel. Exit code 0 on success, 1 when the
    /// plugin failed (error, trap, limit hit, refused at load), 2 on a usage
    /// or fixture error.
    Run(RunArgs),
    /// Create a plugin crate of KIND (scoring-rule, cross-sell,
    /// reward-scheme, channel-connector) named NAME, ready for
    /// `cargo test` and `cargo build --release --target wasm32-wasip2`.
    New(NewArgs),
    /// Simulate a plugin version against a tenant's recorded history on a
    /// running server, next to the active version (writes nothing), and
    /// print the report. Exit 0 when it succeeded, 1 when it failed, 2 when
    /// it could not be started.
    Simulate(SimulateArgs),
}

#[derive(Args, Debug, Clone)]
pub struct SimulateArgs {
    /// The plugin id.
    pub plugin: String,
    /// The version to simulate (`GET /v1/plugins/{id}/versions` lists them).
    #[arg(long)]
    pub version: String,
    /// Run at most this many customers (in id order); default all.
    #[arg(long)]
    pub sample: Option<i64>,
    /// Replay the history as of this RFC 3339 time.
    #[arg(long)]
    pub as_of: Option<String>,
    /// The server's base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// A tenant admin API key.
    #[arg(long, env = "RAPPORT_API_KEY", hide_env_values = true)]
    pub key: String,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// The plugin component (`.wasm`, built for wasm32-wasip2).
    pub wasm: PathBuf,
    /// The fixture: `{"tenant", "data", "config", "call": {"export", "input"}}`
    /// (examples/fixtures/*.json).
    #[arg(long, short)]
    pub input: PathBuf,
    /// Take kind, capabilities, allowed hosts and limits from this manifest
    /// (with `--plugin`); flags below still override the limits.
    #[arg(long, requires = "plugin")]
    pub manifest: Option<PathBuf>,
    /// The manifest entry to use (its id).
    #[arg(long, requires = "manifest")]
    pub plugin: Option<String>,
    /// The plugin's kind; by default inferred from the fixture's export.
    #[arg(long, conflicts_with = "manifest")]
    pub kind: Option<PluginKind>,
    /// A granted capability (repeatable). Default: every capability the kind
    /// may have (outbound-http for connectors, where `--allow-host` decides
    /// what it reaches: nothing by default).
    #[arg(long = "capability", conflicts_with = "manifest")]
    pub capabilities: Vec<Capability>,
    /// An allowed host for outbound-http and outbound-smtp (`host[:port]`,
    /// `*.domain[:port]`, as in the manifest's `allowed_hosts`); repeatable.
    #[arg(long = "allow-host", conflicts_with = "manifest")]
    pub allowed_hosts: Vec<HostPattern>,
    /// Wall-clock budget of the call (manifest default: 200).
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Fuel budget of the call (default: unmetered, but still counted).
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Linear memory cap (manifest default: 64).
    #[arg(long)]
    pub memory_mb: Option<u32>,
    /// Where compiled components are cached (default:
    /// `$XDG_CACHE_HOME/rapport/compiled-plugins` or `~/.cache/...`).
    #[arg(long, conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,
    /// Compile the component afresh, without the on-disk cache.
    #[arg(long)]
    pub no_cache: bool,
    /// Print one JSON object instead of the human-readable report.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug, Clone)]
pub struct NewArgs {
    /// scoring-rule | cross-sell | reward-scheme | channel-connector
    pub kind: PluginKind,
    /// The crate name: lowercase letters, digits and `-`, starting with a letter.
    pub name: String,
    /// The folder to create the crate in (default: ./NAME).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Depend on the plugin SDK at this path (`plugins/sdk` of a Rapport
    /// checkout). Default: found from the crate's folder when it is inside
    /// a checkout, else the checkout this binary was built from.
    #[arg(long, conflicts_with = "sdk_git")]
    pub sdk_path: Option<PathBuf>,
    /// Depend on the plugin SDK from this git repository instead.
    #[arg(long)]
    pub sdk_git: Option<String>,
    /// Overwrite files in a non-empty folder.
    #[arg(long)]
    pub force: bool,
}

/// Runs a `plugin` subcommand and maps its outcome to the exit code.
pub async fn main(command: PluginCommand) -> ExitCode {
    match command {
        PluginCommand::Run(args) => run::main(args).await,
        PluginCommand::Simulate(args) => simulate::main(args).await,
        PluginCommand::New(args) => match scaffold::create(&args) {
            Ok(created) => {
                println!(
                    "created {} plugin `{}` in {}",
                    args.kind,
                    args.name,
                    created.dir.display()
                );
                println!("next:");
                println!("  cd {}", created.dir.display());
                println!("  cargo test");
                println!("  cargo build --release --target wasm32-wasip2");
                println!(
                    "  rapport plugin run target/wasm32-wasip2/release/{}.wasm --input fixture.json",
                    created.crate_file_name
                );
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::from(2)
            }
        },
    }
}
