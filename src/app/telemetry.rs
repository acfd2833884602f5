//! Where logs and audit records go.
//!
//! Data flow: audit records are written as bare JSON lines to standard
//! output, one per decision, by [`AuditLog`]; diagnostic logs go to
//! standard error as JSON or text. Both go through a writer thread, so a
//! slow reader of the pod's logs never blocks a check on the runtime; both
//! are lossy for that reason, and every line they drop is counted
//! (`celador_audit_records_dropped_total`, `celador_log_lines_dropped_total`).
//! Spans, when configured, are exported over OTLP ([`tracing`]).

use opentelemetry_sdk::trace::SdkTracerProvider;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::app::audit_log::{self, AuditLog};
use crate::app::config::{LogConfig, LogFormat, TracingConfig};
use crate::edge::audit;
use crate::edge::trace::Tracing;

/// How many diagnostic log lines may wait for standard error before new
/// ones are dropped. They are few; each slot of the writer's channel is
/// allocated and touched at start (32 bytes), so the library's default
/// (128,000) alone would hold 4 MiB resident (BENCHMARKS.md).
const LOG_BUFFER_LINES: usize = 1024;

/// The writers' counts of dropped lines, once installed.
static DROPS: std::sync::OnceLock<(AuditLog, ErrorCounter)> = std::sync::OnceLock::new();

/// How many audit records and log lines were dropped so far because their
/// writer fell behind.
pub fn dropped() -> (u64, u64) {
    DROPS.get().map_or((0, 0), |(audit, log)| {
        let lines = u64::try_from(log.dropped_lines()).unwrap_or(u64::MAX);
        (audit.dropped(), lines)
    })
}

/// Keeps the writer threads alive; dropping it flushes them.
#[must_use = "dropping the guard stops the log writers"]
pub struct Guard {
    _audit: audit_log::Writer,
    _logs: WorkerGuard,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("telemetry::Guard")
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, overrides
/// `log.level`.
pub fn init(log: &LogConfig) -> Result<Guard, String> {
    let level = std::env::var("RUST_LOG").unwrap_or_else(|_| log.level.clone());
    let filter =
        crate::app::config::log_filter(&level).map_err(|e| format!("log level '{level}': {e}"))?;

    // Both writers are lossy: a check never waits for standard output.
    let (audit_log, audit_guard) = AuditLog::start(std::io::stdout())
        .map_err(|e| format!("cannot start the audit writer: {e}"))?;
    audit::install(Box::new(audit_log.clone()));
    let (log_writer, log_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("celador-log")
        .finish(std::io::stderr());
    let _ = DROPS.set((audit_log, log_writer.error_counter()));

    // Audit records go to the audit log, never through the log layer.
    let not_audit = filter_fn(|m| m.target() != audit::TARGET);
    let log_layer = match log.format {
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(log_writer)
            .with_filter(not_audit)
            .with_filter(filter)
            .boxed(),
        LogFormat::Text => fmt::layer()
            .with_writer(log_writer)
            .with_ansi(false)
            .with_filter(not_audit)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(log_layer)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Guard {
        _audit: audit_guard,
        _logs: log_guard,
    })
}

/// The OTLP exporter of `config`, as a tracer provider (kept to flush at
/// shutdown) and the edge's [`Tracing`]. Spans are exported in batches by a
/// task of the current Tokio runtime; an unreachable collector drops spans,
/// never a check.
pub fn tracing(config: &TracingConfig) -> (SdkTracerProvider, Tracing) {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::span_processor_with_async_runtime::BatchSpanProcessor;
    use opentelemetry_sdk::trace::{BatchConfigBuilder, Sampler};

    let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sample_ratio)));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(config.service_name.clone())
        .build();
    let mut builder = SdkTracerProvider::builder()
        .with_sampler(sampler)
        .with_resource(resource);
    match opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.otlp_endpoint.clone())
        .with_timeout(std::time::Duration::from_secs(5))
        .build()
    {
        Ok(exporter) => {
            let batch = BatchSpanProcessor::builder(exporter, opentelemetry_sdk::runtime::Tokio)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(std::time::Duration::from_millis(500))
                        .build(),
                )
                .build();
            builder = builder.with_span_processor(batch);
        }
        Err(e) => {
            tracing::error!(error = %e, "the OTLP exporter cannot be built; spans are not exported")
        }
    }
    let provider = builder.build();
    let tracing = Tracing::new(provider.tracer("celador"));
    (provider, tracing)
}
