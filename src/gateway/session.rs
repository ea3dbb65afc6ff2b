//! One task per connection after the upgrade: a single `select!` over the
//! socket, the session queue and the heartbeat timer. Handler replies,
//! pings and queued pushes are written from this one task; while it is
//! idle, pushers may write a frame straight to the socket instead of waking
//! it (see [`crate::transport`] for the hand-over rule).

use super::handshake::Resume;
use crate::config::SessionConfig;
use crate::handlers::Caller;
use crate::inbox::DEFAULT_DEVICE;
use crate::metrics;
use crate::protocol::{CloseReason, Frame, FrameError, action, encode_json, error_code};
use crate::registry::SessionHandle;
use crate::state::AppState;
use crate::transport::SessionSocket;
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// How long we wait for the peer's half of a close handshake.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Heartbeats fire on a grid of this step, shared by the whole process.
///
/// Why: with every session on its own jittered deadline, 10,000 sessions
/// pinging every 25 s wake the process 400 times a second, and on an idle
/// node each wake-up costs more than the ping itself. Sessions due in the
/// same step ping together, one wake-up for the lot: at most 10 wake-ups a
/// second for any number of sessions, still spread over the whole period.
/// Measured in deploy/performance.md (idle CPU per connection).
const HEARTBEAT_STEP: Duration = Duration::from_millis(100);

/// The first grid point at or after `at`. Heartbeat periods are whole
/// seconds, so later ticks stay on the grid.
fn heartbeat_slot(at: Instant) -> Instant {
    let epoch = Instant::from_std(crate::clock::process_epoch());
    let step = HEARTBEAT_STEP.as_nanos();
    let steps = at.saturating_duration_since(epoch).as_nanos().div_ceil(step);
    let offset = u64::try_from(steps * step).unwrap_or(u64::MAX);
    epoch + Duration::from_nanos(offset)
}

/// The session's timers: heartbeat, idle timeout and token expiry.
struct Clock {
    heartbeat: tokio::time::Interval,
    idle_timeout: Duration,
    last_heard: Instant,
    /// Unix seconds at which the token (with leeway) expires.
    expires_at: u64,
    /// TOKEN_EXPIRING was sent for the current token.
    warned: bool,
}

impl Clock {
    fn new(heartbeat_secs: u64, idle_timeout_secs: u64, expires_at: u64) -> Clock {
        let period = Duration::from_secs(heartbeat_secs);
        // A random first tick spreads pings over the period: sessions that
        // connected together (a reconnect storm) must not ping together.
        let first = period.mul_f64(rand::random_range(0.5..1.5));
        let mut heartbeat = tokio::time::interval_at(heartbeat_slot(Instant::now() + first), period);
        // Skip keeps later ticks on the slot grid after a late one.
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Clock {
            heartbeat,
            idle_timeout: Duration::from_secs(idle_timeout_secs),
            last_heard: Instant::now(),
            expires_at,
            warned: false,
        }
    }

    /// A fresh token was accepted (TOKEN_REFRESH).
    fn refreshed(&mut self, expires_at: u64) {
        self.expires_at = expires_at;
        self.warned = false;
    }

    /// At a heartbeat: is it time for TOKEN_EXPIRING (once per token)?
    fn warning_due(&mut self, warning_secs: u64) -> bool {
        let due = warning_secs > 0
            && !self.warned
            && crate::clock::unix_secs().saturating_add(warning_secs) >= self.expires_at;
        self.warned |= due;
        due
    }

    fn heard(&mut self) {
        self.last_heard = Instant::now();
    }

    /// At a heartbeat: is the session still allowed to live?
    fn check(&self) -> Result<(), CloseReason> {
        if self.last_heard.elapsed() >= self.idle_timeout {
            Err(CloseReason::IdleTimeout)
        } else if crate::clock::unix_secs() >= self.expires_at {
            Err(CloseReason::TokenExpired)
        } else {
            Ok(())
        }
    }
}

/// The session's budget of inbound data frames: a token bucket of
/// `session.frame_burst` frames refilled at `session.max_frames_per_sec`,
/// and the frames refused since the bucket was last full. 12 bytes: it
/// lives in every session.
struct FrameRate {
    tokens: f32,
    /// Milliseconds since [`process_ms`]'s epoch at the last check
    /// (wrapping after 49 days: a gap that long refills the bucket anyway,
    /// unless it wraps to a small one; either way the bucket stays bounded).
    at_ms: u32,
    /// Frames refused since the bucket was last full.
    refused: u32,
}

