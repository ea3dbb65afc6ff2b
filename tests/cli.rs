//! The `pushgate` binary itself: the token subcommand's bounds, startup
//! validation errors, and the `[log]` settings applied to real stderr.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_pushgate");
const SECRET: &str = "cli-test-secret-0123456789abcdef";
const API_KEY: &str = "cli-test-api-key-0123456789abcdef";

fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/pushgate.toml")
}

/// Runs the binary to completion; a `serve` that starts instead of
/// refusing its config is killed after 20 s (and the test fails).
fn pushgate(args: &[&str]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .env_remove("PUSHGATE_JWT_SECRET")
        .env_remove("PUSHGATE_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run pushgate");
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

#[test]
fn token_ttl_is_bounded() {
    let config = shipped_config();
    let config = config.to_str().unwrap();
    for ttl in ["18446744073709551615", "0", "31536001"] {
        let out = pushgate(&["token", "--config", config, "--user", "alice", "--ttl", ttl]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--ttl {ttl} must fail");
        assert!(out.stdout.is_empty(), "no token printed for --ttl {ttl}");
        assert!(stderr.contains("ttl") && stderr.contains("out of range"), "--ttl {ttl}: {stderr}");
    }
    let out = pushgate(&["token", "--config", config, "--user", "alice", "--ttl", "600"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let key = jsonwebtoken::DecodingKey::from_secret(pushgate::config::DEV_JWT_SECRET.as_bytes());
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        token.trim(),
        &key,
        &jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256),
    )
    .expect("a valid, unexpired token")
    .claims;
    let exp = claims["exp"].as_u64().unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    assert!((now + 590..=now + 610).contains(&exp), "exp {exp} is now + 600");
}

#[test]
fn the_action_header_size_mirrors_the_protocol() {
    assert_eq!(pushgate::config::ACTION_HEADER_BYTES, pushgate::protocol::HEADER_LEN);
}

/// A config for a real `serve` on ephemeral loopback ports, plus `extra`.
fn serve_config(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("pushgate.toml");
    let data = dir.join("data");
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:0\"\ndata_dir = {data:?}\n\
         [auth]\nsecret = \"{SECRET}\"\n[api]\nkey = \"{API_KEY}\"\n{extra}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `serve` with stderr redirected to a file (not a terminal) until it
/// logs that it is serving, then stops it and returns the log.
fn serve_log(extra: &str, args: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let config = serve_config(dir.path(), extra);
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(BIN)
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(args)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("PUSHGATE_JWT_SECRET")
        .env_remove("PUSHGATE_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn pushgate serve");
    let started = Instant::now();
    let bytes = loop {
        let bytes = std::fs::read(&log_path).unwrap();
        if String::from_utf8_lossy(&bytes).contains("pushgate serving") {
            break bytes;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("serve exited with {status}: {}", String::from_utf8_lossy(&bytes));
        }
        assert!(started.elapsed() < Duration::from_secs(20), "no 'pushgate serving' line");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    bytes
}

#[test]
fn a_log_file_gets_no_escape_sequences() {
    let log = serve_log("", &[]);
    assert!(!log.contains(&0x1b), "ansi = auto writes plain text to a file:\n{}", String::from_utf8_lossy(&log));
    let log = serve_log("[log]\nansi = \"never\"\n", &[]);
    assert!(!log.contains(&0x1b));
    let log = serve_log("[log]\nansi = \"always\"\n", &[]);
    assert!(log.contains(&0x1b), "ansi = always colours even a file");
}

#[test]
fn json_logs_are_one_object_per_line() {
    let log = serve_log("[log]\nformat = \"json\"\n", &["--node-id", "cli-node-7"]);
    let text = String::from_utf8(log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for line in &lines {
        assert!(line["level"].is_string() && line["message"].is_string(), "level and message: {line}");
    }
    assert!(lines.iter().any(|l| l["node_id"] == "cli-node-7"), "--node-id overrides server.node_id: {text}");
    assert!(!text.contains('\u{1b}'));
}

#[test]
fn invalid_settings_stop_startup_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[api]\nmax_profile_bytes = 0\n", &[][..], "api.max_profile_bytes"),
        ("[auth]\nleeway_secs = 10000000000\n", &[][..], "auth.leeway_secs"),
        ("", &["--node-id", "no spaces"][..], "server.node_id"),
    ];
    for (extra, args, field) in cases {
        // serve_config writes [api] / [auth] before `extra`; use an overlay.
        let base = serve_config(dir.path(), "");
        let overlay = dir.path().join("overlay.toml");
        std::fs::write(&overlay, format!("include = {:?}\n{extra}", base.file_name().unwrap())).unwrap();
        let mut all = vec!["serve", "--config", overlay.to_str().unwrap()];
        all.extend_from_slice(args);
        let out = pushgate(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{field}: {stderr}");
        assert!(stderr.contains(field), "{field}: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "printed plainly: {stderr}");
    }
}
