//! `terraform/check.sh` passes: `terraform fmt -check`, `init` (offline, from a local provider
//! plugin directory when there is one), `validate` of the module and the example, `terraform
//! test` with a mock provider, and checkov with no unjustified finding. Skipped, saying why,
//! where terraform is not installed.

use std::path::Path;
use std::process::Command;

#[test]
fn terraform_check_script_passes() {
    let found = Command::new("sh")
        .args(["-c", "command -v terraform"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED: terraform is not installed, so terraform/check.sh cannot run");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform/check.sh");
    let out = Command::new("sh")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| {
            panic!("{}: {e}", script.display());
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "terraform/check.sh failed:\n{stdout}\n{stderr}"
    );
    // Each stage really ran (the script can be told to skip checkov; this test does not).
    for stage in [
        "Success! The configuration is valid.",
        "0 failed.",
        "Failed checks: 0",
    ] {
        assert!(stdout.contains(stage), "no {stage:?} in:\n{stdout}");
    }
}