/// What the frame rate says about one inbound data frame.
enum Verdict {
    Dispatch,
    /// Answer ERROR `rate_limited`; do not dispatch.
    Refuse,
    /// More than `session.max_rate_limited_frames` refused: close with 4004.
    Close,
}

/// [`crate::clock::process_ms`] in 32 bits: the truncation wraps the
/// counter, and FrameRate only takes differences.
fn process_ms() -> u32 {
    crate::clock::process_ms() as u32
}

impl FrameRate {
    fn new(cfg: &SessionConfig) -> FrameRate {
        FrameRate { tokens: cfg.frame_burst as f32, at_ms: process_ms(), refused: 0 }
    }

    fn check(&mut self, cfg: &SessionConfig) -> Verdict {
        let now = process_ms();
        let elapsed_ms = now.wrapping_sub(self.at_ms);
        self.at_ms = now;
        let burst = cfg.frame_burst as f32;
        self.tokens = (self.tokens + elapsed_ms as f32 * (cfg.max_frames_per_sec as f32 / 1000.0)).min(burst);
        if self.tokens >= burst {
            // The client stayed under its rate long enough: forgiven.
            self.refused = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Dispatch;
        }
        self.refused = self.refused.saturating_add(1);
        if self.refused > cfg.max_rate_limited_frames { Verdict::Close } else { Verdict::Refuse }
    }
}

/// What to do after a client message.
enum Step {
    Continue,
    End(CloseReason),
}

/// Why `serve` returned.
enum Served {
    End(CloseReason),
    /// The session is at rest after large traffic: rebuild tungstenite's
    /// context so its grown buffers are freed, then serve on.
    Compact,
}

/// Compaction (see `transport/inbound.rs` for why). Tungstenite's buffers
/// grow to the largest frame read and the largest burst written and never
/// shrink; once a session that moved more than its buffer sizes is at rest,
/// its context is rebuilt with fresh, small buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compaction {
    /// Buffers are at their configured sizes.
    Clean,
    /// Buffers may have grown: compact at the next moment of rest.
    Wanted,
    /// Tried while tungstenite held part of a frame: wait for the next
    /// message before trying again (no busy loop).
    AfterNextMessage,
}

type Ws = WebSocketStream<SessionSocket<SessionHandle>>;

pub(super) struct Session<'a> {
    pub(super) ws: Ws,
    pub(super) handle: &'a Arc<SessionHandle>,
    pub(super) state: &'a AppState,
    /// Frames were fed but not flushed yet.
    dirty: bool,
    compaction: Compaction,
    /// Bytes fed to tungstenite since the last flush (saturating; only
    /// compared with the write buffer size).
    fed_bytes: u32,
    rate: FrameRate,
}

