//! SSH transport: one multiplexed OpenSSH connection per host, strict host-key checking
//! against the key pinned in the `DockerHost`, and scripts sent on standard input.
//!
//! For each connection a private temporary directory (mode 0700) holds the private key (0600),
//! a `known_hosts` with exactly the pinned key, and an `ssh_config` that turns off everything
//! interactive or trusting: `StrictHostKeyChecking yes`, no global known hosts, no agent, no
//! password prompts. The remote command is always the fixed `sh -s`; the script arrives on
//! standard input, so no spec value is ever part of a command line.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, SessionBuilder, Stdio};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// How to reach one host.
#[derive(Clone)]
pub struct Target {
    /// `DockerHost` name.
    pub host: String,
    /// SSH address.
    pub address: String,
    /// SSH port.
    pub port: u16,
    /// SSH user.
    pub user: String,
    /// Pinned host key, `<type> <base64>`.
    pub host_key: String,
    /// Private key bytes (never logged; `Debug` is not derived for this reason).
    pub identity: Vec<u8>,
}

/// Connection and command time limits.
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    /// Limit for establishing the connection.
    pub connect: Duration,
    /// Limit for one remote script.
    pub command: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            command: Duration::from_secs(60),
        }
    }
}

/// What went wrong talking to a host.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SshError {
    /// The host presented a key other than the pinned one; nothing ran on it.
    #[error("host key mismatch: the host presented {presented}, but spec.hostKey pins {pinned}; no command was run (update spec.hostKey if the host was reinstalled)")]
    HostKeyMismatch {
        /// Fingerprint of the presented key (or why it could not be read).
        presented: String,
        /// Fingerprint of the pinned key.
        pinned: String,
    },
    /// The host refused the private key.
    #[error("authentication failed for user {user}: {detail}")]
    Auth {
        /// SSH user.
        user: String,
        /// ssh's message.
        detail: String,
    },
    /// The connection could not be made.
    #[error("cannot connect to {address}:{port}: {detail}")]
    Connect {
        /// SSH address.
        address: String,
        /// SSH port.
        port: u16,
        /// ssh's message.
        detail: String,
    },
    /// A time limit ran out.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was running.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// The remote command failed to run or exited abnormally.
    #[error("remote command failed: {0}")]
    Remote(String),
    /// Local files for the connection could not be written.
    #[error("cannot prepare SSH files: {0}")]
    Local(#[from] std::io::Error),
}

/// An open connection to one host.
pub struct Connection {
    session: openssh::Session,
    round_trips: AtomicU32,
    _dir: tempfile::TempDir,
}

/// Removes private key files left in `gremesh-ssh-<pid>-*` folders by gremesh processes that
/// no longer exist (killed before they could clean up). A key is on disk only between writing
/// it and the master connection's authentication; this closes the window a kill leaves.
fn sweep_stale_keys() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(pid) = name
                .strip_prefix("gremesh-ssh-")
                .and_then(|r| r.split('-').next())
            else {
                continue;
            };
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_file(entry.path().join("id"));
            }
        }
    });
}

/// SHA256 fingerprint of a `<type> <base64>` public key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &str) -> String {
    use base64::Engine as _;
    let blob = key.split_whitespace().nth(1).unwrap_or("");
    match base64::engine::general_purpose::STANDARD.decode(blob) {
        Ok(bytes) => {
            let digest = Sha256::digest(bytes);
            format!(
                "SHA256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
            )
        }
        Err(_) => "an undecodable key".to_owned(),
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    if !bytes.ends_with(b"\n") {
        f.write_all(b"\n")?;
    }
    Ok(())
}

impl SshError {
    /// Whether trying again at once may help: a refused or reset connection (for example an
    /// sshd shedding unauthenticated connections under `MaxStartups`). A timeout is not
    /// retried within the pass (the host is likely down; the next pass retries it), nor are a
    /// key mismatch or a refused login.
    pub fn is_transient(&self) -> bool {
        matches!(self, SshError::Connect { .. })
    }
}

