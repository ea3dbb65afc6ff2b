//! `pushgate client`: connect, print every frame decoded, send frames typed
//! on stdin (or given with `--send`), match replies to requests by `seq`,
//! and close cleanly (1000) on Ctrl-C, as the original Go client did.

mod line;

use clap::Args;
use futures_util::{SinkExt, StreamExt};
use pushgate::auth::Authenticator;
use pushgate::config::Config;
use pushgate::protocol::{Frame, action, encode};
use serde_json::Value;
use std::collections::HashMap;
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
    /// Config file holding the secret for --user.
    #[arg(long, default_value = "config/pushgate.toml")]
    pub config: PathBuf,
    /// Send a frame: `--send 111 '{"user":"bob"}'` (repeatable). Without it
    /// the client reads such lines from standard input.
    #[arg(long, num_args = 2, value_names = ["ACTION", "JSON"], action = clap::ArgAction::Append)]
    pub send: Vec<String>,
    /// Exit after this many seconds.
    #[arg(long)]
    pub wait: Option<f64>,
    /// Exit after receiving this many frames (HELLO not counted).
    #[arg(long)]
    pub count: Option<usize>,
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

fn token(args: &ClientArgs) -> Result<String, String> {
    if let Some(token) = &args.token {
        return Ok(token.clone());
    }
    let user = args.user.as_ref().ok_or("give --token, or --user to mint a development token")?;
    let mut config = Config::load(&args.config).map_err(|e| e.to_string())?;
    config.apply_env();
    Authenticator::from_config(&config.auth).map_err(|e| e.to_string())?.mint(user, None, 3600)
}

/// Runs until Ctrl-C, `--wait`, `--count`, stdin EOF (with nothing pending),
/// or the server closing.
///
/// # Errors
/// Connecting failed or the arguments are inconsistent.
pub async fn run(args: ClientArgs) -> Result<Outcome, String> {
    // Registered before connecting, so a Ctrl-C at any point is ours to handle.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("installing the Ctrl-C handler: {e}"))?;
    let mut request = args.url.as_str().into_client_request().map_err(|e| e.to_string())?;
    let bearer = format!("Bearer {}", token(&args)?).parse().map_err(|_| "token is not a header value")?;
    request.headers_mut().insert("authorization", bearer);
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.map_err(|e| format!("connect: {e}"))?;
    eprintln!("connected to {}", args.url);

    let mut pending: HashMap<u64, (u32, Instant)> = HashMap::new();
    let mut next_seq = 1u64;
    let mut outcome = Outcome::default();
    let mut queued: Vec<(u32, Value)> = Vec::new();
    for pair in args.send.chunks(2) {
        let input = line::parse_input(&pair.join(" "))?;
        queued.push((input.action, input.payload));
    }
    let interactive = args.send.is_empty();
    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdin_open = interactive;
    let deadline = args.wait.map(|s| tokio::time::Instant::now() + Duration::from_secs_f64(s));
    let mut saw_hello = false;

    for (action, payload) in queued {
        send(&mut ws, action, payload, &mut next_seq, &mut pending).await?;
    }

    loop {
        let done_sending = !stdin_open && pending.is_empty();
        if done_sending && args.wait.is_none() && args.count.is_none_or(|n| outcome.received >= n) && saw_hello {
            close(&mut ws, &mut outcome).await;
            break;
        }
        tokio::select! {
            _ = interrupt.recv() => {
                eprintln!("interrupted: closing");
                close(&mut ws, &mut outcome).await;
                break;
            }
            _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                close(&mut ws, &mut outcome).await;
                break;
            }
            input = stdin.next_line(), if stdin_open => match input {
                Ok(Some(text)) if text.trim().is_empty() => {}
                Ok(Some(text)) => match line::parse_input(&text) {
                    Ok(i) => send(&mut ws, i.action, i.payload, &mut next_seq, &mut pending).await?,
                    Err(e) => eprintln!("!! {e}  (type: ACTION JSON, e.g. 111 {{\"user\":\"bob\"}})"),
                },
                _ => stdin_open = false,
            },
            message = ws.next() => match message {
                Some(Ok(Message::Binary(bytes))) => {
                    let Ok(frame) = Frame::decode(bytes) else { continue };
                    if frame.action == action::HELLO && !saw_hello {
                        saw_hello = true;
                    } else {
                        outcome.received += 1;
                    }
                    println!("<- {}{}", line::describe(&frame), reply_note(&frame, &mut pending, &mut outcome));
                    if args.count.is_some_and(|n| outcome.received >= n) && pending.is_empty() {
                        close(&mut ws, &mut outcome).await;
                        break;
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
    outcome.unanswered = pending.len();
    Ok(outcome)
}

/// Sends a frame; JSON objects get the next `seq` so the reply can be matched.
async fn send<S>(
    ws: &mut S,
    action: u32,
    mut payload: Value,
    next_seq: &mut u64,
    pending: &mut HashMap<u64, (u32, Instant)>,
) -> Result<(), String>
where
    S: futures_util::Sink<Message, Error = tokio_tungstenite::tungstenite::Error> + Unpin,
{
    if let Value::Object(map) = &mut payload
        && action < pushgate::protocol::action::APPLICATION_MIN
    {
        let seq = *next_seq;
        *next_seq += 1;
        map.insert("seq".into(), seq.into());
        pending.insert(seq, (action, Instant::now()));
    }
    let body = serde_json::to_vec(&payload).map_err(|e| e.to_string())?;
    println!("-> {action} {}", String::from_utf8_lossy(&body));
    ws.send(Message::Binary(encode(action, &body))).await.map_err(|e| format!("send: {e}"))
}

/// `  (reply to seq 3, 1.2 ms)` when the frame answers a pending request.
fn reply_note(frame: &Frame, pending: &mut HashMap<u64, (u32, Instant)>, outcome: &mut Outcome) -> String {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&frame.payload) else { return String::new() };
    let Some(seq) = map.get("seq").and_then(Value::as_u64) else { return String::new() };
    let Some((_, sent)) = pending.remove(&seq) else { return String::new() };
    if frame.action == action::ERROR {
        outcome.errors += 1;
    }
    format!("  (reply to seq {seq}, {:.1} ms)", sent.elapsed().as_secs_f64() * 1000.0)
}

/// Sends a normal close (1000) and waits briefly for the server's.
async fn close<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>, outcome: &mut Outcome)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let frame = CloseFrame { code: 1000.into(), reason: "bye".into() };
    if ws.close(Some(frame)).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(frame) = message {
                let code = frame.map_or(1005, |f| u16::from(f.code));
                println!("<- close {code}");
                outcome.server_close = Some(code);
            }
        }
    })
    .await;
}
