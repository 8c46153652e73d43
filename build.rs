//! Build provenance for `--version` and `gse_exporter_build_info`: the git
//! revision and branch, the build date and the compiler, as environment
//! variables of the crate. A build without git (a container build whose
//! context has no `.git`) takes them from `GSE_EXPORTER_REVISION` and
//! `GSE_EXPORTER_BRANCH`; `SOURCE_DATE_EPOCH` fixes the date for reproducible
//! builds. Reruns only when the checked-out commit or those variables change.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn main() {
    for var in [
        "GSE_EXPORTER_REVISION",
        "GSE_EXPORTER_BRANCH",
        "SOURCE_DATE_EPOCH",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if let Some(git_dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        if let Some(reference) = git(&["symbolic-ref", "-q", "HEAD"]) {
            let common = git(&["rev-parse", "--path-format=absolute", "--git-common-dir"])
                .unwrap_or(git_dir);
            // A missing file would rerun this script on every build: a packed
            // ref is watched through packed-refs instead.
            let loose = format!("{common}/{reference}");
            if std::path::Path::new(&loose).exists() {
                println!("cargo:rerun-if-changed={loose}");
            } else {
                println!("cargo:rerun-if-changed={common}/packed-refs");
            }
        }
    }
    let revision = env_or("GSE_EXPORTER_REVISION", || git(&["rev-parse", "HEAD"]));
    let branch = env_or("GSE_EXPORTER_BRANCH", || {
        git(&["rev-parse", "--abbrev-ref", "HEAD"])
    });
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let rustc = Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|v| v.trim().to_string());
    println!(
        "cargo:rustc-env=GSE_EXPORTER_REVISION={}",
        revision.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=GSE_EXPORTER_BRANCH={}",
        branch.unwrap_or_else(|| "unknown".into())
    );
    println!(
        "cargo:rustc-env=GSE_EXPORTER_RUSTC={}",
        rustc.unwrap_or_else(|| "unknown".into())
    );
    println!("cargo:rustc-env=GSE_EXPORTER_BUILD_DATE={}", build_date());
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=GSE_EXPORTER_TARGET={target}");
}

fn env_or(var: &str, fallback: impl FnOnce() -> Option<String>) -> Option<String> {
    std::env::var(var)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(fallback)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

/// `YYYYMMDD-HH:MM:SS` UTC, as Prometheus prints it.
fn build_date() -> String {
    let time = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or_else(SystemTime::now, |s| UNIX_EPOCH + Duration::from_secs(s));
    // 2026-11-30T15:00:00Z -> 20261130-15:00:00
    let rfc3339 = humantime::format_rfc3339_seconds(time).to_string();
    let (date, clock) = rfc3339.split_once('T').unwrap_or((&rfc3339, ""));
    format!("{}-{}", date.replace('-', ""), clock.trim_end_matches('Z'))
}
