//! Binary keys and values on a command line and a terminal.
//!
//! Keys and values are bytes, but arguments and terminals are text. Every key or value the CLI
//! and the shell take is written in fdbcli's escape syntax, and every one they print is written
//! back in it, so that what is printed can be pasted as an argument and means the same bytes:
//!
//! | Written | Byte(s) |
//! |---------|---------|
//! | `\xNN` (two hex digits, either case) | the byte `0xNN` |
//! | `\\` | `\` |
//! | `\n`, `\t`, `\r`, `\0` | newline, tab, carriage return, NUL |
//! | `\"`, `\'`, `\ ` | the quote or the space itself (for the shell's quoting) |
//! | any other character | its UTF-8 bytes |
//!
//! A backslash followed by anything else, or a `\x` without two hex digits, is an
//! `invalid_argument` error: guessing would silently write a different key.
//!
//! Printing is canonical: a backslash becomes `\\`, every byte that is not part of valid UTF-8
//! and every byte of a control character becomes `\xNN` (lowercase), and the rest is printed as
//! is. So [`parse`]`(`[`format`]`(b)) == b` for all bytes, which makes the escaped form a
//! lossless text representation, also in JSON output.
//!
//! With `--hex`, keys and values are plain hex instead, in and out ([`parse_hex`], [`hex`]).

use ferrisdb_common::Error;

/// The escapes [`parse`] understands, for error messages.
const KNOWN: &str = r#"\\, \xNN, \n, \t, \r, \0, \", \' and "\ ""#;

/// The bytes an escaped string stands for; `what` names the argument in errors ("key", …).
///
/// # Errors
///
/// `invalid_argument` for an unknown escape, a truncated `\x` or a trailing backslash.
pub fn parse(what: &str, s: &str) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(s.len());
    let mut chars = s.char_indices();
    while let Some((at, c)) = chars.next() {
        if c != '\\' {
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let Some((_, e)) = chars.next() else {
            return Err(Error::invalid(format!(
                "{what} \"{s}\": a backslash ends it (write \\\\ for a backslash)"
            )));
        };
        let byte = match e {
            '\\' => b'\\',
            'n' => b'\n',
            't' => b'\t',
            'r' => b'\r',
            '0' => 0,
            '"' => b'"',
            '\'' => b'\'',
            ' ' => b' ',
            'x' => {
                let hi = chars.next().and_then(|(_, c)| c.to_digit(16));
                let lo = chars.next().and_then(|(_, c)| c.to_digit(16));
                match (hi, lo) {
                    // Two hex digits are below 256 by construction.
                    (Some(hi), Some(lo)) => (hi * 16 + lo) as u8,
                    _ => {
                        return Err(Error::invalid(format!(
                            "{what} \"{s}\": \\x at byte {at} needs two hex digits (\\x00 to \\xff)"
                        )));
                    }
                }
            }
            other => {
                return Err(Error::invalid(format!(
                    "{what} \"{s}\": unknown escape \\{other} at byte {at}; the escapes are {KNOWN}"
                )));
            }
        };
        out.push(byte);
    }
    Ok(out)
}

/// `bytes` in the escape syntax, canonically: [`parse`] gives the same bytes back.
pub fn format(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' {
                out.push_str("\\\\");
            } else if c.is_control() {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).as_bytes() {
                    let _ = write!(out, "\\x{b:02x}");
                }
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// The bytes a hex string stands for (either case, no separators, `0x` prefix allowed).
///
/// # Errors
///
/// `invalid_argument` for an odd length or a character that is no hex digit.
pub fn parse_hex(what: &str, s: &str) -> Result<Vec<u8>, Error> {
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    if !digits.len().is_multiple_of(2) {
        return Err(Error::invalid(format!(
            "{what} \"{s}\" is not hex: it has an odd number of digits"
        )));
    }
    digits
        .as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            let digit = |c: u8| (c as char).to_digit(16);
            match (digit(pair[0]), digit(pair[1])) {
                (Some(hi), Some(lo)) => Ok((hi * 16 + lo) as u8),
                _ => Err(Error::invalid(format!(
                    "{what} \"{s}\" is not hex: no hex digit at byte {}",
                    2 * i + usize::from(digit(pair[0]).is_some())
                ))),
            }
        })
        .collect()
}

/// `bytes` as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// How one command reads and writes keys and values: escaped text, or hex with `--hex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Codec {
    /// Hex in and out instead of escaped text.
    pub hex: bool,
}

