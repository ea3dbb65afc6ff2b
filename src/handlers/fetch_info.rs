use super::{Caller, Ctx, Handler, HandlerError, Reply, parse};
use crate::auth::is_valid_user_id;
use crate::protocol::error_code;
use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    user: Option<String>,
}

/// 111 FETCH_INFO. Privacy rule (proto-spec/README.md): anyone may read a
/// user's profile; presence (`online`, `sessions`) is shown only to the user
/// and their friends, and is `null` otherwise; relationships only to the user.
pub struct FetchInfo;

#[async_trait]
impl Handler for FetchInfo {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, request: Map<String, Value>) -> Result<Reply, HandlerError> {
        let Request { user } = parse(request)?;
        let target = user.as_deref().unwrap_or(caller.user);
        if !is_valid_user_id(target) {
            return Err(HandlerError::new(error_code::INVALID_USER, "user is not a valid user id"));
        }
        let myself = target == caller.user;
        let mut reply = Map::new();
        reply.insert("user".into(), target.into());
        reply.insert("profile".into(), ctx.store.profile(target).await?.unwrap_or(Value::Null));
        let sees_presence = myself || ctx.store.are_friends(caller.user, target).await?;
        if sees_presence {
            let sessions = ctx.router.live_sessions(target);
            reply.insert("online".into(), (sessions > 0).into());
            reply.insert("sessions".into(), sessions.into());
        } else {
            reply.insert("online".into(), Value::Null);
            reply.insert("sessions".into(), Value::Null);
        }
        if myself {
            let rel = ctx.store.relationships(target).await?;
            reply.insert("friends".into(), rel.friends.into());
            let incoming = serde_json::to_value(rel.incoming).unwrap_or(Value::Array(Vec::new()));
            reply.insert("requests_in".into(), incoming);
            reply.insert("requests_out".into(), rel.outgoing.into());
        } else {
            reply.insert("friend".into(), sees_presence.into());
        }
        Ok(reply)
    }
}
