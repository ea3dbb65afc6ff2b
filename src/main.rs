//! The `pushgate` binary: parse the command line, load the config, bind the
//! listeners and hand over to the library.

mod bench;
mod client;

use clap::{Args, Parser, Subcommand};
use pushgate::config::{Config, LogConfig, LogFormat};
use pushgate::{Listeners, Shutdown};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "pushgate", version, about = "WebSocket push gateway")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the gateway (the default with no subcommand).
    Serve(ServeArgs),
    /// Print a development token signed with the configured HS256 secret.
    Token(TokenArgs),
    /// Drive a running gateway with load and report throughput, latency,
    /// and (with --pid) its memory per connection and CPU per operation.
    Bench(bench::BenchArgs),
    /// Connect as a client: print frames, send frames, close cleanly.
    Client(client::ClientArgs),
}

#[derive(Args, Default)]
struct ServeArgs {
    #[arg(long, default_value = "config/pushgate.toml")]
    config: PathBuf,
    #[arg(long)]
    listen: Option<SocketAddr>,
    #[arg(long)]
    api_listen: Option<SocketAddr>,
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// This node's name (overrides server.node_id): 1-64 of A-Z a-z 0-9 _ -.
    #[arg(long, value_name = "ID")]
    node_id: Option<String>,
    /// Cluster mode: the Redis shared by the nodes (overrides cluster.redis_url).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long, default_value = "config/pushgate.toml")]
    config: PathBuf,
    #[arg(long)]
    user: String,
    #[arg(long)]
    device: Option<String>,
    /// Lifetime in seconds (1 to 31536000, one year).
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

fn load(path: &std::path::Path) -> Result<Config, pushgate::Error> {
    let mut config = Config::load(path)?;
    config.apply_env();
    Ok(config)
}

/// Logging to stderr, as `[log]` says. `serve` calls this once its config
/// is loaded and valid (errors before that are printed plainly); the other
/// commands log with the defaults.
fn init_logging(log: &LogConfig) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = log.ansi.enabled(std::io::stderr().is_terminal(), no_color);
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match log.format {
        LogFormat::Text => builder.init(),
        // Flattened: `message` and the event's fields sit beside `level`.
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or(Command::Serve(ServeArgs { config: PathBuf::from("config/pushgate.toml"), ..ServeArgs::default() }));
    if !matches!(command, Command::Serve(_)) {
        init_logging(&LogConfig::default());
    }
    let result = match command {
        Command::Serve(args) => serve(args),
        Command::Token(args) => token(args),
        Command::Bench(args) => bench(args),
        Command::Client(args) => match client(args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pushgate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: TokenArgs) -> Result<(), pushgate::Error> {
    let config = load(&args.config)?;
    let auth = pushgate::auth::Authenticator::from_config(&config.auth)?;
    println!("{}", auth.mint(&args.user, args.device.as_deref(), args.ttl)?);
    Ok(())
}

fn bench(args: bench::BenchArgs) -> Result<(), pushgate::Error> {
    // Node lists that do not fit together are a usage error (exit 2).
    if let Err(e) = args.check() {
        <Cli as clap::CommandFactory>::command().error(clap::error::ErrorKind::ArgumentConflict, e).exit();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(bench::run(args))?;
    Ok(())
}

/// `pushgate client`'s exit code after a 4006 REVOKED close.
const EXIT_REVOKED: u8 = 3;

fn client(args: client::ClientArgs) -> Result<ExitCode, pushgate::Error> {
    // A malformed --send is a usage error (exit 2), reported before connecting.
    if let Err(e) = args.frames() {
        <Cli as clap::CommandFactory>::command().error(clap::error::ErrorKind::ValueValidation, e).exit();
    }
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let count = args.count;
    let outcome = runtime.block_on(client::run(args));
    // A blocking read of stdin may still be parked in the runtime's pool;
    // do not wait for a line that will never come.
    runtime.shutdown_background();
    let outcome = outcome?;
    if outcome.server_close == Some(pushgate::protocol::close::REVOKED) {
        eprintln!(
            "pushgate: revoked (close 4006): the gateway revoked this user's tokens; tokens issued before the \
             revocation are refused, so connect again with a newly issued one (exit {EXIT_REVOKED})"
        );
        return Ok(ExitCode::from(EXIT_REVOKED));
    }
    if outcome.success(count) {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!(
            "received {} frames, {} ERROR replies, {} requests unanswered, server close {:?}",
            outcome.received, outcome.errors, outcome.unanswered, outcome.server_close
        )
        .into())
    }
}

fn serve(args: ServeArgs) -> Result<(), pushgate::Error> {
    let mut config = load(&args.config)?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(api_listen) = args.api_listen {
        config.server.api_listen = api_listen;
    }
    if let Some(data_dir) = args.data_dir {
        config.server.data_dir = data_dir;
    }
    if let Some(node_id) = args.node_id {
        config.server.node_id = node_id;
    }
    if let Some(url) = args.redis_url {
        config.cluster.redis_url = Some(url);
    }
    config.validate()?;
    init_logging(&config.log);
    tracing::info!(node_id = %config.server.node_id, config = %args.config.display(), "configuration loaded");
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if config.server.worker_threads > 0 {
        builder.worker_threads(config.server.worker_threads);
    }
    let runtime = builder.enable_all().build()?;
    runtime.block_on(async {
        let listeners = Listeners {
            public: pushgate::listener::bind(config.server.listen, config.server.accept_backlog)?,
            api: pushgate::listener::bind(config.server.api_listen, config.server.accept_backlog)?,
        };
        tokio::select! {
            result = pushgate::run(config, listeners, signals()) => result,
            () = second_signal() => {
                tracing::warn!("second signal: exiting without finishing the drain");
                Ok(())
            }
        }
    })
}

/// SIGTERM drains (systemd stop, Kubernetes, rolling restarts); SIGINT
/// (Ctrl-C) stops at once.
async fn signals() -> Shutdown {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        // Without signal handlers we can still be stopped by the OS.
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => Shutdown::Immediate,
        _ = term.recv() => Shutdown::Drain,
    }
}

/// Resolves at the second SIGINT/SIGTERM: an operator who signals again
/// during a drain wants the process gone now.
async fn second_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
        return std::future::pending().await;
    };
    for _ in 0..2 {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    }
}
