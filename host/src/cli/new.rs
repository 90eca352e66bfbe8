//! `nimbus new NAME --template tabular|text|image`: a handler crate that
//! builds as it is, so that `nimbus new`, `cargo build`, `nimbus deploy` is
//! the whole path (as `spin new`, `spin build`, `spin deploy`). The
//! templates (`host/templates/`) are compiled into the binary by `build.rs`;
//! writing one only fills in the name and where the guest SDK is.

use anyhow::{Context, bail};
use std::path::{Path, PathBuf};

/// (template, path inside it, bytes), from `host/templates/`.
static TEMPLATES: &[(&str, &str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/templates.rs"));

#[derive(Debug, clap::Args)]
pub(crate) struct NewArgs {
    /// The function's name: lowercase letters, digits and dashes; also the
    /// crate's name and its folder.
    name: String,
    /// What the handler starts from: rows of numbers, text through a
    /// tokenizer, or an image.
    #[arg(long, value_enum, default_value_t = Template::Tabular)]
    template: Template,
    /// Where to write it (default: ./NAME). Must not exist, or be empty.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The guest SDK's folder (`guest-sdk` in Nimbus's source), which the
    /// crate depends on by path. Default: the one this binary was built from.
    #[arg(long, env = "NIMBUS_SDK")]
    sdk: Option<PathBuf>,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum Template {
    Tabular,
    Text,
    Image,
}

impl Template {
    /// The template's sample request: its file and content type.
    fn sample(self) -> (&'static str, &'static str) {
        match self {
            Template::Tabular => ("sample.csv", "text/csv"),
            Template::Text => ("sample.json", "application/json"),
            Template::Image => ("sample.jpg", "image/jpeg"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Template::Tabular => "tabular",
            Template::Text => "text",
            Template::Image => "image",
        }
    }
}

pub(crate) fn new(args: NewArgs) -> anyhow::Result<()> {
    crate::registry::validate_name(&args.name).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Cargo's rules for a package name are narrower than a function's.
    if !args.name.starts_with(|c: char| c.is_ascii_lowercase()) || args.name.contains('_') {
        bail!("`{}`: a new handler's name starts with a lowercase letter and uses dashes, not underscores", args.name);
    }
    if args.name == "nimbus-sdk" {
        bail!("`nimbus-sdk` is the guest SDK's own name: pick another");
    }
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        bail!("{} exists and is not empty: pick another name or --dir", dir.display());
    }
    let sdk = sdk_dir(args.sdk.as_deref())?;
    let sdk = sdk.to_str().context("the SDK's path is not UTF-8")?;
    let fill = |text: &str| {
        text.replace("{{name}}", &args.name)
            .replace("{{crate_name}}", &args.name.replace('-', "_"))
            .replace("{{sdk}}", sdk)
    };
    let mut written = Vec::new();
    for (_, path, bytes) in TEMPLATES.iter().filter(|(t, _, _)| *t == args.template.name()) {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        let contents = match std::str::from_utf8(bytes) {
            Ok(text) => fill(text).into_bytes(),
            Err(_) => bytes.to_vec(),
        };
        std::fs::write(&target, contents).with_context(|| format!("writing {}", target.display()))?;
        written.push(*path);
    }
    if args.json {
        let answer = serde_json::json!({
            "name": args.name, "template": args.template.name(), "dir": dir, "sdk": sdk, "files": written,
        });
        println!("{answer}");
        return Ok(());
    }
    println!(
        "created `{}` from the {} template in {}/ ({} files)",
        args.name,
        args.template.name(),
        dir.display(),
        written.len()
    );
    println!("next:");
    println!("  cd {}", dir.display());
    println!("  # put the model in model/ ({}/model/README.md says which files)", dir.display());
    println!("  cargo build --release");
    println!("  nimbus deploy");
    println!(
        "  nimbus invoke {} --content-type {} --data @{}",
        args.name,
        args.template.sample().1,
        args.template.sample().0
    );
    Ok(())
}

/// The guest SDK to depend on: the one given, or the one next to the source
/// this binary was built from.
fn sdk_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-sdk");
    let dir = given.map_or(built_from, Path::to_path_buf);
    // The SDK reads the interfaces in ../wit and inherits its workspace's
    // settings: it is only whole inside Nimbus's source.
    let whole = |d: &PathBuf| d.join("Cargo.toml").is_file() && d.join("../wit/world.wit").is_file();
    let dir = dir.canonicalize().ok().filter(whole).with_context(|| {
        format!(
            "no guest SDK at {}: pass --sdk PATH (or NIMBUS_SDK) naming the guest-sdk folder of Nimbus's source",
            dir.display()
        )
    })?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_template_has_what_a_deploy_needs() {
        for t in [Template::Tabular, Template::Text, Template::Image] {
            let files: Vec<&str> = TEMPLATES.iter().filter(|(n, _, _)| *n == t.name()).map(|(_, p, _)| *p).collect();
            for needed in ["Cargo.toml", "nimbus.toml", "src/lib.rs", "README.md", t.sample().0] {
                assert!(files.contains(&needed), "{}: no {needed} in {files:?}", t.name());
            }
        }
    }
}
