//! A self-signed certificate for localhost, made by the real openssl
//! (installed by `tests/run`), for the suites that speak TLS.

use std::path::{Path, PathBuf};

/// Writes cert.pem and key.pem into `dir`: CN and SAN localhost.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=DNS:localhost", "-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs (tests/run installs it)");
    assert!(status.success(), "self-signed certificate");
    (cert, key)
}
