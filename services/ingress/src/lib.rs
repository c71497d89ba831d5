//! The HTTP ingress. It owns nothing durable: it authenticates, validates, publishes commands to
//! JetStream and waits for the ledger's reply, and serves reads from Postgres.

pub mod api_keys;
mod auth;
pub mod bus;
mod dispatch;
pub mod error;
mod extract;
pub mod key_cache;
mod observability;
mod repo;
pub mod routes;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router, ServiceExt};
use guarantor_config::Config;
use guarantor_store::PgPool;
use tokio::net::TcpListener;
use tower::Layer;
use tower_http::normalize_path::NormalizePathLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

pub use observability::metrics_handle;

/// What every handler can reach: one shared allocation, so the state axum clones for each request is
/// a reference count, not a copy of the pool, the NATS clients and the caches.
#[derive(Clone, Debug)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

#[derive(Debug)]
pub struct Shared {
    pub pool: PgPool,
    pub nats: async_nats::Client,
    pub bus: bus::CommandBus,
    pub config: Arc<Config>,
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    pub keys: key_cache::KeyCache,
    /// Derives deposit addresses (the public half of the HD deposit branch); none without a seed.
    pub deposit_addresses: Option<guarantor_tron::DepositAddresses>,
}

impl AppState {
    /// Connects the command bus (its reply subscription) and gathers what handlers need.
    pub async fn new(pool: PgPool, nats: async_nats::Client, config: Arc<Config>) -> anyhow::Result<Self> {
        let deposit_addresses = match &config.tron.hd_secret {
            Some(secret) => Some(secret.wallet()?.deposit_addresses()?),
            None => {
                tracing::warn!(
                    "no HD seed configured (GUARANTOR_HD_SEED or GUARANTOR_HD_MNEMONIC): payments answer 503"
                );
                None
            }
        };
        let bus = bus::CommandBus::start(nats.clone(), config.command_timeout()).await?;
        Ok(Self(Arc::new(Shared {
            deposit_addresses,
            pool,
            nats,
            bus,
            config,
            metrics: metrics_handle(),
            keys: key_cache::KeyCache::default(),
        })))
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "guarantor",
        description = "Escrow (safe deal) service: deals between a customer and a performer, with the money held until the deal closes or an arbiter decides.",
    ),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody)),
    tags(
        (name = "users", description = "The platform's users and their balances"),
        (name = "deals", description = "Deals and their state machine"),
        (name = "commands", description = "Results of commands answered 202"),
        (name = "admin", description = "Operator actions"),
        (name = "payments", description = "Payment gateways and deposits"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The router and the OpenAPI document, built from the same route declarations.
pub fn router(state: AppState) -> (Router, utoipa::openapi::OpenApi) {
    let api = OpenApiRouter::new()
        .routes(routes!(routes::users::upsert))
        .routes(routes!(routes::users::get))
        .routes(routes!(routes::users::balance))
        .routes(routes!(routes::deals::create, routes::deals::list))
        .routes(routes!(routes::deals::get))
        .routes(routes!(routes::deals::deny))
        .routes(routes!(routes::deals::confirm))
        .routes(routes!(routes::deals::cancel))
        .routes(routes!(routes::deals::close))
        .routes(routes!(routes::deals::dispute))
        .routes(routes!(routes::deals::close_performer))
        .routes(routes!(routes::deals::close_preformer))
        .routes(routes!(routes::deals::close_customer))
        .routes(routes!(routes::commands::get))
        .routes(routes!(routes::admin::adjust))
        .routes(routes!(routes::admin::sweeps))
        .routes(routes!(routes::gateways::list))
        .routes(routes!(routes::payments::create))
        .routes(routes!(routes::payments::get))
        .layer(from_fn_with_state(state.clone(), auth::authenticate));
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(routes::health::metrics))
        .routes(routes!(routes::openapi::document))
        .nest("/api/v1", api)
        .with_state(state)
        .split_for_parts();
    routes::deals::document_state_machine(&mut doc);
    let router = router
        .layer(Extension(Arc::new(doc.clone())))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed);
    (observability::layer(router), doc)
}

async fn route_not_found(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        format!("no route for {method} {}", uri.path()),
    )
}

async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{method} is not allowed on this route"),
    )
}

/// The ingress bound to its address, ready to serve. Tests bind port 0.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(state: AppState, addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let (router, _) = router(state);
        Ok(Self { listener, router })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets in-flight requests finish
    /// (for at most 30 seconds).
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> std::io::Result<()> {
        // Trailing slashes are trimmed before routing, so every route answers with and without one.
        let service = NormalizePathLayer::trim_trailing_slash().layer(self.router);
        let (drained_tx, drained_rx) = tokio::sync::oneshot::channel::<()>();
        let server = axum::serve(self.listener, ServiceExt::<Request>::into_make_service(service))
            .with_graceful_shutdown(async move {
                shutdown.await;
                drop(drained_tx);
            });
        let server = tokio::spawn(async move { server.await });
        let _ = drained_rx.await;
        match tokio::time::timeout(Duration::from_secs(30), server).await {
            Ok(joined) => joined.map_err(std::io::Error::other)?,
            Err(_) => {
                tracing::warn!("in-flight requests did not finish within 30 s; stopping anyway");
                Ok(())
            }
        }
    }
}
