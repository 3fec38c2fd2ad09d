//! A CSI socket the sidecar may not open, or a path that is no socket, is
//! reported at once as an error with what to change, and the sidecar keeps
//! dialing as for any other connection failure. The binary is run as a
//! separate process so that the permission check is the kernel's: as root
//! it runs under another user (setpriv), otherwise against a socket without
//! write permission.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The sidecar binary built for this test run.
const BIN: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
/// The user the non-root image runs as.
const NON_ROOT: u32 = 65532;
/// How long to wait for a log line on a loaded machine.
const LOG_WAIT: Duration = Duration::from_secs(60);

/// The sidecar's stderr, line by line, and the process (killed on drop).
struct Sidecar {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Sidecar {
    /// Starts `program args...` (the sidecar, or a wrapper that runs it).
    fn start(program: &Path, args: &[String]) -> Sidecar {
        let mut child = Command::new(program)
            .args(args)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env_remove("KUBECONFIG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", program.display()));
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sidecar {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first line (from now on) containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        loop {
            match self.lines.recv_timeout(LOG_WAIT) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line with {needle:?} within {LOG_WAIT:?}; got:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory every user may enter, holding a kubeconfig that loads but
/// points at nothing (the sidecar dials the driver before its first API call).
fn world_readable_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\ncurrent-context: c\nusers:\n- name: u\n  user:\n    token: t\n",
    )
    .unwrap();
    std::fs::set_permissions(&kubeconfig, std::fs::Permissions::from_mode(0o644)).unwrap();
    let kubeconfig = kubeconfig.to_string_lossy().into_owned();
    (dir, kubeconfig)
}

fn sidecar_args(socket: &Path, kubeconfig: &str) -> Vec<String> {
    vec![
        format!("--csi-address={}", socket.display()),
        format!("--kubeconfig={kubeconfig}"),
    ]
}

fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .expect("effective uid")
}

/// `setpriv`, where installed (util-linux).
fn setpriv() -> Option<PathBuf> {
    ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

#[test]
fn a_socket_the_sidecar_may_not_open_is_reported_with_owner_mode_and_ids() {
    let (dir, kubeconfig) = world_readable_dir();
    let socket = dir.path().join("csi.sock");
    let _listener = UnixListener::bind(&socket).unwrap();

    let (mut sidecar, expected_uid) = if effective_uid() == 0 {
        // The usual driver: a root-owned socket with mode 0755, and the
        // sidecar as an unprivileged user. The binary is copied next to the
        // socket so that the other user can execute it wherever the checkout is.
        let Some(setpriv) = setpriv() else {
            println!("csi_socket_access: running as root without setpriv, skipped");
            return;
        };
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.path().join("csi-snapshotter");
        std::fs::copy(BIN, &bin).unwrap();
        let mut args = vec![
            format!("--reuid={NON_ROOT}"),
            format!("--regid={NON_ROOT}"),
            "--clear-groups".to_string(),
            bin.to_string_lossy().into_owned(),
        ];
        args.extend(sidecar_args(&socket, &kubeconfig));
        (Sidecar::start(&setpriv, &args), NON_ROOT)
    } else {
        // Not root: the socket is ours, but without write permission.
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o555)).unwrap();
        let args = sidecar_args(&socket, &kubeconfig);
        (Sidecar::start(Path::new(BIN), &args), effective_uid())
    };
    let meta = std::fs::metadata(&socket).unwrap();
    let mode = meta.mode() & 0o7777;

    let line = sidecar.wait_for("permission denied on the CSI driver socket");
    for field in [
        format!("socket_owner=\"{}\"", meta.uid()),
        format!("socket_group=\"{}\"", meta.gid()),
        format!("socket_mode=\"{mode:04o}\""),
        format!("sidecar_uid=\"{expected_uid}\""),
        format!("runAsUser: {}", meta.uid()),
        "fsGroup".to_string(),
    ] {
        assert!(line.contains(&field), "{field} missing from: {line}");
    }
    assert!(
        line.starts_with('E'),
        "logged as an error (klog severity E): {line}"
    );
    // It is reported before the first "not reachable" line of that attempt,
    // then dialing goes on, without repeating the same report.
    let attempt = sidecar.wait_for("CSI driver not reachable yet");
    assert!(attempt.contains("attempt=1"), "{attempt}");
    let second = sidecar.wait_for("attempt=2");
    assert!(second.contains("not reachable yet"), "{second}");
    let reports = sidecar
        .seen
        .iter()
        .filter(|l| l.contains("permission denied on the CSI driver socket"))
        .count();
    assert_eq!(reports, 1, "{}", sidecar.seen.join("\n"));
}

#[test]
fn a_path_that_is_not_a_socket_is_reported_and_dialing_goes_on() {
    let (dir, kubeconfig) = world_readable_dir();
    let path = dir.path().join("csi.sock");
    std::fs::write(&path, b"not a socket").unwrap();

    let mut sidecar = Sidecar::start(Path::new(BIN), &sidecar_args(&path, &kubeconfig));
    let line = sidecar.wait_for("not a socket");
    assert!(line.starts_with('E'), "logged as an error: {line}");
    assert!(line.contains("regular file"), "{line}");
    assert!(line.contains("--csi-address"), "what to change: {line}");

    // Dialing goes on, without repeating the same report.
    sidecar.wait_for("attempt=1");
    sidecar.wait_for("attempt=3");
    let reports = sidecar
        .seen
        .iter()
        .filter(|l| l.contains("not a socket"))
        .count();
    assert_eq!(reports, 1, "{}", sidecar.seen.join("\n"));
}
