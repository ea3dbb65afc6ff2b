//! The internal HTTP API on its own listener: backend pushes, session
//! control, profiles, health and metrics. proto-spec/openapi.json documents
//! every route in [`ROUTES`]; a test keeps the two in step.

mod body;
mod durable;
mod error;
mod health;
mod inbox;
mod profile;
mod push;
mod self_wake;
mod serve;
mod sessions;
mod watchdog;

pub use error::ApiError;
pub use serve::serve;

use crate::state::AppState;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use futures_util::FutureExt;
use http::Method;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use subtle::ConstantTimeEq;

type Shared = Arc<AppState>;

/// One served route. The router is built from this table and the OpenAPI
/// test reads it, so an undocumented route cannot slip in.
pub struct Route {
    pub method: Method,
    pub path: &'static str,
    /// Served without the API key (probes must work without secrets).
    pub public: bool,
    handler: fn() -> MethodRouter<Shared>,
}

pub const ROUTES: &[Route] = &[
    Route { method: Method::GET, path: "/healthz", public: true, handler: || get(health::healthz) },
    Route { method: Method::GET, path: "/readyz", public: true, handler: || get(health::readyz) },
    Route { method: Method::GET, path: "/metrics", public: false, handler: || get(health::metrics) },
    Route { method: Method::POST, path: "/v1/push", public: false, handler: || post(push::push) },
    Route { method: Method::POST, path: "/v1/push/batch", public: false, handler: || post(push::push_batch) },
    Route { method: Method::POST, path: "/v1/broadcast", public: false, handler: || post(push::broadcast) },
    Route { method: Method::GET, path: "/v1/users/{id}/sessions", public: false, handler: || get(sessions::list) },
    Route {
        method: Method::DELETE,
        path: "/v1/users/{id}/sessions",
        public: false,
        handler: || delete(sessions::kick_user),
    },
    Route {
        method: Method::DELETE,
        path: "/v1/sessions/{session_id}",
        public: false,
        handler: || delete(sessions::kick_session),
    },
    Route { method: Method::POST, path: "/v1/users/{id}/revoke", public: false, handler: || post(sessions::revoke) },
    Route { method: Method::GET, path: "/v1/users/{id}/profile", public: false, handler: || get(profile::get) },
    Route { method: Method::GET, path: "/v1/users/{id}/inbox", public: false, handler: || get(inbox::summary) },
    Route {
        method: Method::GET,
        path: "/v1/users/{id}/messages/{message_id}",
        public: false,
        handler: || get(inbox::message),
    },
    Route { method: Method::PUT, path: "/v1/users/{id}/profile", public: false, handler: || put(profile::put) },
];

/// The production router.
pub fn router(state: Shared) -> Router {
    router_with(state, None)
}

/// The router with an embedder's extra routes (behind the API key), as
/// [`crate::Extensions::api_routes`] adds them.
pub fn router_with(state: Shared, extra: Option<Router<Shared>>) -> Router {
    let mut public = Router::new();
    let mut private = extra.unwrap_or_default();
    for route in ROUTES {
        if route.public {
            public = public.route(route.path, (route.handler)());
        } else {
            private = private.route(route.path, (route.handler)());
        }
    }
    let private = private.route_layer(middleware::from_fn_with_state(state.clone(), require_key));
    public
        .merge(private)
        .fallback(|| async { ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async { ApiError::new(405, "method_not_allowed", "method not allowed") })
        .layer(DefaultBodyLimit::max(state.config.api.max_body_bytes))
        .layer(middleware::from_fn(catch_panic))
        .with_state(state)
}

/// A panicking handler answers 500 with the JSON error body instead of
/// dropping the connection without a response.
async fn catch_panic(request: Request, next: Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    match AssertUnwindSafe(next.run(request)).catch_unwind().await {
        Ok(response) => response,
        Err(_) => {
            crate::metrics::get().panics.increment(1);
            tracing::error!(%method, %path, "API handler panicked; answered 500");
            ApiError::internal("internal error").into_response()
        }
    }
}

/// A user id from a path, or 400.
fn user_id(id: &str) -> Result<&str, ApiError> {
    if crate::auth::is_valid_user_id(id) { Ok(id) } else { Err(ApiError::bad_request("not a valid user id")) }
}

/// Constant-time comparison of the bearer key, so response timing does not
/// leak how much of a guessed key was right.
async fn require_key(State(state): State<Shared>, request: Request, next: Next) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .unwrap_or("");
    let expected = state.config.api.key.as_bytes();
    if presented.len() == expected.len() && bool::from(presented.as_bytes().ct_eq(expected)) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::unauthorized())
    }
}
