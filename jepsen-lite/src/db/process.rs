//! One replica's operating-system process: spawn with output to a log file, SIGKILL,
//! SIGTERM with a grace period, SIGSTOP/SIGCONT.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use super::DbError;

/// A replica process slot: at most one child at a time, all incarnations logging to one
/// file.
#[derive(Debug)]
pub struct NodeProcess {
    pub name: String,
    pub log_path: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl NodeProcess {
    pub fn new(name: impl Into<String>, log_path: PathBuf) -> NodeProcess {
        NodeProcess {
            name: name.into(),
            log_path,
            child: None,
            paused: false,
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The running child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts `program args`, appending its output to the log file.
    pub fn spawn(&mut self, program: &Path, args: &[String]) -> Result<(), DbError> {
        if self.child.is_some() {
            return Ok(());
        }
        use std::io::Write;
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(DbError::io(format!("opening {}", self.log_path.display())))?;
        // The header makes restarts visible when reading one node's log.
        let _ = writeln!(
            log,
            "=== jepsen-lite: {} {}",
            program.display(),
            args.join(" ")
        );
        let stderr = log
            .try_clone()
            .map_err(DbError::io(format!("opening {}", self.log_path.display())))?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            // A harness that dies must not leave replicas behind.
            .kill_on_drop(true)
            .spawn()
            .map_err(DbError::io(format!("starting {}", program.display())))?;
        self.child = Some(child);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, signal: libc::c_int) -> Result<(), DbError> {
        let Some(pid) = self.child.as_ref().and_then(Child::id) else {
            return Ok(());
        };
        // SAFETY: kill(2) on a child this process spawned and has not reaped yet (a
        // reaped child's `id()` is None), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
        if rc != 0 {
            return Err(DbError::Io {
                what: format!("signal {signal} to {} (pid {pid})", self.name),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }

    /// SIGKILL and reap.
    pub async fn kill(&mut self) -> Result<(), DbError> {
        if let Some(mut child) = self.child.take() {
            // A stopped process dies from SIGKILL too.
            let _ = child.start_kill();
            child
                .wait()
                .await
                .map_err(DbError::io(format!("waiting for {} to die", self.name)))?;
        }
        self.paused = false;
        Ok(())
    }

    /// SIGTERM; SIGKILL if it has not exited after `grace`.
    pub async fn terminate(&mut self, grace: Duration) -> Result<(), DbError> {
        if self.child.is_none() {
            return Ok(());
        }
        if self.paused {
            self.resume()?;
        }
        self.signal(libc::SIGTERM)?;
        if let Some(child) = self.child.as_mut()
            && tokio::time::timeout(grace, child.wait()).await.is_ok()
        {
            self.child = None;
            return Ok(());
        }
        self.kill().await
    }

    /// Reaps the child if it exited by itself (e.g. etcd after being removed).
    pub fn reap_if_exited(&mut self) {
        if let Some(child) = self.child.as_mut()
            && let Ok(Some(_)) = child.try_wait()
        {
            self.child = None;
            self.paused = false;
        }
    }

    pub fn pause(&mut self) -> Result<(), DbError> {
        self.signal(libc::SIGSTOP)?;
        self.paused = self.child.is_some();
        Ok(())
    }

    pub fn resume(&mut self) -> Result<(), DbError> {
        self.signal(libc::SIGCONT)?;
        self.paused = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_paused_process_can_be_resumed_and_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = NodeProcess::new("sleep", dir.path().join("sleep.log"));
        p.spawn(Path::new("/bin/sleep"), &["30".into()])
            .expect("spawn sleep");
        assert!(p.is_running());
        p.pause().expect("pause");
        assert!(p.is_paused());
        p.resume().expect("resume");
        p.pause().expect("pause again");
        p.kill().await.expect("kill");
        assert!(!p.is_running() && !p.is_paused());
        let log = std::fs::read_to_string(dir.path().join("sleep.log")).expect("log");
        assert!(log.starts_with("=== jepsen-lite: /bin/sleep 30"));
    }

    #[tokio::test]
    async fn terminate_waits_for_a_clean_exit() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = NodeProcess::new("sleep", dir.path().join("sleep.log"));
        p.spawn(Path::new("/bin/sleep"), &["30".into()])
            .expect("spawn sleep");
        p.terminate(Duration::from_secs(5))
            .await
            .expect("terminate");
        assert!(!p.is_running());
    }
}
