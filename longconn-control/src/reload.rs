//! Hot reload: a task that reloads the config file when its modification time or size
//! changes (polled every `limits.reload_poll_ms`) or when the process gets SIGHUP.
//!
//! A file whose text is the one in force (same digest) is not reloaded. A file that is
//! refused leaves the rules in force untouched; the error (line and
//! field) is logged and shown by `GET /v1/rules` until a later reload succeeds.

use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::service::Control;

/// What identifies a version of the file on disk.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Starts the watcher on the current runtime; it stops when `stop` is cancelled. Does
/// nothing useful for a control layer without a file (it only waits for `stop`).
pub fn watch(control: Control, stop: CancellationToken) -> JoinHandle<()> {
    tokio::spawn(async move {
        let Some(path) = control.path().map(ToOwned::to_owned) else {
            stop.cancelled().await;
            return;
        };
        // `None` at first: the first poll compares the file with the rules in force, so
        // a change between loading and watching is not missed.
        let mut seen: Stamp = None;
        #[cfg(unix)]
        let mut hangup =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            let poll_ms = control.policy().config.limits.reload_poll_ms;
            let poll = async {
                if poll_ms == 0 {
                    std::future::pending::<()>().await;
                }
                tokio::time::sleep(Duration::from_millis(poll_ms)).await;
            };
            #[cfg(unix)]
            let hup = async {
                match hangup.as_mut() {
                    Some(signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hup = std::future::pending::<()>();
            let forced = tokio::select! {
                () = stop.cancelled() => return,
                () = poll => false,
                () = hup => true,
            };
            let now = stamp(&path);
            if !forced && now == seen {
                continue;
            }
            seen = now;
            let before = control.policy().version;
            match control.reload() {
                Ok(version) if version == before => {}
                Ok(version) => info!(path = %path.display(), version, "control config reloaded"),
                Err(err) => {
                    error!(%err, "control config refused; the previous rules stay in force")
                }
            }
        }
    })
}
