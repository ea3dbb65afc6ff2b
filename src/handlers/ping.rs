use super::{Caller, Ctx, Handler, HandlerError, Reply};
use async_trait::async_trait;
use serde::Serialize;

#[derive(Serialize)]
struct Pong {
    server_time_ms: u64,
}

/// App-level heartbeat for clients whose WebSocket API cannot send control
/// pings (browsers): PING (2) -> PONG (3) with the server time.
pub struct Ping;

#[async_trait]
impl Handler for Ping {
    async fn handle(&self, _: &Ctx, _: Caller<'_>, _: &[u8]) -> Result<Reply, HandlerError> {
        let server_time_ms = crate::clock::unix_ms();
        Ok(Reply::json(&Pong { server_time_ms }))
    }
}
