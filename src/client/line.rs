//! What the command-line client prints and parses: one line per frame.

use pushgate::protocol::{Frame, action_name};
use serde_json::Value;

/// `<- 111 FETCH_INFO {"user":"alice",...}` (JSON) or `<- 1000 APPLICATION hex:00ff`.
pub fn describe(frame: &Frame) -> String {
    let name = action_name(frame.action);
    let body = if frame.payload.is_empty() {
        String::new()
    } else {
        match serde_json::from_slice::<Value>(&frame.payload) {
            Ok(v) if frame.action < pushgate::protocol::action::APPLICATION_MIN => v.to_string(),
            _ => match std::str::from_utf8(&frame.payload) {
                Ok(text) if frame.action >= pushgate::protocol::action::APPLICATION_MIN && is_printable(text) => {
                    format!("text:{text}")
                }
                _ => format!("hex:{}", hex(&frame.payload)),
            },
        }
    };
    format!("{} {name} {body}", frame.action).trim_end().to_string()
}

/// A MESSAGE (6) payload as a line: `6 MESSAGE id=17 replayed 200 PUSH {...}`
/// (`live` after SYNCED), with its id; None when it is too short.
pub fn describe_message(payload: &[u8], replayed: bool) -> Option<(u64, String)> {
    let (id, action, inner) = pushgate::protocol::decode_message(payload)?;
    let inner = Frame { action, payload: bytes::Bytes::copy_from_slice(inner) };
    let how = if replayed { "replayed" } else { "live" };
    Some((
        id,
        format!(
            "{} {} id={id} {how} {}",
            pushgate::protocol::action::MESSAGE,
            action_name(pushgate::protocol::action::MESSAGE),
            describe(&inner)
        ),
    ))
}

/// How a sent frame prints: its JSON, except that the token of a
/// TOKEN_REFRESH shows only its first 12 characters (no whole credentials
/// in logs).
pub fn shown(action: u32, payload: &Value, body: &[u8]) -> String {
    match payload.get("token").and_then(Value::as_str) {
        Some(token) if action == pushgate::protocol::action::TOKEN_REFRESH && token.len() > 12 => {
            let mut shown = payload.clone();
            let cut = token.char_indices().nth(12).map_or(token.len(), |(i, _)| i);
            shown["token"] = format!("{}...", &token[..cut]).into();
            shown.to_string()
        }
        _ => String::from_utf8_lossy(body).into_owned(),
    }
}

fn is_printable(text: &str) -> bool {
    !text.chars().any(|c| c.is_control())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A line typed by the user: `ACTION [JSON]`.
#[derive(Debug, PartialEq)]
pub struct Input {
    pub action: u32,
    pub payload: Value,
}

/// Parses `111 {"user":"bob"}`; the JSON defaults to `{}`.
///
/// # Errors
/// A human-readable reason.
pub fn parse_input(line: &str) -> Result<Input, String> {
    let line = line.trim();
    let (action, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let action: u32 = action.parse().map_err(|_| format!("{action:?} is not an action number"))?;
    let rest = rest.trim();
    let payload = if rest.is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(rest).map_err(|e| format!("payload is not JSON: {e}"))?
    };
    Ok(Input { action, payload })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn parses_lines() {
        let input = parse_input(r#" 111 {"user":"bob"} "#).unwrap();
        assert_eq!(input, Input { action: 111, payload: serde_json::json!({ "user": "bob" }) });
        assert_eq!(parse_input("2").unwrap().payload, serde_json::json!({}));
        assert!(parse_input("abc {}").is_err());
        assert!(parse_input("110 {oops").is_err());
    }

    #[test]
    fn describes_frames() {
        let json = Frame { action: 111, payload: Bytes::from_static(br#"{"user":"a"}"#) };
        assert_eq!(describe(&json), r#"111 FETCH_INFO {"user":"a"}"#);
        let bin = Frame { action: 1000, payload: Bytes::from_static(&[0, 255]) };
        assert_eq!(describe(&bin), "1000 APPLICATION hex:00ff");
        let empty = Frame { action: 3, payload: Bytes::new() };
        assert_eq!(describe(&empty), "3 PONG");
    }

    #[test]
    fn refresh_tokens_print_shortened() {
        let payload = serde_json::json!({ "token": "eyJhbGciOiJIUzI1NiJ9.payload.signature", "seq": 3 });
        let body = serde_json::to_vec(&payload).unwrap();
        assert_eq!(shown(9, &payload, &body), r#"{"seq":3,"token":"eyJhbGciOiJI..."}"#);
        assert_eq!(shown(111, &payload, &body), String::from_utf8(body.clone()).unwrap(), "other actions as sent");
        let short = serde_json::json!({ "token": "x" });
        assert_eq!(shown(9, &short, br#"{"token":"x"}"#), r#"{"token":"x"}"#);
    }

    #[test]
    fn describes_messages() {
        // proto-spec/vectors.json "MESSAGE (durable, inner PUSH)" and "(application action)".
        let push = pushgate::protocol::encode_message(17, 200, br#"{"title":"hi"}"#);
        let (id, text) = describe_message(&push[4..], true).unwrap();
        assert_eq!((id, text.as_str()), (17, r#"6 MESSAGE id=17 replayed 200 PUSH {"title":"hi"}"#));
        let app = pushgate::protocol::encode_message(u64::MAX, 1001, &[0x00, 0xff]);
        let (id, text) = describe_message(&app[4..], false).unwrap();
        assert_eq!((id, text.as_str()), (u64::MAX, "6 MESSAGE id=18446744073709551615 live 1001 APPLICATION hex:00ff"));
        assert!(describe_message(&[0; 11], false).is_none());
    }

    #[test]
    fn resume_parameters_join_the_url() {
        use super::super::resume_url;
        assert_eq!(resume_url("ws://h/ws", None, true), "ws://h/ws?resume=1");
        assert_eq!(resume_url("ws://h/ws?x=1", Some(41), true), "ws://h/ws?x=1&since=41");
        assert_eq!(resume_url("ws://h/ws#f", None, true), "ws://h/ws?resume=1#f");
        assert_eq!(resume_url("ws://h/ws", None, false), "ws://h/ws");
    }
}
