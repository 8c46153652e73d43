//! The `gse_exporter` binary: parses the command line, sets up logging, and
//! dispatches to a mode. All behaviour lives in the library.

use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser};
use gse_exporter::cli::{Cli, Command, LogFormat, QueryArgs, SimulateArgs};
use gse_exporter::config::Config;
use gse_exporter::http::parse_listen_address;
use gse_exporter::run::{Exporter, ExporterOptions, SHUTDOWN_DEADLINE};
use gse_exporter::{demo, node, query};
use gse_sim as sim;

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

/// mimalloc's `mi_option_purge_delay` (the same in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Purges freed pages at once instead of 10 ms later: a cycle's buffers are
/// freed on the runtime's worker threads, whose heaps see no later allocation
/// until the next cycle, so a delayed purge never came and their pages stayed
/// resident between cycles (about 20 MiB at 100k agents). `MIMALLOC_PURGE_DELAY`
/// in the environment still wins.
fn purge_freed_pages_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's integer options; no pointers involved.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
    }
}

/// Raises the soft limit on open files to the hard one, as Go programs do
/// (node_exporter among them): systemd's soft default of 1,024 is below
/// `--web.max-connections` (512) plus a slow client's connections waiting to
/// be accepted plus the upstream connections, and at the limit every new
/// connection failed, scrapes too.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Help and the version as clap prints them; any other command-line error
/// with its quoted values cut short ([`gse_exporter::cli::bounded_error`]).
fn command_line_error(err: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        err.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        err.exit();
    }
    let text = gse_exporter::cli::bounded_error(&err.render().to_string());
    let _ = std::io::stderr().write_all(text.as_bytes());
    ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2))
}

fn main() -> ExitCode {
    purge_freed_pages_at_once();
    raise_open_files_limit();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => return command_line_error(&err),
    };
    init_logging(&cli);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&anyhow::Error::from(err)),
    };
    let code = match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(err) => fail(&err),
    };
    // A blocking read that never returns (a hung network file system) must
    // not hold the process after its tasks have ended.
    runtime.shutdown_timeout(Duration::from_millis(500));
    code
}

fn fail(err: &anyhow::Error) -> ExitCode {
    // A reader that stopped early (`| head`) is not an error.
    let broken_pipe = err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    });
    if broken_pipe {
        return ExitCode::SUCCESS;
    }
    eprintln!("gse_exporter: {}", said_once(err));
    ExitCode::from(2)
}

/// An error and its causes, each cause said once: most of the library's
/// errors already quote their cause, which `{:#}` then repeated ("config
/// file /x: cannot be read: No such file or directory (os error 2): cannot
/// be read: No such file or directory (os error 2): No such file or
/// directory (os error 2)").
fn said_once(err: &anyhow::Error) -> String {
    let mut text = err.to_string();
    for cause in err.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

async fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Simulate(args)) => {
            simulate(args).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Query(args)) => return run_query(&cli, args).await,
        Some(Command::Node(args)) => {
            let code = node::run(args, &mut std::io::stdout(), stop_signal()?).await?;
            return Ok(ExitCode::from(code));
        }
        Some(Command::Completions { shell }) => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "gse_exporter", &mut script);
            std::io::stdout().write_all(&script)?;
            return Ok(ExitCode::SUCCESS);
        }
        Some(Command::Man { subcommand, dir }) => {
            return man_pages(subcommand.as_deref(), dir.as_deref());
        }
        None => {}
    }
    if cli.config_check {
        return Ok(check_config(&cli));
    }
    let options = ExporterOptions {
        listen: parse_listen_address(&cli.listen_address).map_err(anyhow::Error::msg)?,
        telemetry_path: cli.telemetry_path.clone(),
        config_file: cli.config_file.clone(),
        sharding: gse_exporter::cli::sharding(&cli, gse_exporter::run::hostname)
            .map_err(anyhow::Error::msg)?,
        web_config_file: cli.web_config_file.clone(),
        limits: gse_exporter::cli::limits(&cli),
        after_publish: Some(release_memory),
        reload_on_sighup: true,
    };
    if cli.demo {
        let stop = stop_signal()?;
        return run_demo(&cli, options, stop).await;
    }
    let path = cli.config_file.as_deref().context(
        "no configuration: pass --config.file=PATH, or --demo to try the built-in simulator",
    )?;
    let config = Config::load(path)?;
    let stop = stop_signal()?;
    serve(config, options, stop).await
}

async fn serve(
    config: Config,
    options: ExporterOptions,
    stop: impl Future<Output = ()>,
) -> Result<ExitCode> {
    let groups = config.groups.len();
    let exporter = Exporter::start(config, options).await?;
    tracing::info!(groups, "polling GSE");
    supervise(exporter, stop).await
}

