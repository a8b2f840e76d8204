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
        let pid = self.envoy.id();
        callgrind_control(&["-i", "on"], pid)?;
        callgrind_control(&["-z"], pid)?;
        work();
        callgrind_control(&["-d"], pid)?;
        callgrind_control(&["-i", "off"], pid)?;
        self.dumps += 1;
        let dump = std::fs::read_to_string(format!("{}.{}", self.out.display(), self.dumps))
            .map_err(|e| format!("no callgrind dump: {e}"))?;
        dump.lines()
            .find_map(|line| line.strip_prefix("totals: "))
            .and_then(|total| total.trim().parse().ok())
            .ok_or_else(|| "no totals in the callgrind dump".to_owned())
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
