use super::{Caller, Ctx, Handler, HandlerError, Reply, parse};
use crate::auth::is_valid_user_id;
use crate::protocol::error_code;
use crate::store::IncomingRequest;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    user: Option<String>,
}

#[derive(Serialize)]
struct Info<'a> {
    user: &'a str,
    profile: Option<Value>,
    /// `null` when the caller may not see presence.
    online: Option<bool>,
    sessions: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    friend: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    friends: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_in: Option<Vec<IncomingRequest>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_out: Option<Vec<String>>,
}

/// 111 FETCH_INFO. Privacy rule (proto-spec/README.md): anyone may read a
/// user's profile; presence (`online`, `sessions`) is shown only to the user
/// and their friends, and is `null` otherwise; relationships only to the user.
pub struct FetchInfo;

#[async_trait]
impl Handler for FetchInfo {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        let Request { user } = parse(payload)?;
        let target = user.as_deref().unwrap_or(caller.user);
        if !is_valid_user_id(target) {
            return Err(HandlerError::new(error_code::INVALID_USER, "user is not a valid user id"));
        }
        let myself = target == caller.user;
        let view = ctx.store.user_view(caller.user, target).await?;
        let sessions = match myself || view.friends {
            true => Some(ctx.router.presence(target).await.sessions),
            false => None,
        };
        let (friends, requests_in, requests_out) = match view.relationships {
            Some(r) => (Some(r.friends), Some(r.incoming), Some(r.outgoing)),
            None => (None, None, None),
        };
        Ok(Reply::json(&Info {
            user: target,
            profile: view.profile,
            online: sessions.map(|n| n > 0),
            sessions,
            friend: (!myself).then_some(view.friends),
            friends,
            requests_in,
            requests_out,
        }))
    }
}
