//! `csi-snapshotter demo`: the real sidecar, in one process, against the
//! embedded API server and the mock CSI driver, with the demo playing the
//! snapshot-controller's part. It creates classes, dynamic and
//! pre-provisioned VolumeSnapshotContents, an invalid one and a group
//! snapshot of two volumes, shows what the sidecar writes (status, events),
//! deletes everything, checks what the driver kept, and prints a summary.
//!
//! The narrative goes to stdout; the sidecar's logs go to stderr (errors
//! only unless `--v` is given).

mod objects;
mod report;
mod stack;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

use crate::config::values::{GoDuration, parse_go_duration};
use crate::csi::proto::v1 as pb;
use crate::k8s::keys;
use crate::k8s::types::{
    VolumeGroupSnapshotContent, VolumeSnapshotClass, VolumeSnapshotContent, VolumeSnapshotInfo,
};
use crate::testing::groups::{self, GroupDriveError, GroupRequest};

use objects::SnapshotRef;
use stack::{Stack, StackError};

/// Snapshots and groups report `readyToUse=false` for this many polls, so
/// the narrative shows the sidecar polling.
const READY_AFTER_POLLS: u32 = 2;
/// How often the demo reads the objects it waits for.
const POLL: Duration = Duration::from_millis(50);
/// Volumes of the group snapshot.
const GROUP_VOLUMES: [&str; 2] = ["vol-db-data", "vol-db-log"];

/// Command line of `csi-snapshotter demo`.
#[derive(Debug, Parser)]
#[command(
    name = "csi-snapshotter demo",
    about = "Run the sidecar against an embedded API server and a mock CSI driver and show what it does"
)]
struct Args {
    /// Sidecar log verbosity on stderr (0-1 INFO, 2-4 DEBUG, 5+ TRACE);
    /// without it only errors are logged.
    #[arg(long = "v", value_name = "N")]
    verbosity: Option<u32>,
    /// Directory of the snapshot CRD YAML files: the API server checks every
    /// object against their schemas instead of its built-in ones.
    #[arg(long, value_name = "DIR")]
    crd_schemas: Option<PathBuf>,
    /// Give up (exit 1) when the objects have not converged by then.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_go_duration)]
    timeout: GoDuration,
}

/// Why the demo failed.
#[derive(Debug, thiserror::Error)]
enum DemoError {
    /// Starting the API server, the mock driver or the sidecar failed.
    #[error(transparent)]
    Stack(#[from] StackError),
    /// A request of the demo (playing the snapshot-controller) failed.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// Driving the group snapshot failed.
    #[error(transparent)]
    Group(#[from] GroupDriveError),
    /// Something did not converge in time.
    #[error("timed out after {0:?} waiting for {1}")]
    Timeout(Duration, String),
    /// The sidecar stopped on its own.
    #[error("the sidecar exited with status {0} while the demo was running")]
    SidecarExited(i32),
    /// The outcome differs from what the sidecar should have done.
    #[error("unexpected outcome: {0}")]
    Check(String),
}

/// Runs the command; `args` are the arguments after `demo`. Returns the
/// process exit status.
pub fn cli_main(args: Vec<String>) -> i32 {
    let argv = std::iter::once("csi-snapshotter demo".to_string()).chain(args);
    let args = match Args::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    if let Err(e) = stack::init_logging(args.verbosity) {
        eprintln!("demo: {e}");
        return 1;
    }
    let runtime = match crate::run::build_runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start the async runtime: {e}");
            return 1;
        }
    };
    runtime.block_on(async {
        match run(args).await {
            Ok(()) => {
                println!("demo: OK");
                0
            }
            Err(e) => {
                println!("demo: FAILED: {e}");
                eprintln!("demo: FAILED: {e}");
                1
            }
        }
    })
}