impl Codec {
    /// The bytes of argument `what` written as `s`.
    ///
    /// # Errors
    ///
    /// `invalid_argument` when `s` is not valid in this codec.
    pub fn decode(self, what: &str, s: &str) -> Result<Vec<u8>, Error> {
        if self.hex {
            parse_hex(what, s)
        } else {
            parse(what, s)
        }
    }

    /// `bytes` as this codec prints them (lossless either way).
    pub fn encode(self, bytes: &[u8]) -> String {
        if self.hex { hex(bytes) } else { format(bytes) }
    }
}

/// Fuzz target `escape` (docs/fuzzing.md): `data` as an argument (when it is UTF-8) and as
/// bytes. Invariants: no text makes either parser panic; whatever parses prints back to text
/// that parses to the same bytes; any bytes print losslessly and without control characters.
#[cfg(any(test, fuzzing))]
#[doc(hidden)]
pub fn fuzz_target(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for codec in [Codec { hex: false }, Codec { hex: true }] {
            if let Ok(bytes) = codec.decode("key", text) {
                let printed = codec.encode(&bytes);
                assert_eq!(
                    codec.decode("key", &printed).ok(),
                    Some(bytes),
                    "{text:?} printed as {printed:?} means other bytes"
                );
            }
        }
    }
    let text = format(data);
    assert_eq!(
        parse("key", &text).ok().as_deref(),
        Some(data),
        "via {text:?}"
    );
    assert!(
        !text.chars().any(char::is_control),
        "{text:?} has control characters"
    );
    assert_eq!(parse_hex("key", &hex(data)).ok().as_deref(), Some(data));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrisdb_common::ErrorKind;

    /// A small deterministic generator: the test needs varied bytes, not a crypto RNG.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn escape_corpus_replays() {
        ferrisdb_common::fuzzing::replay_corpus("escape", fuzz_target);
    }

    #[test]
    fn escapes_round_trip_over_random_bytes() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let len = (rng.next() % 40) as usize;
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    let r = rng.next();
                    // Half the rounds favour ASCII and backslashes, where escaping is subtle.
                    if round % 2 == 0 {
                        let alphabet = b" \\x0a\"'\x00\x7f\xffabc";
                        alphabet[(r % alphabet.len() as u64) as usize]
                    } else {
                        r as u8
                    }
                })
                .collect();
            let text = format(&bytes);
            assert_eq!(parse("key", &text).unwrap(), bytes, "via {text:?}");
            assert_eq!(parse_hex("key", &hex(&bytes)).unwrap(), bytes);
            assert!(
                !text.chars().any(char::is_control),
                "{text:?} would garble a terminal"
            );
        }
    }

    #[test]
    fn format_is_readable_and_canonical() {
        assert_eq!(format(b"hello"), "hello");
        assert_eq!(format(b"a\\b"), "a\\\\b");
        assert_eq!(format(b"\x00\xff\n"), "\\x00\\xff\\x0a");
        assert_eq!(format("héllo ✓".as_bytes()), "héllo ✓");
        // A truncated UTF-8 sequence is not text.
        assert_eq!(format(b"\xc3"), "\\xc3");
        assert_eq!(hex(b"\x00\xab"), "00ab");
    }

    #[test]
    fn parse_understands_fdbcli_escapes() {
        assert_eq!(parse("k", r"\x00\xFFa\\b").unwrap(), b"\x00\xffa\\b");
        assert_eq!(parse("k", r#"\n\t\r\0\"\'\ "#).unwrap(), b"\n\t\r\0\"' ");
        assert_eq!(parse("k", "é").unwrap(), "é".as_bytes());
        assert_eq!(parse("k", "").unwrap(), b"");
        assert_eq!(parse_hex("k", "0x00FF").unwrap(), b"\x00\xff");
        assert_eq!(parse_hex("k", "").unwrap(), b"");
    }

    #[test]
    fn bad_escapes_are_invalid_arguments_that_say_where() {
        for (input, says) in [
            (r"a\q", r"unknown escape \q at byte 1"),
            (r"\x4", "needs two hex digits"),
            (r"\xg0", "needs two hex digits"),
            ("ab\\", "a backslash ends it"),
        ] {
            let e = parse("key", input).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{input}");
            assert!(e.message().contains(says), "{input}: {}", e.message());
            assert!(e.message().starts_with("key "), "{}", e.message());
        }
        for (input, says) in [("abc", "odd number"), ("zz", "byte 0"), ("0g", "byte 1")] {
            let e = parse_hex("value", input).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument);
            assert!(e.message().contains(says), "{input}: {}", e.message());
        }
    }
}
