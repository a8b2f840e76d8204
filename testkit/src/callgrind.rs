//! Envoy under valgrind's callgrind, one worker: the instructions it executes over a stretch of
//! requests, counted rather than timed. On a shared two-core machine these counts repeat to
//! within a tenth of a percent, where CPU time does not, so small differences can be told apart.

use crate::client::get;
use crate::process::{required_file, Process};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Envoy running `config` under callgrind, instrumentation off but while
/// [`Callgrind::count`] runs.
pub struct Callgrind {
    envoy: Process,
    pub listener: SocketAddr,
    out: PathBuf,
    /// Dumps taken so far: callgrind numbers them from 1.
    dumps: usize,
}

impl Callgrind {
    /// Starts Envoy (`ENVOY_BIN`) with `config`, its files in `dir`; waits until it is ready.
    pub fn start(config: &str, dir: &Path) -> Result<Self, String> {
        let config_path = dir.join("callgrind-envoy.yaml");
        std::fs::write(&config_path, config).map_err(|e| e.to_string())?;
        let admin_path = dir.join("callgrind-admin");
        let _ = std::fs::remove_file(&admin_path);
        let out = dir.join("callgrind.out");
        for dump in 1..100 {
            let _ = std::fs::remove_file(format!("{}.{dump}", out.display()));
        }
        let log = std::fs::File::create(dir.join("callgrind.log")).map_err(|e| e.to_string())?;
        let mut envoy = Process::spawn(
            Command::new("valgrind")
                .args([
                    "--tool=callgrind",
                    "--smc-check=all-non-file",
                    "--instr-atstart=no",
                ])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(required_file("ENVOY_BIN"))
                .arg("-c")
                .arg(&config_path)
                .arg("--admin-address-path")
                .arg(&admin_path)
                .args(["--concurrency", "1", "--disable-hot-restart"])
                .args(["--log-level", "error"])
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        let admin = wait_ready(&mut envoy, &admin_path)?;
        let listener = listener(admin)?;
        Ok(Self {
            envoy,
            listener,
            out,
            dumps: 0,
        })
    }

    /// The instructions Envoy executes while `work` runs.
    pub fn count(&mut self, work: impl FnOnce()) -> Result<u64, String> {
        Ok(self.count_by_object(work)?.total)
    }

    /// The instructions Envoy executes while `work` runs, and where they ran.
    pub fn count_by_object(&mut self, work: impl FnOnce()) -> Result<Counts, String> {
        let pid = self.envoy.id();
        callgrind_control(&["-i", "on"], pid)?;
        callgrind_control(&["-z"], pid)?;
        work();
        callgrind_control(&["-d"], pid)?;
        callgrind_control(&["-i", "off"], pid)?;
        self.dumps += 1;
        let dump = std::fs::read_to_string(format!("{}.{}", self.out.display(), self.dumps))
            .map_err(|e| format!("no callgrind dump: {e}"))?;
        Counts::of_dump(&dump)
    }
}

/// Instructions counted over one stretch, in all and by where they ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    /// In code no file maps: what V8 generated at run time (the filter's compiled Wasm, V8's
    /// builtins and the trampolines between them and Envoy).
    pub generated: u64,
    /// In the C library (memcpy above all; a `rep movsb` copy counts an instruction a byte).
    pub libc: u64,
}

impl Counts {
    /// Reads a callgrind dump (`--dump-instr=no`, one event): each cost line is an object's
    /// own instructions, except the line after a `calls=`, which is the callee's inclusive
    /// cost and is skipped.
    fn of_dump(dump: &str) -> Result<Self, String> {
        let mut names = std::collections::HashMap::new();
        let mut object = String::new();
        let mut counts = Self::default();
        let mut after_call = false;
        for line in dump.lines() {
            if let Some(total) = line.strip_prefix("totals: ") {
                counts.total = total.trim().parse().map_err(|_| "bad totals".to_owned())?;
            } else if let Some(named) = line.strip_prefix("ob=").or(line.strip_prefix("cob=")) {
                // `(id) name` the first time an object is named (by either), `(id)` after;
                // `ob=` sets whose code the next lines are, `cob=` only a call's callee.
                let (id, name) = named.split_once(' ').unwrap_or((named, ""));
                if !name.is_empty() {
                    names.insert(id.to_owned(), name.to_owned());
                }
                if line.starts_with("ob=") {
                    object = names.get(id).cloned().unwrap_or_default();
                }
            } else if line.starts_with("calls=") {
                after_call = true;
            } else if line.starts_with(|c: char| c.is_ascii_digit() || "+-*".contains(c)) {
                if std::mem::take(&mut after_call) {
                    continue;
                }
                let cost: u64 = line
                    .split_whitespace()
                    .nth(1)
                    .and_then(|c| c.parse().ok())
                    .ok_or_else(|| format!("bad cost line {line:?}"))?;
                if object == "???" {
                    counts.generated += cost;
                } else if object.contains("/libc.so") {
                    counts.libc += cost;
                }
            }
        }
        if counts.total == 0 {
            return Err("no totals in the callgrind dump".into());
        }
        Ok(counts)
    }

    pub fn saturating_sub(self, other: Self) -> Self {
        Self {
            total: self.total.saturating_sub(other.total),
            generated: self.generated.saturating_sub(other.generated),
            libc: self.libc.saturating_sub(other.libc),
        }
    }
}

fn callgrind_control(args: &[&str], pid: u32) -> Result<(), String> {
    let status = Command::new("callgrind_control")
        .args(args)
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("callgrind_control {args:?} failed"))
    }
}

fn wait_ready(envoy: &mut Process, admin_path: &Path) -> Result<SocketAddr, String> {
    // Envoy under valgrind starts in tens of seconds.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if envoy.exited().is_some() {
            return Err("Envoy under callgrind exited".into());
        }
        if let Some(admin) = std::fs::read_to_string(admin_path)
            .ok()
            .and_then(|a| a.trim().parse().ok())
        {
            if get(admin, "/ready").is_ok_and(|(status, _)| status == 200) {
                return Ok(admin);
            }
        }
        if Instant::now() > deadline {
            return Err("Envoy under callgrind not ready within 300 s".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn listener(admin: SocketAddr) -> Result<SocketAddr, String> {
    let (_, body) = get(admin, "/listeners?format=json")?;
    let listeners: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    let port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        .as_u64()
        .ok_or(format!("no listener in {body}"))?;
    Ok(SocketAddr::from(([127, 0, 0, 1], port as u16)))
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn a_dump_is_split_by_object_without_the_calls_inclusive_costs() {
        let dump = "events: Ir\nob=(3) /usr/lib/x86_64-linux-gnu/libc.so.6\nfn=(1) memcpy\n\
            0 40\n+2 2\nob=(2) /envoy\nfn=(2) f\n0 7\ncob=(1) ???\ncfn=(3) 0x1\ncalls=1 0\n\
            0 900\n* 3\nob=(1)\nfn=(3)\n0 100\n-1 800\nob=(3)\nfn=(4) g\n0 8\ntotals: 960\n";
        let counts = Counts::of_dump(dump).unwrap();
        assert_eq!(
            counts,
            Counts {
                total: 960,
                generated: 900,
                libc: 50,
            }
        );
        assert!(Counts::of_dump("events: Ir\n").is_err());
    }
}
