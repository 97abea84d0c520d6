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

/// `terraform/moto.sh`: a real apply of the module against moto on loopback (every resource
/// created through the provider's API calls, the bucket then present on the emulated S3), and
/// a destroy that leaves nothing in the state.
#[test]
fn terraform_applies_and_destroys_against_moto() {
    let found = Command::new("sh")
        .args(["-c", "command -v terraform && command -v python3"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        println!("SKIPPED: terraform or python3 is not installed, so terraform/moto.sh cannot run");
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("terraform/moto.sh");
    let out = Command::new("sh")
        .arg(&script)
        .output()
        .unwrap_or_else(|e| {
            panic!("{}: {e}", script.display());
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "terraform/moto.sh failed:\n{stdout}\n{stderr}"
    );
    for stage in [
        "Apply complete!",
        "Destroy complete!",
        "applied and destroyed against moto",
    ] {
        assert!(stdout.contains(stage), "no {stage:?} in:\n{stdout}");
    }
}
