use super::{Caller, Ctx, Handler, HandlerError, Reply, parse};
use crate::auth::is_valid_user_id;
use crate::protocol::{HEADER_LEN, error_code};
use crate::store::{IncomingRequest, List, ListQuery, Page};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Entries per list when a request names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest `limit` a request may ask for.
pub const MAX_LIMIT: usize = 500;

/// Room kept for the `"seq":N` the dispatcher splices in (u64::MAX).
const SEQ_RESERVE: usize = r#","seq":18446744073709551615"#.len();
/// Longest user id, so the longest `next` cursor.
const MAX_CURSOR: usize = 128;

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    user: Option<String>,
    /// Only this list, continuing after `after`.
    #[serde(default)]
    list: Option<List>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
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
    /// Per list shown: the `after` to continue with, or null at its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<Next>,
}

fn name(list: List) -> &'static str {
    match list {
        List::Friends => "friends",
        List::RequestsIn => "requests_in",
        List::RequestsOut => "requests_out",
    }
}

fn too_large(what: &str, max: usize) -> HandlerError {
    HandlerError::new(
        error_code::REPLY_TOO_LARGE,
        format!("{what} does not fit in max_message_bytes ({max}); ask for one list at a time"),
    )
}

/// Takes the entries of `page` that fit in `room` bytes (their JSON plus
/// separating commas) and returns them with the list's `next` cursor: the
/// last id taken (`start`, the request's own cursor, when none was) if more
/// remain, else null.
/// Whether a list came back complete (or was not asked for).
fn whole<T>(page: &Option<Page<T>>) -> bool {
    page.as_ref().is_none_or(|p| !p.more)
}

/// The length of `value` as JSON, counted without building the text.
fn json_len<T: Serialize>(value: &T) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, value) {
        Ok(()) => count.0,
        Err(_) => usize::MAX,
    }
}

fn fit<T: Serialize>(
    page: Page<T>,
    start: &str,
    room: &mut usize,
    id: impl Fn(&T) -> &str,
) -> (Vec<T>, Option<String>) {
    let mut taken = Vec::with_capacity(page.items.len());
    let mut cut = false;
    for item in page.items {
        let cost = json_len(&item) + usize::from(!taken.is_empty());
        if cost > *room {
            cut = true;
            break;
        }
        *room -= cost;
        taken.push(item);
    }
    let next = (page.more || cut).then(|| taken.last().map_or(start, &id).to_string());
    (taken, next)
}

/// 111 FETCH_INFO. Privacy rule (proto-spec/README.md): anyone may read a
/// user's profile; presence (`online`, `sessions`) is shown only to the user
/// and their friends, and is `null` otherwise; relationships only to the user.
///
/// Your own lists come in pages (`limit` entries each, fewer when the reply
/// would not fit in max_message_bytes) with a `next` cursor per list; the
/// store reads each page by a range scan from the cursor.
/// `next`: per list asked for, the cursor to continue from, or null when
/// the list is complete. A struct rather than a map: it is in every reply
/// to oneself, and a map of owned keys cost allocations on each.
#[derive(Serialize, Default)]
struct Next {
    #[serde(skip_serializing_if = "Option::is_none")]
    friends: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_in: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    requests_out: Option<Option<String>>,
}

impl Next {
    /// Every list in `lists` set to `cursor`.
    fn all(lists: &[List], cursor: Option<String>) -> Next {
        let mut next = Next::default();
        for list in lists {
            *next.slot(*list) = Some(cursor.clone());
        }
        next
    }

    fn slot(&mut self, list: List) -> &mut Option<Option<String>> {
        match list {
            List::Friends => &mut self.friends,
            List::RequestsIn => &mut self.requests_in,
            List::RequestsOut => &mut self.requests_out,
        }
    }
}

pub struct FetchInfo;

