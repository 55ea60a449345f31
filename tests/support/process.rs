//! The `sluice` binary as a child process, the way an operator runs it: started from a command
//! line, its standard error read in the background line by line, signalled, stopped.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::within;

/// The binary under test.
pub const SLUICE: &str = env!("CARGO_BIN_EXE_sluice");

/// SIGHUP's number on Linux: reload the config file.
pub const SIGHUP: u32 = 1;

/// SIGTERM's number on Linux: drain and exit.
pub const SIGTERM: u32 = 15;

/// `sluice` logging at `RUST_LOG=log`, with no standard input or output, standard error piped
/// and the process killed when dropped; add arguments and environment, then
/// [`Sluice::spawn`] it.
pub fn command(log: &str) -> Command {
    let mut command = Command::new(SLUICE);
    command
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The `address=` field of a log line, when it has one.
pub fn address_field(line: &str) -> Option<SocketAddr> {
    line.split_whitespace().find_map(|field| field.strip_prefix("address="))?.parse().ok()
}

/// A running `sluice` that has bound its first proxy listener. Its standard error is read in
/// the background, so the process never blocks on a full pipe.
pub struct Sluice {
    child: Child,
    /// The first proxy listener's bound address.
    pub addr: SocketAddr,
    /// The log line that announced it.
    pub listening_line: String,
    /// Every line read so far (by [`Sluice::spawn`] and [`Sluice::line_containing`]), in order.
    pub log: Vec<String>,
    /// Lines as the background reader hands them over.
    lines: mpsc::UnboundedReceiver<String>,
    /// The background reader; it returns every line once standard error closes.
    stderr: JoinHandle<Vec<String>>,
}

impl Sluice {
    /// Spawns `command` (from [`command`]) and reads its log until a proxy listener (not the
    /// admin listener) is bound; fails, showing the log, if it exits first.
    pub async fn spawn(mut command: Command) -> Sluice {
        let mut child = command.spawn().unwrap();
        let stderr = child.stderr.take().expect("standard error is piped");
        let (line_tx, mut lines) = mpsc::unbounded_channel();
        let stderr = tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            let mut all = Vec::new();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = line_tx.send(line.clone());
                all.push(line);
            }
            all
        });
        let is_listener = |line: &str| {
            line.contains("listening")
                && !line.contains("admin listening")
                && address_field(line).is_some()
        };
        let mut log = Vec::new();
        let Some(listening_line) = next_matching(&mut lines, &mut log, is_listener).await else {
            let lines = within(stderr).await.unwrap();
            panic!("sluice exited before listening:\n{}", lines.join("\n"));
        };
        let addr = address_field(&listening_line).unwrap();
        Sluice { child, addr, listening_line, log, lines, stderr }
    }

    /// Reads the log until a line contains `text`, and returns it; fails if sluice exits
    /// first.
    pub async fn line_containing(&mut self, text: &str) -> String {
        next_matching(&mut self.lines, &mut self.log, |line| line.contains(text))
            .await
            .expect("sluice exited early")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("sluice is still running")
    }

    /// Sends `signal` (a `kill` name such as `HUP`) once the process catches `number`.
    pub async fn signal(&self, signal: &str, number: u32) {
        let pid = self.pid();
        wait_until_catches(pid, number).await;
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status();
        assert!(status.unwrap().success());
    }

    /// SIGTERM; the exit status must be success. Returns everything written to standard
    /// error, one line after another.
    pub async fn stop(mut self) -> String {
        self.signal("TERM", SIGTERM).await;
        let status = within(self.child.wait()).await.unwrap();
        assert!(status.success(), "exit status {status:?}");
        within(self.stderr).await.unwrap().join("\n")
    }

    /// Waits for the process to exit by itself (after a signal already sent); the exit status
    /// must be success. Returns everything written to standard error.
    pub async fn exited(mut self) -> String {
        let status = within(self.child.wait()).await.unwrap();
        assert!(status.success(), "exit status {status:?}");
        within(self.stderr).await.unwrap().join("\n")
    }

    /// Kills the process and waits for it to go, for a test that has what it needs.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let _ = within(self.child.wait()).await;
    }
}

/// Reads `lines` (recording each in `log`) until one satisfies `wanted` and returns it; `None`
/// if they end first. Bounded by [`within`].
async fn next_matching(
    lines: &mut mpsc::UnboundedReceiver<String>,
    log: &mut Vec<String>,
    wanted: impl Fn(&str) -> bool,
) -> Option<String> {
    within(async {
        while let Some(line) = lines.recv().await {
            log.push(line.clone());
            if wanted(&line) {
                return Some(line);
            }
        }
        None
    })
    .await
}

/// Waits until process `pid` has installed a handler for signal `number` (the `SigCgt` mask in
/// `/proc/PID/status`), so that signal is caught and not fatal: sluice starts watching SIGTERM
/// only when `run` first awaits its shutdown future, just after the start-up lines are logged.
pub async fn wait_until_catches(pid: u32, number: u32) {
    within(async {
        loop {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let mask = status.lines().find_map(|line| line.strip_prefix("SigCgt:")).unwrap();
            let mask = u64::from_str_radix(mask.trim(), 16).unwrap();
            if mask & (1 << (number - 1)) != 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    })
    .await;
}
