//! The session's TCP socket, shared between the session task and pushers.
//!
//! Why: a push to an idle session used to wake the session task, which then
//! fed the frame to tungstenite and flushed it. At moderate rates (a few
//! thousand pushes a second) each of those wakes lands on an idle worker
//! and costs more than the write itself; a batch of N pushes wakes N tasks
//! and an idle sibling worker to steal them. When the session is idle (its
//! queue empty and nothing half-written) a pusher now writes the WebSocket
//! frame itself with one non-blocking `send`, under the queue's lock.
//!
//! Ordering is kept by one rule, enforced under the queue lock: pushers
//! write only while the session has *released* the writer, and the session
//! *claims* it back (inside [`SessionSocket`]'s write path) before tungstenite
//! writes anything, replies, pings, pongs or close frames alike. A direct
//! write that the kernel takes only in part leaves the rest as a *carry*,
//! which the session writes before anything else once it claims the writer.

use super::Outbox;
use super::inbound::FrameTracker;
use bytes::{Buf, Bytes, BytesMut};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// What a direct write achieved.
pub enum Direct {
    /// The whole frame is in the kernel.
    Written,
    /// Part of it is; the rest must go out before anything else.
    Partial(Bytes),
    /// Nothing was written (socket full or failing): queue the frame.
    NotWritten,
}

/// Writes `payload` as one unmasked binary WebSocket frame (server to
/// client, RFC 6455 section 5.2), without waiting.
pub fn write_frame(socket: &TcpStream, payload: &Bytes) -> Direct {
    let mut header = [0u8; 10];
    let header_len = frame_header(payload.len(), &mut header);
    let total = header_len + payload.len();
    let slices = [IoSlice::new(&header[..header_len]), IoSlice::new(payload)];
    match socket.try_write_vectored(&slices) {
        Ok(n) if n >= total => Direct::Written,
        Ok(0) | Err(_) => Direct::NotWritten,
        Ok(n) if n < header_len => {
            let mut rest = BytesMut::with_capacity(total - n);
            rest.extend_from_slice(&header[n..header_len]);
            rest.extend_from_slice(payload);
            Direct::Partial(rest.freeze())
        }
        Ok(n) => Direct::Partial(payload.slice(n - header_len..)),
    }
}

