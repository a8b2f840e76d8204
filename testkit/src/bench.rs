//! What every benchmark ends with: the summary line `./build.sh` counts, and the exit code.

/// Prints `bench smoke|full: N passed, M failed` (and the failures); the exit code to return
/// from main (not to exit with, so that every process the benchmark started is stopped).
pub fn finish(smoke: bool, total: usize, failures: Vec<String>) -> std::process::ExitCode {
    println!(
        "bench {}: {} passed, {} failed",
        if smoke { "smoke" } else { "full" },
        total - failures.len().min(total),
        failures.len()
    );
    if failures.is_empty() {
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!("{}", failures.join("\n"));
    std::process::ExitCode::FAILURE
}
