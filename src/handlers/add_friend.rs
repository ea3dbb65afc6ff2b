use super::{Caller, Ctx, Handler, HandlerError, Reply, parse};
use crate::auth::is_valid_user_id;
use crate::protocol::{action, encode_json, error_code};
use crate::store::{FriendOutcome, Refusal};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Longest friend-request message, in bytes: enough for a greeting, small
/// enough that a request flood cannot bloat the store.
pub const MAX_MESSAGE_BYTES: usize = 512;

#[derive(Deserialize)]
struct Request {
    friend: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Serialize)]
struct Answer<'a> {
    status: &'static str,
    friend: &'a str,
}

/// 110 ADD_FRIEND: asks `friend` to be friends, or accepts their request.
pub struct AddFriend;

#[async_trait]
impl Handler for AddFriend {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        let Request { friend, message } = parse(payload)?;
        if !is_valid_user_id(&friend) {
            return Err(HandlerError::new(error_code::INVALID_USER, "friend is not a valid user id"));
        }
        if friend == caller.user {
            return Err(HandlerError::new(error_code::SELF_FRIEND, "you cannot add yourself"));
        }
        if message.as_ref().is_some_and(|m| m.len() > MAX_MESSAGE_BYTES) {
            let text = format!("message is longer than {MAX_MESSAGE_BYTES} bytes");
            return Err(HandlerError::new(error_code::BAD_PAYLOAD, text));
        }
        // The FRIEND_REQUEST push carries the message JSON-escaped (up to 6
        // bytes per byte); it must fit the target's max_message_bytes like
        // every frame, so a message that cannot is refused before storing.
        let push = encode_json(action::FRIEND_REQUEST, &json!({ "from": caller.user, "message": message }));
        if push.len() > ctx.max_message_bytes {
            let text = format!(
                "the message makes a {}-byte FRIEND_REQUEST; max_message_bytes is {}",
                push.len(),
                ctx.max_message_bytes
            );
            return Err(HandlerError::new(error_code::BAD_PAYLOAD, text));
        }
        let outcome = ctx.store.add_friend_request(caller.user, &friend, message.as_deref(), ctx.social).await?;
        let status = match outcome {
            FriendOutcome::Requested => {
                ctx.router.deliver(&friend, &push).await;
                "pending"
            }
            // Repeats are idempotent and do not notify the target again.
            FriendOutcome::AlreadyRequested => "pending",
            FriendOutcome::BecameFriends => {
                let push = json!({ "friend": caller.user });
                ctx.router.deliver(&friend, &encode_json(action::FRIEND_ACCEPTED, &push)).await;
                "friends"
            }
            FriendOutcome::AlreadyFriends => "friends",
            FriendOutcome::Refused(refusal) => return Err(refused(refusal, &friend, ctx)),
        };
        Ok(Reply::json(&Answer { status, friend: &friend }))
    }
}

/// The ERROR for a request a `[social]` bound refused.
fn refused(refusal: Refusal, friend: &str, ctx: &Ctx) -> HandlerError {
    let s = ctx.social;
    match refusal {
        Refusal::TooManyRequestsOut => HandlerError::new(
            error_code::TOO_MANY_REQUESTS_OUT,
            format!("you have {} pending requests; cancel some or wait for answers", s.max_requests_out),
        ),
        Refusal::InboxFull => HandlerError::new(
            error_code::INBOX_FULL,
            format!("{friend} has too many pending requests ({}); try again later", s.max_requests_in),
        ),
        Refusal::TooManyFriends => {
            HandlerError::new(error_code::TOO_MANY_FRIENDS, format!("you have {} friends", s.max_friends))
        }
        Refusal::TheirFriendsFull => HandlerError::new(
            error_code::TOO_MANY_FRIENDS,
            format!("{friend} has {} friends and cannot add more", s.max_friends),
        ),
    }
}