/// Registers the session, runs it until it ends, then unregisters it: the
/// one place a session enters and leaves the registry.
///
/// No ghosts, whatever happens: the registration and the connection gauge
/// are drop guards, so even a panic that escapes this function (its future
/// is dropped while unwinding) unregisters the session and closes the
/// socket. A panic while serving is caught here and ends the session with
/// 1011 (INTERNAL_ERROR) like any other end.
pub async fn run(ws: Ws, handle: Arc<SessionHandle>, expires_at: u64, resume: Option<Resume>, state: &AppState) {
    if resume.is_some() {
        // Gated before it is registered: no live durable frame may reach
        // it before its replay (registry/replay.rs).
        state.registry.begin_replay(handle.id);
    }
    let registration = state.registry.register(handle.clone());
    if registration.is_err() {
        // Shutdown raced with this handshake: HELLO, then 1001 at once.
        handle.outbox.close(CloseReason::Shutdown);
        state.registry.end_replay(handle.id);
    }
    let m = metrics::get();
    let _connection = metrics::ConnectionGauge::acquire();
    let cfg = &state.config.session;
    let mut session = Session {
        ws,
        handle: &handle,
        state,
        dirty: false,
        compaction: Compaction::Clean,
        fed_bytes: 0,
        rate: FrameRate::new(cfg),
    };
    // hello() and finish() run once per session; boxing them keeps their
    // state out of the task that lives as long as the connection.
    let greeted = match Box::pin(session.hello()).await {
        Ok(()) => match resume {
            Some(resume) => Box::pin(session.replay(resume.since)).await,
            None => Ok(()),
        },
        Err(end) => Err(end),
    };
    let end = match greeted {
        Ok(()) => {
            enforce_session_limit(state, &handle.user);
            let mut clock = Clock::new(cfg.heartbeat_secs, cfg.idle_timeout_secs, expires_at);
            loop {
                match AssertUnwindSafe(session.serve(&mut clock)).catch_unwind().await {
                    Ok(Served::End(end)) => break end,
                    Ok(Served::Compact) => session = Box::pin(session.compact()).await,
                    Err(_) => {
                        m.panics.increment(1);
                        tracing::error!(session = handle.id, user = %handle.user, "session task panicked; closing it");
                        break CloseReason::InternalError;
                    }
                }
            }
        }
        Err(end) => end,
    };
    drop(registration);
    if end == CloseReason::SlowConsumer {
        m.slow_consumer_disconnects.increment(1);
    }
    tracing::debug!(session = handle.id, user = %handle.user, reason = end.label(), "session ended");
    Box::pin(session.finish(end)).await;
}

/// The newcomer is registered and greeted: the user's oldest sessions
/// beyond `session.max_per_user` give way (4005), wherever they are. In a
/// task of its own: in a cluster it asks other nodes, which must not delay
/// this session or grow its state.
fn enforce_session_limit(state: &AppState, user: &Arc<str>) {
    let (router, user, max) = (state.ctx.router.clone(), user.clone(), state.config.session.max_per_user);
    tokio::spawn(async move {
        router.enforce_session_limit(&user, max).await;
    });
}

impl<'a> Session<'a> {
    async fn hello(&mut self) -> Result<(), CloseReason> {
        let cfg = &self.state.config.session;
        let h = self.handle;
        // Findable from every node before the client hears it is connected.
        self.state.ctx.router.announce(&h.user).await;
        let hello = serde_json::json!({
            "session_id": self.state.registry.session_id(h.id).to_string(),
            "user": &*h.user,
            "device": h.device.as_deref(),
            "heartbeat_secs": cfg.heartbeat_secs,
            "idle_timeout_secs": cfg.idle_timeout_secs,
            "max_message_bytes": cfg.max_message_bytes,
            "server_time_ms": crate::clock::unix_ms(),
        });
        self.feed(encode_json(action::HELLO, &hello)).await?;
        self.flush().await
    }

    async fn serve(&mut self, clock: &mut Clock) -> Served {
        let max_batch = self.state.config.session.max_batch_frames;
        let handle = self.handle;
        loop {
            if !self.dirty {
                // Nothing half-written: pushers may write directly again.
                self.ws.get_mut().release();
            }
            // Biased: read first so bursts of requests are answered together,
            // then pushes, then the timer; the flush branch goes last so that
            // everything ready right now shares one write syscall, and the
            // compaction branch after it (by then the read branch has just
            // found the socket empty).
            let step = tokio::select! {
                biased;
                message = self.ws.next() => match message {
                    Some(Ok(message)) => {
                        clock.heard();
                        if self.compaction == Compaction::AfterNextMessage {
                            self.compaction = Compaction::Wanted;
                        }
                        self.on_message(message, clock).await
                    }
                    Some(Err(e)) => Step::End(classify(&e)),
                    None => Step::End(CloseReason::ConnectionLost),
                },
                batch = handle.outbox.next_batch(max_batch) => {
                    if batch.frames.is_empty() && batch.close.is_none() {
                        // The rest of a pusher's partial write: claiming
                        // the writer (any write or flush) sends it first.
                        match self.flush().await {
                            Ok(()) => continue,
                            Err(end) => return Served::End(end),
                        }
                    }
                    let mut step = Step::Continue;
                    for frame in batch.frames {
                        if let Err(end) = self.feed(frame).await {
                            step = Step::End(end);
                            break;
                        }
                    }
                    match (step, batch.close) {
                        (Step::Continue, Some(close)) => {
                            // Flush what was queued before the close.
                            match self.flush().await {
                                Ok(()) => Step::End(close),
                                Err(end) => Step::End(end),
                            }
                        }
                        (step, _) => step,
                    }
                },
                _ = clock.heartbeat.tick() => match clock.check() {
                    Err(end) => Step::End(end),
                    Ok(()) => {
                        let warn = clock.warning_due(self.state.config.auth.expiry_warning_secs);
                        let warned = match warn {
                            true => self.feed(super::refresh::expiring(clock.expires_at)).await,
                            false => Ok(()),
                        };
                        match warned {
                            Ok(()) => match self.feed_message(Message::Ping(Bytes::new())).await {
                                Ok(()) => Step::Continue,
                                Err(end) => Step::End(end),
                            },
                            Err(end) => Step::End(end),
                        }
                    }
                },
                () = std::future::ready(()), if self.dirty => match self.flush().await {
                    Ok(()) => Step::Continue,
                    Err(end) => Step::End(end),
                },
                () = std::future::ready(()), if self.compaction == Compaction::Wanted => {
                    if self.ws.get_ref().at_rest() {
                        return Served::Compact;
                    }
                    self.compaction = Compaction::AfterNextMessage;
                    Step::Continue
                },
            };
            if let Step::End(end) = step {
                return Served::End(end);
            }
        }
    }

