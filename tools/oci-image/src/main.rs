//! `oci-image WASM LAYOUT_DIR`: writes the filter as an OCI image layout (tag `latest`) in
//! the shape Envoy Gateway's Wasm fetcher reads, the "compat" variant: an OCI image whose
//! single layer, a gzip'd tar, holds `plugin.wasm`. Prints the manifest digest.
//!
//! Everything that could vary between builds is fixed (file time, owner, mode, gzip header),
//! so the same .wasm always gives the same digest, and `./build.sh push` can pin it in
//! k8s/filter.yaml before the image reaches a registry.

use serde_json::json;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [wasm, layout] = args.as_slice() else {
        eprintln!("usage: oci-image WASM LAYOUT_DIR");
        return ExitCode::from(2);
    };
    match write_layout(Path::new(wasm), Path::new(layout)) {
        Ok(digest) => {
            println!("sha256:{digest}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("oci-image: {e}");
            ExitCode::FAILURE
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The layer: a tar with one entry, `plugin.wasm`, every header field fixed.
fn layer_tar(wasm: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path("plugin.wasm")?;
    header.set_size(wasm.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, wasm)?;
    builder.into_inner()
}

/// gzip with no file name and no time in its header.
fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Turns an I/O error into a message saying what was being done.
fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    move |e| format!("{what}: {e}")
}

/// Writes the layout and returns the manifest's digest (hex).
fn write_layout(wasm: &Path, layout: &Path) -> Result<String, String> {
    let wasm = std::fs::read(wasm).map_err(io("reading the .wasm"))?;
    if layout.exists() {
        std::fs::remove_dir_all(layout).map_err(io("clearing the layout"))?;
    }
    let blobs = layout.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(io("creating the layout"))?;
    let add_blob = |bytes: &[u8]| -> Result<(String, usize), String> {
        let digest = sha256(bytes);
        std::fs::write(blobs.join(&digest), bytes).map_err(io("writing a blob"))?;
        Ok((digest, bytes.len()))
    };
    let tar = layer_tar(&wasm).map_err(io("building the layer"))?;
    let (layer, layer_size) = add_blob(&gzip(&tar).map_err(io("compressing the layer"))?)?;
    let config = json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [format!("sha256:{}", sha256(&tar))]},
    });
    let (config, config_size) = add_blob(config.to_string().as_bytes())?;
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": format!("sha256:{config}"),
            "size": config_size,
        },
        "layers": [{
            "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
            "digest": format!("sha256:{layer}"),
            "size": layer_size,
            "annotations": {"org.opencontainers.image.title": "plugin.wasm"},
        }],
    });
    let (manifest, manifest_size) = add_blob(manifest.to_string().as_bytes())?;
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{manifest}"),
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "latest"},
        }],
    });
    let write = |name: &str, text: String| {
        std::fs::write(layout.join(name), text).map_err(io("writing the layout"))
    };
    write(
        "oci-layout",
        json!({"imageLayoutVersion": "1.0.0"}).to_string(),
    )?;
    write("index.json", index.to_string())?;
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_wasm_gives_the_same_image_and_the_layer_holds_it() {
        let dir = std::env::temp_dir().join(format!("oci-image-test-{}", std::process::id()));
        let wasm = dir.join("plugin.wasm");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&wasm, b"\0asm\x01\0\0\0 a module").unwrap();
        let first = write_layout(&wasm, &dir.join("a")).unwrap();
        let second = write_layout(&wasm, &dir.join("b")).unwrap();
        assert_eq!(first, second);
        let tar = layer_tar(b"\0asm").unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        assert_eq!(entry.path().unwrap().to_str(), Some("plugin.wasm"));
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        assert_eq!(content, b"\0asm");
        assert!(entries.next().is_none());
        std::fs::write(&wasm, b"\0asm\x01\0\0\0 another").unwrap();
        assert_ne!(write_layout(&wasm, &dir.join("c")).unwrap(), first);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
