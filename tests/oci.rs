//! The OCI artifact: `build.sh` packages the filter reproducibly and pushes it to a real
//! registry (Debian's docker-registry, on loopback); a standard client (skopeo) pulls it back
//! in the shape Envoy Gateway's fetcher accepts, holding the very .wasm that was built; and
//! `push --write-k8s` pins that reference and digest in k8s/filter.yaml, changing nothing else.

use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::envoy::root;
use testkit::registry::Registry;

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("model-router-oci-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A GET (or HEAD) over HTTP/1.1: status and raw response text.
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    accept: &str,
) -> std::io::Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\naccept: {accept}\r\nconnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

/// Runs `build.sh` with `args`; returns its stdout, failing with its stderr.
fn build_sh(args: &[&str]) -> String {
    let output = Command::new(root().join("build.sh"))
        .args(args)
        .output()
        .expect("run build.sh");
    assert!(
        output.status.success(),
        "build.sh {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn digest_line(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("digest: sha256:"))
        .unwrap_or_else(|| panic!("no digest in:\n{output}"))
        .to_owned()
}

/// Puts a file back as it was when dropped, whatever the test found.
struct Restore {
    path: PathBuf,
    original: String,
}

impl Restore {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            original: std::fs::read_to_string(path).unwrap(),
        }
    }
}

impl Drop for Restore {
    fn drop(&mut self) {
        std::fs::write(&self.path, &self.original).expect("restore the file");
    }
}

fn read_json(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn the_pushed_artifact_is_reproducible_and_comes_back_byte_identical() {
    let wasm = std::fs::read(root().join("target/model_router.wasm")).expect("the built filter");

    // The same .wasm packaged twice gives the same image digest.
    let first = digest_line(&build_sh(&["oci"]));
    let second = digest_line(&build_sh(&["oci"]));
    assert_eq!(first, second, "packaging is not reproducible");

    let registry = Registry::start().unwrap();
    let reference = format!("{}/llm-gateway/model-router:e2e", registry.addr);
    let pushed = digest_line(&build_sh(&["push", &reference]));
    assert_eq!(pushed, first, "the pushed image is not the packaged one");

    // The registry serves the manifest under that digest.
    let (status, head) = http(
        registry.addr,
        "HEAD",
        "/v2/llm-gateway/model-router/manifests/e2e",
        "application/vnd.oci.image.manifest.v1+json",
    )
    .unwrap();
    assert_eq!(status, 200, "{head}");
    let served = head
        .lines()
        .find_map(|l| l.strip_prefix("Docker-Content-Digest: sha256:"))
        .unwrap_or_else(|| panic!("no digest header in {head}"));
    assert_eq!(served.trim(), pushed);

    // `--write-k8s` pins the pushed reference and digest in k8s/filter.yaml, and changes
    // nothing else there.
    let filter_yaml = root().join("k8s/filter.yaml");
    let restore = Restore::new(&filter_yaml);
    let repinned = digest_line(&build_sh(&["push", &reference, "--write-k8s"]));
    assert_eq!(repinned, pushed);
    let written = std::fs::read_to_string(&filter_yaml).unwrap();
    let original = restore.original.lines().collect::<Vec<_>>();
    let lines = written.lines().collect::<Vec<_>>();
    assert_eq!(lines.len(), original.len(), "{written}");
    let changed: Vec<(&str, &str)> = original
        .iter()
        .zip(&lines)
        .filter(|(before, after)| before != after)
        .map(|(before, after)| (*before, *after))
        .collect();
    assert_eq!(
        changed
            .iter()
            .map(|(_, after)| after.trim())
            .collect::<Vec<_>>(),
        [format!("url: {reference}"), format!("sha256: {pushed}")],
        "the lines --write-k8s changed in k8s/filter.yaml: {changed:?}"
    );
    drop(restore);

    // Pulled back by skopeo, by digest as the EnvoyExtensionPolicy pins it.
    let pulled = temp_dir("pulled");
    let layout = pulled.join("layout");
    let source = format!(
        "docker://{}/llm-gateway/model-router@sha256:{pushed}",
        registry.addr
    );
    let status = Command::new("skopeo")
        .args(["copy", "--quiet", "--src-tls-verify=false", &source])
        .arg(format!("oci:{}:pulled", layout.display()))
        .status()
        .expect("run skopeo");
    assert!(status.success(), "skopeo could not pull {source}");
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = read_json(&layout.join("index.json"));
    let manifest = read_json(&blob(index["manifests"][0]["digest"].as_str().unwrap()));

    // Envoy Gateway's "compat" variant: the last layer, a gzip'd tar, holds plugin.wasm.
    let layers = manifest["layers"].as_array().unwrap();
    let layer = layers.last().unwrap();
    assert_eq!(
        layer["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let extracted = pulled.join("extracted");
    std::fs::create_dir_all(&extracted).unwrap();
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(blob(layer["digest"].as_str().unwrap()))
        .arg("-C")
        .arg(&extracted)
        .arg("plugin.wasm")
        .status()
        .unwrap();
    assert!(status.success(), "the layer has no plugin.wasm");
    let plugin = std::fs::read(extracted.join("plugin.wasm")).unwrap();
    assert!(
        plugin == wasm,
        "plugin.wasm ({} bytes) differs from the built filter ({} bytes)",
        plugin.len(),
        wasm.len()
    );
    let _ = std::fs::remove_dir_all(&pulled);
}