/// One object the timeline follows.
struct Followed {
    label: String,
    name: String,
    kind: FollowKind,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FollowKind {
    /// A content that must become ready.
    Ready,
    /// A content that must get an error status.
    Error,
    /// The group content.
    Group,
}

/// Label of the content whose class is invalid.
const INVALID: &str = "invalid-class";

/// The name of the content labelled [`INVALID`].
fn invalid_name(contents: &[Content]) -> &str {
    contents
        .iter()
        .find(|c| c.label == INVALID)
        .map_or("", |c| c.name.as_str())
}

/// A VolumeSnapshotContent of the demo, with what its deletion must do to
/// the backend snapshot.
struct Content {
    label: &'static str,
    name: String,
    policy: &'static str,
}

async fn run(args: Args) -> Result<(), DemoError> {
    let timeout = args.timeout.to_std().unwrap_or(Duration::from_secs(60));
    let deadline = Instant::now() + timeout;
    let mut stack = Stack::start(args.crd_schemas.as_deref(), args.verbosity).await?;
    let result = scenario(&mut stack, deadline, timeout).await;
    let stopped = stack.stop().await;
    result?;
    let status = stopped?;
    summary(&stack, status);
    match stack.api.forbidden_count() {
        0 => Ok(()),
        n => Err(DemoError::Check(format!(
            "the sidecar made {n} requests that deploy/kubernetes/rbac.yaml does not allow"
        ))),
    }
}

async fn scenario(
    stack: &mut Stack,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DemoError> {
    let driver = stack.driver_name.clone();
    let client = stack.client.clone();

    println!("\nThe snapshot-controller's part (played by the demo):");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), objects::NAMESPACE);
    secrets
        .create(&PostParams::default(), &objects::secret())
        .await?;
    println!(
        "  Secret {}/{} (keys: {})",
        objects::NAMESPACE,
        objects::SECRET_NAME,
        objects::SECRET_KEYS.join(", ")
    );
    let classes: Api<VolumeSnapshotClass> = Api::all(client.clone());
    for class in [objects::class(&driver), objects::bad_class(&driver)] {
        let created = classes.create(&PostParams::default(), &class).await?;
        let params: Vec<String> = created
            .parameters
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "  VolumeSnapshotClass {} (parameters: {})",
            created.metadata.name.unwrap_or_default(),
            params.join(", ")
        );
    }

    let pre_handle = stack.pre_created.clone();
    let contents_api: Api<VolumeSnapshotContent> = Api::all(client.clone());
    let dyn_delete = SnapshotRef::new("db-backup-daily");
    let dyn_retain = SnapshotRef::new("db-backup-keep");
    let pre = SnapshotRef::new("imported-snapshot");
    let bad = SnapshotRef::new("misconfigured-backup");
    let specs = [
        (
            "dynamic-delete",
            "dynamic, volume vol-1, Delete",
            objects::dynamic_content(
                &driver,
                &dyn_delete,
                objects::CLASS,
                "vol-1",
                keys::DELETION_POLICY_DELETE,
                true,
            ),
            keys::DELETION_POLICY_DELETE,
            FollowKind::Ready,
        ),
        (
            "dynamic-retain",
            "dynamic, volume vol-2, Retain",
            objects::dynamic_content(
                &driver,
                &dyn_retain,
                objects::CLASS,
                "vol-2",
                keys::DELETION_POLICY_RETAIN,
                true,
            ),
            keys::DELETION_POLICY_RETAIN,
            FollowKind::Ready,
        ),
        (
            "pre-provisioned",
            "pre-provisioned, existing backend snapshot, Delete",
            objects::preprovisioned_content(
                &driver,
                "imported-content",
                &pre,
                &pre_handle,
                keys::DELETION_POLICY_DELETE,
            ),
            keys::DELETION_POLICY_DELETE,
            FollowKind::Ready,
        ),
        (
            INVALID,
            "dynamic, volume vol-3, class with an unknown reserved key",
            objects::dynamic_content(
                &driver,
                &bad,
                objects::BAD_CLASS,
                "vol-3",
                keys::DELETION_POLICY_DELETE,
                false,
            ),
            keys::DELETION_POLICY_DELETE,
            FollowKind::Error,
        ),
    ];
    let mut contents = Vec::new();
    let mut followed = Vec::new();
    for (label, what, object, policy, kind) in specs {
        let created = contents_api.create(&PostParams::default(), &object).await?;
        let name = created.name().to_string();
        println!("  VolumeSnapshotContent {name}\n      [{label}] {what}");
        contents.push(Content {
            label,
            name: name.clone(),
            policy,
        });
        followed.push(Followed {
            label: label.to_string(),
            name,
            kind,
        });
    }

    let mut group = GroupRequest::new(&driver, "db-consistent", GROUP_VOLUMES);
    group.class = "demo-groupsnapclass".to_string();
    groups::request_group(&client, &group).await?;
    println!(
        "  VolumeGroupSnapshotClass {}\n  VolumeGroupSnapshotContent {}\n      [group] dynamic, volumes {}, Delete",
        group.class,
        group.content_name(),
        GROUP_VOLUMES.join(" + ")
    );
    followed.push(Followed {
        label: "group".to_string(),
        name: group.content_name(),
        kind: FollowKind::Group,
    });

    println!(
        "\nWhat the sidecar writes (the driver answers readyToUse=false for {READY_AFTER_POLLS} polls):"
    );
    timeline(stack, &followed, deadline, timeout).await?;

    println!("\nReady:");
    for c in contents.iter().filter(|c| c.label != INVALID) {
        let obj = contents_api.get(&c.name).await?;
        let status = obj.status.unwrap_or_default();
        println!(
            "  [{}] handle={}\n      restoreSize={} creationTime={}",
            c.label,
            status.snapshot_handle.as_deref().unwrap_or("-"),
            status
                .restore_size
                .map(report::size)
                .unwrap_or_else(|| "-".into()),
            status
                .creation_time
                .map(report::nanos_time)
                .unwrap_or_else(|| "-".into()),
        );
    }
    let group_api: Api<VolumeGroupSnapshotContent> = Api::all(client.clone());
    let group_obj = group_api.get(&group.content_name()).await?;
    let group_status = group_obj.status.clone().unwrap_or_default();
    let group_handle = group_status
        .volume_group_snapshot_handle
        .clone()
        .unwrap_or_default();
    println!(
        "  [group] groupHandle={group_handle}\n      creationTime={}",
        group_status
            .creation_time
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_else(|| "-".into())
    );
    let infos = group_status.volume_snapshot_info_list.unwrap_or_default();
    println!(
        "      members (the group's list is written once, so member readiness stays as first reported):"
    );
    for info in &infos {
        println!(
            "        {} -> handle={} restoreSize={} readyToUse={}",
            info.volume_handle.as_deref().unwrap_or("-"),
            info.snapshot_handle.as_deref().unwrap_or("-"),
            info.restore_size
                .map(report::size)
                .unwrap_or_else(|| "-".into()),
            info.ready_to_use.unwrap_or(false)
        );
    }

    let bad_content = contents_api.get(invalid_name(&contents)).await?;
    println!(
        "\nThe invalid class ([invalid-class]):\n  readyToUse={} error: {}",
        bad_content
            .status
            .as_ref()
            .and_then(|s| s.ready_to_use)
            .unwrap_or(false),
        bad_content
            .status
            .as_ref()
            .and_then(|s| s.error.as_ref())
            .and_then(|e| e.message.as_deref())
            .unwrap_or("-")
    );
    driver_view(stack);

    let members = create_members(stack, &group, &group_handle, &infos).await?;
    println!("\nThe sidecar polls the member contents with ListSnapshots until ready:");
    timeline(stack, &members, deadline, timeout).await?;

    events(stack, &contents, &group, &members, deadline, timeout).await?;

    println!(
        "\nDeletion (being-deleted annotation, then DELETE, as the snapshot-controller does):"
    );
    delete_contents(stack, &contents, &members, deadline, timeout).await?;
    let before = stack.mock.group_snapshots();
    let remaining = deadline.saturating_duration_since(Instant::now());
    groups::delete_group(&client, &group.content_name(), remaining).await?;
    let group_gone = !stack
        .mock
        .group_snapshots()
        .iter()
        .any(|g| g.group_snapshot_id == group_handle);
    let members_gone = infos.iter().all(|i| {
        i.snapshot_handle
            .as_deref()
            .is_none_or(|h| stack.mock.snapshot(h).is_none())
    });
    if before.is_empty() || !group_gone || !members_gone {
        return Err(DemoError::Check(format!(
            "the backend group {group_handle} or its member snapshots survived the Delete policy"
        )));
    }
    println!(
        "  [group] gone; backend group {group_handle} deleted with its {} member snapshots",
        infos.len()
    );
    Ok(())
}

