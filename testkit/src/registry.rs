//! An OCI registry on loopback (Debian's docker-registry, distribution 2.8), for pushing the
//! filter the way `./build.sh push` does and pulling it the way Envoy Gateway does.

use crate::process::{free_port, wait_http_ok, Process};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry on a free port, stopped and its storage removed on drop.
pub struct Registry {
    _process: Process,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Registry {
    pub fn start() -> Result<Self, String> {
        if !Path::new(BINARY).is_file() {
            return Err(format!(
                "{BINARY} missing: run the tests with ./build.sh test"
            ));
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let dir = std::env::temp_dir().join(format!(
            "model-router-registry-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.join("data").display()
        );
        std::fs::write(dir.join("config.yml"), config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("registry.log")).map_err(|e| e.to_string())?;
        let process = Process::spawn(
            Command::new(BINARY)
                .arg("serve")
                .arg(dir.join("config.yml"))
                .stdout(Stdio::null())
                .stderr(log),
        )?;
        let registry = Self {
            _process: process,
            addr,
            dir,
        };
        wait_http_ok(addr, "/v2/", Duration::from_secs(30))?;
        Ok(registry)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
