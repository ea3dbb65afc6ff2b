//! proto-spec/vectors.json against the real codec and code tables, so the
//! spec and the code cannot drift apart.

use bytes::Bytes;
use pushgate::protocol::{
    Frame, FrameError, action, action_name, close, decode_message, encode, encode_message, error_code, message_id,
};
use serde_json::Value;
use std::collections::BTreeSet;

fn spec() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/vectors.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn every_frame_vector_decodes_and_reencodes() {
    let spec = spec();
    let frames = spec["frames"].as_array().unwrap();
    assert!(frames.len() >= 10);
    for v in frames {
        let name = v["name"].as_str().unwrap();
        let wire = unhex(v["hex"].as_str().unwrap());
        let frame = Frame::decode(Bytes::from(wire.clone())).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(u64::from(frame.action), v["action"].as_u64().unwrap(), "{name}: action");
        if let Some(expected) = v.get("payload_json") {
            let decoded: Value = serde_json::from_slice(&frame.payload).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(&decoded, expected, "{name}: payload");
        } else {
            assert_eq!(frame.payload.to_vec(), unhex(v["payload_hex"].as_str().unwrap()), "{name}: payload");
        }
        assert_eq!(encode(frame.action, &frame.payload).to_vec(), wire, "{name}: re-encode");
        assert_eq!(frame.encode().to_vec(), wire, "{name}: Frame::encode");
        if let Some(message) = v.get("message") {
            let (id, inner_action, inner) = decode_message(&frame.payload).unwrap_or_else(|| panic!("{name}: MESSAGE"));
            assert_eq!(id, message["id"].as_u64().unwrap(), "{name}: id");
            assert_eq!(u64::from(inner_action), message["inner_action"].as_u64().unwrap(), "{name}: inner action");
            match message.get("inner_payload_json") {
                Some(json) => assert_eq!(&serde_json::from_slice::<Value>(inner).unwrap(), json, "{name}"),
                None => assert_eq!(inner, unhex(message["inner_payload_hex"].as_str().unwrap()), "{name}"),
            }
            assert_eq!(encode_message(id, inner_action, inner).to_vec(), wire, "{name}: encode_message");
            assert_eq!(message_id(&wire), Some(id), "{name}: message_id");
        }
        let named = action::ALL.iter().any(|(c, _)| *c == frame.action) || frame.action >= action::APPLICATION_MIN;
        assert!(named, "{name}: action {} is in the table", frame.action);
    }
}

#[test]
fn invalid_frame_vectors_are_rejected() {
    for v in spec()["invalid_frames"].as_array().unwrap() {
        let wire = unhex(v["hex"].as_str().unwrap());
        let len = wire.len();
        assert_eq!(Frame::decode(Bytes::from(wire)), Err(FrameError::TooShort { len }));
        assert_eq!(v["error"], error_code::FRAME_TOO_SHORT);
    }
}

#[test]
fn action_table_matches_code() {
    let spec: BTreeSet<(u64, String)> = spec()["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["code"].as_u64().unwrap(), a["name"].as_str().unwrap().to_string()))
        .collect();
    let code: BTreeSet<(u64, String)> = action::ALL.iter().map(|(c, n)| (u64::from(*c), n.to_string())).collect();
    assert_eq!(spec, code);
    for (c, n) in action::ALL {
        assert_eq!(action_name(*c), *n);
    }
}

#[test]
fn close_and_error_tables_match_code() {
    let spec = spec();
    let spec_close: BTreeSet<(u64, String, bool)> = spec["close_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["code"].as_u64().unwrap(), c["name"].as_str().unwrap().into(), c["reconnect"].as_bool().unwrap()))
        .collect();
    let code_close: BTreeSet<(u64, String, bool)> =
        close::ALL.iter().map(|(c, n, r)| (u64::from(*c), n.to_string(), *r)).collect();
    assert_eq!(spec_close, code_close);
    let spec_errors: BTreeSet<String> =
        spec["error_codes"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_string()).collect();
    let code_errors: BTreeSet<String> = error_code::ALL.iter().map(|e| e.to_string()).collect();
    assert_eq!(spec_errors, code_errors);
}

#[test]
fn human_spec_documents_every_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/proto-spec/README.md")).unwrap();
    for (code, name) in action::ALL {
        assert!(doc.contains(&format!("| {code} | {name} |")), "README.md documents action {code} {name}");
    }
    for (code, name, _) in close::ALL {
        assert!(doc.contains(&format!("| {code} | {name} |")), "README.md documents close code {code} {name}");
    }
    for code in error_code::ALL {
        assert!(doc.contains(&format!("| `{code}` |")), "README.md documents error code {code}");
    }
}
