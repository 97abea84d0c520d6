//! A server proving it holds a credential before a client sends it.
//!
//! `ferrisdb admin` finds a `ferrisdb dev` cluster's credential by itself (a pointer per admin
//! port in the user's home, or `./.ferrisdb`). A pointer outlives the process that listened on
//! its port: after the cluster stops, or while its compute is suspended, any local user can
//! listen there, and a client that sent the credential it found would hand that user the
//! cluster's internal secret. So before sending a credential it found (never one the user
//! named), the CLI asks the server to prove it holds it:
//!
//! - the client sends a fresh random challenge to `GET /v1/identity` (no credential needed);
//! - the server answers, for each cluster credential it accepts (never an admin token: those
//!   may be short, and proofs on chosen challenges would let anyone test guesses offline;
//!   the cluster credential is at least 32 random bytes), HMAC-SHA256 keyed by the
//!   credential's SHA-256 digest (which is all a server keeps of a token) over a domain
//!   label, the port it listens on and the challenge;
//! - the client computes the same over its own credential and sends the credential only if
//!   one proof matches.
//!
//! The port in the proof stops a relay: a listener squatting on a stale port cannot pass the
//! challenge to another process of the same cluster (which shares the credential) and replay
//! its answer, because that process proves its own port. Proofs are a keyed PRF's outputs on
//! challenges the caller picks; they say nothing of the key.

use ring::hmac;

use ferrisdb_common::{Error, Result};

/// Where a server answers challenges.
pub const IDENTITY_PATH: &str = "/v1/identity";

/// Hex digits a challenge must have, at least and at most (16 to 64 random bytes).
pub const CHALLENGE_HEX: std::ops::RangeInclusive<usize> = 32..=128;

const LABEL: &[u8] = b"ferrisdb admin identity v1\0";

/// What a server proves: the admin credentials it accepts, and the port it listens on. The
/// admin router carries it to the identity route as a request extension.
#[derive(Clone)]
pub struct Identity {
    /// The credentials' SHA-256 digests (what `auth::Tokens` keeps of them).
    digests: std::sync::Arc<[[u8; 32]]>,
    port: u16,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Identity({} redacted, port {})",
            self.digests.len(),
            self.port
        )
    }
}

impl Identity {
    /// The credentials whose SHA-256 digests are `digests`, proved for `port`.
    pub fn new(digests: &[[u8; 32]], port: u16) -> Identity {
        Identity {
            digests: digests.into(),
            port,
        }
    }

    /// A proof of each credential for `challenge` (none when the server takes none).
    pub fn proofs(&self, challenge: &str) -> Vec<String> {
        self.digests
            .iter()
            .map(|d| proof_from_digest(d, self.port, challenge))
            .collect()
    }
}

/// The proof for a credential whose SHA-256 digest is `digest`, listening on `port`, of
/// `challenge` (hex).
pub fn proof_from_digest(digest: &[u8; 32], port: u16, challenge: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, digest);
    to_hex(hmac::sign(&key, &message(port, challenge)).as_ref())
}

/// Whether one of `proofs` (hex) is `token`'s for `port` and `challenge`. Each is checked in
/// constant time.
pub fn proves(token: &str, port: u16, challenge: &str, proofs: &[String]) -> bool {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let key = hmac::Key::new(hmac::HMAC_SHA256, digest.as_ref());
    let msg = message(port, challenge);
    proofs
        .iter()
        .any(|p| from_hex(p).is_some_and(|tag| hmac::verify(&key, &msg, &tag).is_ok()))
}

/// A fresh challenge: 32 random bytes from the OS, hex.
pub fn new_challenge() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::internal("the system random source failed"))?;
    Ok(to_hex(&bytes))
}

/// Refuses a challenge that is not [`CHALLENGE_HEX`] hex digits.
pub fn check_challenge(challenge: &str) -> Result<()> {
    if CHALLENGE_HEX.contains(&challenge.len()) && challenge.bytes().all(|b| b.is_ascii_hexdigit())
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "challenge: {} to {} hex digits are required",
            CHALLENGE_HEX.start(),
            CHALLENGE_HEX.end()
        )))
    }
}

fn message(port: u16, challenge: &str) -> Vec<u8> {
    let mut m = Vec::with_capacity(LABEL.len() + 2 + challenge.len());
    m.extend_from_slice(LABEL);
    m.extend_from_slice(&port.to_be_bytes());
    // Case folded: the same challenge whatever case the hex was written in.
    m.extend(challenge.bytes().map(|b| b.to_ascii_lowercase()));
    m
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn digest(token: &str) -> [u8; 32] {
        let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        d.as_ref().try_into().unwrap()
    }

    /// A proof passes only for the same credential, port and challenge.
    #[test]
    fn a_proof_binds_credential_port_and_challenge() {
        let c = new_challenge().unwrap();
        assert!(check_challenge(&c).is_ok());
        let p = proof_from_digest(&digest("secret"), 4580, &c);
        assert!(proves("secret", 4580, &c, std::slice::from_ref(&p)));
        assert!(proves(
            "secret",
            4580,
            &c.to_uppercase(),
            std::slice::from_ref(&p)
        ));
        assert!(
            !proves("secret2", 4580, &c, std::slice::from_ref(&p)),
            "another credential"
        );
        assert!(
            !proves("secret", 4581, &c, std::slice::from_ref(&p)),
            "another port"
        );
        let other = new_challenge().unwrap();
        assert_ne!(c, other);
        assert!(
            !proves("secret", 4580, &other, std::slice::from_ref(&p)),
            "a replayed proof"
        );
        assert!(!proves("secret", 4580, &c, &[]), "no proof");
        assert!(
            !proves("secret", 4580, &c, &["zz".into(), "abc".into()]),
            "not hex"
        );
        // Among several (a server accepting an admin token and the cluster credential).
        let q = proof_from_digest(&digest("admin"), 4580, &c);
        assert!(proves("secret", 4580, &c, &[q, p]));
    }

    #[test]
    fn challenges_must_be_hex_of_a_sane_length() {
        assert!(check_challenge("").is_err());
        assert!(check_challenge(&"a".repeat(31)).is_err());
        assert!(check_challenge(&"a".repeat(129)).is_err());
        assert!(check_challenge(&"g".repeat(32)).is_err());
        assert!(check_challenge(&"A".repeat(32)).is_ok());
    }
}
