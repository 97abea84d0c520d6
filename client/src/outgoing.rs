//! What every request carries: the bearer token and, with the `opentelemetry` feature, the
//! caller's trace context, so a transaction's requests join the caller's trace in the
//! cluster (docs/observability.md).

use ferrisdb_common::h2_channel::H2Channel;
use ferrisdb_common::net::SendToken;
use ferrisdb_common::proto::database_client::DatabaseClient;
use tonic::service::interceptor::InterceptedService;

/// The interceptor of every request the SDK sends.
#[derive(Debug, Clone)]
pub(crate) struct Outgoing {
    token: SendToken,
}

impl Outgoing {
    /// Sends `token` (when set) with every request.
    pub(crate) fn new(token: SendToken) -> Outgoing {
        Outgoing { token }
    }
}

impl tonic::service::Interceptor for Outgoing {
    fn call(&mut self, req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        #[cfg_attr(not(feature = "opentelemetry"), allow(unused_mut))]
        let mut req = self.token.call(req)?;
        #[cfg(feature = "opentelemetry")]
        inject_current(req.metadata_mut());
        Ok(req)
    }
}

/// The current OpenTelemetry span's context as a W3C `traceparent`, for an operation sent in a
/// session; empty when there is no valid current span (or the feature is off).
pub(crate) fn current_traceparent() -> String {
    #[cfg(feature = "opentelemetry")]
    {
        use ferrisdb_common::traceparent::TraceParent;
        use opentelemetry::trace::TraceContextExt;

        let cx = opentelemetry::Context::current();
        let span = cx.span();
        let sc = span.span_context();
        if sc.is_valid() {
            return TraceParent {
                trace_id: sc.trace_id().to_bytes(),
                span_id: sc.span_id().to_bytes(),
                flags: sc.trace_flags().to_u8(),
            }
            .to_string();
        }
    }
    String::new()
}

/// Adds the current OpenTelemetry span's context (W3C `traceparent`, and `tracestate` when
/// it has one) to `metadata`; nothing when there is no valid current span. Written by hand
/// rather than through the global propagator, so it works whether or not the application
/// installed one, and needs only the API crate.
#[cfg(feature = "opentelemetry")]
fn inject_current(metadata: &mut tonic::metadata::MetadataMap) {
    use ferrisdb_common::traceparent::TRACEPARENT;
    use opentelemetry::trace::TraceContextExt;

    let parent = current_traceparent();
    if parent.is_empty() {
        return;
    }
    if let Ok(v) = parent.parse() {
        metadata.insert(TRACEPARENT, v);
    }
    let cx = opentelemetry::Context::current();
    let span = cx.span();
    let sc = span.span_context();
    let state = sc.trace_state().header();
    if !state.is_empty()
        && let Ok(v) = state.parse()
    {
        metadata.insert("tracestate", v);
    }
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use ferrisdb_common::traceparent::TraceParent;
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tonic::service::Interceptor;

    #[test]
    fn sends_the_current_trace_context_and_nothing_without_one() {
        let mut out = Outgoing::new(SendToken::new(Some("tok")).unwrap());
        let req = out.call(tonic::Request::new(())).unwrap();
        assert!(req.metadata().get("traceparent").is_none());
        assert!(req.metadata().get("authorization").is_some());

        let sc = SpanContext::new(
            TraceId::from_bytes([7; 16]),
            SpanId::from_bytes([9; 8]),
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        );
        let cx = opentelemetry::Context::new().with_remote_span_context(sc);
        let _attached = cx.attach();
        let req = out.call(tonic::Request::new(())).unwrap();
        let header = req.metadata().get("traceparent").unwrap().to_str().unwrap();
        let parsed = TraceParent::parse(header).unwrap();
        assert_eq!(parsed.trace_id, [7; 16]);
        assert_eq!(parsed.span_id, [9; 8]);
        assert!(parsed.is_sampled());
        assert!(req.metadata().get("authorization").is_some());
    }
}

/// The client stub every call goes through: gRPC with the bearer token (and the caller's
/// trace context) attached.
pub(crate) type Client = DatabaseClient<InterceptedService<H2Channel, Outgoing>>;
