//! The Terraform module's checks, through the scripts CI and people run: `terraform/check.sh`
//! (`terraform fmt -check`, `init` offline from a local provider plugin directory when there
//! is one, `validate` of the module and the example, `terraform test` with a mock provider,
//! checkov with no unjustified finding) and `terraform/moto.sh` (a real apply and destroy
//! against moto on loopback). Skipped, saying why, where terraform is not installed.

use std::process::Command;

#[path = "support/root.rs"]
mod root;

/// Runs `terraform/SCRIPT` and asserts it succeeds and printed every one of `stages`; `None`
/// (after saying why) when terraform or python3 is missing.
fn run_script(script: &str, stages: &[&str]) -> Option<()> {
    let found = Command::new("sh")
        .args(["-c", "command -v terraform && command -v python3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!(
            "SKIPPED: terraform or python3 is not installed, so terraform/{script} cannot run"
        );
        return None;
    }
    let path = root::root().join("terraform").join(script);
    let out = Command::new("sh")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "terraform/{script} failed:\n{stdout}\n{stderr}"
    );
    // Each stage really ran (check.sh can be told to skip checkov; these tests do not).
    for stage in stages {
        assert!(stdout.contains(stage), "no {stage:?} in:\n{stdout}");
    }
    Some(())
}

#[test]
fn terraform_check_script_passes() {
    run_script(
        "check.sh",
        &[
            "Success! The configuration is valid.",
            "0 failed.",
            "Failed checks: 0",
        ],
    );
}

/// A real apply of the module against moto (every resource created through the provider's
/// API calls, the bucket then present on the emulated S3), and a destroy that leaves nothing
/// in the state.
#[test]
fn terraform_applies_and_destroys_against_moto() {
    run_script(
        "moto.sh",
        &[
            "Apply complete!",
            "Destroy complete!",
            "applied and destroyed against moto",
        ],
    );
}
