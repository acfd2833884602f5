//! Where logs and audit records go.
//!
//! Data flow: audit records (the `celador::edge::audit` target) are written as
//! bare JSON lines to standard output, one per decision; diagnostic logs go
//! to standard error as JSON or text. Both go through a writer thread, so a
//! slow reader of the pod's logs never blocks a check on the runtime; both
//! are lossy for that reason, and every line they drop is counted
//! (`celador_audit_records_dropped_total`, `celador_log_lines_dropped_total`).
//! Spans, when configured, are exported over OTLP ([`tracing`]).

use std::io::Write;

use opentelemetry_sdk::trace::SdkTracerProvider;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, fmt};

use crate::app::config::{LogConfig, LogFormat, TracingConfig};
use crate::edge::audit;
use crate::edge::trace::Tracing;

/// How many audit lines may wait for standard output before new ones are
/// dropped: over a second of a saturated sidecar's checks. Each slot of the
/// writer's channel is allocated and touched at start (32 bytes), so this
/// is resident memory from the first moment (BENCHMARKS.md).
const AUDIT_BUFFER_LINES: usize = 16 * 1024;
/// The most bytes of audit records written to standard output at once.
const AUDIT_WRITE_BYTES: usize = 64 * 1024;
/// The same for diagnostic log lines, which are few: the library's default
/// (128,000) alone would hold 4 MiB resident.
const LOG_BUFFER_LINES: usize = 1024;

/// The writers' counts of dropped lines, once installed.
static DROPS: std::sync::OnceLock<(ErrorCounter, ErrorCounter)> = std::sync::OnceLock::new();

/// How many audit records and log lines were dropped so far because their
/// writer fell behind.
pub fn dropped() -> (u64, u64) {
    DROPS.get().map_or((0, 0), |(audit, log)| {
        let count = |c: &ErrorCounter| u64::try_from(c.dropped_lines()).unwrap_or(u64::MAX);
        (count(audit), count(log))
    })
}

/// Keeps the writer threads alive; dropping it flushes them.
#[must_use = "dropping the guard stops the log writers"]
pub struct Guard {
    _audit: WorkerGuard,
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

    // Both writers are lossy: a check never waits for standard output. When
    // the reader falls behind by this many lines, records are dropped and
    // counted (celador_audit_records_dropped_total).
    let (audit_writer, audit_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(AUDIT_BUFFER_LINES)
        .thread_name("celador-audit")
        // Written in batches: the writer thread flushes when it has taken
        // every waiting record, so under load one write carries many
        // records, and at rest each record is written at once.
        .finish(std::io::BufWriter::with_capacity(
            AUDIT_WRITE_BYTES,
            std::io::stdout(),
        ));
    let (log_writer, log_guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(LOG_BUFFER_LINES)
        .thread_name("celador-log")
        .finish(std::io::stderr());
    let _ = DROPS.set((audit_writer.error_counter(), log_writer.error_counter()));

    let audit_layer = AuditLayer {
        writer: audit_writer,
    }
    .with_filter(filter_fn(|m| m.target() == audit::TARGET));
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
        .with(audit_layer)
        .with(log_layer)
        .try_init()
        .map_err(|e| format!("cannot install the log subscriber: {e}"))?;
    Ok(Guard {
        _audit: audit_guard,
        _logs: log_guard,
    })
}

/// Writes the `record` field of audit events as a line, and nothing else.
struct AuditLayer {
    writer: NonBlocking,
}

impl<S: Subscriber> Layer<S> for AuditLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = RecordField(None);
        event.record(&mut visitor);
        if let Some(mut line) = visitor.0 {
            line.push('\n');
            let mut writer = self.writer.clone();
            // The non-blocking writer only fails once its thread is gone.
            let _ = writer.write_all(line.as_bytes());
        }
    }
}

struct RecordField(Option<String>);

impl Visit for RecordField {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "record" {
            self.0 = Some(value.to_owned());
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
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
