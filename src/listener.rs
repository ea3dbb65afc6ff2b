//! Binding listeners with an explicit accept backlog.

use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpSocket};

/// `TcpListener::bind` uses a backlog of 128, which overflows during a
/// reconnect burst after a restart; SO_REUSEADDR lets a restarted node bind
/// while old connections sit in TIME_WAIT.
///
/// # Errors
/// The address is in use or not ours.
pub fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}