#[async_trait]
impl Handler for FetchInfo {
    async fn handle(&self, ctx: &Ctx, caller: Caller<'_>, payload: &[u8]) -> Result<Reply, HandlerError> {
        let Request { user, list, after, limit } = parse(payload)?;
        let target = user.as_deref().unwrap_or(caller.user);
        if !is_valid_user_id(target) {
            return Err(HandlerError::new(error_code::INVALID_USER, "user is not a valid user id"));
        }
        let limit = limit.unwrap_or(DEFAULT_LIMIT);
        if !(1..=MAX_LIMIT).contains(&limit) {
            return Err(HandlerError::new(error_code::BAD_PAYLOAD, format!("limit must be 1-{MAX_LIMIT}")));
        }
        if let Some(after) = &after {
            if list.is_none() {
                return Err(HandlerError::new(error_code::BAD_PAYLOAD, "after needs a list"));
            }
            if !after.is_empty() && !is_valid_user_id(after) {
                return Err(HandlerError::new(error_code::BAD_PAYLOAD, "after must be \"\" or a user id"));
            }
        }
        let all = [List::Friends, List::RequestsIn, List::RequestsOut];
        let lists = match &list {
            Some(one) => std::slice::from_ref(one),
            None => &all[..],
        };
        let myself = target == caller.user;
        let query = ListQuery { lists, after: after.as_deref(), limit };
        let view = ctx.store.user_view(caller.user, target, query).await?;
        let sessions = match myself || view.friends {
            true => Some(ctx.router.presence(target).await.sessions),
            false => None,
        };
        let mut info = Info {
            user: target,
            profile: view.profile,
            online: sessions.map(|n| n > 0),
            sessions,
            friend: (!myself).then_some(view.friends),
            friends: None,
            requests_in: None,
            requests_out: None,
            next: None,
        };
        let Some(mut r) = view.relationships else {
            return Ok(Reply::json(&info));
        };
        let max = ctx.max_message_bytes;
        let budget = max.saturating_sub(HEADER_LEN + SEQ_RESERVE);
        // The common case, every list whole and the reply within the bound:
        // serialize once. Only a reply that is cut needs the fitting below
        // (measured: the fitting path on every request cost ~0.5 us per
        // reply in `pushgate bench rpc`).
        if whole(&r.friends) && whole(&r.incoming) && whole(&r.outgoing) {
            info.friends = r.friends.take().map(|p| p.items);
            info.requests_in = r.incoming.take().map(|p| p.items);
            info.requests_out = r.outgoing.take().map(|p| p.items);
            info.next = Some(Next::all(lists, None));
            let reply = Reply::json(&info);
            if reply.payload_len() <= budget {
                return Ok(reply);
            }
            // Too large after all: fit it page by page.
            r.friends = info.friends.take().map(|items| Page { items, more: false });
            r.incoming = info.requests_in.take().map(|items| Page { items, more: false });
            r.outgoing = info.requests_out.take().map(|items| Page { items, more: false });
        }
        // The reply without entries, with the longest cursors, must fit;
        // the entries then fill what is left, list by list.
        // Sized with the longest cursor in every list's place.
        let next = Next::all(lists, Some("x".repeat(MAX_CURSOR)));
        info.friends = r.friends.as_ref().map(|_| Vec::new());
        info.requests_in = r.incoming.as_ref().map(|_| Vec::new());
        info.requests_out = r.outgoing.as_ref().map(|_| Vec::new());
        info.next = Some(next);
        let base = Reply::json(&info).payload_len();
        let mut room = budget.checked_sub(base).ok_or_else(|| too_large("this user's information", max))?;
        let mut next = Next::default();
        let start = after.as_deref().unwrap_or("");
        let mut stuck = false;
        if let Some(page) = r.friends {
            let (items, cursor) = fit(page, start, &mut room, |id: &String| id.as_str());
            stuck |= items.is_empty() && cursor.is_some();
            info.friends = Some(items);
            *next.slot(List::Friends) = Some(cursor);
        }
        if let Some(page) = r.incoming {
            let (items, cursor) = fit(page, start, &mut room, |req: &IncomingRequest| req.from.as_str());
            stuck |= items.is_empty() && cursor.is_some();
            info.requests_in = Some(items);
            *next.slot(List::RequestsIn) = Some(cursor);
        }
        if let Some(page) = r.outgoing {
            let (items, cursor) = fit(page, start, &mut room, |id: &String| id.as_str());
            stuck |= items.is_empty() && cursor.is_some();
            info.requests_out = Some(items);
            *next.slot(List::RequestsOut) = Some(cursor);
        }
        // One list asked for and not even its next entry fits: the client
        // could never get past it.
        if let Some(one) = list
            && stuck
        {
            return Err(too_large(&format!("the next entry of {}", name(one)), max));
        }
        info.next = Some(next);
        Ok(Reply::json(&info))
    }
}
