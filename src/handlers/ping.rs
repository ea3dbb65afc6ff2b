use super::{Caller, Ctx, Handler, HandlerError, Reply};
use async_trait::async_trait;
use serde_json::{Map, Value};

/// App-level heartbeat for clients whose WebSocket API cannot send control
/// pings (browsers): PING (2) -> PONG (3) with the server time.
pub struct Ping;

#[async_trait]
impl Handler for Ping {
    async fn handle(&self, _: &Ctx, _: Caller<'_>, _: Map<String, Value>) -> Result<Reply, HandlerError> {
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        let mut reply = Map::new();
        reply.insert("server_time_ms".into(), now_ms.into());
        Ok(reply)
    }
}
