//! The web console in a real browser: Debian's Chromium driven by
//! Playwright (`console/tests/`, run with Node) against a real server with
//! the examples deployed, and digits deployed once more from the Deploy
//! page. Screenshots land in `docs/console/` when NIMBUS_SCREENSHOTS is set
//! (see docs/console/README.md).

use nimbus_tests::{Server, model_dir, model_dir_with_new_file, root, wasm};
use std::process::Command;

#[test]
fn the_console_signs_in_invokes_charts_rolls_back_and_follows_logs() {
    let chromium = which("chromium").expect("Chromium is missing: `make services` installs Debian's chromium");
    assert!(
        root().join("console/node_modules/playwright-core").exists(),
        "playwright-core is missing: `make build` installs the console's npm packages"
    );
    wasm("sentiment");
    let digits_wasm = root().join("examples/target/wasm32-wasip2/release/digits.wasm");
    // The Deploy page has one file to send and the rest to skip.
    let model = model_dir_with_new_file("digits");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), &[]);
    for name in ["digits", "sentiment", "vision"] {
        s.deploy(name, name, name, &[]);
    }
    // A second version of sentiment, so that the console can roll back.
    s.deploy("sentiment", "sentiment", "sentiment", &["--memory", "3072"]);
    assert!(model_dir("vision").exists());
    let mut test = Command::new("node");
    test.args(["--test", "tests/"])
        .current_dir(root().join("console"))
        .env("NIMBUS_SERVER", &s.url)
        .env("NIMBUS_TOKEN", &s.token)
        .env("CHROMIUM", &chromium)
        .env("DIGITS_WASM", &digits_wasm)
        .env("DIGITS_MODEL", model.path());
    if std::env::var_os("NIMBUS_SCREENSHOTS").is_some() {
        test.env("SCREENSHOTS", root().join("docs/console"));
    }
    let status = test.status().expect("run node (make build installs it)");
    assert!(status.success(), "the browser test failed (its output is above)");
}

fn which(program: &str) -> Option<String> {
    let out = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then_some(path)
}
