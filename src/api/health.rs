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
/// drain or shutdown so load balancers stop sending upgrades here, and
/// while the store is failing (it reopens itself; ready again after).
///
/// In cluster mode the body shows the Redis link (`cluster`), but a Redis
/// outage does not make the node unready: it still serves its own
/// sessions and local pushes, and every node would turn unready at once,
/// leaving no node to serve anyone. Cross-node answers report the
/// unreachable part instead (deploy/README.md "Cluster mode").
pub async fn readyz(State(state): State<Shared>) -> impl IntoResponse {
    let draining = state.is_draining();
    let store = state.ctx.store.health();
    // The shared Redis store is down exactly when the Redis link is: the
    // same reasoning applies, so only a node's own embedded store gates
    // its readiness.
    let store_gates = state.cluster.is_none();
    let ready = !draining && (store.healthy || !store_gates);
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = json!({
        "ready": ready,
        "sessions": state.ctx.router.local_session_count(),
        "store": { "healthy": store.healthy },
    });
    let reason = if draining { Some("draining".to_string()) } else { store.reason.clone() };
    if let Some(reason) = reason {
        body["reason"] = reason.into();
    }
    if let Some(cluster) = &state.cluster {
        body["cluster"] = cluster.to_json();
    }
    if let Some(reason) = store.reason {
        body["store"]["reason"] = reason.into();
    }
    (status, Json(body))
}

pub async fn metrics(State(state): State<Shared>) -> impl IntoResponse {
    // Sessions are counted by the registry; set right before rendering.
    metrics::gauge!("pushgate_sessions").set(state.ctx.router.local_session_count() as f64);
    ([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], crate::metrics::render())
}
