//! `csi-snapshotter diagnose`: names, for every VolumeSnapshot,
//! VolumeSnapshotContent, VolumeGroupSnapshot and VolumeGroupSnapshotContent
//! in scope that is not ready or not going away, one cause with its evidence
//! and fix.
//!
//! It only reads (get and list; secrets as metadata only) and decides with
//! the sidecar's own decision code through [`decide`]. Exit status: 0 when
//! nothing is stuck, 1 when something is, 2 on a usage or connection error.
//! The causes are documented in `docs/troubleshooting.md`.

pub mod cause;
mod connect;
pub mod decide;
pub mod objects;
pub mod observe;
pub mod render;
pub mod verdict;

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::values::{GoDuration, parse_go_duration};
use cause::Kind;
use observe::Namespaces;
use verdict::{Context, Scope};

/// Exit status when nothing is stuck.
pub const EXIT_HEALTHY: i32 = 0;
/// Exit status when at least one object is stuck.
pub const EXIT_STUCK: i32 = 1;
/// Exit status of a usage or connection error.
pub const EXIT_ERROR: i32 = 2;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Grouped by cause, for people.
    Text,
    /// `{"items": [...], "summary": {...}}`, for scripts.
    Json,
}

/// The command line of `diagnose`.
#[derive(Debug, Parser)]
#[command(
    name = "csi-snapshotter diagnose",
    about = "Explain every VolumeSnapshot, VolumeSnapshotContent, VolumeGroupSnapshot and VolumeGroupSnapshotContent that is not ready or not going away: one cause each, with evidence and fix. Read-only. Exit 0: nothing stuck, 1: something stuck, 2: usage or connection error."
)]
pub struct DiagnoseArgs {
    /// One object, as KIND/NAME (vs, vsc, vgs, vgsc or the full kind)
    #[arg(value_name = "KIND/NAME")]
    pub object: Option<String>,
    /// Namespace of the snapshots (contents: those bound into it); default: the context's
    #[arg(short = 'n', long = "namespace", value_name = "NS")]
    pub namespace: Option<String>,
    /// Every namespace
    #[arg(short = 'A', long = "all-namespaces", conflicts_with = "namespace")]
    pub all_namespaces: bool,
    /// Only objects of this CSI driver
    #[arg(long = "driver", value_name = "NAME")]
    pub driver: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)
    #[arg(long = "kubeconfig", value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use
    #[arg(long = "context", value_name = "NAME")]
    pub context: Option<String>,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value = "text")]
    pub output: Output,
    /// How long an object may wait for the controllers before a missing reaction counts as stuck (Go duration)
    #[arg(long = "grace", value_name = "DURATION", default_value = "1m", value_parser = parse_go_duration)]
    pub grace: GoDuration,
}

/// Why the command could not give an answer (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DiagnoseError {
    /// Bad arguments.
    #[error("{0}")]
    Usage(String),
    /// No client.
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    /// A required list failed.
    #[error(transparent)]
    Observe(#[from] observe::ObserveError),
    /// The one object asked for is not there.
    #[error("{0} not found")]
    NotFound(String),
}

/// Entry point of `csi-snapshotter diagnose ARGS…`; returns the exit status.
pub fn cli_main(args: Vec<String>) -> i32 {
    let parsed = DiagnoseArgs::try_parse_from(
        std::iter::once("csi-snapshotter diagnose".to_owned()).chain(args),
    );
    let args = match parsed {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() {
                EXIT_ERROR
            } else {
                EXIT_HEALTHY
            };
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start the async runtime: {e}");
            return EXIT_ERROR;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(out) => {
            print!("{}", out.text);
            out.exit_code
        }
        Err(e) => {
            eprintln!("error: {e}");
            EXIT_ERROR
        }
    }
}

/// What a run prints and its exit status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// Standard output.
    pub text: String,
    /// Exit status.
    pub exit_code: i32,
    /// The findings behind the text.
    pub findings: Vec<cause::Finding>,
}