impl Connection {
    /// Opens the master connection, checking the host key strictly; transient failures are
    /// retried three times with exponential back-off (0.5 s, 1 s, 2 s, with jitter).
    pub async fn open(target: &Target, timeouts: Timeouts) -> Result<Self, SshError> {
        use backon::{ExponentialBuilder, Retryable};
        let policy = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_times(3)
            .with_jitter();
        (|| Self::open_once(target, timeouts))
            .retry(policy)
            .when(SshError::is_transient)
            .notify(|e, after| tracing::debug!(host = %target.host, error = %e, ?after, "retrying SSH connect"))
            .await
    }

    async fn open_once(target: &Target, timeouts: Timeouts) -> Result<Self, SshError> {
        sweep_stale_keys();
        let prefix = format!("gremesh-ssh-{}-", std::process::id());
        let dir = tempfile::Builder::new().prefix(&prefix).tempdir()?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let alias = format!("gremesh-{}", target.host);
        write_private(&dir.path().join("id"), &target.identity)?;
        write_private(
            &dir.path().join("known_hosts"),
            format!("{alias} {}\n", target.host_key).as_bytes(),
        )?;
        let config = format!(
            "Host *\n  HostKeyAlias {alias}\n  StrictHostKeyChecking yes\n  GlobalKnownHostsFile /dev/null\n  \
             UserKnownHostsFile {kh}\n  IdentityFile {id}\n  IdentitiesOnly yes\n  IdentityAgent none\n  \
             BatchMode yes\n  PasswordAuthentication no\n  KbdInteractiveAuthentication no\n  \
             UpdateHostKeys no\n  CheckHostIP no\n  ServerAliveCountMax 3\n  LogLevel ERROR\n",
            kh = dir.path().join("known_hosts").display(),
            id = dir.path().join("id").display(),
        );
        write_private(&dir.path().join("config"), config.as_bytes())?;

        let mut builder = SessionBuilder::default();
        builder
            .user(target.user.clone())
            .port(target.port)
            .config_file(dir.path().join("config"))
            .keyfile(dir.path().join("id"))
            .known_hosts_check(KnownHosts::Strict)
            .user_known_hosts_file(dir.path().join("known_hosts"))
            .connect_timeout(timeouts.connect)
            .server_alive_interval(Duration::from_secs(5))
            .control_directory(dir.path())
            // A master left behind by a killed gremesh exits by itself once idle.
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(60).expect("non-zero"),
            ));
        let connect = builder.connect(&target.address);
        let limit = timeouts.connect + Duration::from_secs(2);
        let session = match tokio::time::timeout(limit, connect).await {
            Err(_) => {
                return Err(SshError::Timeout {
                    what: "SSH connect",
                    after: limit,
                })
            }
            Ok(Err(e)) => return Err(classify(target, e, timeouts.connect).await),
            Ok(Ok(s)) => s,
        };
        // The master is authenticated: the private key is not needed on disk any more (the
        // sessions ride the master), so it is gone even if this process is killed later.
        let _ = std::fs::remove_file(dir.path().join("id"));
        Ok(Self {
            session,
            round_trips: AtomicU32::new(0),
            _dir: dir,
        })
    }

    /// Starts `sh -s` on the host and writes `script` to its standard input, which is then
    /// closed. Counts as one round trip.
    async fn spawn_script(
        &self,
        script: &str,
        stderr: Stdio,
    ) -> Result<openssh::Child<&openssh::Session>, SshError> {
        let remote = |e: openssh::Error| SshError::Remote(e.to_string());
        let write = |e: std::io::Error| SshError::Remote(e.to_string());
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        let mut child = self
            .session
            .command("sh")
            .arg("-s")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .await
            .map_err(remote)?;
        if let Some(mut stdin) = child.stdin().take() {
            stdin.write_all(script.as_bytes()).await.map_err(write)?;
            stdin.shutdown().await.map_err(write)?;
        }
        Ok(child)
    }

    /// Runs `script` with `sh -s` on the host and returns its standard output. A non-zero
    /// exit is not an error here: the caller reads the script's own markers.
    pub async fn run_script(&self, script: &str, limit: Duration) -> Result<String, SshError> {
        let run = async {
            let child = self.spawn_script(script, Stdio::piped()).await?;
            let output = child
                .wait_with_output()
                .await
                .map_err(|e| SshError::Remote(e.to_string()))?;
            Ok(String::from_utf8_lossy(&output.stdout).into_owned())
        };
        tokio::time::timeout(limit, run)
            .await
            .map_err(|_| SshError::Timeout {
                what: "remote script",
                after: limit,
            })?
    }

    /// Runs a long-lived `script` with `sh -s` and sends every line it prints to `lines` until
    /// the script ends, the connection drops or the receiver is gone.
    pub async fn follow_lines(
        &self,
        script: &str,
        lines: tokio::sync::mpsc::Sender<String>,
    ) -> Result<(), SshError> {
        use tokio::io::AsyncBufReadExt;
        let mut child = self.spawn_script(script, Stdio::null()).await?;
        let stdout = child
            .stdout()
            .take()
            .ok_or_else(|| SshError::Remote("no stdout".into()))?;
        let mut reader = tokio::io::BufReader::new(stdout).lines();
        while let Some(line) = reader
            .next_line()
            .await
            .map_err(|e| SshError::Remote(e.to_string()))?
        {
            if lines.send(line).await.is_err() {
                break;
            }
        }
        let _ = child.disconnect().await;
        Ok(())
    }

    /// How many remote scripts ran over this connection.
    pub fn round_trips(&self) -> u32 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Closes the master connection.
    pub async fn close(self) {
        if let Err(e) = self.session.close().await {
            tracing::debug!(error = %e, "closing SSH connection");
        }
    }
}

