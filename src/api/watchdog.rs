//! Stall detection for internal API connections: a read or write that makes
//! no progress for `api.idle_timeout_ms` fails the connection (a half-sent
//! body, a client that pipelines requests and never reads the answers).
//!
//! Why not a timeout per read and write (tokio-io-timeout): re-arming a
//! timer on every pending poll cost ~13 us of CPU per single push at
//! 2,000 requests/s (A/B, `pushgate bench unicast`: 64.5-67.5 vs 52-53.5 us).
//! Here the socket wrapper only notes the time of its last progress (a
//! clock read and an atomic store), and one coarse timer per connection
//! checks it every quarter of the timeout.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::clock::process_ms as now_ms;

/// What the wrapper and the watchdog share.
#[derive(Debug, Default)]
pub struct Progress {
    last_ms: AtomicU64,
    stalled: AtomicBool,
}

impl Progress {
    pub fn new() -> Arc<Progress> {
        let progress = Arc::new(Progress::default());
        progress.touch();
        progress
    }

    fn touch(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Called on the watchdog's tick: marks the connection stalled when
    /// nothing moved for `limit`. Its next read or write then fails with
    /// `TimedOut` (a body cut off this way is answered 408).
    pub fn check(&self, limit: Duration) -> bool {
        let idle = now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed));
        let stalled = idle >= limit.as_millis() as u64;
        if stalled {
            self.stalled.store(true, Ordering::Relaxed);
        }
        stalled
    }

    /// A read or write that would wait fails instead once stalled; one
    /// that can proceed still does (so a 408 answer can go out).
    fn pending<T>(&self) -> Poll<io::Result<T>> {
        if self.stalled.load(Ordering::Relaxed) {
            Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no progress within api.idle_timeout_ms")))
        } else {
            Poll::Pending
        }
    }
}

impl Progress {
    fn after_write(&self, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        match result {
            Poll::Pending => self.pending(),
            Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.touch();
                }
                Poll::Ready(result)
            }
        }
    }
}

/// The API connection's socket, noting each read or write that moves bytes.
pub struct Watched {
    io: TcpStream,
    progress: Arc<Progress>,
}

impl Watched {
    pub fn new(io: TcpStream, progress: Arc<Progress>) -> Watched {
        Watched { io, progress }
    }
}

impl AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Pending => self.progress.pending(),
            Poll::Ready(result) => {
                if result.is_ok() && buf.filled().len() > before {
                    self.progress.touch();
                }
                Poll::Ready(result)
            }
        }
    }
}

impl AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write(cx, buf);
        self.progress.after_write(result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.progress.after_write(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
