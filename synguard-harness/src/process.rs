//! Child processes the harness starts, ended only by their own PID (or the process group they
//! lead) and only while they are known not to have been reaped.

use std::{
    io::Read,
    os::unix::process::CommandExt,
    process::{Child, ChildStderr, ChildStdout, Command, ExitStatus},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use nix::sys::signal::Signal;

use crate::cleanup;

/// A started child. Dropping it stops it (SIGINT, then SIGKILL after a grace period).
#[derive(Debug)]
pub struct NsChild {
    child: Option<Child>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    pid: i32,
    status: Option<ExitStatus>,
}

impl NsChild {
    /// Spawns `cmd`, registering it for cleanup.
    ///
    /// With `own_group`, the child leads a new process group and signals go to that group: a
    /// program that forks workers (trafgen with `-P N`) is then stopped as a whole, and a
    /// terminal's Ctrl-C reaches it only through our handler, which kills it after cleanup
    /// starts rather than racing it.
    pub fn spawn(cmd: &mut Command, own_group: bool, topology: Option<u64>) -> Result<Self> {
        if own_group {
            cmd.process_group(0);
        }
        // Registered right after spawn: only this struct ever reaps it, so the PID is still ours.
        let mut child = cmd.spawn().with_context(|| format!("spawn {cmd:?}"))?;
        let pid = child.id() as i32;
        cleanup::register_child(pid, own_group, topology);
        Ok(Self {
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child: Some(child),
            pid,
            status: None,
        })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The child's stdout pipe, if it was spawned with `Stdio::piped()`. Read it concurrently
    /// if the child may print more than a pipe buffer (64 KiB).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// The child's stderr pipe, if it was spawned with `Stdio::piped()`.
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.stderr.take()
    }

    /// Everything left on the stdout pipe, up to EOF; call after the child exited.
    pub fn read_stdout(&mut self) -> String {
        let mut s = String::new();
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_string(&mut s);
        }
        s
    }

    /// Sends `sig` if the child has not been reaped yet.
    pub fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            cleanup::signal_child(self.pid, sig);
        }
    }

    /// Non-blocking: the exit status once the child has exited (then it is reaped).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        if !cleanup::child_exited(self.pid) {
            return Ok(None);
        }
        // Unregister first: after wait() the PID may be reused and must never be signalled.
        cleanup::unregister_child(self.pid);
        let s = self
            .child
            .as_mut()
            .expect("child present until reaped")
            .wait()
            .context("reap child")?;
        self.child = None;
        self.status = Some(s);
        Ok(Some(s))
    }

    /// Waits at most `timeout` for the child to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(Some(s));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGINT, wait up to `grace`, then SIGKILL and wait.
    pub fn stop(&mut self, grace: Duration) -> Result<ExitStatus> {
        self.stop_with(Signal::SIGINT, grace)
    }

    /// `sig`, wait up to `grace`, then SIGKILL and wait.
    pub fn stop_with(&mut self, sig: Signal, grace: Duration) -> Result<ExitStatus> {
        if let Some(s) = self.try_wait()? {
            return Ok(s);
        }
        self.signal(sig);
        if let Some(s) = self.wait_timeout(grace)? {
            return Ok(s);
        }
        self.signal(Signal::SIGKILL);
        self.wait_timeout(Duration::from_secs(5))?
            .with_context(|| format!("pid {} survived SIGKILL", self.pid))
    }
}

impl Drop for NsChild {
    fn drop(&mut self) {
        if let Err(e) = self.stop(Duration::from_secs(1)) {
            eprintln!("synguard-harness: stopping pid {}: {e:#}", self.pid);
        }
    }
}
