use super::{Caller, Ctx, Handler, HandlerError, Reply, parse};
use crate::inbox::AckError;
use crate::protocol::error_code;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Ids one ACK frame may carry.
pub const MAX_ACK_IDS: usize = 1024;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    upto: Option<u64>,
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Serialize)]
struct Answer {
    upto: u64,
    pending: usize,
}

/// ACK (7): the caller's device processed durable messages (proto-spec
/// section 8). Answered only when the request carries `seq`.
pub struct Ack;

#[async_trait]
impl Handler for Ack {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        let request: Request = parse(payload)?;
        if request.upto.is_none() && request.ids.is_empty() {
            return Err(HandlerError::new(error_code::BAD_PAYLOAD, "an ACK needs upto or ids"));
        }
        if request.ids.len() > MAX_ACK_IDS {
            let message = format!("{} ids; one ACK carries at most {MAX_ACK_IDS}", request.ids.len());
            return Err(HandlerError::new(error_code::BAD_PAYLOAD, message));
        }
        let position =
            ctx.inbox.ack(caller.user, caller.device, request.upto, &request.ids).await.map_err(|e| match e {
                AckError::Bad(message) => HandlerError::new(error_code::BAD_PAYLOAD, message),
                AckError::Failed(e) => {
                    tracing::error!(error = %e, "inbox failure on ACK");
                    HandlerError::new(error_code::INTERNAL, "the ack was not recorded; ack again later")
                }
            })?;
        match request.seq {
            Some(_) => Ok(Reply::json(&Answer { upto: position.upto, pending: position.pending })),
            None => Ok(Reply::silent()),
        }
    }
}
