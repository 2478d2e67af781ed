//! The TypeScript browser SDK (sdk/typescript) as part of `cargo test`: `npm ci`, its
//! unit tests (`npm test`: every protocol vector, the client state machine, the demo's
//! copy of the build), then the end-to-end test in headless chromium against this
//! package's `gateway --demo` (`npm run test:browser`, screenshots in
//! sdk/typescript/test-artifacts/).
//!
//! Without node, npm or chromium the test is skipped with a message; under `CI=true` a
//! missing one is a failure (.ci/run installs them).

use std::path::{Path, PathBuf};
use std::process::Command;

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `program args` in `dir`; on success prints only the closing summary lines
/// (node's test runner prints one line per vector), on failure everything.
fn run(dir: &Path, program: &Path, args: &[&str], envs: &[(&str, &str)]) {
    let shown = format!("{} {}", program.display(), args.join(" "));
    eprintln!("browser_sdk: running {shown}");
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .envs(envs.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!(
            "`{shown}` in {} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            dir.display(),
            output.status
        );
    }
    for line in stdout.lines().chain(stderr.lines()) {
        let line = line.trim_start_matches("# ");
        let summary = [
            "tests ",
            "pass ",
            "fail ",
            "skipped ",
            "screenshot: ",
            "added ",
        ];
        if summary.iter().any(|s| line.starts_with(s)) || line.contains("SKIPPED") {
            eprintln!("browser_sdk:   {line}");
        }
    }
}

#[test]
fn typescript_sdk_and_headless_browser_demo() {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .or_else(|| on_path("chromium"));
    let (node, npm) = (on_path("node"), on_path("npm"));
    let missing: Vec<&str> = [("node", node.is_some()), ("npm", npm.is_some())]
        .into_iter()
        .chain([("chromium", chromium.as_ref().is_some_and(|c| c.is_file()))])
        .filter(|(_, found)| !found)
        .map(|(name, _)| name)
        .collect();
    if !missing.is_empty() {
        assert!(
            !ci,
            "CI=true and {missing:?} not found: .ci/run installs nodejs, npm and chromium"
        );
        eprintln!(
            "SKIPPED typescript_sdk_and_headless_browser_demo: {missing:?} not found \
             (apt-get install nodejs npm chromium)"
        );
        return;
    }
    let (npm, chromium) = (npm.unwrap(), chromium.unwrap());
    let sdk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdk/typescript");
    let gateway = env!("CARGO_BIN_EXE_gateway");
    let chromium = chromium.to_string_lossy().into_owned();
    let envs = [("GATEWAY_BIN", gateway), ("CHROMIUM", chromium.as_str())];
    run(&sdk, &npm, &["ci", "--no-audit", "--no-fund"], &[]);
    run(&sdk, &npm, &["test"], &[]);
    run(&sdk, &npm, &["run", "test:browser"], &envs);
    for page in ["alice", "bob"] {
        let shot = sdk.join(format!("test-artifacts/browser-demo-{page}.png"));
        let len = std::fs::metadata(&shot)
            .unwrap_or_else(|e| panic!("{}: {e}", shot.display()))
            .len();
        assert!(len > 10_000, "{} is only {len} bytes", shot.display());
    }
}
