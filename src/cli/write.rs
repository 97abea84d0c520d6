//! The one-mutation transaction behind `set`, `clear`, `clearrange` and `atomic`, and how
//! its outcome is printed.

use bytes::Bytes;
use ferrisdb_client::{AtomicOp, Error};
use ferrisdb_common::atomic::{VERSIONSTAMP_LEN, place_versionstamp};
use serde_json::json;

use super::atomic_op::Atomic;
use super::client_args::{ClientArgs, connect};
use super::output::{js, say};
use crate::escape;

/// A one-mutation transaction the CLI runs.
#[derive(Debug, Clone)]
pub(crate) enum WriteOp {
    /// Set a key to a value.
    Set(Bytes, Bytes),
    /// Remove a key.
    Clear(Bytes),
    /// Remove a range.
    ClearRange(Bytes, Bytes),
    /// An atomic operation.
    Atomic(Atomic),
}

/// Runs `op` (or reports the error that kept it from being built) in a transaction of its
/// own and prints the commit version.
pub(crate) async fn write(args: &ClientArgs, op: Result<WriteOp, Error>) -> Result<(), Error> {
    let op = op?;
    let codec = args.codec();
    let db = connect(args).await?;
    let (version, stamp) = db
        .run(|tx| {
            let op = op.clone();
            async move {
                match op {
                    WriteOp::Set(k, v) => tx.set(k, v),
                    WriteOp::Clear(k) => tx.clear(k),
                    WriteOp::ClearRange(b, e) => tx.clear_range(b, e),
                    WriteOp::Atomic(a) => tx.atomic_op(a.op, a.key, a.param),
                }
                let version = tx.commit().await?;
                Ok((version, tx.versionstamp()))
            }
        })
        .await?;
    // What a versionstamp op actually wrote: the template with the stamp in place.
    let stamped = match (&op, &stamp) {
        (WriteOp::Atomic(a), Some(s)) if a.op.is_versionstamp() => {
            let mut raw = [0u8; VERSIONSTAMP_LEN];
            if s.len() == VERSIONSTAMP_LEN {
                raw.copy_from_slice(s);
            }
            let template = match a.op {
                AtomicOp::SetVersionstampedKey => &a.key,
                _ => &a.param,
            };
            place_versionstamp(template, &raw).ok()
        }
        _ => None,
    };
    if args.json {
        let mut out = match &op {
            WriteOp::Set(k, v) => {
                json!({"key": codec.encode(k), "value": codec.encode(v), "version": version})
            }
            WriteOp::Clear(k) => json!({"key": codec.encode(k), "value": null, "version": version}),
            WriteOp::ClearRange(b, e) => {
                json!({"begin": codec.encode(b), "end": codec.encode(e), "version": version})
            }
            WriteOp::Atomic(a) => json!({
                "op": a.op.name(),
                "key": codec.encode(&a.key),
                "param": codec.encode(&a.param),
                "version": version,
            }),
        };
        if let (Some(s), WriteOp::Atomic(a)) = (&stamp, &op)
            && a.op.is_versionstamp()
        {
            out["versionstamp"] = js(escape::hex(s));
            let field = match a.op {
                AtomicOp::SetVersionstampedKey => "written_key",
                _ => "written_value",
            };
            out[field] = js(stamped
                .as_deref()
                .map(|w| codec.encode(w))
                .unwrap_or_default());
        }
        say(out);
    } else {
        match (&op, &stamp, &stamped) {
            (WriteOp::Atomic(a), Some(s), Some(w)) if a.op.is_versionstamp() => {
                let what = match a.op {
                    AtomicOp::SetVersionstampedKey => "key",
                    _ => "value",
                };
                say(format_args!(
                    "OK (version {version}, versionstamp {}, {what} {})",
                    escape::hex(s),
                    codec.encode(w)
                ));
            }
            _ => say(format_args!("OK (version {version})")),
        }
    }
    Ok(())
}
