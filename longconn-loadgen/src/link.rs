//! How the driver (the process the user started) and the load (clients) talk, phase by
//! phase: the load says `Ready` when its clients are connected (and joined), the driver
//! says `Go`, publishes if the phase publishes, says `End`, and the load answers with
//! its `Report`.
//!
//! With `--procs 1` both run in one process over channels; with `--procs K` each worker
//! process is driven over its stdin (driver to load) and stdout (load to driver), one
//! JSON message per line.

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::stats::Report;

/// Driver to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Start the phase's activity (hold, requests, churn; receiving counts from now).
    Go,
    /// Nothing more will be sent: drain, then report.
    End,
}

/// Load to driver.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Notice {
    /// Connected (and joined); ready for `Go`.
    Ready,
    /// The phase's figures.
    Done(Report),
}

/// The load's end of a link.
#[derive(Debug)]
pub enum LoadLink {
    /// Channels to a driver in the same process.
    Local {
        /// Orders in.
        orders: mpsc::UnboundedReceiver<Order>,
        /// Notices out.
        notices: mpsc::UnboundedSender<Notice>,
    },
    /// This process's stdin and stdout (a worker process).
    Stdio {
        /// Stdin lines.
        lines: tokio::io::Lines<BufReader<tokio::io::Stdin>>,
    },
}

impl LoadLink {
    /// Waits for the next order.
    ///
    /// # Errors
    /// The driver went away or sent something unreadable.
    pub async fn order(&mut self) -> Result<Order, String> {
        match self {
            LoadLink::Local { orders, .. } => orders.recv().await.ok_or("driver gone".into()),
            LoadLink::Stdio { lines } => {
                let line = lines
                    .next_line()
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("driver closed stdin")?;
                serde_json::from_str(&line).map_err(|e| format!("order `{line}`: {e}"))
            }
        }
    }

    /// Sends a notice.
    ///
    /// # Errors
    /// The driver went away.
    pub async fn notify(&mut self, notice: Notice) -> Result<(), String> {
        match self {
            LoadLink::Local { notices, .. } => {
                notices.send(notice).map_err(|_| "driver gone".to_owned())
            }
            LoadLink::Stdio { .. } => {
                let mut line = serde_json::to_string(&notice).map_err(|e| e.to_string())?;
                line.push('\n');
                let mut out = tokio::io::stdout();
                out.write_all(line.as_bytes())
                    .await
                    .map_err(|e| e.to_string())?;
                out.flush().await.map_err(|e| e.to_string())
            }
        }
    }
}

/// The driver's end of one link.
#[derive(Debug)]
pub enum DriverLink {
    /// Channels to load in the same process.
    Local {
        /// Orders out.
        orders: mpsc::UnboundedSender<Order>,
        /// Notices in.
        notices: mpsc::UnboundedReceiver<Notice>,
    },
    /// A worker process.
    Child {
        /// Its stdin.
        stdin: tokio::process::ChildStdin,
        /// Its stdout, by line.
        lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        /// The process.
        child: Box<tokio::process::Child>,
    },
}

impl DriverLink {
    /// A connected pair for one process.
    pub fn local_pair() -> (DriverLink, LoadLink) {
        let (orders_tx, orders_rx) = mpsc::unbounded_channel();
        let (notices_tx, notices_rx) = mpsc::unbounded_channel();
        (
            DriverLink::Local {
                orders: orders_tx,
                notices: notices_rx,
            },
            LoadLink::Local {
                orders: orders_rx,
                notices: notices_tx,
            },
        )
    }

    /// Sends an order.
    ///
    /// # Errors
    /// The load went away.
    pub async fn order(&mut self, order: Order) -> Result<(), String> {
        match self {
            DriverLink::Local { orders, .. } => {
                orders.send(order).map_err(|_| "load gone".to_owned())
            }
            DriverLink::Child { stdin, .. } => {
                let mut line = serde_json::to_string(&order).map_err(|e| e.to_string())?;
                line.push('\n');
                stdin
                    .write_all(line.as_bytes())
                    .await
                    .map_err(|e| format!("worker stdin: {e}"))?;
                stdin.flush().await.map_err(|e| e.to_string())
            }
        }
    }

    /// Waits for the next notice. A worker's other stdout lines are ignored.
    ///
    /// # Errors
    /// The load went away (a worker process exited: its status is in the message).
    pub async fn notice(&mut self) -> Result<Notice, String> {
        match self {
            DriverLink::Local { notices, .. } => notices.recv().await.ok_or("load gone".to_owned()),
            DriverLink::Child { lines, child, .. } => loop {
                match lines.next_line().await.map_err(|e| e.to_string())? {
                    Some(line) => {
                        if let Ok(notice) = serde_json::from_str(&line) {
                            return Ok(notice);
                        }
                    }
                    None => {
                        let status = child.wait().await.map_err(|e| e.to_string())?;
                        return Err(format!("worker exited: {status}"));
                    }
                }
            },
        }
    }
}
