//! Why the driver's socket path cannot be connected to, when retrying alone
//! will not help: connecting is refused for lack of permission (`EACCES`),
//! or the path is something other than a socket. The connector logs such a
//! problem at once as an error naming what to change, and keeps retrying.

use std::fmt;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

/// Where Linux describes the calling process, credentials included.
const PROC_SELF_STATUS: &str = "/proc/self/status";

/// The credentials a permission check is made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIds {
    /// Effective user ID.
    pub uid: u32,
    /// Effective group ID.
    pub gid: u32,
    /// Supplementary group IDs (`fsGroup` and `supplementalGroups` land here).
    pub groups: Vec<u32>,
}

impl ProcessIds {
    /// The credentials of this process, read from `/proc/self/status`;
    /// `None` where that file is missing or unreadable.
    pub fn current() -> Option<ProcessIds> {
        std::fs::read_to_string(PROC_SELF_STATUS)
            .ok()
            .and_then(|text| ProcessIds::parse_status(&text))
    }

    /// Parses the `Uid:`, `Gid:` and `Groups:` lines of a
    /// `/proc/<pid>/status` text (real, effective, saved, filesystem IDs;
    /// the effective one is taken).
    pub fn parse_status(text: &str) -> Option<ProcessIds> {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.split_whitespace().map(str::parse::<u32>))
        };
        let effective = |name: &str| field(name)?.nth(1)?.ok();
        Some(ProcessIds {
            uid: effective("Uid:")?,
            gid: effective("Gid:")?,
            groups: field("Groups:")
                .map(|ids| ids.filter_map(Result::ok).collect())
                .unwrap_or_default(),
        })
    }
}

/// Owner, group and permission bits of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileAccess {
    /// Owning user ID.
    pub uid: u32,
    /// Owning group ID.
    pub gid: u32,
    /// Permission bits (`0o7777` mask).
    pub mode: u32,
}

impl FileAccess {
    fn of(meta: &Metadata) -> FileAccess {
        FileAccess {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.permissions().mode() & 0o7777,
        }
    }
}

/// A socket path that connecting cannot succeed on until someone changes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketProblem {
    /// Connecting was refused with `EACCES`: connecting to a Unix socket
    /// needs write permission on it (and search permission on every
    /// directory above it).
    PermissionDenied {
        /// The socket's owner, group and mode; `None` when even that could
        /// not be read (a directory above it is not searchable).
        socket: Option<FileAccess>,
        /// The sidecar's own credentials, where readable.
        process: Option<ProcessIds>,
    },
    /// The path exists but is no socket.
    NotASocket {
        /// What it is instead ("regular file", "directory", ...).
        found: &'static str,
    },
}

impl SocketProblem {
    /// The problem behind a failed connect to `path`, if it is one that
    /// waiting does not cure; `None` for anything else (no such file yet,
    /// connection refused by a socket that nobody listens on, ...).
    pub fn diagnose(path: &Path, error: &io::Error) -> Option<SocketProblem> {
        if error.kind() == io::ErrorKind::PermissionDenied {
            return Some(SocketProblem::PermissionDenied {
                socket: std::fs::metadata(path).ok().map(|m| FileAccess::of(&m)),
                process: ProcessIds::current(),
            });
        }
        let meta = std::fs::metadata(path).ok()?;
        let file_type = meta.file_type();
        if file_type.is_socket() {
            return None;
        }
        let found = if file_type.is_file() {
            "regular file"
        } else if file_type.is_dir() {
            "directory"
        } else if file_type.is_fifo() {
            "named pipe"
        } else if file_type.is_char_device() || file_type.is_block_device() {
            "device"
        } else {
            "file that is not a socket"
        };
        Some(SocketProblem::NotASocket { found })
    }

    /// The one-line summary logged as the message.
    pub fn summary(&self) -> &'static str {
        match self {
            SocketProblem::PermissionDenied { .. } => {
                "permission denied on the CSI driver socket (retrying, but only a change of its owner, group or mode or of the sidecar's user helps)"
            }
            SocketProblem::NotASocket { .. } => {
                "the CSI address names a path that is not a socket (retrying until the driver puts its socket there)"
            }
        }
    }

    /// What to change, for the log line's `fix` field.
    pub fn fix(&self) -> String {
        match self {
            SocketProblem::PermissionDenied {
                socket: Some(socket),
                ..
            } => format!(
                "run the sidecar as the socket's owner (securityContext runAsUser: {uid}, or the default root image), \
                 or have the driver create the socket group-writable (mode 0770 or 0775) and run the sidecar in group {gid} \
                 (runAsGroup, or fsGroup on an emptyDir socket volume); see docs/image.md",
                uid = socket.uid,
                gid = socket.gid,
            ),
            SocketProblem::PermissionDenied { socket: None, .. } => {
                "give the sidecar's user search (x) permission on every directory above the socket, \
                 or run it as the driver's user; see docs/image.md"
                    .to_string()
            }
            SocketProblem::NotASocket { .. } => {
                "point --csi-address at the socket the driver listens on (its --endpoint), \
                 and mount the driver's socket directory at the same path"
                    .to_string()
            }
        }
    }

    /// Logs the problem as one error line with the facts needed to fix it.
    pub fn log(&self, address: &str) {
        match self {
            SocketProblem::PermissionDenied { socket, process } => {
                tracing::error!(
                    address,
                    socket_owner = %OptionalId(socket.map(|s| s.uid)),
                    socket_group = %OptionalId(socket.map(|s| s.gid)),
                    socket_mode = %OptionalMode(socket.map(|s| s.mode)),
                    sidecar_uid = %OptionalId(process.as_ref().map(|p| p.uid)),
                    sidecar_gid = %OptionalId(process.as_ref().map(|p| p.gid)),
                    sidecar_groups = %Groups(process.as_ref().map(|p| p.groups.as_slice())),
                    fix = %self.fix(),
                    "{}",
                    self.summary()
                );
            }
            SocketProblem::NotASocket { found } => {
                tracing::error!(address, found = *found, fix = %self.fix(), "{}", self.summary());
            }
        }
    }
}