/// Runs the exporter until SIGTERM or SIGINT (status 0), or until one of its
/// tasks ends on its own (status 1: the error is logged, naming the task).
async fn supervise(exporter: Exporter, stop: impl Future<Output = ()>) -> Result<ExitCode> {
    let stop = async move {
        stop.await;
        tracing::info!("shutting down");
    };
    match exporter.run_until(stop).await {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(_) => Ok(ExitCode::FAILURE),
    }
}

async fn run_demo(
    cli: &Cli,
    options: ExporterOptions,
    stop: impl Future<Output = ()>,
) -> Result<ExitCode> {
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
    let code = supervise(exporter, stop).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), demo.sim.shutdown()).await;
    code
}

fn check_config(cli: &Cli) -> ExitCode {
    let Some(path) = cli.config_file.as_deref() else {
        return ExitCode::from(2);
    };
    let web_ok = cli.web_config_file.as_deref().is_none_or(check_web_config);
    let config_ok = check_exporter_config(path);
    if web_ok && config_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn check_web_config(path: &std::path::Path) -> bool {
    match gse_exporter::config::web::WebAccess::load(path) {
        Ok(_) => {
            println!("{}: OK", path.display());
            true
        }
        Err(err) => {
            for problem in err.problems() {
                println!("{}: {problem}", path.display());
            }
            false
        }
    }
}

fn check_exporter_config(path: &std::path::Path) -> bool {
    match Config::load(path) {
        Ok(config) => {
            let count = config.count_hosts();
            let cmdb = match count.from_cmdb {
                0 => String::new(),
                1 => "; 1 group lists its hosts from CMDB at run time".into(),
                n => format!("; {n} groups list their hosts from CMDB at run time"),
            };
            println!(
                "{}: OK ({} groups, {} hosts{cmdb})",
                path.display(),
                config.groups.len(),
                count.listed
            );
            true
        }
        Err(err) => {
            for problem in err.problems() {
                println!("{}: {problem}", path.display());
            }
            false
        }
    }
}

async fn run_query(cli: &Cli, args: &QueryArgs) -> Result<ExitCode> {
    let path = (args.config_file.as_deref())
        .or(cli.config_file.as_deref())
        .context("query needs a configuration: pass --config.file=PATH")?;
    let config = Config::load(path)?;
    let code = query::run(
        config,
        &args.selection(),
        args.output,
        &args.filter,
        std::io::stderr().is_terminal(),
        &mut std::io::stdout().lock(),
        &mut std::io::stderr(),
    )
    .await?;
    Ok(ExitCode::from(code))
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
        report_period: args.report_period,
        ..sim::SimOptions::default()
    };
    let running = sim::start(options, addr)
        .await
        .context("starting the GSE simulator")?;
    if let Some(path) = &args.hosts_out {
        let keys: Vec<String> = running.truth().iter().map(|a| a.v2_id()).collect();
        gse_exporter::outfile::replace(path, (keys.join("\n") + "\n").as_bytes(), 0o644)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "gse simulator: v1 {} v2 {}",
        running.v1_url(),
        running.v2_url()
    );
    stop_signal()?.await;
    let _ = tokio::time::timeout(SHUTDOWN_DEADLINE, running.shutdown()).await;
    Ok(())
}

/// `man`: one page to stdout, or every page into a directory.
fn man_pages(subcommand: Option<&str>, dir: Option<&std::path::Path>) -> Result<ExitCode> {
    let mut root = Cli::command();
    root.build();
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut pages = vec![("gse_exporter".to_string(), root.clone())];
        for sub in root.get_subcommands().filter(|c| c.get_name() != "help") {
            pages.push((format!("gse_exporter-{}", sub.get_name()), sub.clone()));
        }
        for (title, command) in pages {
            let path = dir.join(format!("{title}.1"));
            let mut page = Vec::new();
            clap_mangen::Man::new(command)
                .title(title)
                .render(&mut page)?;
            gse_exporter::outfile::replace(&path, &page, 0o644)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let page = match subcommand {
        None => clap_mangen::Man::new(root),
        Some(name) => {
            let Some(sub) = root.find_subcommand(name) else {
                let names: Vec<&str> = root.get_subcommands().map(|c| c.get_name()).collect();
                eprintln!(
                    "gse_exporter man: no subcommand {name:?} (one of: {})",
                    names.join(", ")
                );
                return Ok(ExitCode::from(2));
            };
            clap_mangen::Man::new(sub.clone()).title(format!("gse_exporter-{name}"))
        }
    };
    page.render(&mut std::io::stdout())?;
    Ok(ExitCode::SUCCESS)
}

/// Resolves on the first SIGTERM or SIGINT (listening starts at the call).
fn stop_signal() -> Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
}

fn init_logging(cli: &Cli) {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::new(cli.log_level.filter());
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
