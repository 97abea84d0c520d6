//! An atomic operation's arguments (`ferrisdb atomic` and the shell's `atomic`) and the
//! bytes they resolve to.

use bytes::Bytes;
use clap::Args;
use ferrisdb_client::{AtomicOp, Error};
use ferrisdb_common::atomic::{VERSIONSTAMP_LEN, versionstamp_offset};
use ferrisdb_common::error::echo;

use crate::escape::Codec;

/// Where a versionstamp goes in a template given without FoundationDB's trailing offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StampAt {
    /// At this byte of the template.
    Offset(u32),
    /// Appended: the template is followed by the 10-byte versionstamp.
    End,
}

/// `--stamp-offset`: a byte offset, or `end`.
pub(crate) fn parse_stamp_at(s: &str) -> Result<StampAt, String> {
    if s == "end" {
        return Ok(StampAt::End);
    }
    s.parse()
        .map(StampAt::Offset)
        .map_err(|_| format!("{} is neither a byte offset nor \"end\"", echo(s)))
}

/// The arguments of an atomic operation.
#[derive(Debug, Clone, Args)]
pub struct AtomicArgs {
    /// The operation, by FoundationDB's name: add, bit_and, bit_or, bit_xor, append_if_fits,
    /// max, min, byte_min, byte_max, compare_and_clear, set_versionstamped_key,
    /// set_versionstamped_value.
    pub(crate) op: String,
    /// The key (for set_versionstamped_key, the key template).
    pub(crate) key: String,
    /// The parameter (for set_versionstamped_value, the value template).
    #[arg(allow_hyphen_values = true)]
    pub(crate) param: String,
    /// PARAM is a decimal integer, passed as 8 little-endian bytes (two's complement), the
    /// form add, max, min and the bitwise ops work on.
    #[arg(long)]
    pub(crate) i64: bool,
    /// For the versionstamp ops: the template has no trailing 4-byte offset; put the
    /// versionstamp at this byte of it, or append it with "end".
    #[arg(long, value_parser = parse_stamp_at, value_name = "N|end")]
    pub(crate) stamp_offset: Option<StampAt>,
}

/// An atomic operation ready for [`ferrisdb_client::Transaction::atomic_op`].
#[derive(Debug, Clone)]
pub(crate) struct Atomic {
    /// The operation.
    pub(crate) op: AtomicOp,
    /// The key, or the complete key template.
    pub(crate) key: Bytes,
    /// The parameter, or the complete value template.
    pub(crate) param: Bytes,
}

impl AtomicArgs {
    /// The operation, its key and its parameter as bytes, templates checked.
    pub(crate) fn resolve(&self, codec: Codec) -> Result<Atomic, Error> {
        let op: AtomicOp = self
            .op
            .parse()
            .map_err(|e: ferrisdb_common::atomic::AtomicError| Error::invalid(e.to_string()))?;
        let mut key = codec.decode("key", &self.key)?;
        let mut param = if self.i64 {
            let n: i64 = self.param.parse().map_err(|_| {
                Error::invalid(format!(
                    "param {} is not a decimal 64-bit integer (--i64)",
                    echo(&self.param)
                ))
            })?;
            n.to_le_bytes().to_vec()
        } else {
            codec.decode("param", &self.param)?
        };
        let template = match op {
            AtomicOp::SetVersionstampedKey => Some(("key", &mut key)),
            AtomicOp::SetVersionstampedValue => Some(("param", &mut param)),
            _ => None,
        };
        match (template, self.stamp_offset) {
            (Some((what, t)), at) => {
                match at {
                    Some(StampAt::End) => {
                        let offset = t.len() as u32;
                        t.extend_from_slice(&[0; VERSIONSTAMP_LEN]);
                        t.extend_from_slice(&offset.to_le_bytes());
                    }
                    Some(StampAt::Offset(offset)) => t.extend_from_slice(&offset.to_le_bytes()),
                    None => {}
                }
                versionstamp_offset(t).map_err(|e| {
                    Error::invalid(format!(
                        "{what} template: {e} (or give --stamp-offset N|end to have it added)"
                    ))
                })?;
            }
            (None, Some(_)) => {
                return Err(Error::invalid(format!(
                    "--stamp-offset is for set_versionstamped_key and set_versionstamped_value, not {op}"
                )));
            }
            (None, None) => {}
        }
        Ok(Atomic {
            op,
            key: key.into(),
            param: param.into(),
        })
    }
}
