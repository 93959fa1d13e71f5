//! `tailor`: the decision server binary and its offline tools. `serve` runs the
//! `tailor-server` library; `simulate` plays the `tailor-sim` worlds (`simulate.rs`);
//! `export`, `evaluate` and `replay` read decision logs (`replay.rs`); `plugin check` loads a
//! plugin library.

/// mimalloc: the decide path allocates many small objects (JSON values, feature vectors)
/// from several worker threads, where glibc malloc spends a quarter of the CPU.
#[cfg(not(feature = "system-alloc"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod replay;
mod simulate;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tailor_server::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "tailor",
    version,
    about = "Self-hosted, self-learning decision server for retail personalization"
)]
struct Cli {
    /// TOML configuration file (defaults, then this file, then TAILOR__SECTION__KEY variables).
    #[arg(long, global = true, env = "TAILOR_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server on the embedded store.
    Serve {
        /// Listen address; port 0 picks a free port (logged).
        #[arg(long)]
        bind: Option<String>,
        /// Data directory of the embedded store.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Directory of plugin libraries.
        #[arg(long)]
        plugin_dir: Option<PathBuf>,
        /// Bootstrap editor API key (default: `[auth] admin_key`, else generated into
        /// `<data-dir>/admin.key` on first start).
        #[arg(long, env = "TAILOR_ADMIN_KEY", hide_env_values = true)]
        admin_key: Option<String>,
        /// Cluster mode: the NATS server(s) with JetStream, comma-separated
        /// (`nats://127.0.0.1:4222`); sets `[cluster] servers` (docs/scale-out.md).
        #[arg(long)]
        cluster: Option<String>,
    },
    /// Print the effective configuration and exit.
    Config,
    /// Play the policies against a synthetic retail world and compare them (docs/simulation.md).
    Simulate(simulate::SimulateArgs),
    /// Export a campaign's decision log (joined with its rewards) as JSON lines. Opens the data
    /// directory, which a running server locks: stop it or export from a copy (or use
    /// `GET /admin/v1/campaigns/{id}/log` on the running server).
    Export {
        #[arg(long)]
        campaign: String,
        #[arg(long)]
        out: PathBuf,
        /// Data directory of the embedded store.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        from_ms: Option<u64>,
        #[arg(long)]
        to_ms: Option<u64>,
    },
    /// Off-policy evaluation of a JSON-lines decision log (docs/evaluation.md).
    Evaluate {
        file: PathBuf,
        #[command(flatten)]
        opts: replay::EvalOptions,
        /// Print the evaluation document as JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Replay a JSON-lines decision log: every policy's would-be choice beside the served one,
    /// as JSON lines, then the evaluation table on stderr.
    Replay {
        file: PathBuf,
        #[command(flatten)]
        opts: replay::EvalOptions,
        /// Write the per-decision lines here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Plugin tools.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Load a plugin library, run its ABI handshake and print what it reports.
    Check {
        /// Path of the plugin library (.so / .dylib / .dll).
        path: PathBuf,
    },
}

fn init_logging(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if settings.log.format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut settings = Settings::load(cli.config.as_deref())?;
    match cli.command {
        Command::Plugin {
            command: PluginCommand::Check { path },
        } => {
            let report = tailor_server::plugins::check(&path)?;
            print!("{report}");
            Ok(())
        }
        Command::Export {
            campaign,
            out,
            data_dir,
            from_ms,
            to_ms,
        } => {
            if let Some(d) = data_dir {
                settings.storage.data_dir = d;
            }
            replay::export(&settings, &campaign, &out, from_ms, to_ms)
        }
        Command::Evaluate { file, opts, json } => replay::evaluate(&file, &opts, json),
        Command::Replay { file, opts, out } => replay::replay(&file, &opts, out.as_deref()),
        Command::Simulate(args) => simulate::run(&args, &settings),
        Command::Config => {
            println!("{}", toml_like(&settings)?);
            Ok(())
        }
        Command::Serve {
            bind,
            data_dir,
            plugin_dir,
            admin_key,
            cluster,
        } => {
            if let Some(c) = cluster {
                settings.cluster.servers = c.split(',').map(|s| s.trim().to_string()).collect();
            }
            if let Some(k) = admin_key {
                settings.auth.admin_key = Some(k);
            }
            if let Some(b) = bind {
                settings.server.bind = b;
            }
            if let Some(d) = data_dir {
                settings.storage.data_dir = d;
            }
            if let Some(d) = plugin_dir {
                settings.plugins.dir = Some(d);
            }
            settings.validate()?;
            init_logging(&settings);
            tracing::info!(?settings, "configuration loaded");
            serve(settings)
        }
    }
}

fn toml_like(settings: &Settings) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(settings)?)
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let running = tailor_server::start_async(&settings)
            .await
            .context("starting the server")?;
        tracing::info!(addr = %running.addr, data_dir = %settings.storage.data_dir.display(), "listening");
        let handle = running.server.handle();
        let server = tokio::spawn(running.server);
        shutdown_signal().await;
        tracing::info!("shutting down");
        handle.stop(true).await;
        let _ = server.await;
        running.engine.flush().await.context("final flush")?;
        tracing::info!("state flushed; bye");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
