//! The `csi-snapshotter` binary: parse flags, start logging, run.

use std::process::ExitCode;

use csi_snapshotter::config::{self, Invocation};
use csi_snapshotter::{logging, run};

/// A test-peer subcommand: gets the arguments after its name, returns the
/// exit status.
#[cfg(feature = "testing")]
type SubcommandMain = fn(Vec<String>) -> i32;

/// Test-peer subcommands (`csi-snapshotter <name> …`), built only with the
/// `testing` feature. Add a row per subcommand.
#[cfg(feature = "testing")]
const SUBCOMMANDS: &[(&str, SubcommandMain)] = &[
    (
        "embedded-apiserver",
        csi_snapshotter::testing::apiserver::cli_main,
    ),
    ("bench", csi_snapshotter::testing::bench::cli_main),
    ("demo", csi_snapshotter::testing::demo::cli_main),
];

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "diagnose") {
        let rest = args[2..]
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        return exit(csi_snapshotter::diagnose::cli_main(rest));
    }
    #[cfg(feature = "testing")]
    if let Some(code) = dispatch_subcommand(&args) {
        return exit(code);
    }
    let config = match config::parse(args) {
        Ok(Invocation::Run(config)) => config,
        Ok(Invocation::Help(usage)) => {
            eprint!("{usage}");
            return ExitCode::SUCCESS;
        }
        Ok(Invocation::Version(line)) => {
            println!("{line}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("{e}");
            return exit(e.exit_code());
        }
    };
    if let Err(e) = logging::init(&config.logging) {
        eprintln!("{e}");
        return exit(1);
    }
    let runtime = match run::build_runtime(config.automaxprocs) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("failed to start the async runtime: {e}");
            return exit(1);
        }
    };
    exit(runtime.block_on(run::run(*config)))
}

/// Runs a test-peer subcommand when `args[1]` names one.
#[cfg(feature = "testing")]
fn dispatch_subcommand(args: &[std::ffi::OsString]) -> Option<i32> {
    let name = args.get(1)?.to_str()?;
    let (_, entry) = SUBCOMMANDS.iter().find(|(n, _)| *n == name)?;
    let rest = args[2..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Some(entry(rest))
}

/// An exit status as the process sees it (255 for Go's fatal exits).
fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
