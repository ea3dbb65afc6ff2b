//! The bounded per-session outbox: what pushers hand a session, and (while
//! the session is idle) the direct write to its socket.
//!
//! Why not `tokio::sync::mpsc`: its bounded channel allocates a 32-slot block
//! up front (~1.5 KB per idle session holding `Bytes`), and idle sessions are
//! what a push gateway holds by the hundred thousand. This queue allocates
//! nothing until a frame is pending and gives its buffer back after a burst.
//! It keeps mpsc's semantics where they matter: many producers, one consumer,
//! a non-blocking `push` that reports Full/Closed, and an async batch pop.

use super::direct::{self, Direct};
use crate::protocol::CloseReason;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::task::Waker;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// Outcome of a non-blocking push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueue {
    Queued,
    /// The queue was full: the frame is dropped and the session is being
    /// closed with SLOW_CONSUMER so the client reconnects and resyncs.
    Full,
    /// The session is closing or gone.
    Closed,
}

/// What the session task gets from one wait: frames to write, then possibly
/// a close to perform after them.
#[derive(Debug, Default)]
pub struct Batch {
    pub frames: Vec<Bytes>,
    pub close: Option<CloseReason>,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Bytes>,
    /// Bytes in `frames`, for the per-session byte bound.
    bytes: usize,
    close: Option<CloseReason>,
    /// The session's socket, for direct writes (see `transport::direct`).
    socket: Option<Arc<TcpStream>>,
    /// The session released the writer: pushers may write directly.
    direct: bool,
    /// The unwritten end of a partial direct write.
    carry: Option<Bytes>,
    /// The session task, parked on a write the client is not reading.
    parked_writer: Option<Waker>,
}

/// Buffers above this many slots are released once drained, so one burst
/// does not pin memory for the rest of a long-lived session.
const RETAINED_SLOTS: usize = 8;

#[derive(Debug)]
pub struct Outbox {
    // A std Mutex is right here: the critical sections are a few pointer
    // moves, never an await, and uncontended locking is a single atomic.
    state: Mutex<State>,
    notify: Notify,
    limits: QueueLimits,
}

/// How much one session may have waiting: a frame count and a byte total
/// (`session.queue_capacity`, `session.queue_max_bytes`). The byte bound is
/// what caps a slow client's memory when pushes are large; a broadcast frame
/// counts against every session it waits in, though its memory is shared.
#[derive(Debug, Clone, Copy)]
pub struct QueueLimits {
    pub frames: usize,
    pub bytes: usize,
}

