//! Where `ferrisdb admin` finds the credential of a `ferrisdb dev` cluster on this host.
//!
//! `dev` generates the cluster credential inside its data directory, which can be anywhere
//! (`--data-dir`). So that `ferrisdb admin …` works from any directory for the user who
//! started the cluster, and for nobody else, `dev` leaves a pointer per admin port in
//! `$HOME/.ferrisdb/dev-credentials/<port>` (directory 0700, file 0600) naming its credential
//! file, and removes them when it stops. The CLI follows the pointer only for a loopback
//! endpoint, when no token is given. The credential file itself is still checked (private,
//! well formed) when it is read. A pointer can outlive its cluster (a SIGKILL, a compute
//! suspended by scale to zero), and another local user may listen on its port by then, so
//! the CLI sends a credential it found this way only to a server that first proves it holds
//! it (`ferrisdb_server_common::identity`).

use std::path::{Path, PathBuf};

/// The directory of pointers, or `None` without a home directory.
fn registry() -> Option<PathBuf> {
    let home = std::env::var_os("HOME").filter(|h| !h.is_empty())?;
    Some(Path::new(&home).join(".ferrisdb").join("dev-credentials"))
}

/// Records that the admin APIs on `ports` (loopback) take the credential in `token_file`.
/// Best effort: a host without a writable home directory only loses the convenience.
pub fn register(token_file: &Path, ports: &[u16]) {
    let Some(dir) = registry() else {
        return;
    };
    if let Err(e) = write_pointers(&dir, token_file, ports) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot record where the dev credential is; pass --admin-token-file to `ferrisdb admin`");
    }
}

/// Removes the pointers for `ports` that still name `token_file` (a cluster started since on
/// one of the ports keeps its own). Best effort, as [`register`].
pub fn unregister(token_file: &Path, ports: &[u16]) {
    let Some(dir) = registry() else {
        return;
    };
    for port in ports {
        let pointer = dir.join(port.to_string());
        let ours = std::fs::read(&pointer)
            .is_ok_and(|named| named == token_file.as_os_str().as_encoded_bytes());
        if ours && let Err(e) = std::fs::remove_file(&pointer) {
            tracing::warn!(pointer = %pointer.display(), error = %e, "cannot remove a dev credential pointer");
        }
    }
}

fn write_pointers(dir: &Path, token_file: &Path, ports: &[u16]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    for port in ports {
        write_private(
            &dir.join(port.to_string()),
            token_file.as_os_str().as_encoded_bytes(),
        )?;
    }
    Ok(())
}

/// Writes `contents` to `path` as a file only its owner can read (0600 from the moment it is
/// created), synced, by way of a temporary file renamed over it, so a crash never leaves a
/// partial or empty file behind.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp)?;
    std::io::Write::write_all(&mut file, contents)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// The credential file a `dev` cluster recorded for `endpoint`'s port, if the endpoint is on
/// loopback and a pointer exists.
pub fn lookup(endpoint: &str) -> Option<PathBuf> {
    if !is_loopback(endpoint) {
        return None;
    }
    let url = url::Url::parse(endpoint).ok()?;
    let pointer = registry()?.join(url.port_or_known_default()?.to_string());
    let target = std::fs::read_to_string(pointer).ok()?;
    let target = PathBuf::from(target.trim_end());
    target.is_file().then_some(target)
}

/// Whether `endpoint` (a URL) names this host's loopback.
pub fn is_loopback(endpoint: &str) -> bool {
    let Ok(url) = url::Url::parse(endpoint) else {
        return false;
    };
    match url.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(a)) => a.is_loopback(),
        Some(url::Host::Ipv6(a)) => a.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_endpoints_are_looked_up() {
        // Nothing is registered for these, and remote hosts are never looked up at all.
        assert_eq!(lookup("http://db.example.com:4580"), None);
        assert_eq!(lookup("not a url"), None);
        assert!(is_loopback("http://127.0.0.1:4580") && is_loopback("http://[::1]:1"));
        assert!(is_loopback("http://localhost:4580"));
        assert!(!is_loopback("http://10.0.0.1:4580") && !is_loopback("garbage"));
    }
}
