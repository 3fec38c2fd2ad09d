//! The command-line pre-pass that gives Go `flag` package semantics before
//! clap sees the arguments.
//!
//! Go accepts `-name` and `--name` alike, `--name value` and `--name=value`,
//! bare booleans that never consume the next argument, and stops at the first
//! non-flag argument. This pass rewrites every flag into the single form
//! `--name=value` (bare booleans become `--name=true`) and drops everything
//! after the flags, so clap only has to convert values.

use std::ffi::OsString;

/// How a known flag takes its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// A boolean: bare means true, a value only with `=`.
    Bool,
    /// Any other flag: the value follows `=` or is the next argument.
    Value,
}

/// The outcome of the pre-pass.
#[derive(Debug, PartialEq, Eq)]
pub enum PrePass {
    /// Normalised flags, each `--name=value`, in command-line order.
    Flags(Vec<String>),
    /// `-h`, `-help`, `--h` or `--help` was given (and is not a defined flag).
    Help,
}

/// Rewrites `args` (without argv\[0\]) into `--name=value` form. `kind_of`
/// says whether a flag name is defined and how it takes a value. The error is
/// the message Go's `flag` package would print before the usage.
pub fn normalize(
    args: &[OsString],
    kind_of: impl Fn(&str) -> Option<FlagKind>,
) -> Result<PrePass, String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let Some(arg) = args[i].to_str() else {
            // A non-UTF-8 argument can only be a positional one for us; Go
            // would stop there too unless it starts with '-'.
            if args[i].as_encoded_bytes().first() == Some(&b'-') {
                return Err(format!("bad flag syntax: {}", args[i].to_string_lossy()));
            }
            break;
        };
        i += 1;
        if arg.len() < 2 || !arg.starts_with('-') {
            // "-" alone and anything not starting with '-' end the flags.
            break;
        }
        let mut name = &arg[1..];
        if let Some(rest) = name.strip_prefix('-') {
            if rest.is_empty() {
                // "--" ends the flags and is consumed.
                break;
            }
            name = rest;
        }
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(format!("bad flag syntax: {arg}"));
        }
        let (name, inline_value) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name, None),
        };
        let Some(kind) = kind_of(name) else {
            if name == "help" || name == "h" {
                return Ok(PrePass::Help);
            }
            return Err(format!("flag provided but not defined: -{name}"));
        };
        let value = match (kind, inline_value) {
            (_, Some(v)) => v.to_string(),
            (FlagKind::Bool, None) => "true".to_string(),
            (FlagKind::Value, None) => {
                let Some(next) = args.get(i) else {
                    return Err(format!("flag needs an argument: -{name}"));
                };
                i += 1;
                next.to_str()
                    .ok_or_else(|| format!("invalid value for flag -{name}: not valid UTF-8"))?
                    .to_string()
            }
        };
        out.push(format!("--{name}={value}"));
    }
    Ok(PrePass::Flags(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(name: &str) -> Option<FlagKind> {
        match name {
            "leader-election" | "version" => Some(FlagKind::Bool),
            "timeout" | "v" | "csi-address" => Some(FlagKind::Value),
            _ => None,
        }
    }

    fn run(args: &[&str]) -> Result<PrePass, String> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        normalize(&args, kinds)
    }

    fn flags(v: &[&str]) -> Result<PrePass, String> {
        Ok(PrePass::Flags(v.iter().map(|s| s.to_string()).collect()))
    }

    #[test]
    fn single_and_double_dash_are_equivalent() {
        assert_eq!(run(&["-timeout=5s"]), flags(&["--timeout=5s"]));
        assert_eq!(run(&["--timeout=5s"]), flags(&["--timeout=5s"]));
        assert_eq!(run(&["-v", "5"]), flags(&["--v=5"]));
    }

    #[test]
    fn values_may_follow_as_the_next_argument_even_with_a_dash() {
        assert_eq!(run(&["--timeout", "-1s"]), flags(&["--timeout=-1s"]));
        assert_eq!(
            run(&["--csi-address", "/a.sock", "-v=2"]),
            flags(&["--csi-address=/a.sock", "--v=2"])
        );
    }

    #[test]
    fn bare_bools_never_consume_the_next_argument() {
        assert_eq!(
            run(&["--leader-election", "false", "--v=3"]),
            flags(&["--leader-election=true"])
        );
        assert_eq!(
            run(&["-leader-election", "--v=3"]),
            flags(&["--leader-election=true", "--v=3"])
        );
        assert_eq!(
            run(&["--leader-election=false"]),
            flags(&["--leader-election=false"])
        );
    }

    #[test]
    fn parsing_stops_at_the_first_non_flag() {
        assert_eq!(run(&["--v=1", "pos", "--bogus"]), flags(&["--v=1"]));
        assert_eq!(run(&["--v=1", "-", "--bogus"]), flags(&["--v=1"]));
        assert_eq!(run(&["--v=1", "--", "--bogus"]), flags(&["--v=1"]));
        assert_eq!(run(&[]), flags(&[]));
    }

    #[test]
    fn errors_match_go_flag_wording() {
        assert_eq!(
            run(&["--bogus"]),
            Err("flag provided but not defined: -bogus".into())
        );
        assert_eq!(
            run(&["--timeout"]),
            Err("flag needs an argument: -timeout".into())
        );
        assert_eq!(run(&["---v=1"]), Err("bad flag syntax: ---v=1".into()));
        assert_eq!(run(&["-=1"]), Err("bad flag syntax: -=1".into()));
    }

    #[test]
    fn help_is_recognised_in_every_spelling() {
        for h in ["-h", "--h", "-help", "--help", "--help=false"] {
            assert_eq!(run(&[h]), Ok(PrePass::Help), "{h}");
        }
        assert_eq!(run(&["--v=1", "-h"]), Ok(PrePass::Help));
    }
}