impl Outbox {
    pub fn new(limits: QueueLimits) -> Outbox {
        Outbox { state: Mutex::new(State::default()), notify: Notify::new(), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Nothing panics while holding the lock, but a poisoned queue must
        // still be usable rather than take the session down.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues without waiting. A full queue closes the session (see
    /// [`Enqueue::Full`]): silently skipping frames would corrupt the stream
    /// a client sees, while a reconnect lets it resync.
    ///
    /// When the session is idle the frame is written to its socket right
    /// here instead, without waking the session task.
    pub fn push(&self, frame: Bytes) -> Enqueue {
        self.push_inner(frame, true)
    }

    /// Like [`Self::push`], but always through the session task. For
    /// broadcasts: back-to-back frames then share one write per session and
    /// the writes spread over the workers, where direct writes would cost
    /// one `send` per frame, all on the broadcasting thread.
    pub fn push_queued(&self, frame: Bytes) -> Enqueue {
        self.push_inner(frame, false)
    }

    fn push_inner(&self, frame: Bytes, allow_direct: bool) -> Enqueue {
        let mut state = self.lock();
        if state.close.is_some() {
            return Enqueue::Closed;
        }
        if allow_direct
            && state.direct
            && state.frames.is_empty()
            && let Some(socket) = state.socket.as_deref()
        {
            match direct::write_frame(socket, &frame) {
                Direct::Written => {
                    count_out(&frame);
                    return Enqueue::Queued;
                }
                Direct::Partial(rest) => {
                    count_out(&frame);
                    state.carry = Some(rest);
                    state.direct = false;
                    drop(state);
                    self.notify.notify_one();
                    return Enqueue::Queued;
                }
                // Socket full: the session task writes it when it can.
                Direct::NotWritten => {}
            }
        }
        if state.frames.len() >= self.limits.frames || state.bytes + frame.len() > self.limits.bytes {
            state.close = Some(CloseReason::SlowConsumer);
            let parked = state.parked_writer.take();
            drop(state);
            self.notify.notify_one();
            if let Some(writer) = parked {
                writer.wake();
            }
            return Enqueue::Full;
        }
        // Queued frames go out before any later push: no direct writes
        // until the session has written them and releases the writer again.
        state.direct = false;
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
        Enqueue::Queued
    }

    /// Pushes a frame even when the session is closing or full: used for the
    /// last words before a close (the RECONNECT hint). Bounded by the caller,
    /// which sends at most one such frame per close.
    pub fn push_final(&self, frame: Bytes, close: CloseReason) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        state.direct = false;
        state.bytes += frame.len();
        state.frames.push_back(frame);
        state.close = Some(close);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Asks the session to close after writing what is already queued.
    /// The first request wins; returns whether this one did.
    pub fn close(&self, request: CloseReason) -> bool {
        let mut state = self.lock();
        if state.close.is_some() {
            return false;
        }
        state.close = Some(request);
        drop(state);
        self.notify.notify_one();
        true
    }

    /// Lends the session's socket for direct writes (writer still claimed).
    pub fn attach(&self, socket: Arc<TcpStream>) {
        self.lock().socket = Some(socket);
    }

    /// The session let go of its socket: no more direct writes.
    pub fn detach(&self) {
        let mut state = self.lock();
        state.socket = None;
        state.direct = false;
    }

    /// The session takes the writer back; returns a carry to write first.
    pub fn claim_writer(&self) -> Option<Bytes> {
        let mut state = self.lock();
        state.direct = false;
        state.carry.take()
    }

    /// The session has nothing half-written: pushers may write directly,
    /// unless frames wait in the queue (they must go out first) or the
    /// session is closing. Returns whether the writer was released.
    pub fn release_writer(&self) -> bool {
        let mut state = self.lock();
        let idle = state.frames.is_empty() && state.close.is_none() && state.carry.is_none();
        if idle && state.socket.is_some() {
            state.direct = true;
        }
        idle
    }

    /// Called by the session's socket when a write would block: returns
    /// true if the queue has overflowed (the session is to close as a slow
    /// consumer now, not when the write times out); otherwise keeps the
    /// waker, which an overflow wakes.
    pub fn park_writer(&self, waker: &Waker) -> bool {
        let mut state = self.lock();
        if state.close == Some(CloseReason::SlowConsumer) {
            return true;
        }
        match &mut state.parked_writer {
            Some(parked) if parked.will_wake(waker) => {}
            slot => *slot = Some(waker.clone()),
        }
        false
    }

    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until frames are pending or a close was requested, then takes
    /// up to `max` frames. Cancel-safe: nothing is taken before it resolves.
    pub async fn next_batch(&self, max: usize) -> Batch {
        loop {
            // Register interest before checking, so a push between the check
            // and the await still wakes us (Notify also stores one permit).
            let notified = self.notify.notified();
            {
                let mut state = self.lock();
                // An empty batch with no close means: flush the carry.
                if !state.frames.is_empty() || state.close.is_some() || state.carry.is_some() {
                    let n = state.frames.len().min(max);
                    let frames: Vec<Bytes> = state.frames.drain(..n).collect();
                    state.bytes -= frames.iter().map(Bytes::len).sum::<usize>();
                    if state.frames.is_empty() && state.frames.capacity() > RETAINED_SLOTS {
                        state.frames = VecDeque::new();
                    }
                    // A close is delivered only once everything before it is out.
                    let close = if state.frames.is_empty() { state.close } else { None };
                    return Batch { frames, close };
                }
            }
            notified.await;
        }
    }
}

fn count_out(frame: &Bytes) {
    if let Some(action) = frame.get(..4) {
        crate::metrics::get().frames_out.inc(u32::from_be_bytes([action[0], action[1], action[2], action[3]]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(frames: usize) -> QueueLimits {
        QueueLimits { frames, bytes: usize::MAX }
    }

    #[tokio::test]
    async fn the_byte_bound_closes_a_session_before_the_frame_bound() {
        let q = Outbox::new(QueueLimits { frames: 100, bytes: 10 });
        assert_eq!(q.push(Bytes::from_static(b"abcdef")), Enqueue::Queued);
        assert_eq!(q.push(Bytes::from_static(b"ghij")), Enqueue::Queued, "exactly at the bound fits");
        assert_eq!(q.push(Bytes::from_static(b"k")), Enqueue::Full);
        assert_eq!(q.next_batch(8).await.frames.len(), 2);

        // Drained bytes are given back.
        let q = Outbox::new(QueueLimits { frames: 100, bytes: 10 });
        for _ in 0..5 {
            assert_eq!(q.push(Bytes::from_static(b"abcdefgh")), Enqueue::Queued);
            assert_eq!(q.next_batch(8).await.frames.len(), 1);
        }
    }

    #[tokio::test]
    async fn full_queue_reports_full_then_closed_and_keeps_order() {
        let q = Outbox::new(frames(2));
        assert_eq!(q.push(Bytes::from_static(b"a")), Enqueue::Queued);
        assert_eq!(q.push(Bytes::from_static(b"b")), Enqueue::Queued);
        assert_eq!(q.push(Bytes::from_static(b"c")), Enqueue::Full);
        assert_eq!(q.push(Bytes::from_static(b"d")), Enqueue::Closed);
        let batch = q.next_batch(1).await;
        assert_eq!(batch.frames, vec![Bytes::from_static(b"a")]);
        assert_eq!(batch.close, None, "close must wait for queued frames");
        let batch = q.next_batch(8).await;
        assert_eq!(batch.frames, vec![Bytes::from_static(b"b")]);
        assert_eq!(batch.close, Some(CloseReason::SlowConsumer));
    }

    async fn socket_pair() -> (std::sync::Arc<TcpStream>, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (std::sync::Arc::new(server), client)
    }

    #[tokio::test]
    async fn idle_session_gets_a_whole_frame_written_directly() {
        use tokio::io::AsyncReadExt;
        let (server, mut client) = socket_pair().await;
        let q = Outbox::new(frames(4));
        q.attach(server);
        assert_eq!(q.push(Bytes::from_static(b"held")), Enqueue::Queued);
        assert_eq!(q.len(), 1, "the writer starts claimed by the session");
        let _ = q.next_batch(4).await;
        assert!(q.release_writer());
        assert_eq!(q.push(Bytes::from_static(b"abc")), Enqueue::Queued);
        assert!(q.is_empty(), "written, not queued");
        let mut got = [0u8; 5];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, &[0x82, 3, b'a', b'b', b'c']);
    }

    #[tokio::test]
    async fn a_queued_frame_blocks_direct_writes_until_the_session_releases() {
        let (server, _client) = socket_pair().await;
        let q = Outbox::new(frames(4));
        q.attach(server);
        assert!(q.release_writer());
        assert_eq!(q.push_queued(Bytes::from_static(b"broadcast")), Enqueue::Queued);
        let batch = q.next_batch(4).await;
        assert_eq!(batch.frames.len(), 1);
        // The broadcast is now in the session's hands, not yet on the wire:
        // a later push must not overtake it.
        assert_eq!(q.push(Bytes::from_static(b"later")), Enqueue::Queued);
        assert_eq!(q.len(), 1, "queued behind the broadcast, not written directly");
    }

    #[tokio::test]
    async fn waiting_consumer_wakes_on_push() {
        let q = std::sync::Arc::new(Outbox::new(frames(4)));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next_batch(4).await });
        tokio::task::yield_now().await;
        q.push(Bytes::from_static(b"x"));
        let batch = waiter.await.unwrap();
        assert_eq!(batch.frames.len(), 1);
    }
}
