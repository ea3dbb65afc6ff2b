//! Binding listeners with an explicit accept backlog, and the slots that
//! bound how many sockets an accept loop holds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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

/// How many sockets an accept loop may hold: `serve` slots for connections
/// it serves (on the public listener: handshakes in progress, which move to
/// a session slot of their own when upgraded), and a few `refuse` slots for
/// answering 503 to connections beyond that. When both are used up the loop
/// stops accepting and further connections wait in the kernel's backlog, so
/// the process never holds more than `serve + refuse` sockets of a listener
/// however many clients connect (each one is a file descriptor).
#[derive(Debug, Clone)]
pub struct Slots {
    serve: Arc<Semaphore>,
    refuse: Arc<Semaphore>,
}

/// A slot taken before an accept; the socket lives as long as the permit.
pub enum Slot {
    Serve(OwnedSemaphorePermit),
    Refuse(OwnedSemaphorePermit),
}

impl Slots {
    pub fn new(serve: usize, refuse: usize) -> Slots {
        Slots { serve: Arc::new(Semaphore::new(serve)), refuse: Arc::new(Semaphore::new(refuse)) }
    }

    /// A serve slot if one is free, else a refuse slot, else waits for
    /// whichever frees first.
    pub async fn next(&self) -> Slot {
        if let Ok(permit) = self.serve.clone().try_acquire_owned() {
            return Slot::Serve(permit);
        }
        if let Ok(permit) = self.refuse.clone().try_acquire_owned() {
            return Slot::Refuse(permit);
        }
        // Neither semaphore is ever closed, so acquiring cannot fail; if it
        // somehow did, waiting forever is the safe side of the bound.
        tokio::select! {
            Ok(permit) = self.serve.clone().acquire_owned() => Slot::Serve(permit),
            Ok(permit) = self.refuse.clone().acquire_owned() => Slot::Refuse(permit),
            else => std::future::pending().await,
        }
    }

    /// A refuse slot taken while waiting for a connection becomes a serve
    /// slot if one freed meanwhile: the connection that arrives is served.
    pub fn promote(&self, slot: Slot) -> Slot {
        match slot {
            Slot::Refuse(refuse) => match self.serve.clone().try_acquire_owned() {
                Ok(serve) => {
                    drop(refuse);
                    Slot::Serve(serve)
                }
                Err(_) => Slot::Refuse(refuse),
            },
            serve => serve,
        }
    }

    /// Serve slots in use.
    pub fn in_use(&self, capacity: usize) -> usize {
        capacity.saturating_sub(self.serve.available_permits())
    }
}

/// Answers a connection beyond the serve slots without reading its request:
/// a 503 `at_capacity` with Retry-After, then a short linger so the client
/// reads the answer instead of a reset. Bounded by `REFUSAL_TIME`.
pub async fn refuse_at_capacity(mut stream: tokio::net::TcpStream, message: &str) {
    use tokio::io::AsyncReadExt;
    const REFUSAL_TIME: Duration = Duration::from_secs(1);
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        let unavailable = Some(crate::http_wire::Unavailable::AtCapacity);
        let refused = crate::http_wire::respond_error(&mut stream, 503, "at_capacity", message, unavailable, &[]);
        if refused.await.is_err() {
            return;
        }
        // Drain what the client sent so closing does not reset the answer.
        let mut sink = [0u8; 1024];
        while let Ok(n) = stream.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}
