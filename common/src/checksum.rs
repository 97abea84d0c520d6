//! A checksum trailer for documents stored as text (the pageserver's manifests).
//!
//! A flipped bit in a JSON document often leaves it valid JSON: a digit becomes another digit,
//! and a layer's end version or size silently changes. A pageserver that loaded such a
//! manifest would write the next generation from it, making the damage permanent (found by
//! the chaos run: a manifest whose newest layer's bounds no longer chained, written from a
//! predecessor with one flipped digit). So each document is sealed with a CRC32C of its bytes
//! on a last line of its own:
//!
//! ```text
//! { ...the JSON document... }
//! crc32c 1a2b3c4d
//! ```
//!
//! A document without the trailer (written before it existed) is handed back whole for the
//! JSON parser to judge; a damaged trailer also lands there, and the parser then refuses the
//! trailing text, so no single flipped byte makes a sealed document load as another one.

/// What starts the trailer line.
const TRAILER: &[u8] = b"crc32c ";

/// `document` followed by its checksum trailer.
pub fn seal(mut document: Vec<u8>) -> Vec<u8> {
    let sum = crc32c::crc32c(&document);
    document.extend_from_slice(format!("\ncrc32c {sum:08x}\n").as_bytes());
    document
}

/// The document inside `bytes`: checked against its trailer when it has one, whole when it
/// has none. A checksum that does not match is an error naming both values.
pub fn unseal(bytes: &[u8]) -> Result<&[u8], String> {
    let Some((body, trailer)) = bytes.strip_suffix(b"\n").and_then(|text| {
        text.iter()
            .rposition(|b| *b == b'\n')
            .map(|cut| (&text[..cut], &text[cut + 1..]))
    }) else {
        return Ok(bytes);
    };
    let Some(hex) = trailer.strip_prefix(TRAILER) else {
        return Ok(bytes);
    };
    let stored = std::str::from_utf8(hex)
        .ok()
        .filter(|h| h.len() == 8)
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| "malformed checksum trailer".to_string())?;
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch: stored {stored:08x}, computed {computed:08x}"
        ));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn document() -> Vec<u8> {
        b"{\n  \"generation\": 12,\n  \"end\": 1234507\n}".to_vec()
    }

    #[test]
    fn a_sealed_document_unseals_to_itself() {
        let sealed = seal(document());
        assert_eq!(unseal(&sealed).unwrap(), &document()[..]);
    }

    #[test]
    fn an_unsealed_document_is_handed_back_whole() {
        let plain = document();
        assert_eq!(unseal(&plain).unwrap(), &plain[..]);
    }

    /// Every single flipped bit of a sealed document fails the checksum, or leaves text the
    /// parser refuses, or (a hex digit's case) the same document: never another document.
    #[test]
    fn no_flipped_bit_unseals_to_a_valid_other_document() {
        let sealed = seal(document());
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut damaged = sealed.clone();
                damaged[i] ^= 1 << bit;
                // (A flip of a hex digit's case leaves the same document: harmless.)
                if let Ok(body) = unseal(&damaged)
                    && body != document()
                {
                    assert!(
                        serde_json::from_slice::<serde_json::Value>(body).is_err(),
                        "byte {i} bit {bit}: {:?} unsealed and parses",
                        String::from_utf8_lossy(body)
                    );
                }
            }
        }
    }
}
