//! Keeps the documentation from going stale: every relative link and anchor
//! in README.md, docs/ and deploy/ resolves; every flag the documents name
//! is one the binaries accept (or one of another tool, or a klog flag that is
//! documented as refused and really is); every `csi-snapshotter <command>`
//! they show exists; every repository path they name in backticks exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const SIDECAR: &str = env!("CARGO_BIN_EXE_csi-snapshotter");
const MOCK_DRIVER: &str = env!("CARGO_BIN_EXE_csi-mock-driver");

/// Flags of other programs that the documents show in command lines
/// (cargo, kubectl, podman/docker, curl, git). A flag of ours that is
/// missing from `--help` must not hide here.
const OTHER_TOOLS_FLAGS: &[&str] = &[
    // cargo
    "release",
    "test",
    "no-default-features",
    "target-dir",
    "bins",
    "lib",
    "nocapture",
    "exact",
    "test-threads",
    "all-targets",
    "no-run",
    "no-fail-fast",
    "features",
    "target",
    "bin",
    // kubectl
    "for",
    "validate",
    "dry-run",
    "all-namespaces",
    "type",
    "patch",
    "raw",
    "server-side",
    "embed-certs",
    "certificate-authority",
    "client-certificate",
    "client-key",
    "token",
    "serviceaccount",
    "clusterrole",
    "verb",
    "resource",
    "selector",
    "field-selector",
    "show-labels",
    "output",
    "namespace",
    "overwrite",
    "duration",
    // podman / docker
    "runtime",
    "cgroup-manager",
    "network",
    "read-only",
    "cap-drop",
    "platform",
    "build-arg",
    "user",
    "rm",
    "entrypoint",
    "tag",
    "push",
    "load",
    "file",
    "security-opt",
    "volume",
    "name",
    "detach",
    // scripts/build-image.sh
    "nonroot",
    // curl, git
    "silent",
    "fail",
    "depth",
];

/// Placeholders the documents use to explain flag syntax (`--flag=value`).
const PLACEHOLDERS: &[&str] = &["flag"];

/// klog flags: refused by the sidecar (exit 2), and named in the documents
/// as refused.
const KLOG_FLAGS: &[&str] = &[
    "logtostderr",
    "alsologtostderr",
    "log_dir",
    "log_file",
    "log_file_max_size",
    "stderrthreshold",
    "skip_headers",
    "one_output",
    "add_dir_header",
    "log_backtrace_at",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every Markdown file under docs/ and deploy/.
fn documents() -> Vec<PathBuf> {
    let mut out = vec![root().join("README.md")];
    for dir in ["docs", "deploy"] {
        collect_markdown(&root().join(dir), &mut out);
    }
    out.sort();
    out
}

fn collect_markdown(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_markdown(&path, out);
        } else if path.extension().is_some_and(|e| e == "md") {
            out.push(path);
        }
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn display(path: &Path) -> String {
    path.strip_prefix(root())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// The text outside fenced code blocks, line by line.
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut out = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            out.push(line);
        }
    }
    out
}

/// `[text](target)` targets outside code blocks and inline code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose_lines(text) {
        let line = strip_inline_code(line);
        let mut rest = line.as_str();
        while let Some(i) = rest.find("](") {
            let after = &rest[i + 2..];
            let Some(end) = after.find(')') else { break };
            out.push(after[..end].to_string());
            rest = &after[end + 1..];
        }
    }
    out
}

fn strip_inline_code(line: &str) -> String {
    let mut out = String::new();
    let mut code = false;
    for c in line.chars() {
        if c == '`' {
            code = !code;
        } else if !code {
            out.push(c);
        }
    }
    out
}

/// GitHub's anchor for a heading: lower case, punctuation other than `-` and
/// `_` dropped, spaces turned into `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    prose_lines(text)
        .into_iter()
        .filter(|l| l.starts_with('#'))
        .map(|l| slug(l.trim_start_matches('#')))
        .collect()
}

#[test]
fn every_relative_link_and_anchor_resolves() {
    let mut broken = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        for target in link_targets(&text) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap_or(&root()).join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target} (no such file)", display(&doc)));
                continue;
            }
            if let Some(anchor) = anchor
                && !anchors(&read(&file)).contains(anchor)
            {
                broken.push(format!("{}: {target} (no such heading)", display(&doc)));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// `--name` tokens anywhere in the text (code blocks included).
fn flags_in(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut out = BTreeSet::new();
    let mut i = 0;
    while i + 2 < bytes.len() {
        let starts = bytes[i] == b'-'
            && bytes[i + 1] == b'-'
            && bytes[i + 2].is_ascii_lowercase()
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'-'));
        if !starts {
            i += 1;
            continue;
        }
        let start = i + 2;
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'-'
                || bytes[end] == b'_')
        {
            end += 1;
        }
        let name = text[start..end].trim_end_matches('-');
        out.insert(name.to_string());
        i = end;
    }
    out
}