/// Turns an openssh connect error into a precise one, fetching the presented host key's
/// fingerprint on a mismatch.
async fn classify(target: &Target, error: openssh::Error, connect: Duration) -> SshError {
    let detail = error.to_string();
    let source = std::error::Error::source(&error)
        .map(|s| s.to_string())
        .unwrap_or_default();
    let text = format!("{detail}: {source}");
    if text.contains("Host key verification failed")
        || text.contains("HOST IDENTIFICATION HAS CHANGED")
        || text.contains("No ") && text.contains("host key is known")
    {
        let presented = presented_key(target)
            .await
            .map(|k| fingerprint(&k))
            .unwrap_or_else(|e| format!("no key of the pinned type ({e})"));
        return SshError::HostKeyMismatch {
            presented,
            pinned: fingerprint(&target.host_key),
        };
    }
    // ssh's own ConnectTimeout: the host is likely down, so this is not retried at once.
    if text.contains("timed out") {
        return SshError::Timeout {
            what: "SSH connect",
            after: connect,
        };
    }
    if text.contains("Permission denied") {
        return SshError::Auth {
            user: target.user.clone(),
            detail: source.trim().to_owned(),
        };
    }
    SshError::Connect {
        address: target.address.clone(),
        port: target.port,
        detail: source.trim().to_owned(),
    }
}

/// Reads the key the host presents (of the pinned key's type) with `ssh-keyscan`.
async fn presented_key(target: &Target) -> Result<String, String> {
    let key_type = target
        .host_key
        .split_whitespace()
        .next()
        .unwrap_or("ssh-ed25519");
    let out = tokio::process::Command::new("ssh-keyscan")
        .args([
            "-T",
            "5",
            "-t",
            key_type,
            "-p",
            &target.port.to_string(),
            "--",
            &target.address,
        ])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let mut f = l.split_whitespace();
            let (_, t, k) = (f.next()?, f.next()?, f.next()?);
            Some(format!("{t} {k}"))
        })
        .ok_or_else(|| format!("the host offers no {key_type} host key"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_ssh_keygen() {
        // What `ssh-keygen -lf` prints for this key.
        let key =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPxjaj/e5Kq6yiozbR1QV0n3Io4ux0Y6v0N4KrLVOaK3";
        assert_eq!(
            fingerprint(key),
            "SHA256:2oPBiOT14ReZmB0sWJ5dic537NZ11otxkBh6BwVbGpk"
        );
        assert_eq!(fingerprint("ssh-ed25519 !!!"), "an undecodable key");
    }
}
