//! The object store of a chaos run: a moto S3 server on loopback (installed with pip when
//! missing), its bucket, and the direct access the corruption faults use to damage and later
//! restore one object — behind FerrisDB's back, as a failing disk or a buggy store would.
//!
//! moto accepts unsigned requests, so plain HTTP GET/PUT reach any object.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// A running moto server, killed on drop.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    http: reqwest::Client,
}

fn moto_binary() -> Option<PathBuf> {
    let out = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .output()
        .ok()?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!path.is_empty()).then(|| PathBuf::from(path))
}

impl Moto {
    /// Starts moto on a free port, installing `moto[server]` first if it is missing, and
    /// creates `bucket`.
    pub async fn start(bucket: &str) -> anyhow::Result<Moto> {
        let bin = match moto_binary() {
            Some(b) => b,
            None => {
                let ok = Command::new("python3")
                    .args(["-m", "pip", "install", "--quiet", "moto[server]"])
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    bail!("moto is needed and `python3 -m pip install moto[server]` failed");
                }
                moto_binary().ok_or_else(|| anyhow!("moto_server not on PATH after pip"))?
            }
        };
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .context("starting moto_server")?;
        let moto = Moto {
            child,
            addr: format!("127.0.0.1:{port}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while moto.http.get(moto.url("")).send().await.is_err() {
            if Instant::now() > deadline {
                bail!("moto did not answer on {}", moto.addr);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let r = moto.http.put(moto.url(bucket)).send().await?;
        if !r.status().is_success() {
            bail!("creating bucket {bucket}: {}", r.status());
        }
        Ok(moto)
    }

    /// A request as the cluster's account: moto does not check signatures, but it files
    /// objects under the access key the Authorization header names, and refuses them to
    /// anonymous requests.
    fn as_cluster(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        req.header(
            "Authorization",
            "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-date, Signature=00",
        )
        .header("x-amz-date", "20260101T000000Z")
        .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// Every key in `bucket` under `prefix` (ListObjectsV2, all pages).
    pub async fn list(&self, bucket: &str, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!("{}?list-type=2&prefix={}", self.url(bucket), escape(prefix));
            if let Some(t) = &token {
                url.push_str(&format!("&continuation-token={}", escape(t)));
            }
            let body = self
                .as_cluster(self.http.get(url))
                .send()
                .await?
                .error_for_status()?
                .text()
                .await?;
            keys.extend(tags(&body, "Key"));
            token = tags(&body, "NextContinuationToken").into_iter().next();
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// The bytes of `bucket/key`.
    pub async fn get(&self, bucket: &str, key: &str) -> anyhow::Result<Vec<u8>> {
        let r = self
            .as_cluster(self.http.get(self.url(&format!("{bucket}/{key}"))))
            .send()
            .await?
            .error_for_status()?;
        Ok(r.bytes().await?.to_vec())
    }

    /// Overwrites `bucket/key` with `bytes`.
    pub async fn put(&self, bucket: &str, key: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        self.as_cluster(self.http.put(self.url(&format!("{bucket}/{key}"))))
            .body(bytes)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// `s` percent-encoded for a query string.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The texts of every `<tag>…</tag>` in `xml` (S3's listing is flat enough for this).
fn tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        out.push(
            after[..j]
                .replace("&amp;", "&")
                .replace("&lt;", "<")
                .replace("&gt;", ">"),
        );
        rest = &after[j + close.len()..];
    }
    out
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_keys_are_unescaped() {
        let xml = "<ListBucketResult><Contents><Key>a/b&amp;c.delta</Key></Contents>\
                   <Contents><Key>m/1</Key></Contents><NextContinuationToken>t</NextContinuationToken>";
        assert_eq!(tags(xml, "Key"), vec!["a/b&c.delta", "m/1"]);
        assert_eq!(tags(xml, "NextContinuationToken"), vec!["t"]);
    }
}