fn help_of(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    out.status.success().then(|| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `csi-snapshotter <command>` words the documents show.
fn subcommands_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("csi-snapshotter ") {
        let word: String = text[i + "csi-snapshotter ".len()..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        let before = &text[..i];
        // `-n csi-snapshotter` is a namespace, not the binary.
        let namespace = before.ends_with("-n ") || before.ends_with("--namespace ");
        let whole = !namespace
            && before
                .chars()
                .last()
                .is_none_or(|c| c.is_whitespace() || c == '`' || c == '/' || c == '(');
        if whole && word.len() > 2 && !word.starts_with('-') {
            out.insert(word);
        }
    }
    out
}

/// Words after `csi-snapshotter ` that are prose, not commands.
const NOT_COMMANDS: &[&str] = &[
    "sidecar",
    "image",
    "container",
    "binary",
    "process",
    "and",
    "or",
    "the",
    "v",
    "is",
    "runs",
    "that",
    "with",
    "in",
    "for",
    "from",
    "to",
    "as",
    "was",
    "has",
    "uses",
    "writes",
    "reads",
    "takes",
    "logs",
    "exits",
    "handles",
];

#[test]
fn every_command_the_documents_show_exists() {
    let mut missing = Vec::new();
    for doc in documents() {
        for word in subcommands_in(&read(&doc)) {
            if NOT_COMMANDS.contains(&word.as_str()) {
                continue;
            }
            if help_of(SIDECAR, &[&word, "--help"]).is_none() {
                missing.push(format!("{}: csi-snapshotter {word}", display(&doc)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "commands without a working --help:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_flag_the_documents_name_is_accepted() {
    let mut docs_text = String::new();
    for doc in documents() {
        docs_text.push_str(&read(&doc));
        docs_text.push('\n');
    }
    let mut known = String::new();
    known.push_str(&help_of(SIDECAR, &["--help"]).expect("csi-snapshotter --help"));
    for word in subcommands_in(&docs_text) {
        if let Some(help) = help_of(SIDECAR, &[&word, "--help"]) {
            known.push_str(&help);
        }
    }
    known.push_str(&help_of(MOCK_DRIVER, &["--help"]).expect("csi-mock-driver --help"));
    let accepted = flags_in(&known);
    let unknown: Vec<String> = flags_in(&docs_text)
        .into_iter()
        .filter(|f| {
            !accepted.contains(f)
                && !OTHER_TOOLS_FLAGS.contains(&f.as_str())
                && !KLOG_FLAGS.contains(&f.as_str())
                && !PLACEHOLDERS.contains(&f.as_str())
        })
        .collect();
    assert!(
        unknown.is_empty(),
        "flags named in the documents that no --help lists: {unknown:?}"
    );
}

#[test]
fn the_klog_flags_the_documents_call_refused_are_refused() {
    let flags_md = read(&root().join("docs/flags.md"));
    let named: Vec<&&str> = KLOG_FLAGS
        .iter()
        .filter(|f| flags_md.contains(&format!("`--{f}`")))
        .collect();
    assert!(!named.is_empty(), "docs/flags.md names no klog flag");
    for flag in named {
        let out = Command::new(SIDECAR)
            .arg(format!("--{flag}"))
            .output()
            .expect("run csi-snapshotter");
        assert_eq!(out.status.code(), Some(2), "--{flag} must exit 2");
    }
}

/// Paths in backticks that start with a top-level directory of the
/// repository.
fn repository_paths(text: &str) -> BTreeSet<String> {
    const TOP: &[&str] = &["deploy/", "docs/", "scripts/", "tests/", "src/", "proto/"];
    let mut out = BTreeSet::new();
    let mut parts = text.split('`');
    parts.next();
    while let Some(code) = parts.next() {
        let code = code.trim();
        let is_path = TOP.iter().any(|t| code.starts_with(t))
            && code
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
        if is_path {
            out.insert(code.trim_end_matches('/').to_string());
        }
        parts.next();
    }
    out
}

#[test]
fn every_repository_path_the_documents_name_exists() {
    let mut missing = Vec::new();
    for doc in documents() {
        for path in repository_paths(&read(&doc)) {
            if !root().join(&path).exists() {
                missing.push(format!("{}: {path}", display(&doc)));
            }
        }
    }
    assert!(missing.is_empty(), "missing paths:\n{}", missing.join("\n"));
}

#[test]
fn every_test_target_the_documents_run_exists() {
    let mut missing = Vec::new();
    for doc in documents() {
        let text = read(&doc);
        for (i, _) in text.match_indices("--test ") {
            let name: String = text[i + "--test ".len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() && !root().join(format!("tests/{name}.rs")).exists() {
                missing.push(format!("{}: cargo test --test {name}", display(&doc)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "missing test targets:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checks_find_what_they_look_for() {
    assert_eq!(
        slug("Leader election and shutdown"),
        "leader-election-and-shutdown"
    );
    assert_eq!(slug("`/readyz` and probes"), "readyz-and-probes");
    assert_eq!(
        link_targets("see [a](docs/x.md#y) and `[b](c)`"),
        vec!["docs/x.md#y".to_string()]
    );
    let flags = flags_in("run --kube-api-qps=5 or --v; not a--b nor ---x; `--log_dir`");
    assert_eq!(
        flags.into_iter().collect::<Vec<_>>(),
        vec!["kube-api-qps", "log_dir", "v"]
    );
    assert_eq!(
        subcommands_in(
            "`csi-snapshotter diagnose -A`, csi-snapshotter bench, kubectl -n csi-snapshotter get"
        )
        .len(),
        2
    );
    assert_eq!(
        repository_paths("see `deploy/kubernetes/rbac.yaml` and `kubectl apply`"),
        BTreeSet::from(["deploy/kubernetes/rbac.yaml".to_string()])
    );
}
