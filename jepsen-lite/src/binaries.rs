//! Finding (and, when asked, building) the binaries a run needs: `ferrokv`,
//! `ferrokv-faulty`, and `etcd`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::db::DbError;

/// Where the ferrokv binaries are: `--bin-dir`, else next to this executable (or one
/// level up when this executable is a test binary in `deps/`).
pub fn bin_dir(explicit: Option<&Path>) -> PathBuf {
    if let Some(dir) = explicit {
        return dir.to_path_buf();
    }
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    if exe_dir.file_name().is_some_and(|n| n == "deps")
        && let Some(parent) = exe_dir.parent()
    {
        return parent.to_path_buf();
    }
    exe_dir
}

/// `dir/name` if it exists; with `build`, builds the workspace binaries first when it
/// does not.
pub fn ferrokv_binary(dir: &Path, name: &str, build: bool) -> Result<PathBuf, DbError> {
    let path = dir.join(name);
    if !path.is_file() && build {
        build_binaries(dir, name == "ferrokv-faulty")?;
    }
    if path.is_file() {
        return Ok(path);
    }
    let how = if name == "ferrokv-faulty" {
        "cargo build -p ferrokv-node --features fault-injection --bin ferrokv-faulty"
    } else {
        "cargo build --workspace --bins"
    };
    Err(DbError::MissingBinary {
        what: name.to_string(),
        path,
        hint: format!("build it with `{how}`, pass --build, or point --bin-dir at it"),
    })
}

/// Builds with the cargo that built this crate's workspace, into the target dir that
/// holds `dir`.
fn build_binaries(dir: &Path, faulty: bool) -> Result<(), DbError> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut runs: Vec<Vec<&str>> = vec![vec!["build", "--workspace", "--bins"]];
    if faulty {
        runs.push(vec![
            "build",
            "-p",
            "ferrokv-node",
            "--features",
            "fault-injection",
            "--bin",
            "ferrokv-faulty",
        ]);
    }
    for args in runs {
        let mut cmd = Command::new(&cargo);
        cmd.args(&args).arg("--manifest-path").arg(&manifest);
        if dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        if let Some(target) = dir.parent() {
            cmd.env("CARGO_TARGET_DIR", target);
        }
        let status = cmd
            .status()
            .map_err(DbError::io(format!("running cargo {}", args.join(" "))))?;
        if !status.success() {
            return Err(DbError::api(format!("cargo {}", args.join(" ")), status));
        }
    }
    Ok(())
}
