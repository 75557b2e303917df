//! `rapport plugin new KIND NAME [--dir DIR]`: writes a standalone plugin
//! crate that builds for `wasm32-wasip2` and passes its own `cargo test`.
//!
//! The templates live in `host/templates/plugin/` and are compiled into the
//! binary (`include_str!`). The crate depends on the guest SDK
//! (`plugins/sdk`, which carries the contract's WIT): by a relative path
//! when it is created inside a Rapport checkout, else by `--sdk-path` or
//! `--sdk-git`, else by the absolute path of the checkout this binary was
//! built from, when that still exists. Its `Cargo.toml` has an empty
//! `[workspace]` table so that creating it inside another workspace (this
//! one included) never makes it a member by accident.

use std::path::{Path, PathBuf};

use rapport::runtime::PluginKind;

use super::NewArgs;

/// Why the crate could not be created.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    #[error("invalid plugin name `{0}`: use 1-64 lowercase letters, digits and '-', starting with a letter")]
    Name(String),
    #[error("{} is not empty; choose another --dir or pass --force", .0.display())]
    NotEmpty(PathBuf),
    #[error("cannot write {}: {message}", path.display())]
    Write { path: PathBuf, message: String },
    #[error(
        "cannot find the Rapport plugin SDK (plugins/sdk of a Rapport checkout): pass --sdk-path DIR or --sdk-git URL"
    )]
    NoSdk,
    #[error("--sdk-path {}: no rapport-plugin-sdk crate there", .0.display())]
    NotSdk(PathBuf),
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

/// The SDK crate's folder inside a Rapport checkout.
const SDK_DIR: &str = "plugins/sdk";

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

/// Whether `dir` holds the SDK crate.
fn is_sdk(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("Cargo.toml"))
        .map(|text| text.contains("name = \"rapport-plugin-sdk\""))
        .unwrap_or(false)
}

/// A TOML basic string (JSON string syntax is valid TOML).
fn quoted(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// The `rapport-plugin-sdk = ...` dependency for a crate created in `dir`
/// (absolute).
fn sdk_dependency(args: &NewArgs, dir: &Path) -> Result<String, ScaffoldError> {
    if let Some(url) = &args.sdk_git {
        return Ok(format!("{{ git = {} }}", quoted(url)));
    }
    if let Some(path) = &args.sdk_path {
        if !is_sdk(path) {
            return Err(ScaffoldError::NotSdk(path.clone()));
        }
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
        return Ok(format!("{{ path = {} }}", quoted(&path.to_string_lossy())));
    }
    // Inside a Rapport checkout: a relative path, so the crate keeps
    // building wherever the checkout is moved.
    for (depth, ancestor) in dir.ancestors().enumerate().skip(1) {
        if is_sdk(&ancestor.join(SDK_DIR)) {
            let up = "../".repeat(depth);
            return Ok(format!("{{ path = {} }}", quoted(&format!("{up}{SDK_DIR}"))));
        }
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(SDK_DIR);
    if is_sdk(&built_from) {
        let path = std::fs::canonicalize(&built_from).unwrap_or(built_from);
        return Ok(format!("{{ path = {} }}", quoted(&path.to_string_lossy())));
    }
    Err(ScaffoldError::NoSdk)
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

/// Fills `{{name}}`, `{{kind}}`, `{{crate_file}}`, `{{capabilities}}`,
/// `{{capabilities_toml}}` and `{{sdk_dependency}}`; any other braces are
/// left alone (Rust format strings in the templates use `{{` too).
fn fill(template: &str, name: &str, kind: PluginKind, capabilities: &[&str], sdk_dependency: &str) -> String {
    template
        .replace("{{sdk_dependency}}", sdk_dependency)
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
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let occupied = std::fs::read_dir(&dir)
        .map(|mut entries| entries.next().is_some())
        .unwrap_or(false);
    if occupied && !args.force {
        return Err(ScaffoldError::NotEmpty(dir));
    }
    let absolute = std::path::absolute(&dir).map_err(|e| ScaffoldError::Write {
        path: dir.clone(),
        message: e.to_string(),
    })?;
    let sdk = sdk_dependency(args, &absolute)?;
    let (lib, fixture, capabilities) = kind_templates(args.kind);
    let fill = |t: &str| fill(t, &args.name, args.kind, capabilities, &sdk);
    let files: [(&str, String); 5] = [
        ("Cargo.toml", fill(CARGO_TOML)),
        ("README.md", fill(README)),
        (".gitignore", GITIGNORE.to_owned()),
        ("src/lib.rs", fill(lib)),
        ("fixture.json", fill(fixture)),
    ];
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

    fn args() -> NewArgs {
        NewArgs {
            kind: PluginKind::ScoringRule,
            name: "x".into(),
            dir: None,
            sdk_path: None,
            sdk_git: None,
            force: false,
        }
    }

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
            "{{name}} {{crate_file}} [{{capabilities_toml}}] {{sdk_dependency}} format!(\"{{}}\")",
            "my-plugin",
            PluginKind::ScoringRule,
            &["config", "log"],
            "{ path = \"../sdk\" }",
        );
        assert_eq!(
            text,
            "my-plugin my_plugin [\"config\", \"log\"] { path = \"../sdk\" } format!(\"{{}}\")"
        );
    }

    #[test]
    fn inside_a_checkout_the_sdk_is_a_relative_path() {
        let repo = std::fs::canonicalize(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).unwrap();
        let dep = sdk_dependency(&args(), &repo.join("plugins/mine/my-plugin")).unwrap();
        assert_eq!(dep, "{ path = \"../../../plugins/sdk\" }");
        let git = NewArgs {
            sdk_git: Some("https://example.org/rapport.git".into()),
            ..args()
        };
        assert_eq!(
            sdk_dependency(&git, &repo).unwrap(),
            "{ git = \"https://example.org/rapport.git\" }"
        );
        let not_sdk = NewArgs {
            sdk_path: Some(repo.join("host")),
            ..args()
        };
        assert!(matches!(sdk_dependency(&not_sdk, &repo), Err(ScaffoldError::NotSdk(_))));
    }
}
