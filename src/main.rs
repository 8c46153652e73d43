//! The `gse_exporter` binary: parses the command line, sets up logging, and
//! dispatches to a mode. All behaviour lives in the library.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use gse_exporter::app::{Exporter, ExporterOptions};
use gse_exporter::cli::{Cli, Command, LogFormat, SimulateArgs};
use gse_exporter::config::Config;
use gse_exporter::server::parse_listen_address;
use gse_exporter::{demo, sim};

/// mimalloc returns freed memory to the system far better than glibc's
/// per-thread arenas do with the large per-cycle buffers this exporter makes
/// (built without transparent huge pages, which multiplied the resident size
/// of small heaps and made every fresh page cost a 2 MiB clear).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands the memory freed by a cycle back to the system at once: mimalloc
/// purges lazily, on a later allocation, and between cycles there is none.
fn release_memory() {
    // SAFETY: mi_collect only walks mimalloc's own heaps; it takes no pointers.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::from(err)),
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => fail(&err),
    }
}

fn fail(err: &anyhow::Error) -> ExitCode {
    eprintln!("gse_exporter: {err:#}");
    ExitCode::from(2)
}

async fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(Command::Simulate(args)) = &cli.command {
        simulate(args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if cli.config_check {
        return Ok(check_config(&cli));
    }
    let options = ExporterOptions {
        listen: parse_listen_address(&cli.listen_address).map_err(anyhow::Error::msg)?,
        telemetry_path: cli.telemetry_path.clone(),
        config_file: cli.config_file.clone(),
        sharding: gse_exporter::cli::sharding(&cli, hostname).map_err(anyhow::Error::msg)?,
        after_publish: Some(release_memory),
    };
    if cli.demo {
        return run_demo(&cli, options).await;
    }
    let path = cli.config_file.as_deref().context(
        "no configuration: pass --config.file=PATH, or --demo to try the built-in simulator",
    )?;
    let config = Config::load(path)?;
    serve(config, options).await
}

async fn serve(config: Config, options: ExporterOptions) -> Result<ExitCode> {
    let groups = config.groups.len();
    let exporter = Exporter::start(config, options).await?;
    tracing::info!(groups, "polling GSE");
    let reloader = exporter.reloader();
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let reloader = reloader.clone();
            let _ = tokio::task::spawn_blocking(move || reloader.reload()).await;
        }
    });
    stop_signal().await?;
    tracing::info!("shutting down");
    exporter.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn run_demo(cli: &Cli, options: ExporterOptions) -> Result<ExitCode> {
    let demo_options = demo::DemoOptions {
        agents: cli.demo_agents,
        interval: Duration::from_secs(10),
    };
    let demo = demo::start(&demo_options)
        .await
        .context("starting the GSE simulator")?;
    tracing::info!(simulator = %demo.sim.addr(), agents = cli.demo_agents, "demo: polling the built-in GSE simulator");
    let exporter = Exporter::start(demo.config, options).await?;
    println!(
        "gse_exporter demo: metrics at http://{}{} (simulator at http://{})",
        exporter.addr(),
        cli.telemetry_path,
        demo.sim.addr()
    );
    stop_signal().await?;
    exporter.shutdown().await;
    demo.sim.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

fn check_config(cli: &Cli) -> ExitCode {
    let Some(path) = cli.config_file.as_deref() else {
        return ExitCode::from(2);
    };
    match Config::load(path) {
        Ok(config) => {
            let hosts: usize = config.groups.iter().map(|g| g.hosts.len()).sum();
            println!(
                "{}: OK ({} groups, {hosts} hosts)",
                path.display(),
                config.groups.len()
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            for problem in err.problems() {
                println!("{}: {problem}", path.display());
            }
            ExitCode::from(1)
        }
    }
}

async fn simulate(args: &SimulateArgs) -> Result<()> {
    let addr: SocketAddr =
        parse_listen_address(&args.listen_address).map_err(anyhow::Error::msg)?;
    let options = sim::SimOptions {
        seed: args.seed,
        agents: args.agents,
        online_share: args.online_share,
        unknown_share: args.unknown_share,
        churn_per_minute: args.churn_per_minute,
        app_code: args.app_code.clone(),
        app_secret: args.app_secret.clone(),
        latency: args.latency,
        ..sim::SimOptions::default()
    };
    let running = sim::start(options, addr)
        .await
        .context("starting the GSE simulator")?;
    if let Some(path) = &args.hosts_out {
        let keys: Vec<String> = running.truth().iter().map(|a| a.v2_id()).collect();
        std::fs::write(path, keys.join("\n") + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "gse simulator: v1 {} v2 {}",
        running.v1_url(),
        running.v2_url()
    );
    stop_signal().await?;
    running.shutdown().await;
    Ok(())
}

async fn stop_signal() -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn hostname() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::new(format!(
        "{},hyper=warn,reqwest=warn",
        cli.log_level.directive()
    ));
    let registry = tracing_subscriber::registry().with(filter);
    match cli.log_format {
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init(),
        LogFormat::Logfmt => registry
            .with(
                tracing_logfmt::builder()
                    .layer()
                    .with_writer(std::io::stderr),
            )
            .init(),
    }
}