/// FIN + binary opcode, then the payload length in the shortest form.
fn frame_header(len: usize, out: &mut [u8; 10]) -> usize {
    out[0] = 0x82;
    if len < 126 {
        out[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        out[1] = 126;
        out[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        out[1] = 127;
        out[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

/// The stream tungstenite reads and writes for a session. `O` is whatever
/// owns the session's [`Outbox`] (the registry's session handle), so the
/// socket can lend itself to pushers and take the writer back.
pub struct SessionSocket<O: AsRef<Outbox>> {
    stream: Arc<TcpStream>,
    owner: Arc<O>,
    /// Bytes a pusher left half-written; they go out first.
    carry: Option<Bytes>,
    /// Whether the session holds the writer (pushers queue meanwhile).
    claimed: bool,
    /// Where the bytes handed to tungstenite stand in the client's frames.
    inbound: FrameTracker,
    /// The last read found the socket empty: tungstenite has asked for
    /// more, so it holds no complete frame it has not returned.
    drained: bool,
    /// A blocked write was failed because the outbox overflowed; later
    /// writes (the close frame) may wait normally.
    overflow_reported: bool,
}

/// The error a blocked write fails with once the session's outbox has
/// overflowed: the client stopped reading and is to close as a slow consumer.
#[derive(Debug)]
pub struct Overflowed;

impl std::fmt::Display for Overflowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("push queue overflowed while the client was not reading")
    }
}

impl std::error::Error for Overflowed {}

impl<O: AsRef<Outbox>> SessionSocket<O> {
    /// Wraps `stream` and lends it to the session's queue for direct writes.
    /// The writer starts claimed: pushers queue until [`Self::release`].
    pub fn new(stream: TcpStream, owner: Arc<O>) -> SessionSocket<O> {
        let stream = Arc::new(stream);
        (*owner).as_ref().attach(stream.clone());
        SessionSocket {
            stream,
            owner,
            carry: None,
            claimed: true,
            inbound: FrameTracker::default(),
            drained: false,
            overflow_reported: false,
        }
    }

    fn outbox(&self) -> &Outbox {
        (*self.owner).as_ref()
    }

    /// Takes the writer back from pushers now, before anything is buffered
    /// for the socket: from this instant pushes queue behind what the
    /// session is about to write, so frames leave in the order they were
    /// produced. A carry left by a pusher is written first by the next
    /// write or flush.
    pub fn claim(&mut self) {
        if !self.claimed {
            self.carry = self.outbox().claim_writer();
            self.claimed = true;
        }
    }

    /// Whether tungstenite holds nothing of the client's stream: its last
    /// read found the socket empty and every byte it got belongs to frames
    /// of complete messages. Its context may then be rebuilt.
    pub fn at_rest(&self) -> bool {
        self.drained && self.inbound.at_message_boundary()
    }

    /// Writes `payload` as one binary frame without tungstenite's buffer
    /// (which would keep the frame's size in capacity for the session's
    /// life): it becomes the carry, written by the next flush. Call only
    /// with tungstenite's buffer flushed, so the frame keeps its place.
    pub fn write_raw_frame(&mut self, payload: &[u8]) {
        self.claim();
        let mut header = [0u8; 10];
        let header_len = frame_header(payload.len(), &mut header);
        let mut frame = BytesMut::with_capacity(header_len + payload.len());
        frame.extend_from_slice(&header[..header_len]);
        frame.extend_from_slice(payload);
        // The carry is empty after a flush; if not, keep both, in order.
        self.carry = Some(match self.carry.take() {
            None => frame.freeze(),
            Some(carry) => {
                let mut both = BytesMut::with_capacity(carry.len() + frame.len());
                both.extend_from_slice(&carry);
                both.extend_from_slice(&frame);
                both.freeze()
            }
        });
    }

    /// Lets pushers write directly again. Call only with nothing buffered
    /// in tungstenite (after a completed flush).
    pub fn release(&mut self) {
        if self.claimed && self.carry.is_none() && self.outbox().release_writer() {
            self.claimed = false;
        }
    }

    /// Waits until the socket takes writes. While it does not (the client
    /// is not reading), an overflow of the outbox fails the wait at once,
    /// once: the session then closes as a slow consumer instead of waiting
    /// out its write timeout.
    fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.stream.poll_write_ready(cx) {
            Poll::Ready(ready) => Poll::Ready(ready),
            Poll::Pending if !self.overflow_reported && self.outbox().park_writer(cx.waker()) => {
                self.overflow_reported = true;
                Poll::Ready(Err(io::Error::other(Overflowed)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Takes the writer back from pushers and writes any carry first.
    fn poll_claim(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.claim();
        while self.carry.is_some() {
            ready!(self.poll_writable(cx))?;
            let Some(carry) = self.carry.as_mut() else { break };
            match self.stream.try_write(carry) {
                Ok(n) => carry.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
            if carry.is_empty() {
                self.carry = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<O: AsRef<Outbox>> Drop for SessionSocket<O> {
    fn drop(&mut self) {
        // No pusher may write to a socket the session has let go of.
        self.outbox().detach();
    }
}

/// One `recv` into `buf`. A read that returns less than `buf` holds
/// drained the socket, so its readiness is cleared as tokio's own reads do:
/// the next poll waits for the next readiness event instead of making a
/// `recv` that can only fail with EAGAIN (one system call per client frame,
/// an ACK say, saved). Data arriving after the read raises a new event,
/// which the clear leaves alone (it clears only the event it saw): that
/// holds for edge-triggered readiness (epoll, kqueue: this gateway's
/// platforms), the condition under which tokio's reads do the same. The
/// closure reports WouldBlock on purpose, only to have readiness cleared;
/// the bytes it read are returned.
fn read_once(stream: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    use std::io::Read;
    let mut short = None;
    let read = stream.try_io(tokio::io::Interest::READABLE, || {
        let n = (&*socket2::SockRef::from(stream)).read(buf)?;
        if n > 0 && n < buf.len() {
            short = Some(n);
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    });
    short.map_or(read, Ok)
}

impl<O: AsRef<Outbox>> AsyncRead for SessionSocket<O> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.stream.poll_read_ready(cx)?.is_pending() {
                self.drained = true;
                return Poll::Pending;
            }
            match read_once(&self.stream, buf.initialize_unfilled()) {
                Ok(n) => {
                    let filled = buf.filled().len();
                    buf.advance(n);
                    let this = &mut *self;
                    this.inbound.observe(&buf.filled()[filled..]);
                    this.drained = false;
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl<O: AsRef<Outbox>> AsyncWrite for SessionSocket<O> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_claim(cx))?;
        loop {
            ready!(self.poll_writable(cx))?;
            match self.stream.try_write(buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_claim(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the session drops it; a carry still leaves
        // first so the peer never sees a torn frame before our close.
        self.poll_claim(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::frame_header;

    #[test]
    fn frame_headers_use_the_shortest_length_form() {
        let mut h = [0u8; 10];
        assert_eq!(frame_header(125, &mut h), 2);
        assert_eq!(&h[..2], &[0x82, 125]);
        assert_eq!(frame_header(126, &mut h), 4);
        assert_eq!(&h[..4], &[0x82, 126, 0, 126]);
        assert_eq!(frame_header(65_536, &mut h), 10);
        assert_eq!(&h[..10], &[0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }
}
