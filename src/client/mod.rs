//! `pushgate client`: connect, print every frame decoded, send frames typed
//! on stdin (or given with `--send`), match replies to requests by `seq`,
//! and close cleanly (1000) on Ctrl-C, as the original Go client did.
//!
//! Every ERROR (4) frame fails the run. The server only sends ERRORs in reply
//! to frames we sent: with the `seq` we added when there is one, else (an
//! application action, or a built-in action whose payload is not a JSON
//! object) with `seq: null`, attributed by the ERROR's `action` field. The
//! client does not refuse such payloads itself: it stays a probe of the
//! server's own checks, and the server's ERROR fails the run instead.
//!
//! Durable delivery (proto-spec section 8): the client resumes (`resume=1`
//! on the URL, `since=ID` with `--since`, neither with `--no-resume`),
//! prints every MESSAGE (6) with its id, inner frame and whether it was
//! replayed (before SYNCED) or live, and acks it once printed (`--no-ack`:
//! never) in batches: one ACK `{"ids": [...], "seq"}` per 50 ms or 64 ids,
//! and whatever is waiting before it closes.
//!
//! Tokens during a session (proto-spec section 9): on TOKEN_EXPIRING (10)
//! a client that minted its token (`--user`) mints a fresh one the same way
//! (`--token-ttl`) and sends TOKEN_REFRESH (9) with a `seq`; its reply (or
//! ERROR) is printed like any reply. A fixed `--token` cannot be refreshed:
//! the client warns on stderr and the gateway closes the session (4003) at
//! the expiry. A 4006 REVOKED close ends the run with exit code 3 (see the
//! binary).

mod line;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use pushgate::auth::Authenticator;
use pushgate::config::Config;
use pushgate::protocol::{Frame, action, encode};
use serde_json::Value;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Gateway WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// JWT to connect with.
    #[arg(long, conflicts_with = "user")]
    pub token: Option<String>,
    /// Mint a development token for this user from the configured secret.
    #[arg(long)]
    pub user: Option<String>,
    /// Lifetime of the tokens minted for --user, the first one and each
    /// refresh, in seconds (1 to 31536000, i.e. one year; default 3600).
    #[arg(long, value_name = "SECS", requires = "user", conflicts_with = "token", value_parser = token_ttl_secs)]
    pub token_ttl: Option<u64>,
    /// Config file holding the secret for --user.
    #[arg(long, default_value = "config/pushgate.toml")]
    pub config: PathBuf,
    /// Send a frame: `--send 111 '{"user":"bob"}'` (repeatable). Without it
    /// the client reads such lines from standard input.
    #[arg(long, num_args = 2, value_names = ["ACTION", "JSON"], action = clap::ArgAction::Append)]
    pub send: Vec<String>,
    /// Exit after this many seconds (0 to 31536000, i.e. one year).
    #[arg(long, value_parser = wait_secs)]
    pub wait: Option<Duration>,
    /// Give up connecting (TCP connect and WebSocket upgrade) after this many
    /// seconds (above 0, at most 3600).
    #[arg(long, value_parser = connect_timeout_secs, default_value = "10")]
    pub connect_timeout: Duration,
    /// Exit after receiving this many frames (HELLO, SYNCED and the replies
    /// to automatic ACKs not counted).
    #[arg(long)]
    pub count: Option<usize>,
    /// Resume from this message id: `since=ID` instead of `resume=1` (acks
    /// every durable message up to ID for this device first).
    #[arg(long, value_name = "ID", conflicts_with = "no_resume")]
    pub since: Option<u64>,
    /// Do not ask for the replay of unacked durable messages (no `resume=1`):
    /// live MESSAGE frames only, no SYNCED.
    #[arg(long)]
    pub no_resume: bool,
    /// Never ack durable messages (they are replayed on the next connect).
    #[arg(long)]
    pub no_ack: bool,
}

/// The upgrade URL with `resume=1` or `since=ID` added (or unchanged with
/// `--no-resume`).
pub fn resume_url(url: &str, since: Option<u64>, resume: bool) -> String {
    let param = match (since, resume) {
        (Some(id), _) => format!("since={id}"),
        (None, true) => "resume=1".to_string(),
        (None, false) => return url.to_string(),
    };
    let (base, fragment) = url.split_once('#').map_or((url, None), |(b, f)| (b, Some(f)));
    let sep = if base.contains('?') { '&' } else { '?' };
    match fragment {
        Some(fragment) => format!("{base}{sep}{param}#{fragment}"),
        None => format!("{base}{sep}{param}"),
    }
}

