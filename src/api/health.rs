use super::Shared;
use axum::Json;
use axum::extract::State;
use axum::response::IntoResponse;
use http::StatusCode;
use serde_json::json;

/// Liveness: the process answers. Never depends on anything else, so an
/// orchestrator does not restart a node for a dependency's fault.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

/// Readiness: accepting new sessions; false from the first moment of a
/// drain or shutdown so load balancers stop sending upgrades here.
pub async fn readyz(State(state): State<Shared>) -> impl IntoResponse {
    let ready = !state.is_draining();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(json!({ "ready": ready, "sessions": state.ctx.router.local_session_count() })))
}

pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    // Sessions are counted by the registry; set right before rendering.
    metrics::gauge!("pushgate_sessions").set(state.ctx.router.local_session_count() as f64);
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render())
}
