//! The W3C trace context header (`traceparent`), parsed and written by hand: the SDK and the
//! servers exchange it in gRPC metadata (and the compute in WAL append messages), and neither
//! side should need an OpenTelemetry SDK just to read 55 characters (docs/observability.md).
//!
//! Format (version 00): `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`; an all-zero
//! trace or span id is invalid.

/// The gRPC metadata key (HTTP header) of the trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The flag bit saying the caller records (samples) the trace.
pub const SAMPLED: u8 = 0x01;

/// One span's place in a trace: what a child on another process needs to name its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace every span of one request shares.
    pub trace_id: [u8; 16],
    /// The parent span.
    pub span_id: [u8; 8],
    /// W3C trace flags ([`SAMPLED`]).
    pub flags: u8,
}

impl TraceParent {
    /// Parses a version-00 header; `None` for anything else (a malformed header is ignored,
    /// as the W3C specification asks: the request simply starts a new trace).
    pub fn parse(header: &str) -> Option<TraceParent> {
        let mut parts = header.trim().split('-');
        let (version, trace, span, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        // Version 00 has exactly four parts; later versions may append more, which we ignore
        // as the specification allows, but never version ff.
        if version.len() != 2 || version == "ff" || (version == "00" && parts.next().is_some()) {
            return None;
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag = [0u8; 1];
        hex_into(version, &mut [0u8; 1])?;
        hex_into(trace, &mut trace_id)?;
        hex_into(span, &mut span_id)?;
        hex_into(flags, &mut flag)?;
        let parent = TraceParent {
            trace_id,
            span_id,
            flags: flag[0],
        };
        parent.is_valid().then_some(parent)
    }

    /// Whether both ids are non-zero (the specification's validity rule).
    pub fn is_valid(&self) -> bool {
        self.trace_id.iter().any(|b| *b != 0) && self.span_id.iter().any(|b| *b != 0)
    }

    /// Whether the caller samples the trace.
    pub fn is_sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }
}

impl std::fmt::Display for TraceParent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        f.write_str("-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

/// Decodes lowercase or uppercase hex of exactly `out.len()` bytes.
fn hex_into(hex: &str, out: &mut [u8]) -> Option<()> {
    let bytes = hex.as_bytes();
    if bytes.len() != out.len() * 2 {
        return None;
    }
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |b: u8| (b as char).to_digit(16);
        out[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_what_the_specification_rejects() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let Some(p) = TraceParent::parse(header) else {
            panic!("a valid header was refused");
        };
        assert_eq!(p.trace_id[0], 0x4b);
        assert_eq!(p.span_id[7], 0xb7);
        assert!(p.is_sampled());
        assert_eq!(p.to_string(), header);
        let upper = header.to_uppercase();
        assert_eq!(TraceParent::parse(&upper), Some(p));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e47zz-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad}");
        }
        // A later version may carry more fields; the first four are read.
        let future = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-more";
        let Some(f) = TraceParent::parse(future) else {
            panic!("a later version was refused");
        };
        assert!(!f.is_sampled());
    }
}