/// The most ids one automatic ACK carries (the protocol allows 1024).
const ACK_BATCH: usize = 64;
/// How long an id waits for others before its ACK goes out.
const ACK_DELAY: Duration = Duration::from_millis(50);

/// Durable delivery state of the connection.
struct Durable {
    /// MESSAGE frames before SYNCED are replayed (only when resuming).
    replaying: bool,
    /// Ack what was printed (not `--no-ack`).
    ack: bool,
    /// Ids printed and not acked yet.
    to_ack: Vec<u64>,
    /// When `to_ack` goes out at the latest.
    due: Option<tokio::time::Instant>,
}

impl ClientArgs {
    /// The `--send` frames, parsed (the binary checks them before anything
    /// else and reports a malformed one as a usage error).
    ///
    /// # Errors
    /// The first `--send ACTION JSON` pair that does not parse.
    pub fn frames(&self) -> Result<Vec<(u32, Value)>, String> {
        self.send
            .chunks(2)
            .map(|pair| {
                let text = pair.join(" ");
                line::parse_input(&text).map(|i| (i.action, i.payload)).map_err(|e| format!("--send {text}: {e}"))
            })
            .collect()
    }
}

/// How a client run went; the binary turns it into the exit code.
#[derive(Debug, Default)]
pub struct Outcome {
    pub received: usize,
    pub errors: usize,
    pub unanswered: usize,
    pub server_close: Option<u16>,
}

impl Outcome {
    /// Success: every request answered without ERROR, and the server did not
    /// close us with anything but a normal close.
    pub fn success(&self, want_count: Option<usize>) -> bool {
        self.errors == 0
            && self.unanswered == 0
            && matches!(self.server_close, None | Some(1000))
            && want_count.is_none_or(|n| self.received >= n)
    }
}

/// The longest `--wait`: one year.
const MAX_WAIT_SECS: f64 = 365.0 * 24.0 * 3600.0;
/// The longest `--connect-timeout`: one hour.
const MAX_CONNECT_TIMEOUT_SECS: f64 = 3600.0;

/// Seconds as a finite, non-negative number of at most `max`, turned into a
/// [`Duration`] (never a panic: NaN, infinities, negatives and overflows are
/// refused here, while parsing the command line).
fn secs(text: &str, zero_ok: bool, max: f64) -> Result<Duration, String> {
    let value: f64 = text.trim().parse().map_err(|_| format!("{text:?} is not a number of seconds"))?;
    let low_ok = if zero_ok { value >= 0.0 } else { value > 0.0 };
    if !(value.is_finite() && low_ok && value <= max) {
        let low = if zero_ok { "from 0" } else { "above 0" };
        return Err(format!("must be {low} to {max} seconds"));
    }
    Duration::try_from_secs_f64(value).map_err(|e| e.to_string())
}

fn wait_secs(text: &str) -> Result<Duration, String> {
    secs(text, true, MAX_WAIT_SECS)
}

fn connect_timeout_secs(text: &str) -> Result<Duration, String> {
    secs(text, false, MAX_CONNECT_TIMEOUT_SECS)
}

fn token_ttl_secs(text: &str) -> Result<u64, String> {
    let max = pushgate::auth::MAX_TOKEN_TTL_SECS;
    match text.trim().parse::<u64>() {
        Ok(ttl) if (1..=max).contains(&ttl) => Ok(ttl),
        _ => Err(format!("must be a whole number of seconds from 1 to {max}")),
    }
}

/// Requests sent and not yet answered.
#[derive(Default)]
struct Sent {
    /// Requests carrying the `seq` we added: seq -> (action, sent at).
    pending: HashMap<u64, (u32, Instant)>,
    /// Frames sent without a `seq`, per action (oldest first); an ERROR with
    /// `seq: null` is matched to one of them by its `action` field. Only
    /// ERRORs can be matched this way, so nothing here is ever "unanswered".
    unsequenced: HashMap<u32, VecDeque<Instant>>,
    next_seq: u64,
    /// The seqs of the automatic ACKs and TOKEN_REFRESHes (their replies are
    /// not counted).
    automatic: HashSet<u64>,
    /// The seqs of the automatic TOKEN_REFRESHes (their replies get a note).
    refreshes: HashSet<u64>,
}

