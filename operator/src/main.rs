//! The `gremesh` binary.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use gremesh::cli::output::{summary, ProgressView};
use gremesh::cli::{Cli, Command, GraphArgs, OutputFormat, PassArgs};
use gremesh::controller::{LeaseSettings, Settings};
use gremesh::engine::{run_pass, PassOptions};
use gremesh::manifest::Inventory;
use gremesh::ssh::Timeouts;

/// Exit code when the spec is rejected or cannot be read.
const EXIT_REJECTED: u8 = 2;
/// Exit code when at least one host failed.
const EXIT_HOST_FAILED: u8 = 1;

fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cli.log_json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(EXIT_REJECTED)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            std::io::stdout().write_all(gremesh::crd::render().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Operator(args) => {
            let identity = args.identity.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| format!("gremesh-{}", std::process::id()))
            });
            let settings = Settings {
                namespace: args.namespace.filter(|n| !n.is_empty()),
                resync: args.resync,
                timeouts: Timeouts {
                    connect: args.connect_timeout,
                    command: args.command_timeout,
                },
                listen: args.listen,
                docker_events: args.docker_events,
                lease: args.leader_election.then_some(LeaseSettings {
                    namespace: args.lease_namespace,
                    name: args.lease_name,
                    identity,
                    duration: args.lease_duration,
                }),
            };
            gremesh::controller::run(settings).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph(args) => graph(args).await,
        Command::Plan(args) => pass(args, false).await,
        Command::Apply(args) => pass(args, true).await,
    }
}

/// The private key given with `--identity`, if any (used for every host instead of Secrets).
fn read_identity(path: Option<&std::path::Path>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| {
        std::fs::read(p).with_context(|| format!("cannot read --identity {}", p.display()))
    })
    .transpose()
}

async fn graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let (inventory, report) = if args.cluster {
        let client = kube::Client::try_default().await?;
        let inventory =
            gremesh::controller::cluster::inventory(&client, &args.namespace, &Default::default())
                .await?;
        let report = gremesh::controller::cluster::report_from_status(&inventory);
        (inventory, report)
    } else {
        let inventory = Inventory::load(&args.files)?;
        let opts = PassOptions {
            apply: false,
            identity_override: read_identity(args.identity.as_deref())?,
            ..PassOptions::default()
        };
        match run_pass(&inventory, &opts, &|_, _| {}).await {
            Ok(report) => (inventory, report),
            Err(rejected) => {
                eprintln!("{rejected}");
                return Ok(ExitCode::from(EXIT_REJECTED));
            }
        }
    };
    print!("{}", gremesh::graph::render(&inventory, &report));
    Ok(ExitCode::SUCCESS)
}

async fn pass(args: PassArgs, apply: bool) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.files)?;
    let identity_override = read_identity(args.identity.as_deref())?;
    let opts = PassOptions {
        apply,
        prune_attachments: args.prune,
        timeouts: Timeouts {
            connect: args.connect_timeout,
            command: args.command_timeout,
        },
        identity_override,
        ..PassOptions::default()
    };
    let view = ProgressView::new(args.output == OutputFormat::Json);
    let report = match run_pass(&inventory, &opts, &|host, p| view.report(host, p)).await {
        Ok(report) => report,
        Err(rejected) => {
            eprintln!("{rejected}");
            return Ok(ExitCode::from(EXIT_REJECTED));
        }
    };
    match args.output {
        OutputFormat::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        OutputFormat::Text => print!("{}", summary(&report, !apply)),
    }
    Ok(if report.failed() {
        ExitCode::from(EXIT_HOST_FAILED)
    } else {
        ExitCode::SUCCESS
    })
}
