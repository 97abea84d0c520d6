//! Logging and, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set, trace export over OTLP gRPC
//! (docs/observability.md). Every process of the binary starts here.

use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// The variable that turns export on (the OpenTelemetry SDKs' standard one; the exporter
/// also reads the other `OTEL_EXPORTER_OTLP_*` variables: headers, timeout, TLS).
pub const ENDPOINT_VAR: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// How long a stopping process waits for its last spans to reach the collector.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Who this process is in traces: `service.name` and `service.instance.id`.
pub struct Service<'a> {
    /// `ferrisdb-<component>`.
    pub name: &'static str,
    /// Tells apart processes of one component (a safekeeper's name, a listen address).
    pub instance: &'a str,
}

/// The exporter of a process that exports traces; [`Telemetry::shutdown`] flushes it.
#[must_use = "call shutdown() before the process exits, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter (bounded by a timeout, so a
    /// collector that went away does not hold up a stop).
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The batch processor's flush blocks; the exporter's gRPC channel needs this
        // runtime's other threads meanwhile.
        let flushed =
            tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(FLUSH_TIMEOUT))
                .await;
        if let Ok(Err(e)) = flushed {
            eprintln!("warning: flushing traces: {e}");
        }
    }
}

/// Installs logging to stderr (`RUST_LOG`, default `default_level`), plus, when
/// [`ENDPOINT_VAR`] is set, the OpenTelemetry layer exporting FerrisDB's spans as
/// `service`. Call inside the runtime: the exporter's channel lives on it.
pub fn init(default_level: &str, service: Option<Service<'_>>) -> Telemetry {
    let mut logs =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Trace spans are for the exporter only: never formatted, so without an exporter nothing
    // is interested in them and they stay disabled.
    if let Ok(off) = format!("{}=off", ferrisdb_server_common::telemetry::TARGET).parse() {
        logs = logs.add_directive(off);
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_filter(logs);
    let endpoint = std::env::var(ENDPOINT_VAR)
        .ok()
        .filter(|e| !e.trim().is_empty());
    let (otel, provider, failure) = match (endpoint, service) {
        (Some(_), Some(service)) => match provider(&service) {
            Ok(provider) => {
                let tracer = provider.tracer("ferrisdb");
                let layer =
                    tracing_opentelemetry::layer()
                        .with_tracer(tracer)
                        .with_filter(Targets::new().with_target(
                            ferrisdb_server_common::telemetry::TARGET,
                            LevelFilter::INFO,
                        ));
                (Some(layer), Some(provider), None)
            }
            Err(e) => (None, None, Some(e)),
        },
        _ => (None, None, None),
    };
    tracing_subscriber::registry().with(fmt).with(otel).init();
    if provider.is_some() {
        ferrisdb_server_common::telemetry::enable();
        tracing::info!("exporting traces over OTLP ({ENDPOINT_VAR})");
    }
    if let Some(e) = failure {
        tracing::warn!(error = %e, "{ENDPOINT_VAR} is set but the OTLP exporter could not be built: no traces");
    }
    Telemetry { provider }
}

fn provider(service: &Service<'_>) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .build()
        .map_err(|e| e.to_string())?;
    let resource = Resource::builder()
        .with_service_name(service.name)
        .with_attribute(KeyValue::new(
            "service.instance.id",
            service.instance.to_string(),
        ))
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(Reporting::new(exporter))
        .with_resource(resource)
        .build())
}

/// How often a failing exporter says so again.
const EXPORT_WARN_EVERY: Duration = Duration::from_secs(60);

/// An exporter that says when exports fail. The SDK drops a batch it could not send and, with
/// its own logging off, says nothing: a collector that went away looked like a process with
/// nothing to trace (an outside audit's finding). The first failure is a warning with the
/// error, repeated at most every [`EXPORT_WARN_EVERY`] with the spans dropped meanwhile;
/// the first success after failures says how many were lost. The warning's target is not
/// exported, so it cannot feed the failing exporter.
#[derive(Debug)]
struct Reporting<E> {
    inner: E,
    state: std::sync::Mutex<ExportFailures>,
}

/// What [`Reporting`] remembers between batches.
#[derive(Debug, Default)]
struct ExportFailures {
    /// Spans dropped since exports last worked.
    dropped: u64,
    /// Spans dropped since the last warning.
    dropped_since_warning: u64,
    /// When the last warning was logged.
    warned: Option<std::time::Instant>,
}

impl<E> Reporting<E> {
    fn new(inner: E) -> Reporting<E> {
        Reporting {
            inner,
            state: Default::default(),
        }
    }

    /// Notes one batch's outcome and logs what is due.
    fn note(&self, spans: usize, result: &opentelemetry_sdk::error::OTelSdkResult) {
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        match result {
            Err(e) => {
                s.dropped += spans as u64;
                s.dropped_since_warning += spans as u64;
                if s.warned.is_none_or(|w| w.elapsed() >= EXPORT_WARN_EVERY) {
                    tracing::warn!(
                        error = %e,
                        dropped = s.dropped_since_warning,
                        "exporting traces over OTLP failed: spans are dropped until the collector answers"
                    );
                    s.warned = Some(std::time::Instant::now());
                    s.dropped_since_warning = 0;
                }
            }
            Ok(()) if s.dropped > 0 => {
                tracing::info!(dropped = s.dropped, "exporting traces over OTLP again");
                *s = ExportFailures::default();
            }
            Ok(()) => {}
        }
    }
}

impl<E: opentelemetry_sdk::trace::SpanExporter> opentelemetry_sdk::trace::SpanExporter
    for Reporting<E>
{
    async fn export(
        &self,
        batch: Vec<opentelemetry_sdk::trace::SpanData>,
    ) -> opentelemetry_sdk::error::OTelSdkResult {
        let spans = batch.len();
        let result = self.inner.export(batch).await;
        self.note(spans, &result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource)
    }
}