/// Lifetime of minted tokens without `--token-ttl`.
const DEFAULT_TOKEN_TTL_SECS: u64 = 3600;

/// Where the session's tokens come from.
enum TokenSource {
    /// `--token`: there is no other.
    Fixed(String),
    /// `--user`: minted from the configured secret, again at every refresh.
    Minted { auth: Box<Authenticator>, user: String, ttl: u64 },
}

impl TokenSource {
    fn new(args: &ClientArgs) -> Result<TokenSource, String> {
        if let Some(token) = &args.token {
            return Ok(TokenSource::Fixed(token.clone()));
        }
        let user = args.user.as_ref().ok_or("give --token, or --user to mint a development token")?;
        let mut config = Config::load(&args.config).map_err(|e| e.to_string())?;
        config.apply_env();
        let auth = Box::new(Authenticator::from_config(&config.auth).map_err(|e| e.to_string())?);
        Ok(TokenSource::Minted { auth, user: user.clone(), ttl: args.token_ttl.unwrap_or(DEFAULT_TOKEN_TTL_SECS) })
    }

    /// A token: the fixed one, or a freshly minted one.
    fn token(&self) -> Result<String, String> {
        match self {
            TokenSource::Fixed(token) => Ok(token.clone()),
            TokenSource::Minted { auth, user, ttl } => auth.mint(user, None, *ttl),
        }
    }
}

/// TOKEN_EXPIRING arrived: refresh with a newly minted token, or warn that a
/// fixed `--token` cannot be refreshed.
async fn refresh<S>(ws: &mut S, source: &TokenSource, warning: &Frame, sent: &mut Sent) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    let expiring: Value = serde_json::from_slice(&warning.payload).unwrap_or_default();
    let TokenSource::Minted { .. } = source else {
        eprintln!(
            "warning: the token expires in {} s (at {}) and a fixed --token cannot be refreshed: the gateway will \
             close the session (4003); use --user to have tokens minted and refreshed",
            expiring["expires_in_secs"], expiring["expires_at"]
        );
        return Ok(());
    };
    let token = match source.token() {
        Ok(token) => token,
        Err(e) => {
            eprintln!("warning: cannot mint a fresh token ({e}): the session will expire");
            return Ok(());
        }
    };
    sent.automatic.insert(sent.next_seq);
    sent.refreshes.insert(sent.next_seq);
    send(ws, action::TOKEN_REFRESH, serde_json::json!({ "token": token }), sent).await
}

