//! OpenTelemetry traces across real processes (docs/observability.md): `ferrisdb dev` exports
//! to an in-process OTLP receiver, and one SDK commit made inside a client span must come
//! back as one trace holding spans of the compute and of at least two safekeepers, each
//! parented on a span of the same trace; and a read that misses the compute's tiers continues
//! its trace into the pageserver.

#![allow(clippy::unwrap_used)]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::context::FutureExt as _;
use opentelemetry::trace::{SpanKind, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use support::{DevCluster, eventually};

/// One span as received, with the process that sent it.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    instance: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent_span_id: Vec<u8>,
}

/// An OTLP trace receiver: keeps every span exported to it.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let attribute = |key: &str| {
                rs.resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|a| a.key == key))
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default()
            };
            let (service, instance) = (attribute("service.name"), attribute("service.instance.id"));
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    spans.push(Received {
                        service: service.clone(),
                        instance: instance.clone(),
                        name: s.name.clone(),
                        trace_id: s.trace_id.clone(),
                        span_id: s.span_id.clone(),
                        parent_span_id: s.parent_span_id.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

/// Starts the receiver on a free loopback port; returns it and its endpoint.
async fn start_receiver() -> (Receiver, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    (receiver, format!("http://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sdk_commit_is_one_trace_through_the_compute_and_a_safekeeper_quorum() {
    let (receiver, endpoint) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let cluster = DevCluster::start_with_env(
        &dir.path().join("c"),
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Export within a fifth of a second rather than the default five.
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    let db = cluster.db(Duration::from_secs(30)).await;

    // The application's own tracer: only the client span's ids matter here.
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let tracer = provider.tracer("traces-test");
    let client_span = tracer
        .span_builder("client commit")
        .with_kind(SpanKind::Client)
        .start(&tracer);
    let cx = opentelemetry::Context::current_with_span(client_span);
    let trace_id = cx.span().span_context().trace_id().to_bytes().to_vec();
    let client_span_id = cx.span().span_context().span_id().to_bytes().to_vec();
    db.run(|tx| async move {
        tx.set("traced", "value");
        Ok(())
    })
    .with_context(cx.clone())
    .await
    .unwrap();
    // The write is there: the trace is of a real commit.
    let got = db
        .run(|tx| async move { tx.get("traced").await })
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"value"[..]));

    let trace = |spans: &[Received]| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| s.trace_id == trace_id)
            .cloned()
            .collect()
    };
    let safekeepers_in = |spans: &[Received]| -> HashSet<String> {
        spans
            .iter()
            .filter(|s| s.service == "ferrisdb-safekeeper")
            .map(|s| s.instance.clone())
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        "the commit's spans reach the receiver",
        || {
            let spans = trace(&receiver.spans.lock().unwrap());
            // Each process exports on its own schedule, and a span only once it ends: wait
            // for the last compute spans to end (the batch, then the request) and for two
            // safekeepers.
            let done = ["commit.batch", "ferrisdb.v1.Database/Commit"]
                .iter()
                .all(|name| spans.iter().any(|s| s.name == *name))
                && safekeepers_in(&spans).len() >= 2;
            async move { done }
        },
    )
    .await;
    let spans = trace(&receiver.spans.lock().unwrap());
    let by_id: HashMap<&[u8], &Received> = spans.iter().map(|s| (&s.span_id[..], s)).collect();
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{}/{} {}", s.service, s.instance, s.name))
        .collect();

    // Spans of the compute: the request, the batch and its phases.
    let compute: Vec<&Received> = spans
        .iter()
        .filter(|s| s.service == "ferrisdb-compute")
        .collect();
    for name in [
        "ferrisdb.v1.Database/Commit",
        "commit.batch",
        "commit.resolve",
        "commit.append",
        "commit.quorum_wait",
        "commit.apply",
    ] {
        assert!(
            compute.iter().any(|s| s.name == name),
            "no compute span {name} in {names:#?}"
        );
    }
    // The compute's request span continues the client's span.
    let request = compute
        .iter()
        .find(|s| s.name == "ferrisdb.v1.Database/Commit")
        .unwrap();
    assert_eq!(request.parent_span_id, client_span_id, "{names:#?}");

    // At least two safekeepers wrote the batch, each under the compute's quorum wait.
    let safekeepers = safekeepers_in(&spans);
    assert!(safekeepers.len() >= 2, "{names:#?}");
    for s in spans.iter().filter(|s| s.service == "ferrisdb-safekeeper") {
        assert_eq!(s.name, "safekeeper.append");
        let parent = by_id
            .get(&s.parent_span_id[..])
            .unwrap_or_else(|| panic!("{s:?} has a parent outside the trace: {names:#?}"));
        assert_eq!(parent.service, "ferrisdb-compute");
        assert_eq!(parent.name, "commit.quorum_wait");
    }

    // Every span's parent is the client span or a span of the same trace.
    for s in &spans {
        assert!(
            s.parent_span_id == client_span_id || by_id.contains_key(&s.parent_span_id[..]),
            "{s:?} has a parent outside the trace: {names:#?}"
        );
    }

    // A read of a key no commit wrote: not in the hot tier nor the warm tier, so the
    // pageserver answers, inside the same trace.
    let read_span = tracer.start("client read");
    let cx = opentelemetry::Context::current_with_span(read_span);
    let read_trace = cx.span().span_context().trace_id().to_bytes().to_vec();
    let got = db
        .run(|tx| async move { tx.get("never-written").await })
        .with_context(cx.clone())
        .await
        .unwrap();
    assert_eq!(got, None);
    let in_read_trace = |spans: &[Received]| -> Vec<Received> {
        spans
            .iter()
            .filter(|s| s.trace_id == read_trace)
            .cloned()
            .collect()
    };
    eventually(
        Duration::from_secs(30),
        "the read's spans reach the receiver",
        || {
            // Each process exports on its own schedule: wait for both sides.
            let spans = in_read_trace(&receiver.spans.lock().unwrap());
            let done = spans.iter().any(|s| s.service == "ferrisdb-pageserver")
                && spans.iter().any(|s| s.name == "ferrisdb.v1.Database/Get");
            async move { done }
        },
    )
    .await;
    let spans = in_read_trace(&receiver.spans.lock().unwrap());
    let by_id: HashMap<&[u8], &Received> = spans.iter().map(|s| (&s.span_id[..], s)).collect();
    let names: Vec<String> = spans
        .iter()
        .map(|s| format!("{}/{} {}", s.service, s.instance, s.name))
        .collect();
    let parent_of = |s: &Received| -> &Received {
        by_id
            .get(&s.parent_span_id[..])
            .unwrap_or_else(|| panic!("{s:?} has a parent outside the trace: {names:#?}"))
    };
    let get = spans
        .iter()
        .find(|s| s.name == "ferrisdb.v1.Database/Get")
        .unwrap_or_else(|| panic!("no compute Get span: {names:#?}"));
    for tier in ["read.hot", "read.pageserver"] {
        let s = spans
            .iter()
            .find(|s| s.name == tier)
            .unwrap_or_else(|| panic!("no {tier} span: {names:#?}"));
        assert_eq!(parent_of(s).span_id, get.span_id, "{names:#?}");
    }
    let page = spans
        .iter()
        .find(|s| s.service == "ferrisdb-pageserver")
        .unwrap();
    assert_eq!(page.name, "ferrisdb.v1.Pageserver/Get", "{names:#?}");
    assert_eq!(parent_of(page).name, "read.pageserver", "{names:#?}");
}

/// A collector that does not answer is reported in the log (the SDK dropped the spans
/// silently), and the database works as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_does_not_answer_is_named_in_the_log() {
    // A port nothing listens on: every export is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("c");
    let cluster = DevCluster::start_with_env(
        &data,
        &[],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ],
    )
    .await;
    let db = cluster.db(Duration::from_secs(30)).await;
    db.run(|tx| async move {
        tx.set("traced", "value");
        Ok(())
    })
    .await
    .unwrap();
    let got = db
        .run(|tx| async move { tx.get("traced").await })
        .await
        .unwrap();
    assert_eq!(got.as_deref(), Some(&b"value"[..]));
    let log = data.join("logs/compute.log");
    eventually(
        Duration::from_secs(30),
        "the compute logs the failed export",
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { text.contains("exporting traces over OTLP failed") }
        },
    )
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("exporting traces over OTLP failed").count(),
        1,
        "warned more than once a minute"
    );
}
