//! Traces across processes (docs/observability.md): the spans FerrisDB exports over OTLP and
//! how their context travels between processes.
//!
//! Every span meant for OpenTelemetry has the target [`TARGET`]. The binary enables that
//! target only in the OpenTelemetry layer, and only when an OTLP endpoint is configured; the
//! log layer never enables it. Without an endpoint no subscriber is interested in the target,
//! so each such span is tracing's disabled-span fast path (one cached interest check, no
//! allocation), and [`enabled`] (one relaxed load) keeps the context plumbing off the request
//! path too.
//!
//! Context travels as a W3C `traceparent` ([`ferrisdb_common::traceparent`]): in gRPC metadata on
//! unary calls (SDK → compute, compute → pageserver and safekeepers), and in the
//! `traceparents` field of each WAL append message, because the proposer's `Append` stream
//! lives for a whole term and gRPC metadata is sent once per stream.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use ferrisdb_common::traceparent::{TRACEPARENT, TraceParent};

/// The tracing target of every span exported to OpenTelemetry.
pub const TARGET: &str = "ferrisdb::otel";

/// Most trace contexts one WAL append message carries: the first parents the safekeeper's
/// span, the rest become links. More batches than this in one message are not linked.
pub const MAX_APPEND_TRACES: usize = 16;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns context propagation on: called once by the binary after it installed an
/// OpenTelemetry layer for [`TARGET`].
pub fn enable() {
    ENABLED.store(true, Ordering::Release);
}

/// Whether traces are exported by this process.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The place of `span` in its trace, when it is exported.
pub fn traceparent(span: &Span) -> Option<TraceParent> {
    if !enabled() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| TraceParent {
        trace_id: sc.trace_id().to_bytes(),
        span_id: sc.span_id().to_bytes(),
        flags: sc.trace_flags().to_u8(),
    })
}

/// The place of the current span in its trace (what a commit hands the pipeline).
pub fn current() -> Option<TraceParent> {
    if !enabled() {
        return None;
    }
    traceparent(&Span::current())
}

fn span_context(p: &TraceParent, remote: bool) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(p.trace_id),
        SpanId::from_bytes(p.span_id),
        TraceFlags::new(p.flags),
        remote,
        TraceState::NONE,
    )
}

/// Makes `parent` the parent of `span`, which must be new (not yet entered); `remote` when
/// the parent lives in another process.
pub fn set_parent(span: &Span, parent: &TraceParent, remote: bool) {
    if span.is_disabled() {
        return;
    }
    let cx = opentelemetry::Context::new().with_remote_span_context(span_context(parent, remote));
    // Refused only when the layer is missing or the span already started: then the span
    // simply starts its own trace.
    let _ = span.set_parent(cx);
}

/// Links `span` to `other` (a span of a batch the span also serves).
pub fn add_link(span: &Span, other: &TraceParent, remote: bool) {
    if !span.is_disabled() {
        span.add_link(span_context(other, remote));
    }
}

/// The gRPC service of the client API, whose requests start a trace even when the client
/// sent none.
const CLIENT_API: &str = "/ferrisdb.v1.Database/";

/// The span of one gRPC request served (tonic's `trace_fn`), child of the caller's
/// `traceparent` when it sent one. Internal services (safekeeper, pageserver) only continue
/// traces: their background traffic (status polls, WAL trimming) starts none. Streams that
/// live for a term (`Append`, `ReadWal`, `Changes`) get no span: one the length of a term
/// says nothing.
pub fn grpc_server_span(req: &tonic::codegen::http::Request<()>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let path = req.uri().path();
    let method = path.rsplit('/').next().unwrap_or_default();
    if matches!(method, "Append" | "ReadWal" | "Changes" | "Session") {
        return Span::none();
    }
    let parent = req
        .headers()
        .get(TRACEPARENT)
        .and_then(|v| v.to_str().ok())
        .and_then(TraceParent::parse);
    if parent.is_none() && !path.starts_with(CLIENT_API) {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "grpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
    );
    if let Some(p) = parent {
        set_parent(&span, &p, true);
    }
    span
}

/// The span of one operation inside a client session (`Database/Session`), named as the
/// unary call it stands for (`ferrisdb.v1.Database/Get`), child of the `traceparent` the
/// operation carried: the same span [`grpc_server_span`] gives that unary call.
pub fn session_op_span(method: &'static str, traceparent: &str) -> Span {
    if !enabled() {
        return Span::none();
    }
    let span = tracing::info_span!(
        target: TARGET,
        parent: None,
        "grpc",
        otel.name = method,
        otel.kind = "server",
        rpc.system = "grpc",
    );
    if let Some(p) = TraceParent::parse(traceparent) {
        set_parent(&span, &p, true);
    }
    span
}

/// Adds the current span's `traceparent` to an outgoing call's metadata.
pub fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    if let Some(p) = current()
        && let Ok(v) = p.to_string().parse()
    {
        metadata.insert(TRACEPARENT, v);
    }
}

/// The span of a safekeeper writing (and fsyncing) appends that carried `traceparents`: the
/// first is its parent, the others are links (a group commit serves several batches).
pub fn append_span<'a>(traceparents: impl IntoIterator<Item = &'a String>) -> Span {
    if !enabled() {
        return Span::none();
    }
    let mut parents = traceparents
        .into_iter()
        .filter_map(|t| TraceParent::parse(t))
        .take(MAX_APPEND_TRACES);
    let Some(first) = parents.next() else {
        return Span::none();
    };
    let span = tracing::info_span!(target: TARGET, parent: None, "safekeeper.append");
    set_parent(&span, &first, true);
    for p in parents {
        add_link(&span, &p, true);
    }
    span
}

/// Re-exported for [`span_in_trace!`] and [`child_span!`].
pub use tracing;

/// A span named `$name` under the current span when that span is exported; otherwise a
/// disabled span, so work outside a traced request (the pipeline's own reads, background
/// tasks) starts no trace of its own.
#[macro_export]
macro_rules! span_in_trace {
    ($name:literal) => {
        if $crate::telemetry::enabled() && !$crate::telemetry::tracing::Span::current().is_disabled() {
            $crate::telemetry::tracing::info_span!(target: $crate::telemetry::TARGET, $name)
        } else {
            $crate::telemetry::tracing::Span::none()
        }
    };
}

/// A span named `$name`, child of `$parent`; disabled when `$parent` is.
#[macro_export]
macro_rules! child_span {
    ($parent:expr, $name:literal) => {
        if $parent.is_disabled() {
            $crate::telemetry::tracing::Span::none()
        } else {
            $crate::telemetry::tracing::info_span!(
                target: $crate::telemetry::TARGET,
                parent: &$parent,
                $name
            )
        }
    };
}
