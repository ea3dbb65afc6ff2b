//! Bounds on friend requests and friends, DECLINE/CANCEL, FETCH_INFO paging
//! and the max_message_bytes guarantee, over real sockets ("Hardening:
//! strangers can lock users out").
//!
//! The [social] bounds are read from the server's config as JSON and the new
//! action codes are written as numbers, so this file also builds against a
//! gateway without them and fails there at run time.

mod common;

use common::*;
use futures_util::StreamExt;
use pushgate::protocol::action;
use serde_json::{Value, json};
use std::collections::BTreeSet;

const DECLINE_FRIEND: u32 = 112;
const CANCEL_FRIEND_REQUEST: u32 = 113;

/// A `[social]` bound of the running server.
fn bound(server: &TestServer, key: &str) -> usize {
    let config = serde_json::to_value(&server.config).expect("config as JSON");
    config["social"][key].as_u64().unwrap_or_else(|| panic!("social.{key} in the config")) as usize
}

/// The next frame, asserting it fits the announced max_message_bytes.
async fn recv_fitting(ws: &mut Ws, max: usize) -> (u32, Value) {
    let (code, payload) = recv_raw(ws).await;
    assert!(
        payload.len() + 4 <= max,
        "a {}-byte frame (action {code}) exceeds max_message_bytes {max}",
        payload.len() + 4
    );
    (code, serde_json::from_slice(&payload).expect("json payload"))
}

/// Sends `request` and returns the reply for its `seq`, skipping pushes.
async fn call(ws: &mut Ws, max: usize, code: u32, request: Value) -> (u32, Value) {
    let seq = request["seq"].clone();
    send_json(ws, code, request).await;
    loop {
        let (code, reply) = recv_fitting(ws, max).await;
        if reply["seq"] == seq && !(200..300).contains(&code) {
            return (code, reply);
        }
    }
}

/// Walks one of `ws`'s own lists with FETCH_INFO pages of `limit` and
/// returns every id in order, checking the pages' cursors.
async fn walk(ws: &mut Ws, max: usize, list: &str, limit: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = Value::String(String::new());
    for page in 1u64.. {
        let request = json!({ "list": list, "after": after, "limit": limit, "seq": page });
        let (code, reply) = call(ws, max, action::FETCH_INFO, request).await;
        assert_eq!(code, action::FETCH_INFO, "page {page}: {reply}");
        let items = reply[list].as_array().unwrap_or_else(|| panic!("{list} in {reply}"));
        assert!(items.len() <= limit, "page {page} holds {} > limit {limit}", items.len());
        for item in items {
            let id = item.get("from").unwrap_or(item);
            ids.push(id.as_str().expect("an id").to_string());
        }
        let next = &reply["next"][list];
        if next.is_null() {
            return ids;
        }
        assert!(!items.is_empty(), "page {page} made no progress");
        assert_eq!(next.as_str(), ids.last().map(String::as_str), "next is the last id of the page");
        after = next.clone();
    }
    unreachable!()
}

fn assert_complete(ids: &[String], expected: &BTreeSet<String>) {
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "no duplicates");
    assert_eq!(&unique, expected, "no gaps");
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "key order");
}

