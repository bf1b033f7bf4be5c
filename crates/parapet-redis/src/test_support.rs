//! A throwaway `redis-server` on a free loopback port, for tests (this
//! crate's, and yours): started on demand, stopped when dropped.
//!
//! Needs the `redis-server` binary (Debian package `redis-server`). When it
//! is missing and the process runs as root, [`RedisServer::start`] installs
//! it with `apt-get`; otherwise it fails with the exact command to run.
//!
//! ```
//! use parapet_redis::test_support::RedisServer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let server = RedisServer::start().await.unwrap();
//! assert!(server.url().starts_with("redis://127.0.0.1:"));
//! // Dropping it kills the server.
//! # }
//! ```

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The command that installs `redis-server` on Debian and Ubuntu.
pub const INSTALL_COMMAND: &str =
    "apt-get update && apt-get install -y --no-install-recommends redis-server";

/// How long a started server has to answer `PING`.
const READY_WITHIN: Duration = Duration::from_secs(10);

/// Why a test server could not be started.
#[derive(Debug)]
pub struct HarnessError(String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// A `redis-server` child process on `127.0.0.1`, without persistence,
/// killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers
    /// `PING`.
    ///
    /// # Errors
    ///
    /// `redis-server` is missing and cannot be installed (the message says
    /// the command to run), or it did not answer within 10 s.
    pub async fn start() -> Result<Self, HarnessError> {
        let port = free_port()?;
        Self::start_on(port).await
    }

    /// Starts a server on `port` (for instance the port of one that was
    /// [`stop`](Self::stop)ped) and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// As [`start`](Self::start).
    pub async fn start_on(port: u16) -> Result<Self, HarnessError> {
        ensure_installed()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| HarnessError(format!("cannot run redis-server: {e}")))?;
        let mut server = Self {
            child: Some(child),
            port,
        };
        let start = tokio::time::Instant::now();
        while !ping(server.addr()).await {
            if let Some(status) = server
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                return Err(HarnessError(format!(
                    "redis-server on port {port} exited at start ({status})"
                )));
            }
            if start.elapsed() > READY_WITHIN {
                return Err(HarnessError(format!(
                    "redis-server on port {port} did not answer PING within {READY_WITHIN:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(server)
    }

    /// The server's port.
    #[must_use]
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The URL to open it with, `redis://127.0.0.1:<port>/`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Kills the server (as a crash would: nothing is saved) and waits for
    /// it to exit. [`start_on`](Self::start_on) with the same port brings a
    /// fresh, empty one back.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A loopback port that was free a moment ago.
fn free_port() -> Result<u16, HarnessError> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| HarnessError(format!("no free loopback port: {e}")))
}

/// Whether a server at `addr` answers `PING` with `PONG`.
async fn ping(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
        tcp.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        tcp.read_exact(&mut buf).await.ok()?;
        (&buf == b"+PONG\r\n").then_some(())
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .ok()
        .flatten()
        .is_some()
}

fn on_path() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Makes sure `redis-server` can be run: installs it as root, or says how.
fn ensure_installed() -> Result<(), HarnessError> {
    if on_path() {
        return Ok(());
    }
    if !is_root() {
        return Err(HarnessError(format!(
            "redis-server is not installed; the tests need it: run `sudo sh -c '{INSTALL_COMMAND}'`"
        )));
    }
    let installed = Command::new("sh")
        .args(["-c", INSTALL_COMMAND])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if installed && on_path() {
        Ok(())
    } else {
        Err(HarnessError(format!(
            "redis-server is not installed and `{INSTALL_COMMAND}` failed; install it and run the tests again"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_started_server_answers_and_is_gone_once_dropped() {
        let server = RedisServer::start().await.unwrap();
        let addr = server.addr();
        assert!(ping(addr).await);
        drop(server);
        assert!(!ping(addr).await);
    }

    #[tokio::test]
    async fn a_stopped_server_comes_back_on_its_port() {
        let mut server = RedisServer::start().await.unwrap();
        let port = server.port();
        server.stop();
        assert!(!ping(server.addr()).await);
        let again = RedisServer::start_on(port).await.unwrap();
        assert!(ping(again.addr()).await);
    }
}
