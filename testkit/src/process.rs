//! Child processes the tests and benchmarks start: stopped when dropped, started on free
//! ports, waited on through their own readiness signals.

use crate::client::get;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process, killed and reaped when dropped.
#[derive(Debug)]
pub struct Process(Child);

impl Process {
    pub fn spawn(command: &mut Command) -> Result<Self, String> {
        command
            .spawn()
            .map(Self)
            .map_err(|e| format!("cannot start {:?}: {e}", command.get_program()))
    }

    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Asks the process to stop (SIGTERM) and waits up to `grace` for it to exit; it is
    /// killed on drop if it has not.
    pub fn terminate(&mut self, grace: Duration) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while self.exited().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The child's stderr, when it was piped.
    pub fn take_stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.0.stderr.take()
    }
}

impl From<Child> for Process {
    fn from(child: Child) -> Self {
        Self(child)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts a program that prints its listening address at the end of a line containing
/// `marker` (after a space or a `/`), and returns once it has.
pub fn spawn_listening(
    command: &mut Command,
    marker: &str,
) -> Result<(Process, SocketAddr), String> {
    let mut process = Process::spawn(command.stdout(Stdio::piped()))?;
    let stdout = process.0.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = lines
        .find(|l| l.as_ref().is_ok_and(|l| l.contains(marker)))
        .and_then(Result::ok)
        .ok_or(format!(
            "{:?} exited without a line with {marker:?}",
            command.get_program()
        ))?;
    let addr = line
        .rsplit(|c: char| c.is_whitespace() || c == '/')
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or(format!("no address in {line:?}"))?;
    // Keep draining so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((process, addr))
}

/// Polls `http://addr{path}` until it answers 200, for at most `timeout`.
pub fn wait_http_ok(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    wait_serving(None, addr, path, timeout).map_err(|e| e.to_string())
}

/// Why [`wait_serving`] gave up.
#[derive(Debug)]
pub enum NotServing {
    /// The process exited before it answered.
    Exited(std::process::ExitStatus),
    /// It did not answer 200 in time; the last answer or error.
    Timeout(String),
}

impl std::fmt::Display for NotServing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "exited ({status}) before answering"),
            Self::Timeout(last) => f.write_str(last),
        }
    }
}

/// [`wait_http_ok`] for the server `process` runs: fails at once if it exits.
pub fn wait_serving(
    mut process: Option<&mut Process>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(), NotServing> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = process.as_mut().and_then(|p| p.exited()) {
            return Err(NotServing::Exited(status));
        }
        let last = match get(addr, path) {
            Ok((200, _)) => return Ok(()),
            Ok((status, body)) => format!("{status} {body}"),
            Err(e) => e,
        };
        if Instant::now() > deadline {
            return Err(NotServing::Timeout(format!(
                "http://{addr}{path} not ready within {timeout:?}: {last}"
            )));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The file an environment variable names; `./build.sh` sets them all.
pub fn required_file(variable: &str) -> PathBuf {
    let path = std::env::var_os(variable)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("{variable} is not set: run this through ./build.sh"));
    assert!(
        path.is_file(),
        "{variable}={} does not exist",
        path.display()
    );
    path
}

/// Clock ticks per second of `/proc/PID/stat`'s times (USER_HZ on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// `/proc/PID/stat`: the parent's pid, then user and system CPU in ticks (all threads).
fn stat(pid: u32) -> Option<(u32, u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    Some((
        fields[1].parse().ok()?,
        fields[11].parse().ok()?,
        fields[12].parse().ok()?,
    ))
}

/// User-space CPU seconds used so far by `pid` itself, all its threads.
pub fn user_cpu_seconds(pid: u32) -> f64 {
    stat(pid).map_or(0.0, |(_, user, _)| user as f64 / TICKS_PER_SECOND)
}

/// CPU seconds used so far by `pid` and all its descendants (user and system).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stats: Vec<(u32, u32, u64)> = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .filter_map(|p| {
                    let (parent, user, system) = stat(p)?;
                    Some((p, parent, user + system))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut total = 0u64;
    let mut pending = vec![pid];
    while let Some(current) = pending.pop() {
        for (p, parent, cpu) in &stats {
            if *p == current {
                total += cpu;
            }
            if *parent == current {
                pending.push(*p);
            }
        }
    }
    total as f64 / TICKS_PER_SECOND
}