    /// Rebuilds tungstenite's context around the same socket, dropping its
    /// grown buffers. Only called at rest: nothing buffered either way.
    async fn compact(self) -> Session<'a> {
        let Session { ws, handle, state, dirty, fed_bytes, rate, .. } = self;
        let socket = ws.into_inner();
        let ws = WebSocketStream::from_raw_socket(socket, Role::Server, Some(state.ws_config)).await;
        metrics::get().compactions.increment(1);
        Session { ws, handle, state, dirty, fed_bytes, rate, compaction: Compaction::Clean }
    }

    async fn on_message(&mut self, message: Message, clock: &mut Clock) -> Step {
        match message {
            Message::Binary(data) => {
                if data.len() > self.state.config.session.read_buffer_bytes {
                    self.compaction = Compaction::Wanted;
                }
                let verdict = self.rate.check(&self.state.config.session);
                let reply = match Frame::decode(data) {
                    _ if matches!(verdict, Verdict::Close) => return Step::End(CloseReason::RateLimited),
                    Ok(frame) if matches!(verdict, Verdict::Refuse) => {
                        metrics::rate_limited_frame();
                        let seq = crate::handlers::request_seq(frame.action, &frame.payload);
                        let message = "too many frames: this one was not handled; slow down";
                        Some(crate::handlers::error_frame(error_code::RATE_LIMITED, message, frame.action, seq))
                    }
                    Ok(frame) if frame.action == action::TOKEN_REFRESH => {
                        metrics::get().frames_in.inc(frame.action);
                        // Claimed like any request: the reply keeps its place.
                        self.ws.get_mut().claim();
                        match super::refresh::refresh(self.state, self.handle, &frame.payload) {
                            Ok((expires_at, reply)) => {
                                clock.refreshed(expires_at);
                                Some(reply)
                            }
                            Err(error) => Some(error),
                        }
                    }
                    Ok(frame) => {
                        metrics::get().frames_in.inc(frame.action);
                        let device = self.handle.device.as_deref().unwrap_or(DEFAULT_DEVICE);
                        let caller = Caller { user: &self.handle.user, device, session_id: self.handle.id };
                        // Writer claimed before the handler runs: a push the
                        // request causes (or that races it, e.g. the other
                        // side of a friend request) leaves after its reply.
                        self.ws.get_mut().claim();
                        self.state.handlers.dispatch(&self.state.ctx, caller, frame).await
                    }
                    Err(e @ FrameError::TooShort { .. }) => {
                        Some(crate::handlers::error_frame(error_code::FRAME_TOO_SHORT, &e.to_string(), 0, None))
                    }
                };
                match reply {
                    Some(reply) => match self.feed(reply).await {
                        Ok(()) => Step::Continue,
                        Err(end) => Step::End(end),
                    },
                    None => Step::Continue,
                }
            }
            Message::Text(_) => Step::End(CloseReason::TextFrame),
            // tungstenite queued the pong (or close reply); it leaves with
            // the next flush.
            Message::Ping(_) => {
                self.dirty = true;
                Step::Continue
            }
            Message::Close(_) => Step::End(CloseReason::ClientClosed),
            Message::Pong(_) | Message::Frame(_) => Step::Continue,
        }
    }

    pub(super) async fn feed(&mut self, frame: Bytes) -> Result<(), CloseReason> {
        if frame.len() >= 4 {
            metrics::get().frames_out.inc(u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]));
        }
        if frame.len() > self.state.config.session.write_buffer_bytes {
            // A large frame bypasses tungstenite's buffer, which would keep
            // its size as capacity: flush what is before it, then send it.
            self.flush().await?;
            self.ws.get_mut().write_raw_frame(&frame);
            return self.flush().await;
        }
        self.fed_bytes = self.fed_bytes.saturating_add(u32::try_from(frame.len()).unwrap_or(u32::MAX));
        self.feed_message(Message::Binary(frame)).await
    }

    /// Queues a message in tungstenite's write buffer; it writes to the
    /// socket by itself only once the buffer passes `write_buffer_bytes`.
    /// The writer is claimed first: a pusher must not write directly while
    /// this frame waits in the buffer, or its push would overtake a frame
    /// produced before it.
    async fn feed_message(&mut self, message: Message) -> Result<(), CloseReason> {
        self.ws.get_mut().claim();
        self.dirty = true;
        match tokio::time::timeout(self.write_timeout(), self.ws.feed(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(CloseReason::WriteTimeout),
        }
    }

    fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.state.config.session.write_timeout_ms)
    }

    pub(super) async fn flush(&mut self) -> Result<(), CloseReason> {
        self.dirty = false;
        // A burst beyond the write buffer grew tungstenite's output buffer.
        if std::mem::take(&mut self.fed_bytes) as usize > self.state.config.session.write_buffer_bytes {
            self.compaction = Compaction::Wanted;
        }
        match tokio::time::timeout(self.write_timeout(), self.ws.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(classify(&e)),
            Err(_) => Err(CloseReason::WriteTimeout),
        }
    }

    /// Sends our close frame (if the end calls for one) and waits briefly for
    /// the peer's, so clients see a clean close handshake with our code.
    async fn finish(mut self, end: CloseReason) {
        let ws = &mut self.ws;
        let _ = tokio::time::timeout(CLOSE_GRACE, async {
            match end.close_frame() {
                Some((code, reason)) => {
                    let frame = CloseFrame { code: code.into(), reason: reason.into() };
                    if ws.close(Some(frame)).await.is_err() {
                        return;
                    }
                }
                None if end == CloseReason::ClientClosed => {}
                None => return,
            }
            // Drive the socket until the peer's close arrives (or it drops):
            // this also flushes tungstenite's reply to a client-sent close.
            while let Some(Ok(_)) = ws.next().await {}
        })
        .await;
    }
}

