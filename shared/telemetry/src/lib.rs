//! Telemetry shared by every service: `tracing` logs as JSON or pretty text, errors to Sentry when a
//! DSN is configured, the request-id header name, and the shutdown signal.

use guarantor_config::{ExposeSecret, LogFormat, SecretString};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The header that carries a request's id from HTTP into NATS messages and back into logs.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// What must stay alive for telemetry to keep working; dropping it flushes Sentry.
#[must_use = "dropping the guard turns Sentry reporting off"]
pub struct TelemetryGuard {
    _sentry: Option<sentry::ClientInitGuard>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard")
            .field("sentry", &self._sentry.is_some())
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("GUARANTOR_SENTRY_DSN is not a valid Sentry DSN")]
    BadSentryDsn,
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

/// The default filter; `RUST_LOG` overrides it.
const DEFAULT_FILTER: &str = "info,sqlx=warn,async_nats=warn,hyper=warn,tower_http=info";

/// Installs the global subscriber and, when `sentry_dsn` is set, the Sentry client with its tracing
/// integration (errors become Sentry events, everything else breadcrumbs).
pub fn init(
    service: &'static str,
    format: LogFormat,
    sentry_dsn: Option<&SecretString>,
) -> Result<TelemetryGuard, TelemetryError> {
    let sentry = sentry_dsn.map(|dsn| start_sentry(service, dsn)).transpose()?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let fmt_layer = match format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .boxed(),
        LogFormat::Pretty => tracing_subscriber::fmt::layer().compact().boxed(),
    };
    let sentry_layer = sentry.as_ref().map(|_| sentry_tracing::layer());
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt_layer)
        .with(sentry_layer)
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    Ok(TelemetryGuard { _sentry: sentry })
}

fn start_sentry(service: &'static str, dsn: &SecretString) -> Result<sentry::ClientInitGuard, TelemetryError> {
    let dsn: sentry::types::Dsn = dsn.expose_secret().parse().map_err(|_| TelemetryError::BadSentryDsn)?;
    let guard = sentry::init(sentry::ClientOptions {
        dsn: Some(dsn),
        release: sentry::release_name!(),
        server_name: Some(service.into()),
        send_default_pii: false,
        ..Default::default()
    });
    Ok(guard)
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}

/// A cancellation token that is cancelled on SIGTERM or Ctrl-C; services watch it to drain and stop.
pub fn shutdown_token() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing in-flight work");
        trigger.cancel();
    });
    token
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logging_the_configuration_does_not_leak_its_secrets() {
        let vars = [
            ("GUARANTOR_TRON_FEE_WALLET_KEY", "fee-wallet-private-key"),
            (
                "GUARANTOR_HD_MNEMONIC",
                "one two three four five six seven eight nine ten eleven twelve",
            ),
            ("GUARANTOR_TRON_API_KEY", "tron-api-key-value"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let config = guarantor_config::Config::from_vars(&vars).unwrap();
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(?config, "starting");
        });
        let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        assert!(logs.contains("starting"), "the line was written: {logs}");
        for secret in ["fee-wallet-private-key", "eleven twelve", "tron-api-key-value"] {
            assert!(!logs.contains(secret), "{secret} leaked into {logs}");
        }
    }

    #[test]
    fn a_configured_dsn_turns_sentry_on() {
        let dsn: SecretString = "https://public@sentry.invalid/1".into();
        let guard = start_sentry("test", &dsn).unwrap();
        assert!(sentry::Hub::current()
            .client()
            .is_some_and(|client| client.is_enabled()));
        drop(guard);
    }

    #[test]
    fn a_malformed_sentry_dsn_is_refused() {
        let dsn: SecretString = "not a dsn".into();
        assert!(matches!(start_sentry("test", &dsn), Err(TelemetryError::BadSentryDsn)));
    }
}