/// Connects, reads, decides and renders.
pub async fn run(args: &DiagnoseArgs) -> Result<RunOutput, DiagnoseError> {
    let object = args.object.as_deref().map(parse_object).transpose()?;
    let grace = args
        .grace
        .to_std()
        .ok_or_else(|| DiagnoseError::Usage("--grace must not be negative".into()))?;
    let (client, context_ns) =
        connect::connect(args.kubeconfig.as_deref(), args.context.as_deref()).await?;
    let cluster_scoped_object = object.as_ref().is_some_and(|(k, _)| {
        matches!(
            k,
            Kind::VolumeSnapshotContent | Kind::VolumeGroupSnapshotContent
        )
    });
    let namespace = if args.all_namespaces || (cluster_scoped_object && args.namespace.is_none()) {
        None
    } else {
        Some(args.namespace.clone().unwrap_or(context_ns))
    };
    let read_ns = namespace.clone().map_or(Namespaces::All, Namespaces::One);
    let mut cluster = observe::read_cluster(&client, &read_ns).await?;
    cluster.secrets = observe::read_secrets(&client, verdict::wanted_secrets(&cluster)).await;
    let scope = Scope {
        namespace,
        driver: args.driver.clone(),
        object,
    };
    if let Some((kind, name)) = &scope.object
        && !exists(&cluster, &scope, *kind, name)
    {
        return Err(DiagnoseError::NotFound(format!("{}/{name}", kind.as_str())));
    }
    let ctx = Context {
        cluster: &cluster,
        now: jiff::Timestamp::now(),
        grace: i64::try_from(grace.as_secs()).unwrap_or(i64::MAX),
    };
    let findings = verdict::diagnose(ctx, &scope);
    let mut text = String::new();
    if args.output == Output::Text {
        for note in &cluster.notes {
            eprintln!("warning: {note}");
        }
    }
    text.push_str(&match args.output {
        Output::Text => render::text(&findings),
        Output::Json => render::json(&findings) + "\n",
    });
    let exit_code = if findings.is_empty() {
        EXIT_HEALTHY
    } else {
        EXIT_STUCK
    };
    Ok(RunOutput {
        text,
        exit_code,
        findings,
    })
}

/// `KIND/NAME` → the kind and the name.
fn parse_object(s: &str) -> Result<(Kind, String), DiagnoseError> {
    let (kind, name) = s.split_once('/').ok_or_else(|| {
        DiagnoseError::Usage(format!("{s}: expected KIND/NAME, e.g. vs/my-snapshot"))
    })?;
    let kind = Kind::parse(kind).ok_or_else(|| {
        DiagnoseError::Usage(format!(
            "{kind}: not a snapshot kind (vs, vsc, vgs, vgsc or the full kind name)"
        ))
    })?;
    if name.is_empty() {
        return Err(DiagnoseError::Usage(format!("{s}: empty name")));
    }
    Ok((kind, name.to_owned()))
}

fn exists(c: &observe::Cluster, scope: &Scope, kind: Kind, name: &str) -> bool {
    let ns_ok = |ns: Option<&str>| scope.namespace.is_none() || scope.namespace.as_deref() == ns;
    match kind {
        Kind::VolumeSnapshot => c.snapshots.iter().any(|x| {
            x.metadata.name.as_deref() == Some(name) && ns_ok(x.metadata.namespace.as_deref())
        }),
        Kind::VolumeGroupSnapshot => c.group_snapshots.iter().any(|x| {
            x.metadata.name.as_deref() == Some(name) && ns_ok(x.metadata.namespace.as_deref())
        }),
        Kind::VolumeSnapshotContent => c.contents.iter().any(|x| x.name() == name),
        Kind::VolumeGroupSnapshotContent => c.group_contents.iter().any(|x| x.name() == name),
    }
}
