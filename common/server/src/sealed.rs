//! Reading a sealed JSON document (a pageserver manifest): its checksum trailer checked
//! ([`ferrisdb_common::checksum`]), then the JSON parsed. The pageserver loading its manifests
//! and the safekeepers checking what the pageserver has made durable read them the same way.

use serde::de::DeserializeOwned;

/// The document in `bytes` as a `T`: an error when the trailer's checksum does not match or
/// the JSON does not parse (documents written before the trailer have none and are parsed
/// whole).
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let document = ferrisdb_common::checksum::unseal(bytes)?;
    serde_json::from_slice(document).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[derive(serde::Deserialize, serde::Serialize, Debug, PartialEq)]
    struct Doc {
        version: u64,
    }

    #[test]
    fn sealed_legacy_and_damaged_documents() {
        let sealed = ferrisdb_common::checksum::seal(br#"{"version":1234506}"#.to_vec());
        assert_eq!(parse_json::<Doc>(&sealed), Ok(Doc { version: 1234506 }));
        assert_eq!(
            parse_json::<Doc>(br#"{"version":7}"#),
            Ok(Doc { version: 7 })
        );
        // A digit flipped to another digit: still JSON, refused by the checksum.
        let mut flipped = sealed.clone();
        let at = flipped.iter().position(|b| *b == b'5').unwrap_or(0);
        flipped[at] = b'7';
        assert!(
            parse_json::<Doc>(&flipped)
                .unwrap_err()
                .contains("checksum")
        );
        assert!(parse_json::<Doc>(b"not json").is_err());
    }
}
