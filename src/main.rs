use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The proxy allocates small, short-lived buffers on every request; mimalloc serves those
/// markedly faster than the system allocator (see the load bench).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use sessiongate::config::StoreSettings;
use sessiongate::sessions::Sessions;
use sessiongate::{store, Config, GateServer};

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
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gate (the default).
    Run,
    /// Validate the configuration and print what the gate would do.
    Check,
    /// Inspect and revoke sessions in the store directly (Redis only: the embedded store lives
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

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SESSIONGATE_LOG")
                .unwrap_or_else(|_| "info,pingora_core=warn,pingora_proxy=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let config = match Config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
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
            tracing::info!(config = %cli.config.display(), listen = ?config.listen, "sessiongate starting");
            match GateServer::new(config) {
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
    if matches!(config.store, StoreSettings::Memory) {
        anyhow::bail!("the embedded memory store lives inside the running gate; use its admin API ([admin] in the config)");
    }
    let store = store::from_settings(
        &config.store,
        &config.session.prefix,
        &config.session.index_prefix,
    );
    let sessions = Sessions::new(config.session, store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut out = String::new();
        match action {
            SessionsAction::Count => writeln!(out, "{}", sessions.store().count().await?)?,
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
