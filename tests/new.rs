//! `nimbus new`, `cargo build`, `nimbus deploy` are the whole path: for each
//! template, exactly those commands (and the template's own unit tests),
//! then its sample request against a real server with the example's model.
//! The crates' target folder is shared and kept under ~/.cache/nimbus, so a
//! later run on the same machine compiles only what changed.

use nimbus_tests::{Server, model_dir, nimbus_bin, root, wasm};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where every template crate builds (`target/` in each is a link to it).
fn shared_target() -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(|| root().join(".build"), PathBuf::from);
    let dir = home.join(".cache/nimbus/new-target");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn run(dir: &Path, program: &Path, args: &[&str], server: Option<&Server>) -> String {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).env_remove("CARGO_TARGET_DIR").env_remove("CARGO_BUILD_TARGET");
    if let Some(s) = server {
        command.env("NIMBUS_SERVER", &s.url).env("NIMBUS_TOKEN", &s.token);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} in {}:\n{}\n{}",
        program.display(),
        dir.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `nimbus new NAME --template T`, the model copied in, `cargo test`,
/// `cargo build --release`, `nimbus deploy`, then the sample through
/// `nimbus invoke`; returns the answer.
fn new_build_deploy(
    s: &Server,
    work: &Path,
    template: &str,
    models: &[(PathBuf, &str)],
    sample: (&str, &str),
) -> Value {
    let name = format!("my-{template}");
    run(work, &nimbus_bin(), &["new", &name, "--template", template], None);
    let dir = work.join(&name);
    std::os::unix::fs::symlink(shared_target(), dir.join("target")).unwrap();
    for (from, to) in models {
        std::fs::copy(from, dir.join("model").join(to)).unwrap();
    }
    let cargo = PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    run(&dir, &cargo, &["test", "--release", "--target", "host-tuple"], None);
    run(&dir, &cargo, &["build", "--release"], None);
    run(&dir, &nimbus_bin(), &["deploy"], Some(s));
    let (file, content_type) = sample;
    let answer = run(
        &dir,
        &nimbus_bin(),
        &["invoke", &name, "--content-type", content_type, "--data", &format!("@{file}")],
        Some(s),
    );
    serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{template}: not JSON ({e}): {answer}"))
}

#[test]
fn each_template_builds_deploys_and_answers_its_sample() {
    wasm("digits"); // the example models and guests are built
    let data = tempfile::tempdir().unwrap();
    let s = Server::start(data.path(), &[]);
    let work = tempfile::tempdir().unwrap();

    let digits = model_dir("digits").join("digits.onnx");
    let rows = new_build_deploy(&s, work.path(), "tabular", &[(digits, "model.onnx")], ("sample.csv", "text/csv"));
    let labels: Vec<i64> = rows.as_array().unwrap().iter().map(|r| r["label"].as_i64().unwrap()).collect();
    assert_eq!(labels, [0, 1, 2, 3, 4], "{rows}");

    let sentiment = model_dir("sentiment");
    let files: Vec<(PathBuf, &str)> =
        ["tokenizer.json", "encoder.onnx", "head.onnx"].iter().map(|f| (sentiment.join(f), *f)).collect();
    let texts = new_build_deploy(&s, work.path(), "text", &files, ("sample.json", "application/json"));
    let labels: Vec<i64> = texts.as_array().unwrap().iter().map(|t| t["label"].as_i64().unwrap()).collect();
    assert_eq!(labels, [1, -1], "{texts}");

    let vision = model_dir("vision").join("mobilenet_v2.onnx");
    let top = new_build_deploy(&s, work.path(), "image", &[(vision, "model.onnx")], ("sample.jpg", "image/jpeg"));
    assert_eq!(top.as_array().map_or(0, Vec::len), 5, "five classes, best first: {top}");
}

#[test]
fn new_refuses_names_cargo_cannot_build_and_folders_in_use() {
    let work = tempfile::tempdir().unwrap();
    let refused = |args: &[&str], says: &str| {
        let out = Command::new(nimbus_bin()).args(args).current_dir(work.path()).output().unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    };
    refused(&["new", "2fast"], "lowercase letter");
    refused(&["new", "nimbus-sdk"], "SDK");
    refused(&["new", "x", "--template", "audio"], "tabular");
    refused(&["new", "x", "--sdk", "/nonexistent"], "--sdk");
    std::fs::create_dir(work.path().join("taken")).unwrap();
    std::fs::write(work.path().join("taken/file"), "").unwrap();
    refused(&["new", "taken"], "not empty");
}