fn classify(error: &WsError) -> CloseReason {
    match error {
        WsError::Capacity(_) => CloseReason::MessageTooBig,
        // Text frames end the session before their bytes are decoded, so a
        // UTF-8 error can only come from a close frame's reason (RFC 6455
        // section 8.1: 1007).
        WsError::Utf8(_) => CloseReason::InvalidUtf8,
        WsError::Protocol(_) => CloseReason::ProtocolError,
        // A write blocked on a client that stopped reading, failed because
        // its queue overflowed meanwhile (see `transport::SessionSocket`):
        // closed as a slow consumer at once, not after the write timeout.
        WsError::Io(e) if e.get_ref().is_some_and(|inner| inner.is::<crate::transport::Overflowed>()) => {
            CloseReason::SlowConsumer
        }
        _ => CloseReason::ConnectionLost,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_slots_are_on_the_grid_and_never_early() {
        let base = heartbeat_slot(Instant::now());
        for ms in [0u64, 1, 99, 100, 101, 12_345] {
            let at = base + Duration::from_millis(ms);
            let slot = heartbeat_slot(at);
            assert!(slot >= at, "a heartbeat never fires before its deadline");
            assert!(slot - at < HEARTBEAT_STEP, "and at most one step after it");
            assert_eq!((slot - base).as_nanos() % HEARTBEAT_STEP.as_nanos(), 0, "slots share one grid");
        }
    }
}
