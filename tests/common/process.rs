//! The real `pushgate` binary as its own process, for the suites where the
//! process itself matters (its file limit, its RSS): `pushgate serve` on
//! free loopback ports with secrets from the environment, its stderr in a
//! log file, killed when the test ends, passing or not.

use super::{API_KEY, SECRET};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub struct GatewayProcess {
    pub child: Child,
    pub ws: SocketAddr,
    pub api: SocketAddr,
    log: PathBuf,
}

/// A loopback address nobody listens on right now.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr")
}

impl GatewayProcess {
    /// Runs `pushgate serve` with `config` (TOML) and its data under `dir`,
    /// under a file limit of `nofile` (soft and hard) when given.
    pub fn spawn(dir: &Path, config: &str, nofile: Option<u64>) -> GatewayProcess {
        let (ws, api) = (free_addr(), free_addr());
        let config_file = dir.join("pushgate.toml");
        std::fs::write(&config_file, config).expect("config");
        let log = dir.join("gateway.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_pushgate"));
        command
            .arg("serve")
            .arg("--config")
            .arg(&config_file)
            .arg("--listen")
            .arg(ws.to_string())
            .arg("--api-listen")
            .arg(api.to_string())
            .arg("--data-dir")
            .arg(dir.join("data"))
            .env("PUSHGATE_JWT_SECRET", SECRET)
            .env("PUSHGATE_API_KEY", API_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        if let Some(nofile) = nofile {
            // SAFETY: setrlimit is async-signal-safe; nothing else runs in
            // the child between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: nofile as libc::rlim_t, rlim_max: nofile as libc::rlim_t };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = command.spawn().expect("spawn pushgate");
        GatewayProcess { child, ws, api, log }
    }

    /// What the gateway logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the internal API accepts connections.
    pub async fn wait_listening(&self) {
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(self.api).await.is_ok() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("gateway did not listen:\n{}", self.log());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
