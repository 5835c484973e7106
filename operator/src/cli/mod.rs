//! Command-line front door: `gremesh plan`, `apply`, `delete`, `graph`, `crd`, `operator`.

pub mod output;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Layer-2 meshes of GRE/VXLAN tunnels between plain Docker hosts, converged over SSH.
#[derive(Debug, Parser)]
#[command(name = "gremesh", version, about)]
pub struct Cli {
    /// Log filter (tracing `EnvFilter` syntax), e.g. `info` or `gremesh=debug`.
    #[arg(long, global = true, env = "GREMESH_LOG", default_value = "warn")]
    pub log: String,
    /// Log as JSON lines.
    #[arg(long, global = true)]
    pub log_json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show, per host, the steps that would converge it; change nothing.
    Plan(PassArgs),
    /// Converge every host of the manifests once.
    ///
    /// Every DockerHost in the manifests is visited, also those in no mesh: devices of the
    /// given meshes on hosts that are no longer members are removed there.
    Apply(PassArgs),
    /// Remove meshes from the hosts: everything gremesh built for the GreMesh objects in the
    /// manifests (and for the meshes named with `--mesh`), on every DockerHost in the
    /// manifests. Containers keep running; only their mesh interfaces go.
    Delete(DeleteArgs),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
    /// Print the meshes as a Graphviz DOT graph (hosts, tunnels up/down, attached containers),
    /// from a read-only probe of the hosts in the manifests (`-f`), or from the cluster's
    /// status (`--cluster`). Render with `dot -Tsvg`.
    Graph(GraphArgs),
    /// Run the Kubernetes controller (uses the in-cluster config or $KUBECONFIG).
    Operator(OperatorArgs),
}

/// Arguments of `gremesh graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    /// Manifest files or folders; their hosts are probed read-only over SSH.
    #[arg(short = 'f', long = "filename", required_unless_present = "cluster")]
    pub files: Vec<PathBuf>,
    /// Private key file to use for every host instead of the referenced Secrets.
    #[arg(short = 'i', long)]
    pub identity: Option<PathBuf>,
    /// Read meshes and their status from the cluster ($KUBECONFIG) instead of probing hosts.
    #[arg(long, conflicts_with = "files")]
    pub cluster: bool,
    /// Namespace to read with `--cluster`.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
}

/// Arguments of `gremesh operator`.
#[derive(Debug, Args)]
pub struct OperatorArgs {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "GREMESH_NAMESPACE")]
    pub namespace: Option<String>,
    /// How often every mesh is re-observed to heal drift.
    #[arg(long, env = "GREMESH_RESYNC", value_parser = humantime::parse_duration, default_value = "60s")]
    pub resync: Duration,
    /// Address of the /metrics, /healthz and /readyz endpoints.
    #[arg(long, env = "GREMESH_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Elect a leader through a Lease so that only one replica reconciles.
    #[arg(long, env = "GREMESH_LEADER_ELECTION")]
    pub leader_election: bool,
    /// Namespace of the leader Lease.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "gremesh-operator")]
    pub lease_name: String,
    /// This replica's identity in the Lease (default: the pod name or host name).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Lease duration.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// Follow Docker's event stream on every host and re-attach containers as soon as they
    /// start (the resync stays the safety net). `--docker-events=false` turns it off.
    #[arg(long, env = "GREMESH_DOCKER_EVENTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub docker_events: bool,
    /// SSH connect timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Time limit for one remote script.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub command_timeout: Duration,
}

/// Arguments shared by `plan` and `apply`.
#[derive(Debug, Args)]
pub struct PassArgs {
    /// Manifest files or folders (multi-document YAML: DockerHost, GreMesh,
    /// ContainerAttachment, Secret).
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also remove attachments of the given meshes that the manifests no longer list.
    #[arg(long)]
    pub prune: bool,
    /// Output format of the summary.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How to reach the hosts.
    #[command(flatten)]
    pub access: HostAccess,
}

/// How a pass from files reaches the hosts: the key, and SSH time limits.
#[derive(Debug, Args)]
pub struct HostAccess {
    /// Private key file to use for every host instead of the referenced Secrets.
    #[arg(short = 'i', long)]
    pub identity: Option<PathBuf>,
    /// SSH connect timeout.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub connect_timeout: Duration,
    /// Time limit for one remote script (probe or apply).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub command_timeout: Duration,
}

/// Arguments of `gremesh delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Manifest files or folders: the DockerHosts to clean, and the GreMesh objects to remove.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Also remove this mesh (by name), whose manifest may be gone. Repeatable.
    #[arg(long = "mesh", value_name = "NAME")]
    pub meshes: Vec<String>,
    /// Show the steps that would remove them; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the summary.
    #[arg(short = 'o', long, value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
    /// How to reach the hosts.
    #[command(flatten)]
    pub access: HostAccess,
}

/// Summary formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// A table for people.
    Text,
    /// The full report as JSON.
    Json,
}
