//! What nodes say to each other over Redis pub/sub: a JSON envelope
//! `{"from": <node>, "kind": ..., ...}` on a node's channel
//! (`pg:node:<node_id>`) or the broadcast channel (`pg:broadcast`).
//! Frames travel as base64 of their bytes (header included).

use crate::protocol::CloseReason;
use crate::router::SessionInfo;
use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// Every node subscribes here; the sender ignores its own message.
pub const BROADCAST: &str = "pg:broadcast";

/// The channel of node `node`: unicast pushes, kicks, requests and the
/// replies to this node's requests.
pub fn node_channel(node: &str) -> String {
    format!("pg:node:{node}")
}

/// One (user, frame) of a `deliver_batch` message.
#[derive(Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub user: String,
    pub frame: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope {
    /// The sending node's id.
    pub from: String,
    #[serde(flatten)]
    pub body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// Hand `frame` to the receiver's sessions of `user`.
    Deliver { user: String, frame: String },
    /// Hand `frame` to the receiver's sessions of each of `users` (a push to
    /// many users: one message per holding node, written by the
    /// grouped-publish script, which puts `users` last).
    DeliverMany { frame: String, users: Vec<String> },
    /// Hand each frame to the receiver's sessions of its user (a batch of
    /// one-user pushes: one message per holding node, written by the
    /// grouped-publish script from [`Envelope::delivery`] fragments).
    DeliverBatch { deliveries: Vec<Delivery> },
    /// Hand `frame` to every session of the receiver (on `pg:broadcast`).
    Broadcast { frame: String },
    /// Close every session of `user` on the receiver.
    KickUser { user: String, reason: String },
    /// Close one session of the receiver; answered with `kicked`.
    KickSession { id: u64, session: String, reason: String, last_words: Option<String> },
    /// List the receiver's sessions of `user`; answered with `listed`.
    List { id: u64, user: String },
    /// The answer to `list` request `id`.
    Listed { id: u64, sessions: Vec<SessionInfo> },
    /// The answer to `kick_session` request `id`.
    Kicked { id: u64, closed: bool },
    /// A node's self-check of its own subscription (sent to itself).
    Ping { id: u64 },
    /// `user`'s tokens issued before `before` are refused until `until`
    /// (on `pg:broadcast`; the Redis hash `pg:revoked` is the truth).
    Revoked { user: String, before: u64, until: u64 },
}

impl Envelope {
    pub fn new(from: &str, body: Body) -> Envelope {
        Envelope { from: from.to_string(), body }
    }

    pub fn to_json(&self) -> String {
        // A struct of strings, numbers and session infos: cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The JSON of a `deliver_many` envelope up to its users: the script
    /// appends the JSON strings of the users a node holds, then `]}`.
    pub fn deliver_many_head(from: &str, frame: &Bytes) -> String {
        let mut head =
            Envelope::new(from, Body::DeliverMany { frame: encode_frame(frame), users: Vec::new() }).to_json();
        // `...,"users":[]}` -> `...,"users":[`
        head.truncate(head.len().saturating_sub(2));
        head
    }

    /// The JSON of a `deliver_batch` envelope up to its deliveries: the
    /// script appends the [`Self::delivery`] fragments a node holds, then `]}`.
    pub fn deliver_batch_head(from: &str) -> String {
        let mut head = Envelope::new(from, Body::DeliverBatch { deliveries: Vec::new() }).to_json();
        head.truncate(head.len().saturating_sub(2));
        head
    }

    /// One delivery of a `deliver_batch` message, as JSON.
    pub fn delivery(user: &str, frame: &Bytes) -> String {
        serde_json::to_string(&Delivery { user: user.to_string(), frame: encode_frame(frame) }).unwrap_or_default()
    }

    pub fn parse(bytes: &[u8]) -> Option<Envelope> {
        serde_json::from_slice(bytes).ok()
    }
}

pub fn encode_frame(frame: &Bytes) -> String {
    base64::engine::general_purpose::STANDARD.encode(frame)
}

pub fn decode_frame(text: &str) -> Option<Bytes> {
    base64::engine::general_purpose::STANDARD.decode(text).ok().map(Bytes::from)
}

/// A close reason by name (its `Debug` form), as kicks carry it.
pub fn reason_name(reason: CloseReason) -> String {
    format!("{reason:?}")
}

/// The reason `name` names; an unknown name (a newer node) reads as Kicked.
pub fn reason_from_name(name: &str) -> CloseReason {
    CloseReason::ALL.iter().copied().find(|r| format!("{r:?}") == name).unwrap_or(CloseReason::Kicked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_with_kind_beside_from() {
        let frame = Bytes::from_static(b"\0\0\0\x64{\"a\":1}");
        let e = Envelope::new("a", Body::Deliver { user: "alice".into(), frame: encode_frame(&frame) });
        let json = e.to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["from"], "a");
        assert_eq!(value["kind"], "deliver");
        let back = Envelope::parse(json.as_bytes()).unwrap();
        match back.body {
            Body::Deliver { user, frame: f } => {
                assert_eq!(user, "alice");
                assert_eq!(decode_frame(&f), Some(frame));
            }
            other => panic!("{other:?}"),
        }
        assert!(Envelope::parse(b"{\"from\":\"a\",\"kind\":\"nope\"}").is_none());
    }

    #[test]
    fn a_deliver_many_head_completed_as_the_script_does_parses() {
        let frame = Bytes::from_static(b"\0\0\0\x64{}");
        let users = ["a\"b", "c"].map(|u| serde_json::to_string(u).unwrap());
        let json = format!("{}{}]}}", Envelope::deliver_many_head("n1", &frame), users.join(","));
        match Envelope::parse(json.as_bytes()).map(|e| (e.from, e.body)) {
            Some((from, Body::DeliverMany { frame: f, users })) => {
                assert_eq!(from, "n1");
                assert_eq!(decode_frame(&f), Some(frame));
                assert_eq!(users, ["a\"b", "c"]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_deliver_batch_head_completed_as_the_script_does_parses() {
        let (one, two) = (Bytes::from_static(b"\0\0\0\xc8{}"), Bytes::from_static(b"\0\0\x03\xe8xy"));
        let parts = [Envelope::delivery("a", &one), Envelope::delivery("b", &two)];
        let json = format!("{}{}]}}", Envelope::deliver_batch_head("n1"), parts.join(","));
        match Envelope::parse(json.as_bytes()).map(|e| e.body) {
            Some(Body::DeliverBatch { deliveries }) => {
                let got: Vec<_> = deliveries.iter().map(|d| (d.user.clone(), decode_frame(&d.frame))).collect();
                assert_eq!(got, [("a".to_string(), Some(one)), ("b".to_string(), Some(two))]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn reasons_round_trip_by_name() {
        for &r in CloseReason::ALL {
            assert_eq!(reason_from_name(&reason_name(r)), r);
        }
        assert_eq!(reason_from_name("Unknown"), CloseReason::Kicked);
    }
}
