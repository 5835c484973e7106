//! The `gremesh` binary.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use gremesh::cli::output::{summary, ProgressView};
use gremesh::cli::{Cli, Command, DeleteArgs, GraphArgs, HostAccess, OutputFormat, PassArgs};
use gremesh::controller::{LeaseSettings, Settings};
use gremesh::engine::{run_pass, PassOptions};
use gremesh::manifest::Inventory;
use gremesh::ssh::Timeouts;
use gremesh::validate::{Rejected, ValidationError};

/// Exit code when the spec is rejected or cannot be read.
const EXIT_REJECTED: u8 = 2;
/// Exit code when a host failed or an object is blocked.
const EXIT_NOT_CONVERGED: u8 = 1;

/// Writes to standard output; a reader that went away (`| head`) is not an error worth a panic.
fn out(text: &str) {
    let _ = std::io::stdout().write_all(text.as_bytes());
}

/// Writes a line to standard error, ignoring a closed pipe like [`out`].
fn err(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn init_tracing(cli: &Cli) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
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
            err(&format!("error: {e:#}"));
            ExitCode::from(EXIT_REJECTED)
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd => {
            out(&gremesh::crd::render());
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
        Command::Delete(args) => delete(args).await,
    }
}

/// The SSH time limits given on the command line.
fn timeouts(access: &HostAccess) -> Timeouts {
    Timeouts {
        connect: access.connect_timeout,
        command: access.command_timeout,
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
        if let Err(rejected) = check_files(&inventory, &opts) {
            err(&rejected.to_string());
            return Ok(ExitCode::from(EXIT_REJECTED));
        }
        match run_pass(&inventory, &opts, &|_, _| {}).await {
            Ok(report) => (inventory, report),
            Err(rejected) => {
                err(&rejected.to_string());
                return Ok(ExitCode::from(EXIT_REJECTED));
            }
        }
    };
    out(&gremesh::graph::render(&inventory, &report));
    Ok(ExitCode::SUCCESS)
}

async fn pass(args: PassArgs, apply: bool) -> anyhow::Result<ExitCode> {
    let inventory = Inventory::load(&args.files)?;
    let opts = PassOptions {
        apply,
        prune_attachments: args.prune,
        timeouts: timeouts(&args.access),
        identity_override: read_identity(args.access.identity.as_deref())?,
        // Hosts in no mesh too: a host taken out of a mesh gets that mesh's devices removed.
        extra_hosts: inventory.hosts.keys().cloned().collect(),
        ..PassOptions::default()
    };
    run_and_report(&inventory, &opts, args.output).await
}

async fn delete(args: DeleteArgs) -> anyhow::Result<ExitCode> {
    let mut inventory = Inventory::load(&args.files)?;
    if let Err(rejected) = validate_mesh_names(&args.meshes) {
        err(&rejected.to_string());
        return Ok(ExitCode::from(EXIT_REJECTED));
    }
    let meshes: BTreeSet<String> = std::mem::take(&mut inventory.meshes)
        .into_keys()
        .chain(args.meshes.iter().cloned())
        .collect();
    anyhow::ensure!(
        !meshes.is_empty(),
        "nothing to delete: the manifests hold no GreMesh and no --mesh was given"
    );
    inventory.attachments.clear();
    let opts = PassOptions {
        apply: !args.dry_run,
        prune_attachments: true,
        timeouts: timeouts(&args.access),
        identity_override: read_identity(args.access.identity.as_deref())?,
        scope: Some(meshes),
        extra_hosts: inventory.hosts.keys().cloned().collect(),
        ..PassOptions::default()
    };
    run_and_report(&inventory, &opts, args.output).await
}

/// What only a pass from files needs beyond the spec itself: every host's key among the
/// manifests, unless `--identity` gives one. Checked after the spec, so that an invalid
/// Secret reference is reported as such.
fn check_files(inventory: &Inventory, opts: &PassOptions) -> Result<(), Rejected> {
    gremesh::validate::validate(inventory)?;
    match opts.identity_override {
        Some(_) => Ok(()),
        None => gremesh::validate::check_secrets(inventory),
    }
}

/// `--mesh` names must be names a GreMesh can have.
fn validate_mesh_names(names: &[String]) -> Result<(), Rejected> {
    let pattern = regex::Regex::new(gremesh::api::NAME_PATTERN).expect("static pattern");
    let errors: Vec<ValidationError> = names
        .iter()
        .filter(|n| !pattern.is_match(n))
        .map(|n| ValidationError {
            kind: "GreMesh",
            name: format!("{n:?}"),
            field: "--mesh".to_owned(),
            reason: "is not a lowercase RFC 1123 name".to_owned(),
            conflicts_with: None,
        })
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Rejected(errors))
    }
}

/// Runs one pass of the CLI with progress, prints the summary and returns the exit code:
/// 0 when every host converged and nothing is blocked, 1 when a host failed or an object is
/// blocked, 2 when the spec is rejected (no host was contacted).
async fn run_and_report(
    inventory: &Inventory,
    opts: &PassOptions,
    output: OutputFormat,
) -> anyhow::Result<ExitCode> {
    if let Err(rejected) = check_files(inventory, opts) {
        err(&rejected.to_string());
        return Ok(ExitCode::from(EXIT_REJECTED));
    }
    let view = ProgressView::new(output == OutputFormat::Json);
    let report = match run_pass(inventory, opts, &|host, p| view.report(host, p)).await {
        Ok(report) => report,
        Err(rejected) => {
            err(&rejected.to_string());
            return Ok(ExitCode::from(EXIT_REJECTED));
        }
    };
    match output {
        OutputFormat::Json => out(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
        OutputFormat::Text => out(&summary(&report, !opts.apply)),
    }
    Ok(if report.failed() || report.blocked() {
        ExitCode::from(EXIT_NOT_CONVERGED)
    } else {
        ExitCode::SUCCESS
    })
}
