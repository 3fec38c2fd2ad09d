//! Starting the sidecar binary as a child process (`E2E_SIDECAR_BIN`), for
//! runs where no csi-snapshotter is deployed in the cluster for the driver.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::say;
use crate::settings::{Launch, Settings};

/// How long the child must stay up before the scenarios start. Startup
/// failures (bad flags, unreachable socket, driver without snapshot support)
/// exit well within this; a healthy sidecar keeps running.
const SETTLE: Duration = Duration::from_secs(5);

/// The running child; it is killed when this is dropped.
pub struct Sidecar {
    child: Child,
    log: PathBuf,
}

impl Sidecar {
    pub async fn start(launch: &Launch, settings: &Settings) -> Result<Sidecar, String> {
        let log =
            std::env::temp_dir().join(format!("e2e-csi-snapshotter-{}.log", std::process::id()));
        let out = File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut args = vec![
            format!(
                "--kubeconfig={}",
                launch
                    .kubeconfig
                    .as_ref()
                    .unwrap_or(&settings.kubeconfig)
                    .display()
            ),
            format!("--csi-address={}", launch.csi_address),
            "--v=4".to_string(),
        ];
        args.extend(launch.extra_args.iter().cloned());
        let child = Command::new(&launch.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(|e| format!("{}: {e}", launch.binary.display()))?;
        say(&format!(
            "e2e: started {} {} (pid {}, log {})",
            launch.binary.display(),
            args.join(" "),
            child.id(),
            log.display()
        ));
        let mut sidecar = Sidecar { child, log };
        tokio::time::sleep(SETTLE).await;
        if let Ok(Some(status)) = sidecar.child.try_wait() {
            return Err(format!(
                "the sidecar exited during startup ({status}); last log lines:\n{}",
                sidecar.log_tail(20)
            ));
        }
        Ok(sidecar)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            say(&format!(
                "e2e: the sidecar had exited during the run ({status}); log: {}",
                self.log.display()
            ));
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        say(&format!(
            "e2e: stopped the sidecar; log: {}",
            self.log.display()
        ));
    }
}