/// Prints every change of the followed objects until each reached its goal.
async fn timeline(
    stack: &mut Stack,
    followed: &[Followed],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DemoError> {
    let contents: Api<VolumeSnapshotContent> = Api::all(stack.client.clone());
    let groups_api: Api<VolumeGroupSnapshotContent> = Api::all(stack.client.clone());
    let mut last: BTreeMap<&str, String> = BTreeMap::new();
    loop {
        let mut done = true;
        for f in followed {
            let (state, reached) = if f.kind == FollowKind::Group {
                let c = groups_api.get_opt(&f.name).await?;
                let reached = c.as_ref().is_some_and(groups::is_ready_with_members);
                (report::group_state(c.as_ref()), reached)
            } else {
                let c = contents.get_opt(&f.name).await?;
                let reached = c.as_ref().is_some_and(|c| match f.kind {
                    FollowKind::Error => c.status.as_ref().is_some_and(|s| s.error.is_some()),
                    _ => c.is_ready() && c.annotation(keys::ANN_VS_BEING_CREATED).is_none(),
                });
                (report::content_state(c.as_ref()), reached)
            };
            done &= reached;
            if last.get(f.label.as_str()) != Some(&state) {
                println!(
                    "  {:>6.2}s  [{}] {state}",
                    stack.elapsed().as_secs_f64(),
                    f.label
                );
                last.insert(f.label.as_str(), state);
            }
        }
        if done {
            return Ok(());
        }
        stack.check_running().await?;
        if Instant::now() >= deadline {
            let waiting: Vec<&str> = followed.iter().map(|f| f.label.as_str()).collect();
            return Err(DemoError::Timeout(
                timeout,
                format!("the contents to converge ({})", waiting.join(", ")),
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// What the driver saw: the parameters and secrets of the last
/// CreateSnapshot (reserved keys stripped, secret values never shown).
fn driver_view(stack: &Stack) {
    let Some(req) = stack
        .mock
        .last_request::<pb::CreateSnapshotRequest>("CreateSnapshot")
    else {
        return;
    };
    let params: BTreeMap<_, _> = req.parameters.iter().collect();
    let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut secret_keys: Vec<String> = stack
        .mock
        .last_secrets("CreateSnapshot")
        .unwrap_or_default()
        .into_keys()
        .collect();
    secret_keys.sort();
    println!(
        "\nWhat the driver received in CreateSnapshot:\n  name={} parameters: {} (reserved csi.storage.k8s.io/ keys stripped)\n  secrets from {}/{}: keys {} (values not shown)",
        req.name,
        params.join(", "),
        objects::NAMESPACE,
        objects::SECRET_NAME,
        secret_keys.join(", ")
    );
}

/// Creates the group's member contents as the snapshot-controller does
/// (D.7): readiness as the group's list reports it, which the sidecar
/// never refreshes (D.6), so the sidecar polls the members itself.
async fn create_members(
    stack: &Stack,
    group: &GroupRequest,
    group_handle: &str,
    infos: &[VolumeSnapshotInfo],
) -> Result<Vec<Followed>, DemoError> {
    let api: Api<VolumeSnapshotContent> = Api::all(stack.client.clone());
    println!(
        "\nMember contents of the group (created by the snapshot-controller, status copied from the group):"
    );
    let mut names = Vec::new();
    for info in infos {
        let (object, status) = objects::member_content(
            &group.driver,
            &group.uid,
            group_handle,
            &group.deletion_policy,
            info,
        );
        let created = api.create(&PostParams::default(), &object).await?;
        let name = created.name().to_string();
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": status })),
        )
        .await?;
        let volume = info.volume_handle.as_deref().unwrap_or("-");
        println!(
            "  VolumeSnapshotContent {name}\n      [member {volume}] handle={} readyToUse={}",
            info.snapshot_handle.as_deref().unwrap_or("-"),
            info.ready_to_use.unwrap_or(false)
        );
        names.push(Followed {
            label: format!("member {volume}"),
            name,
            kind: FollowKind::Ready,
        });
    }
    Ok(names)
}

/// Waits for the Warning event of the invalid content, then prints every
/// event about the demo's objects.
async fn events(
    stack: &Stack,
    contents: &[Content],
    group: &GroupRequest,
    members: &[Followed],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DemoError> {
    let api: Api<Event> = Api::namespaced(stack.client.clone(), objects::NAMESPACE);
    let bad = invalid_name(contents);
    let list = loop {
        let list = api.list(&ListParams::default()).await?.items;
        let found = list.iter().any(|e| {
            e.involved_object.name.as_deref() == Some(bad)
                && e.reason.as_deref() == Some("SnapshotCreationFailed")
        });
        if found {
            break list;
        }
        if Instant::now() >= deadline {
            return Err(DemoError::Timeout(
                timeout,
                format!("the SnapshotCreationFailed event of {bad}"),
            ));
        }
        tokio::time::sleep(POLL).await;
    };
    println!(
        "\nEvents the sidecar wrote (namespace {}):",
        objects::NAMESPACE
    );
    let group_name = group.content_name();
    let labelled = contents
        .iter()
        .map(|c| (c.name.as_str(), c.label))
        .chain([(group_name.as_str(), "group")])
        .chain(members.iter().map(|m| (m.name.as_str(), m.label.as_str())));
    let mut quiet = Vec::new();
    for (name, label) in labelled {
        let mine: Vec<&Event> = list
            .iter()
            .filter(|e| e.involved_object.name.as_deref() == Some(name))
            .collect();
        if mine.is_empty() {
            quiet.push(label);
        }
        for e in mine {
            println!("  [{label}] {}", report::event_line(e));
        }
    }
    println!(
        "  none for {} (the sidecar writes only Warning events)",
        quiet.join(", ")
    );
    Ok(())
}

/// Deletes the contents and the members, waits until they are gone and
/// checks the backend: Delete removes the snapshot, Retain keeps it, and a
/// member's snapshot stays for the group delete.
async fn delete_contents(
    stack: &Stack,
    contents: &[Content],
    members: &[Followed],
    deadline: Instant,
    timeout: Duration,
) -> Result<(), DemoError> {
    let api: Api<VolumeSnapshotContent> = Api::all(stack.client.clone());
    let mut handles = BTreeMap::new();
    let everything = contents
        .iter()
        .map(|c| (c.name.clone(), c.label.to_string(), c.policy, false))
        .chain(members.iter().map(|m| {
            (
                m.name.clone(),
                m.label.clone(),
                keys::DELETION_POLICY_DELETE,
                true,
            )
        }))
        .collect::<Vec<_>>();
    for (name, _, _, _) in &everything {
        let obj = api.get(name).await?;
        handles.insert(name.clone(), obj.status_handle().map(str::to_string));
        let mark =
            json!({"metadata": {"annotations": {keys::ANN_VS_BEING_DELETED: keys::ANN_VALUE_YES}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(mark))
            .await?;
        api.delete(name, &DeleteParams::default()).await?;
    }
    for (name, label, policy, member) in &everything {
        while api.get_opt(name).await?.is_some() {
            if Instant::now() >= deadline {
                return Err(DemoError::Timeout(
                    timeout,
                    format!("the deletion of {name} ([{label}])"),
                ));
            }
            tokio::time::sleep(POLL).await;
        }
        let Some(handle) = handles.get(name).cloned().flatten() else {
            println!("  [{label}] gone; there was no backend snapshot");
            continue;
        };
        let exists = stack.mock.snapshot(&handle).is_some();
        let outcome = match (*member, *policy, exists) {
            (true, _, true) => "kept for the group delete (members are never deleted one by one)",
            (false, keys::DELETION_POLICY_RETAIN, true) => "kept (Retain)",
            (false, keys::DELETION_POLICY_DELETE, false) => "deleted (Delete)",
            _ => {
                return Err(DemoError::Check(format!(
                    "after deleting {name} ([{label}], {policy}) the backend snapshot {handle} {}",
                    if exists { "still exists" } else { "is gone" }
                )));
            }
        };
        println!("  [{label}] gone; backend snapshot {handle} {outcome}");
    }
    Ok(())
}

fn summary(stack: &Stack, sidecar_status: i32) {
    println!("\nSummary:");
    println!("  sidecar stopped as on SIGTERM, exit status {sidecar_status}");
    println!(
        "  API requests (sidecar and demo): {}",
        report::api_counts(&stack.api)
    );
    println!(
        "  CSI calls (all by the sidecar): {}",
        report::csi_counts(&stack.mock)
    );
    println!(
        "  requests refused by the sidecar's RBAC rules: {}",
        stack.api.forbidden_count()
    );
    println!("  elapsed: {:.2}s", stack.elapsed().as_secs_f64());
}