/// Runs until Ctrl-C, `--wait`, `--count`, stdin EOF (with nothing pending),
/// or the server closing.
///
/// # Errors
/// Connecting failed, timed out (`--connect-timeout`) or was interrupted, or
/// the arguments are inconsistent.
pub async fn run(args: ClientArgs) -> Result<Outcome, String> {
    // Registered before connecting, so a Ctrl-C at any point is ours to handle
    // (while connecting too: see the select below).
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    let queued = args.frames()?;
    let url = resume_url(&args.url, args.since, !args.no_resume);
    let mut request = url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let source = TokenSource::new(&args)?;
    let bearer = format!("Bearer {}", source.token()?).parse().map_err(|_| "token is not a header value")?;
    request.headers_mut().insert("authorization", bearer);
    // TCP connect and upgrade together, bounded, and abandoned on Ctrl-C.
    let connecting = tokio::time::timeout(args.connect_timeout, tokio_tungstenite::connect_async(request));
    let mut ws = tokio::select! {
        _ = interrupt.recv() => return Err(format!("interrupted while connecting to {}", args.url)),
        connected = connecting => match connected {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Err(format!("connect: {e}")),
            Err(_) => {
                return Err(format!(
                    "connect: no answer from {} within {} s (--connect-timeout)",
                    args.url,
                    args.connect_timeout.as_secs_f64()
                ));
            }
        },
    };
    eprintln!("connected to {}", args.url);

    let mut sent = Sent { next_seq: 1, ..Sent::default() };
    let mut outcome = Outcome::default();
    let interactive = args.send.is_empty();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = interactive;
    // `--wait` is at most a year, so this cannot overflow.
    let deadline = args.wait.map(|wait| tokio::time::Instant::now() + wait);
    let mut saw_hello = false;
    let mut durable = Durable {
        replaying: args.since.is_some() || !args.no_resume,
        ack: !args.no_ack,
        to_ack: Vec::new(),
        due: None,
    };

    for (action, payload) in queued {
        send(&mut ws, action, payload, &mut sent).await?;
    }

    loop {
        let done_sending = !stdin_open && sent.pending.is_empty();
        if done_sending && args.wait.is_none() && args.count.is_none_or(|n| outcome.received >= n) && saw_hello {
            // Acks still waiting go out first; their replies are awaited.
            if !durable.to_ack.is_empty() {
                flush_acks(&mut ws, &mut durable, &mut sent).await?;
                continue;
            }
            close(&mut ws, &mut sent, &mut outcome, &mut durable).await;
            break;
        }
        tokio::select! {
            _ = interrupt.recv() => {
                eprintln!("interrupted: closing");
                flush_acks(&mut ws, &mut durable, &mut sent).await?;
                close(&mut ws, &mut sent, &mut outcome, &mut durable).await;
                break;
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                flush_acks(&mut ws, &mut durable, &mut sent).await?;
                close(&mut ws, &mut sent, &mut outcome, &mut durable).await;
                break;
            }
            _ = async { match durable.due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                flush_acks(&mut ws, &mut durable, &mut sent).await?;
            }
            input = stdin.next_line(), if stdin_open => match input {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => match line::parse_input(&text) {
                    Ok(i) => send(&mut ws, i.action, i.payload, &mut sent).await?,
                    Err(e) => eprintln!("!! {e}  (type: ACTION JSON, e.g. 111 {{\"user\":\"bob\"}})"),
                },
                _ => stdin_open = false,
            },
            message = ws.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let Ok(frame) = Frame::decode(bytes) else { continue };
                    let hello = frame.action == action::HELLO && !saw_hello;
                    saw_hello |= hello;
                    received(&frame, !hello, &mut sent, &mut outcome, &mut durable);
                    if frame.action == action::TOKEN_EXPIRING {
                        refresh(&mut ws, &source, &frame, &mut sent).await?;
                    }
                    if durable.to_ack.len() >= ACK_BATCH {
                        flush_acks(&mut ws, &mut durable, &mut sent).await?;
                    } else if !durable.to_ack.is_empty() && durable.due.is_none() {
                        durable.due = Some(tokio::time::Instant::now() + ACK_DELAY);
                    }
                    if args.count.is_some_and(|n| outcome.received >= n) {
                        flush_acks(&mut ws, &mut durable, &mut sent).await?;
                        if sent.pending.is_empty() {
                            close(&mut ws, &mut sent, &mut outcome, &mut durable).await;
                            break;
                        }
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.as_ref().map_or(1005, |f| u16::from(f.code));
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    println!("<- close {code} {reason}");
                    outcome.server_close = Some(code);
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(format!("connection: {e}")),
                None => break,
            },
        }
    }
    outcome.unanswered = sent.pending.len();
    Ok(outcome)
}

/// Sends the acks waiting, at most [`ACK_BATCH`] ids per ACK frame, each
/// with a `seq` (its reply is matched and printed like any other).
async fn flush_acks<S>(ws: &mut S, durable: &mut Durable, sent: &mut Sent) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    durable.due = None;
    let ids = std::mem::take(&mut durable.to_ack);
    for batch in ids.chunks(ACK_BATCH) {
        sent.automatic.insert(sent.next_seq);
        send(ws, action::ACK, serde_json::json!({ "ids": batch }), sent).await?;
    }
    Ok(())
}

/// Sends a frame; JSON objects get the next `seq` so the reply can be matched.
async fn send<S>(ws: &mut S, action: u32, mut payload: Value, sent: &mut Sent) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    if let Value::Object(map) = &mut payload
        && action < pushgate::protocol::action::APPLICATION_MIN
    {
        let seq = sent.next_seq;
        sent.next_seq += 1;
        map.insert("seq".into(), seq.into());
        sent.pending.insert(seq, (action, Instant::now()));
    } else {
        sent.unsequenced.entry(action).or_default().push_back(Instant::now());
    }
    let body = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    println!("-> {action} {}", line::shown(action, &payload, &body));
    ws.send(Message::Binary(encode(action, &body))).await.map_err(|e| format!("send: {e}"))
}

