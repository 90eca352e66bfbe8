//! The Kubernetes manifests in deploy/kubernetes/ pass an offline check
//! against the Kubernetes API's own schemas, strict, plus what the schemas
//! leave out (deploy/kubernetes/check.sh). Its venv is made once in
//! .build/venv-k8s (needs PyPI the first time) and reused after.

use std::path::Path;
use std::process::Command;

#[test]
fn kubernetes_manifests_validate_offline() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate is in the workspace");
    let out = Command::new("bash")
        .arg("deploy/kubernetes/check.sh")
        .current_dir(root)
        .output()
        .expect("running bash deploy/kubernetes/check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "deploy/kubernetes/check.sh failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    // A check that found nothing to check must not pass.
    for file in ["deployment.yaml", "service.yaml", "kustomization.yaml"] {
        assert!(
            stdout.lines().any(|line| line.starts_with("ok ") && line.contains(file)),
            "check.sh did not report {file} as ok:\n{stdout}"
        );
    }
    print!("{stdout}");
}
