//! `rapport plugin new KIND NAME [--dir DIR]`: writes a standalone plugin
//! crate that builds for `wasm32-wasip2` and passes its own `cargo test`.
//!
//! The templates live in `host/templates/plugin/` and are compiled into the
//! binary (`include_str!`), as is the contract's WIT: the crate gets its own
//! copy of `wit/crm@0.1.0`, so it builds outside this repository and pins
//! exactly the contract version this host serves. Its `Cargo.toml` has an
//! empty `[workspace]` table so that creating it inside another workspace
//! (this one included) never makes it a member by accident.

use std::path::{Path, PathBuf};

use rapport::runtime::PluginKind;

use super::NewArgs;

/// Why the crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error(
        "invalid plugin name `{0}`: use 1-64 lowercase letters, digits and '-', starting with a letter"
    )]
    Name(String),
    #[error("{} is not empty; choose another --dir or pass --force", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
}

/// What was created.
#[derive(Debug)]
pub struct Created {
    pub dir: PathBuf,
    /// The component's file stem (`my-plugin` builds `my_plugin.wasm`).
    pub crate_file_name: String,
}

const CARGO_TOML: &str = include_str!("../../templates/plugin/Cargo.toml");
const README: &str = include_str!("../../templates/plugin/README.md");
const GITIGNORE: &str = include_str!("../../templates/plugin/gitignore");

/// The contract, copied into every crate (`wit/crm@0.1.0/`).
const WIT_FILES: &[(&str, &str)] = &[
    (
        "types.wit",
        include_str!("../../../wit/crm@0.1.0/types.wit"),
    ),
    ("host.wit", include_str!("../../../wit/crm@0.1.0/host.wit")),
    (
        "worlds.wit",
        include_str!("../../../wit/crm@0.1.0/worlds.wit"),
    ),
];

/// `(src/lib.rs, fixture.json, capabilities the code imports)` per kind.
fn kind_templates(kind: PluginKind) -> (&'static str, &'static str, &'static [&'static str]) {
    match kind {
        PluginKind::ScoringRule => (
            include_str!("../../templates/plugin/scoring-rule/lib.rs"),
            include_str!("../../templates/plugin/scoring-rule/fixture.json"),
            &["config"],
        ),
        PluginKind::CrossSell => (
            include_str!("../../templates/plugin/cross-sell/lib.rs"),
            include_str!("../../templates/plugin/cross-sell/fixture.json"),
            &["catalog"],
        ),
        PluginKind::RewardScheme => (
            include_str!("../../templates/plugin/reward-scheme/lib.rs"),
            include_str!("../../templates/plugin/reward-scheme/fixture.json"),
            &["config"],
        ),
        PluginKind::ChannelConnector => (
            include_str!("../../templates/plugin/channel-connector/lib.rs"),
            include_str!("../../templates/plugin/channel-connector/fixture.json"),
            &["config", "outbound-http"],
        ),
    }
}

/// A crate name that is also a valid manifest plugin id.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Fills `{{name}}`, `{{kind}}`, `{{crate_file}}`, `{{capabilities}}` and
/// `{{capabilities_toml}}`; any other braces are left alone (Rust format
/// strings in the templates use `{{` too).
fn fill(template: &str, name: &str, kind: PluginKind, capabilities: &[&str]) -> String {
    template
        .replace("{{name}}", name)
        .replace("{{kind}}", kind.as_str())
        .replace("{{crate_file}}", &name.replace('-', "_"))
        .replace("{{capabilities}}", &capabilities.join(", "))
        .replace(
            "{{capabilities_toml}}",
            &capabilities
                .iter()
                .map(|c| format!("\"{c}\""))
                .collect::<Vec<_>>()
                .join(", "),
        )
}

pub fn create(args: &NewArgs) -> Result<Created, ScaffoldError> {
    if !valid_name(&args.name) {
        return Err(ScaffoldError::Name(args.name.clone()));
    }
    let dir = args
        .dir
        .clone()
        .unwrap_or_else(|| PathBuf::from(&args.name));
    let occupied = std::fs::read_dir(&dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied && !args.force {
        return Err(ScaffoldError::NotEmpty(dir));
    }
    let (lib, fixture, capabilities) = kind_templates(args.kind);
    let fill = |t: &str| fill(t, &args.name, args.kind, capabilities);
    let mut files: Vec<(PathBuf, String)> = vec![
        ("Cargo.toml".into(), fill(CARGO_TOML)),
        ("README.md".into(), fill(README)),
        (".gitignore".into(), GITIGNORE.to_owned()),
        ("src/lib.rs".into(), fill(lib)),
        ("fixture.json".into(), fill(fixture)),
    ];
    for (file, text) in WIT_FILES {
        files.push((Path::new("wit/crm@0.1.0").join(file), (*text).to_owned()));
    }
    for (relative, text) in files {
        let path = dir.join(relative);
        let write = || -> std::io::Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&path, text.as_bytes())
        };
        write().map_err(|e| ScaffoldError::Write {
            path: path.clone(),
            message: e.to_string(),
        })?;
    }
    Ok(Created {
        dir,
        crate_file_name: args.name.replace('-', "_"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_crate_and_manifest_rules() {
        assert!(valid_name("my-scorer2"));
        for bad in ["", "My", "2x", "a_b", "a-", "a b", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?} accepted");
        }
    }

    #[test]
    fn fills_placeholders_but_not_format_braces() {
        let text = fill(
            "{{name}} {{crate_file}} [{{capabilities_toml}}] format!(\"{{}}\")",
            "my-plugin",
            PluginKind::ScoringRule,
            &["config", "log"],
        );
        assert_eq!(
            text,
            "my-plugin my_plugin [\"config\", \"log\"] format!(\"{{}}\")"
        );
    }
}