/// Prints a received frame with its reply note and counts it (`counted`:
/// every frame but the HELLO; SYNCED, TOKEN_EXPIRING and replies to
/// automatic ACKs and TOKEN_REFRESHes are not counted either) and every
/// ERROR. A MESSAGE prints with its id and inner
/// frame and is queued for the ack; SYNCED ends the replay.
fn received(frame: &Frame, counted: bool, sent: &mut Sent, outcome: &mut Outcome, durable: &mut Durable) {
    if frame.action == action::ERROR {
        // The server sends ERRORs only in reply to our frames: each one
        // fails the run, whether or not it can be matched to a request.
        outcome.errors += 1;
    }
    if frame.action == action::MESSAGE {
        if counted {
            outcome.received += 1;
        }
        match line::describe_message(&frame.payload, durable.replaying) {
            Some((id, text)) => {
                println!("<- {text}");
                if durable.ack {
                    durable.to_ack.push(id);
                }
            }
            None => println!("<- {}  (too short for a MESSAGE)", line::describe(frame)),
        }
        return;
    }
    let seq = reply_seq(frame);
    let automatic = seq.is_some_and(|s| sent.automatic.remove(&s));
    let refreshed = seq.is_some_and(|s| sent.refreshes.remove(&s));
    if counted && frame.action != action::SYNCED && frame.action != action::TOKEN_EXPIRING && !automatic {
        outcome.received += 1;
    }
    let mut note = reply_note(frame, sent);
    if refreshed {
        note.push_str(if frame.action == action::ERROR {
            "  (token refresh refused: the session keeps its old expiry)"
        } else {
            "  (token refreshed)"
        });
    }
    if frame.action == action::SYNCED {
        durable.replaying = false;
        if let Ok(synced) = serde_json::from_slice::<Value>(&frame.payload)
            && synced["gap"] == Value::Bool(true)
        {
            note = format!("  (gap: messages not acked were evicted or expired before {}: resync)", synced["first_id"]);
        }
    }
    println!("<- {}{note}", line::describe(frame));
}

/// The `seq` of a reply (a JSON object carrying a u64 `seq`).
fn reply_seq(frame: &Frame) -> Option<u64> {
    serde_json::from_slice::<Value>(&frame.payload).ok()?.get("seq")?.as_u64()
}

/// `  (reply to seq 3, 1.2 ms)` when the frame answers a pending request, or
/// `  (reply to action 1000, 0.4 ms)` for an ERROR with `seq: null` matched by
/// its `action` field to a frame sent without a `seq`.
fn reply_note(frame: &Frame, sent: &mut Sent) -> String {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&frame.payload) else { return String::new() };
    let elapsed_ms = |at: Instant| at.elapsed().as_secs_f64() * 1000.0;
    match map.get("seq") {
        Some(seq) if !seq.is_null() => {
            let Some(seq) = seq.as_u64() else { return String::new() };
            let Some((_, at)) = sent.pending.remove(&seq) else { return String::new() };
            format!("  (reply to seq {seq}, {:.1} ms)", elapsed_ms(at))
        }
        _ if frame.action == action::ERROR => {
            let Some(about) = map.get("action").and_then(Value::as_u64).and_then(|a| u32::try_from(a).ok()) else {
                return String::new();
            };
            let Some(at) = sent.unsequenced.get_mut(&about).and_then(VecDeque::pop_front) else { return String::new() };
            format!("  (reply to action {about}, {:.1} ms)", elapsed_ms(at))
        }
        _ => String::new(),
    }
}

/// Sends a normal close (1000) and waits briefly for the server's, printing
/// (and counting) the frames that arrive before it: replies the server sent
/// before it read our close, such as an ERROR for the last frame we sent.
async fn close<S>(
    ws: &mut tokio_tungstenite::WebSocketStream<S>,
    sent: &mut Sent,
    outcome: &mut Outcome,
    durable: &mut Durable,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame { code: 1000.into(), reason: "bye".into() };
    // Bounded as a whole: a server that stopped reading cannot hold us here.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        if ws.close(Some(frame)).await.is_err() {
            return;
        }
        while let Some(Ok(message)) = ws.next().await {
            match message {
                Message::Close(frame) => {
                    let code = frame.map_or(1005, |f| u16::from(f.code));
                    println!("<- close {code}");
                    outcome.server_close = Some(code);
                }
                Message::Binary(bytes) => {
                    if let Ok(frame) = Frame::decode(bytes) {
                        // A MESSAGE arriving now is printed, not acked: it is replayed next time.
                        received(&frame, frame.action != action::HELLO, sent, outcome, durable);
                    }
                }
                _ => {}
            }
        }
    })
    .await;
}
