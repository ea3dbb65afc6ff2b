//! 112 DECLINE_FRIEND and 113 CANCEL_FRIEND_REQUEST: the two ways a pending
//! request ends without a friendship. Neither pushes anything: the other
//! side's FETCH_INFO simply stops listing the request (a decline is not
//! announced to the sender, as in messaging apps).

use super::{Caller, Ctx, Handler, HandlerError, Reply, parse};
use crate::auth::is_valid_user_id;
use crate::protocol::error_code;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// Checks the other side's id: valid and not the caller.
fn other(id: &str, caller: Caller<'_>, field: &str) -> Result<(), HandlerError> {
    if !is_valid_user_id(id) {
        return Err(HandlerError::new(error_code::INVALID_USER, format!("{field} is not a valid user id")));
    }
    if id == caller.user {
        return Err(HandlerError::new(error_code::SELF_FRIEND, "there are no requests to or from yourself"));
    }
    Ok(())
}

/// `"declined"`/`"cancelled"` when a request was removed, `"none"` when
/// there was none (a retry, or it was answered meanwhile): idempotent.
fn status(removed: bool, done: &'static str) -> &'static str {
    if removed { done } else { "none" }
}

/// 112 DECLINE_FRIEND `{"from": id}`: removes `from`'s pending request to
/// the caller. Reply `{"status": "declined" | "none", "from"}`.
pub struct Decline;

#[async_trait]
impl Handler for Decline {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        #[derive(Deserialize)]
        struct Request {
            from: String,
        }
        #[derive(Serialize)]
        struct Answer<'a> {
            status: &'static str,
            from: &'a str,
        }
        let Request { from } = parse(payload)?;
        other(&from, caller, "from")?;
        let removed = ctx.store.remove_friend_request(&from, caller.user).await?;
        Ok(Reply::json(&Answer { status: status(removed, "declined"), from: &from }))
    }
}

/// 113 CANCEL_FRIEND_REQUEST `{"friend": id}`: withdraws the caller's
/// pending request to `friend`. Reply `{"status": "cancelled" | "none",
/// "friend"}`.
pub struct Cancel;

#[async_trait]
impl Handler for Cancel {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        #[derive(Deserialize)]
        struct Request {
            friend: String,
        }
        #[derive(Serialize)]
        struct Answer<'a> {
            status: &'static str,
            friend: &'a str,
        }
        let Request { friend } = parse(payload)?;
        other(&friend, caller, "friend")?;
        let removed = ctx.store.remove_friend_request(caller.user, &friend).await?;
        Ok(Reply::json(&Answer { status: status(removed, "cancelled"), friend: &friend }))
    }
}
