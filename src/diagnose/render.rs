//! Output: text grouped by cause (one line per object, evidence indented),
//! or the JSON document of `-o json`.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use super::cause::{Cause, Finding};
use super::verdict::evidence::span;

/// The `-o json` document.
#[derive(Debug, Serialize)]
pub struct Report<'a> {
    /// One entry per stuck object.
    pub items: &'a [Finding],
    /// Objects per cause code.
    pub summary: BTreeMap<&'static str, usize>,
}

/// Objects per cause code.
pub fn summary(findings: &[Finding]) -> BTreeMap<&'static str, usize> {
    let mut out = BTreeMap::new();
    for f in findings {
        *out.entry(f.cause.code()).or_insert(0) += 1;
    }
    out
}

/// The JSON document.
pub fn json(findings: &[Finding]) -> String {
    let report = Report {
        items: findings,
        summary: summary(findings),
    };
    serde_json::to_string_pretty(&report).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// Longest evidence line of the text report; `-o json` has the whole text.
const TEXT_LINE_MAX: usize = 300;

/// An evidence line cut to [`TEXT_LINE_MAX`] characters.
fn shorten(line: &str) -> String {
    match line.char_indices().nth(TEXT_LINE_MAX) {
        Some((i, _)) => format!("{}… (-o json has all of it)", &line[..i]),
        None => line.to_owned(),
    }
}

/// The text report: a heading per cause, one line per object with its age
/// and summary, the evidence indented, the fix last.
pub fn text(findings: &[Finding]) -> String {
    let mut out = String::new();
    if findings.is_empty() {
        out.push_str("No stuck snapshot objects.\n");
        return out;
    }
    for cause in Cause::ALL {
        let group: Vec<&Finding> = findings.iter().filter(|f| f.cause == cause).collect();
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{} ({})", cause.code(), group.len());
        for f in &group {
            let id = match &f.namespace {
                Some(ns) => format!("{}/{ns}/{}", f.kind.as_str(), f.name),
                None => format!("{}/{}", f.kind.as_str(), f.name),
            };
            let _ = writeln!(out, "  {id} (age {}): {}", span(f.age_seconds), f.summary);
            for e in &f.evidence {
                let _ = writeln!(out, "      {}", shorten(e));
            }
            let _ = writeln!(out, "      fix: {}", f.fix);
        }
        out.push('\n');
    }
    let counts: Vec<String> = summary(findings)
        .into_iter()
        .map(|(c, n)| format!("{c}={n}"))
        .collect();
    let _ = writeln!(out, "{} stuck: {}", findings.len(), counts.join(" "));
    out
}
