//! The `sessiongate` binary: `run` (the default) starts the gate, `check` validates and
//! explains a config, `sessions list|revoke|count` works on a shared store from outside.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The proxy allocates small, short-lived buffers on every request; mimalloc serves those
/// markedly faster than the system allocator (see the load bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sessiongate::{offline_sessions, Config, GateServer, LogFormat};

/// A reverse proxy that enforces express-session compatible web sessions at the edge.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The configuration file.
    #[arg(
        long,
        short,
        global = true,
        env = "SESSIONGATE_CONFIG",
        default_value = "proxy.toml"
    )]
    config: PathBuf,
    /// Take the listening sockets from the running gate (zero-downtime upgrade): start this
    /// process, then send SIGQUIT to the old one, which hands them over on
    /// `server.upgrade_socket` and drains.
    #[arg(long, global = true)]
    upgrade: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate (the default).
    Run,
    /// Validate the configuration and print what the gate would do.
    Check,
    /// Inspect and revoke sessions in the store directly (Redis or PostgreSQL: the embedded store lives
    /// inside the running gate; use its admin API).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// A user's sessions: id prefix, created, last seen, expiry, user agent, IP.
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke one session of a user (by id prefix), or all of them.
    Revoke {
        #[arg(long)]
        user: String,
        /// The id prefix `list` shows; without it, every session of the user.
        #[arg(long)]
        session: Option<String>,
    },
    /// How many sessions the store holds.
    Count,
}

/// The diagnostic log on stderr, in the config's `[log] format`; the filter is
/// `SESSIONGATE_LOG` (default `info`).
fn diagnostics(format: LogFormat) -> tracing::Dispatch {
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESSIONGATE_LOG")
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => logs.json().flatten_event(true).finish().into(),
        LogFormat::Text => logs.finish().into(),
    }
}

fn main() -> ExitCode {
    use tracing_subscriber::util::SubscriberInitExt;
    let cli = Cli::parse();
    // The config says how to log; what reading it logs goes out as text.
    let loaded = tracing::dispatcher::with_default(&diagnostics(LogFormat::Text), || {
        Config::load(&cli.config)
    });
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    // Pingora's own `log` records come through too.
    let _ = diagnostics(config.log.format).try_init();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => {
            print!("{}", config.describe());
            println!("{}: ok", cli.config.display());
            ExitCode::SUCCESS
        }
        Command::Sessions { action } => match sessions_command(config, action) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Run => {
            tracing::info!(config = %cli.config.display(), listen = ?config.listen, upgrade = cli.upgrade, "sessiongate starting");
            match GateServer::from_file(&cli.config, cli.upgrade) {
                Ok(gate) => {
                    gate.run();
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}

fn sessions_command(config: Config, action: SessionsAction) -> anyhow::Result<String> {
    use std::fmt::Write;
    let sessions = offline_sessions(config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut out = String::new();
        match action {
            SessionsAction::Count => writeln!(out, "{}", sessions.count().await?)?,
            SessionsAction::List { user } => {
                let list = sessions.list_user(&user).await?;
                writeln!(
                    out,
                    "{:<8} {:<20} {:<20} {:<20} {:<16} USER AGENT",
                    "ID", "CREATED", "LAST SEEN", "EXPIRES", "IP"
                )?;
                for s in list {
                    writeln!(
                        out,
                        "{:<8} {:<20} {:<20} {:<20} {:<16} {}",
                        s.id_prefix,
                        time(s.created),
                        time(s.last_seen),
                        time(s.expires),
                        s.ip.as_deref().unwrap_or("-"),
                        s.user_agent.as_deref().unwrap_or("-")
                    )?;
                }
            }
            SessionsAction::Revoke {
                user,
                session: None,
            } => writeln!(
                out,
                "revoked {} session(s) of {user}",
                sessions.revoke_user(&user).await?
            )?,
            SessionsAction::Revoke {
                user,
                session: Some(prefix),
            } => {
                sessions.revoke_one(&user, &prefix).await?;
                writeln!(out, "revoked session {prefix}… of {user}")?
            }
        }
        Ok(out)
    })
}

fn time(ms: Option<u64>) -> String {
    ms.map(|ms| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        humantime::format_rfc3339_seconds(t).to_string()
    })
    .unwrap_or_else(|| "-".into())
}