/// 300 strangers, each on its own connection, ask one victim with 512-byte
/// messages (control characters: 3 KB each once JSON-escaped). The inbox
/// stops at social.max_requests_in: later strangers get inbox_full, the
/// request of someone the victim knows (sent first) is not evicted, and the
/// victim's FETCH_INFO keeps working, in pages within max_message_bytes.
#[tokio::test]
async fn strangers_cannot_lock_a_user_out() {
    let server = TestServer::start().await;
    let max = server.config.session.max_message_bytes;
    let inbox = bound(&server, "max_requests_in");
    let (mut mom, _) = server.connect("mom").await;
    let (code, reply) = call(&mut mom, max, action::ADD_FRIEND, json!({ "friend": "victim", "seq": 1 })).await;
    assert_eq!((code, reply["status"].as_str()), (action::ADD_FRIEND, Some("pending")));

    let message = "\u{1}".repeat(512);
    let outcomes: Vec<(String, Value)> = futures_util::stream::iter(0..300)
        .map(|i| {
            let (server, message) = (&server, message.clone());
            async move {
                let user = format!("stranger-{i:03}");
                let (mut ws, _) = server.connect(&user).await;
                let request = json!({ "friend": "victim", "message": message, "seq": i });
                let (_, reply) = call(&mut ws, max, action::ADD_FRIEND, request).await;
                (user, reply)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let accepted: BTreeSet<String> =
        outcomes.iter().filter(|(_, r)| r["status"] == "pending").map(|(u, _)| u.clone()).collect();
    let refused: Vec<&Value> = outcomes.iter().filter(|(_, r)| r["status"] != "pending").map(|(_, r)| r).collect();
    assert_eq!(accepted.len(), inbox - 1, "the inbox holds mom's request and max_requests_in - 1 strangers'");
    assert_eq!(refused.len(), 300 - (inbox - 1));
    for error in refused {
        assert_eq!((error["code"].as_str(), error["action"].as_u64()), (Some("inbox_full"), Some(110)), "{error}");
    }

    let (mut victim, _) = server.connect("victim").await;
    let (code, first) = call(&mut victim, max, action::FETCH_INFO, json!({ "seq": 1 })).await;
    assert_eq!(code, action::FETCH_INFO, "the victim's own FETCH_INFO works: {first}");
    assert!(first["next"]["requests_in"].is_string(), "the first page is cut short: {}", first["next"]);
    let mut expected = accepted.clone();
    expected.insert("mom".into());
    let ids = walk(&mut victim, max, "requests_in", 100).await;
    assert_complete(&ids, &expected);

    // The victim clears room by declining, and someone new gets in.
    let (_, reply) = call(&mut victim, max, DECLINE_FRIEND, json!({ "from": "stranger-000", "seq": 2 })).await;
    let declined = if accepted.contains("stranger-000") { "declined" } else { "none" };
    assert_eq!(reply["status"], declined, "{reply}");
    let (mut friend, _) = server.connect("friend").await;
    let (_, reply) = call(&mut friend, max, action::ADD_FRIEND, json!({ "friend": "victim", "seq": 1 })).await;
    let status = if declined == "declined" { "pending" } else { "error" };
    assert_eq!(reply["status"].as_str().unwrap_or("error"), status, "{reply}");

    // Mom, connected all along, still gets pushes, and the node answers.
    let (http, body) = server.post("/v1/push", json!({ "users": ["mom"], "payload": "still here" })).await;
    assert_eq!((http, body["delivered"].as_u64()), (200, Some(1)), "{body}");
    loop {
        let (code, payload) = recv(&mut mom).await;
        if code == action::PUSH {
            assert_eq!(payload, json!("still here"));
            break;
        }
    }
    assert_eq!(server.get("/healthz").await.0, 200);
}

/// One user asking many distinct ids stops at social.max_requests_out, its
/// own FETCH_INFO keeps working, and cancelling frees room.
#[tokio::test]
async fn a_spammer_hits_the_outgoing_bound() {
    let server = TestServer::start().await;
    let max = server.config.session.max_message_bytes;
    let out = bound(&server, "max_requests_out");
    let (mut spammer, _) = server.connect("spammer").await;
    let message = "\u{1}".repeat(512);
    let mut sent = BTreeSet::new();
    for i in 0..out + 20 {
        let target = format!("target-{i:04}");
        let request = json!({ "friend": target, "message": message, "seq": i });
        let (code, reply) = call(&mut spammer, max, action::ADD_FRIEND, request).await;
        if i < out {
            assert_eq!((code, reply["status"].as_str()), (action::ADD_FRIEND, Some("pending")), "{i}: {reply}");
            sent.insert(target);
        } else {
            assert_eq!((code, reply["code"].as_str()), (action::ERROR, Some("too_many_requests_out")), "{i}: {reply}");
        }
    }
    // A repeat of a pending request is not refused.
    let (_, reply) = call(&mut spammer, max, action::ADD_FRIEND, json!({ "friend": "target-0000", "seq": 1 })).await;
    assert_eq!(reply["status"], "pending");

    let (code, info) = call(&mut spammer, max, action::FETCH_INFO, json!({ "seq": 2 })).await;
    assert_eq!(code, action::FETCH_INFO, "{info}");
    assert_complete(&walk(&mut spammer, max, "requests_out", 30).await, &sent);

    let (_, reply) = call(&mut spammer, max, CANCEL_FRIEND_REQUEST, json!({ "friend": "target-0000", "seq": 3 })).await;
    assert_eq!(reply, json!({ "status": "cancelled", "friend": "target-0000", "seq": 3 }));
    let (_, reply) = call(&mut spammer, max, action::ADD_FRIEND, json!({ "friend": "someone-new", "seq": 4 })).await;
    assert_eq!(reply["status"], "pending", "{reply}");
}

#[tokio::test]
async fn decline_and_cancel_round_trips() {
    let server = TestServer::start().await;
    let max = server.config.session.max_message_bytes;
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob, _) = server.connect("bob").await;
    let (mut carol, _) = server.connect("carol").await;
    let lists = |info: &Value| (info["requests_in"].clone(), info["requests_out"].clone());

    // bob declines alice: both sides' lists forget it; alice is not told.
    call(&mut alice, max, action::ADD_FRIEND, json!({ "friend": "bob", "message": "hi", "seq": 1 })).await;
    assert_eq!(recv(&mut bob).await.0, action::FRIEND_REQUEST);
    let (code, reply) = call(&mut bob, max, DECLINE_FRIEND, json!({ "from": "alice", "seq": 2 })).await;
    assert_eq!((code, reply), (DECLINE_FRIEND, json!({ "status": "declined", "from": "alice", "seq": 2 })));
    let (_, reply) = call(&mut bob, max, DECLINE_FRIEND, json!({ "from": "alice", "seq": 3 })).await;
    assert_eq!(reply["status"], "none", "idempotent");
    let (_, info) = call(&mut bob, max, action::FETCH_INFO, json!({ "seq": 4 })).await;
    assert_eq!(lists(&info), (json!([]), json!([])));
    let (_, info) = call(&mut alice, max, action::FETCH_INFO, json!({ "seq": 5 })).await;
    assert_eq!(lists(&info), (json!([]), json!([])), "the sender's requests_out reflects the decline");

    // alice cancels her request to carol: carol's requests_in forgets it.
    call(&mut alice, max, action::ADD_FRIEND, json!({ "friend": "carol", "seq": 6 })).await;
    assert_eq!(recv(&mut carol).await.0, action::FRIEND_REQUEST);
    let (_, info) = call(&mut carol, max, action::FETCH_INFO, json!({ "seq": 7 })).await;
    assert_eq!(info["requests_in"], json!([{ "from": "alice", "message": null }]));
    let (code, reply) = call(&mut alice, max, CANCEL_FRIEND_REQUEST, json!({ "friend": "carol", "seq": 8 })).await;
    assert_eq!((code, reply), (CANCEL_FRIEND_REQUEST, json!({ "status": "cancelled", "friend": "carol", "seq": 8 })));
    let (_, info) = call(&mut carol, max, action::FETCH_INFO, json!({ "seq": 9 })).await;
    assert_eq!(lists(&info), (json!([]), json!([])), "the target's requests_in reflects the cancel");
    let (_, info) = call(&mut alice, max, action::FETCH_INFO, json!({ "seq": 10 })).await;
    assert_eq!(lists(&info), (json!([]), json!([])));
    // A cancelled request can no longer be accepted: carol's ask is new.
    let (_, reply) = call(&mut carol, max, action::ADD_FRIEND, json!({ "friend": "alice", "seq": 11 })).await;
    assert_eq!(reply["status"], "pending");

    // Yourself, bad ids and missing fields are errors.
    for (code, request, error) in [
        (DECLINE_FRIEND, json!({ "from": "alice", "seq": 12 }), "self_friend"),
        (CANCEL_FRIEND_REQUEST, json!({ "friend": "bad id", "seq": 13 }), "invalid_user"),
        (CANCEL_FRIEND_REQUEST, json!({ "seq": 14 }), "bad_payload"),
    ] {
        let (got, reply) = call(&mut alice, max, code, request).await;
        assert_eq!((got, reply["code"].as_str()), (action::ERROR, Some(error)), "{reply}");
    }
}

/// A hub with 23 friends and 23 pending requests each way walks every list
/// in pages of 5 with no duplicates or gaps; bad paging requests are errors.
#[tokio::test]
async fn paging_walks_a_long_list_completely() {
    let server = TestServer::start().await;
    let max = server.config.session.max_message_bytes;
    let (mut hub, _) = server.connect("hub").await;
    let (mut friends, mut incoming, mut outgoing) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for i in 0..23 {
        let (f, a, b) = (format!("f{i:02}"), format!("in{i:02}"), format!("out{i:02}"));
        for (user, set) in [(&f, &mut friends), (&a, &mut incoming)] {
            let (mut ws, _) = server.connect(user).await;
            call(&mut ws, max, action::ADD_FRIEND, json!({ "friend": "hub", "message": user, "seq": 1 })).await;
            set.insert(user.clone());
        }
        call(&mut hub, max, action::ADD_FRIEND, json!({ "friend": f, "seq": 1 })).await;
        call(&mut hub, max, action::ADD_FRIEND, json!({ "friend": b, "seq": 1 })).await;
        outgoing.insert(b);
    }
    assert_complete(&walk(&mut hub, max, "friends", 5).await, &friends);
    assert_complete(&walk(&mut hub, max, "requests_in", 5).await, &incoming);
    assert_complete(&walk(&mut hub, max, "requests_out", 5).await, &outgoing);
    // The default view: first pages of every list with their cursors.
    let (_, info) = call(&mut hub, max, action::FETCH_INFO, json!({ "limit": 20, "seq": 1 })).await;
    assert_eq!(info["friends"].as_array().map(Vec::len), Some(20));
    assert_eq!(info["next"], json!({ "friends": "f19", "requests_in": "in19", "requests_out": "out19" }));
    let (_, info) =
        call(&mut hub, max, action::FETCH_INFO, json!({ "list": "friends", "after": "f19", "seq": 2 })).await;
    assert_eq!(
        (info["friends"].clone(), info["next"].clone()),
        (json!(["f20", "f21", "f22"]), json!({ "friends": null }))
    );
    assert!(info.get("requests_in").is_none(), "only the list asked for");

    for bad in [
        json!({ "limit": 0, "seq": 9 }),
        json!({ "limit": 501, "seq": 9 }),
        json!({ "after": "f01", "seq": 9 }),
        json!({ "list": "enemies", "seq": 9 }),
        json!({ "list": "friends", "after": "not an id", "seq": 9 }),
    ] {
        let (code, reply) = call(&mut hub, max, action::FETCH_INFO, bad.clone()).await;
        assert_eq!((code, reply["code"].as_str()), (action::ERROR, Some("bad_payload")), "{bad}: {reply}");
    }
}

/// With max_message_bytes 1024: a FETCH_INFO of a 2 KB profile, an ERROR
/// quoting a long value and a FRIEND_REQUEST push of an escaped message
/// would all exceed it. Each becomes a fitting ERROR and the session stays
/// open.
#[tokio::test]
async fn a_reply_that_cannot_fit_is_an_error_and_the_session_stays_open() {
    let server = TestServer::start_with(|c| c.session.max_message_bytes = 1024).await;
    let max = 1024;
    let profile = json!({ "bio": "b".repeat(2000) });
    let put = server.http().put(server.api("/v1/users/carol/profile")).bearer_auth(API_KEY).json(&profile);
    assert_eq!(put.send().await.expect("PUT profile").status().as_u16(), 200);
    let (mut alice, _) = server.connect("alice").await;
    let (mut bob, _) = server.connect("bob").await;

    let (code, reply) = call(&mut alice, max, action::FETCH_INFO, json!({ "user": "carol", "seq": 5 })).await;
    assert_eq!(
        (code, reply["code"].as_str(), reply["action"].as_u64()),
        (action::ERROR, Some("reply_too_large"), Some(111))
    );

    // serde quotes the offending value; the ERROR's message is cut.
    let (code, reply) = call(&mut alice, max, action::FETCH_INFO, json!({ "limit": "\"".repeat(480), "seq": 6 })).await;
    assert_eq!((code, reply["code"].as_str()), (action::ERROR, Some("bad_payload")), "{reply}");

    // 160 control characters are 960 bytes JSON-escaped: the request fits,
    // but the FRIEND_REQUEST push names a 128-byte sender and would not.
    let (mut long, _) = server.connect(&"s".repeat(128)).await;
    let request = json!({ "friend": "bob", "message": "\u{1}".repeat(160), "seq": 7 });
    let (code, reply) = call(&mut long, max, action::ADD_FRIEND, request).await;
    assert_eq!((code, reply["code"].as_str()), (action::ERROR, Some("bad_payload")), "{reply}");
    expect_silence(&mut bob, std::time::Duration::from_millis(200)).await;
    let (code, _) = call(&mut long, max, action::PING, json!({ "seq": 1 })).await;
    assert_eq!(code, action::PONG);

    let (code, reply) = call(&mut alice, max, action::PING, json!({ "seq": 8 })).await;
    assert_eq!((code, reply["seq"].as_u64()), (action::PONG, Some(8)), "the session stays open");
}
