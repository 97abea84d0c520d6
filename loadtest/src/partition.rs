//! Network partitions with iptables, confined to one cluster.
//!
//! Every rule is in the OUTPUT chain, matches only the loopback interface, only TCP packets
//! whose sending socket belongs to one group id (each of the cluster's processes runs under
//! its own, see `cluster.rs`) and only this cluster's destination ports, and carries a comment
//! naming the cluster's base port. Dropping one direction is enough to cut a TCP connection
//! (nothing is acknowledged), and leaves every other process on the machine untouched.
//!
//! Rules are removed when their [`Partition`] is dropped (also when the runner panics), and
//! [`sweep`] removes any rule a killed earlier run of the same cluster left behind.

use std::process::Command;

use anyhow::{anyhow, bail};

/// The comment every rule of the cluster at `base_port` carries.
fn comment(base_port: u16) -> String {
    format!("ferrisdb-chaos-{base_port}")
}

/// Why partitions cannot be made here, if they cannot.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not root: iptables rules need CAP_NET_ADMIN".into());
    }
    if iptables(&["-S", "OUTPUT"]).is_err() {
        // One attempt to install it, as the project's tests do.
        let _ = Command::new("apt-get")
            .args(["install", "-y", "-q", "iptables"])
            .output();
    }
    match iptables(&["-S", "OUTPUT"]) {
        Ok(_) => None,
        Err(e) => Some(format!(
            "iptables does not work here ({e}); apt-get install -y iptables"
        )),
    }
}

fn iptables(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("iptables")
        .arg("-w")
        .args(args)
        .output()
        .map_err(|e| anyhow!("cannot run iptables: {e}"))?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One cut: packets that sockets of group `gid` send to `ports` on loopback are dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The sending process's group id.
    pub gid: u32,
    /// Destination ports.
    pub ports: Vec<u16>,
}

/// Installed rules, deleted on drop.
#[derive(Debug)]
pub struct Partition {
    specs: Vec<Vec<String>>,
}

impl Partition {
    /// Installs one rule per cut of the cluster at `base_port`.
    pub fn install(base_port: u16, cuts: &[Cut]) -> anyhow::Result<Partition> {
        let mut partition = Partition { specs: Vec::new() };
        for cut in cuts {
            if cut.ports.is_empty() {
                continue;
            }
            let ports = cut
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(",");
            let spec: Vec<String> = [
                "OUTPUT",
                "-o",
                "lo",
                "-p",
                "tcp",
                "-m",
                "owner",
                "--gid-owner",
                &cut.gid.to_string(),
                "-m",
                "multiport",
                "--dports",
                &ports,
                "-m",
                "comment",
                "--comment",
                &comment(base_port),
                "-j",
                "DROP",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            let mut args = vec!["-A"];
            args.extend(spec.iter().map(String::as_str));
            // On failure the rules already added go when `partition` drops.
            iptables(&args)?;
            partition.specs.push(spec);
        }
        Ok(partition)
    }

    /// Removes the rules now.
    pub fn heal(self) {
        drop(self);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        for spec in self.specs.drain(..) {
            let mut args = vec!["-D"];
            args.extend(spec.iter().map(String::as_str));
            if let Err(e) = iptables(&args) {
                eprintln!("chaos: could not remove the iptables rule {spec:?}: {e}");
            }
        }
    }
}

/// Deletes every rule of the cluster at `base_port` (left by a run that was killed); returns
/// how many went.
pub fn sweep(base_port: u16) -> usize {
    let Ok(rules) = iptables(&["-S", "OUTPUT"]) else {
        return 0;
    };
    let tag = comment(base_port);
    let mut removed = 0;
    for line in rules.lines() {
        // `-S` prints rules as `-A OUTPUT …`; the same words after `-D` delete it. The
        // comment is a single word, so splitting on whitespace is exact.
        if !line.contains(&tag) {
            continue;
        }
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        let mut args = vec!["-D"];
        args.extend(rest.split_whitespace().map(|w| w.trim_matches('"')));
        if iptables(&args).is_ok() {
            removed += 1;
        }
    }
    removed
}