/// A numeric ID, or "unknown".
struct OptionalId(Option<u32>);

impl fmt::Display for OptionalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "{id}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Permission bits in the octal form `chmod` takes, or "unknown".
struct OptionalMode(Option<u32>);

impl fmt::Display for OptionalMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(mode) => write!(f, "{mode:04o}"),
            None => f.write_str("unknown"),
        }
    }
}

/// Supplementary groups as a comma-separated list, or "unknown".
struct Groups<'a>(Option<&'a [u32]>);

impl fmt::Display for Groups<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(groups) = self.0 else {
            return f.write_str("unknown");
        };
        let list: Vec<String> = groups.iter().map(u32::to_string).collect();
        f.write_str(&list.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcsi-snapshotter\nUmask:\t0022\nState:\tS (sleeping)\n\
        Uid:\t1000\t65532\t65532\t65532\nGid:\t1001\t65533\t65533\t65533\nFDSize:\t64\n\
        Groups:\t4 65534 \nNStgid:\t1\n";

    #[test]
    fn effective_ids_and_groups_come_from_the_status_text() {
        assert_eq!(
            ProcessIds::parse_status(STATUS),
            Some(ProcessIds {
                uid: 65532,
                gid: 65533,
                groups: vec![4, 65534],
            })
        );
        let no_groups = STATUS.replace("Groups:\t4 65534 ", "Groups:\t");
        assert_eq!(
            ProcessIds::parse_status(&no_groups).map(|p| p.groups),
            Some(vec![])
        );
        assert_eq!(ProcessIds::parse_status("Name:\tx\nUid:\t0\n"), None);
        assert_eq!(ProcessIds::parse_status(""), None);
    }

    #[test]
    fn this_process_has_readable_credentials() {
        let text = std::fs::read_to_string(PROC_SELF_STATUS);
        let Ok(text) = text else {
            println!("socket_access: {PROC_SELF_STATUS} not readable here, skipped");
            return;
        };
        assert_eq!(ProcessIds::current(), ProcessIds::parse_status(&text));
        assert!(ProcessIds::current().is_some());
    }

    #[test]
    fn permission_denied_reports_owner_group_and_mode_of_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("csi.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        let meta = std::fs::metadata(&path).unwrap();

        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let problem = SocketProblem::diagnose(&path, &denied).expect("a problem");
        let SocketProblem::PermissionDenied { socket, process } = &problem else {
            panic!("{problem:?}");
        };
        assert_eq!(
            *socket,
            Some(FileAccess {
                uid: meta.uid(),
                gid: meta.gid(),
                mode: 0o755,
            })
        );
        assert_eq!(*process, ProcessIds::current());
        let fix = problem.fix();
        assert!(fix.contains(&format!("runAsUser: {}", meta.uid())), "{fix}");
        assert!(fix.contains(&format!("group {}", meta.gid())), "{fix}");
        assert!(fix.contains("fsGroup"), "{fix}");
    }

    #[test]
    fn permission_denied_without_a_readable_socket_points_at_the_directories() {
        let dir = tempfile::tempdir().unwrap();
        let denied = io::Error::from(io::ErrorKind::PermissionDenied);
        let problem = SocketProblem::diagnose(&dir.path().join("gone.sock"), &denied).unwrap();
        assert!(matches!(
            problem,
            SocketProblem::PermissionDenied { socket: None, .. }
        ));
        assert!(problem.fix().contains("search (x) permission"));
    }

    #[test]
    fn a_path_that_is_not_a_socket_is_named_for_what_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("csi.sock");
        std::fs::write(&file, b"").unwrap();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            SocketProblem::diagnose(&file, &refused),
            Some(SocketProblem::NotASocket {
                found: "regular file"
            })
        );
        assert_eq!(
            SocketProblem::diagnose(dir.path(), &refused),
            Some(SocketProblem::NotASocket { found: "directory" })
        );
    }

    #[test]
    fn a_missing_path_or_a_socket_nobody_serves_is_no_problem_yet() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("later.sock");
        let not_found = io::Error::from(io::ErrorKind::NotFound);
        assert_eq!(SocketProblem::diagnose(&missing, &not_found), None);

        let stale = dir.path().join("stale.sock");
        drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(SocketProblem::diagnose(&stale, &refused), None);
    }

    #[test]
    fn unknown_facts_are_spelt_out() {
        assert_eq!(OptionalId(None).to_string(), "unknown");
        assert_eq!(OptionalMode(Some(0o755)).to_string(), "0755");
        assert_eq!(OptionalMode(Some(0o2770)).to_string(), "2770");
        assert_eq!(Groups(Some(&[1, 2])).to_string(), "1,2");
        assert_eq!(Groups(Some(&[])).to_string(), "");
    }
}
