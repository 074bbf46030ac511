//! Links the daemon with packed relative relocations (`-z pack-relative-relocs`, DT_RELR) where
//! the C library can load them (glibc 2.36, Debian 12): the position-independent binary's ~45,000
//! relative relocations then take a few KiB instead of a 1 MiB `.rela.dyn` section, which the
//! loader reads whole at every start and which stayed resident (idle RSS -1 MB, BENCHMARKS.md).
//! Older glibc (Ubuntu 22.04 has 2.35) keeps the classic relocations; the linker records the
//! glibc version the packed form needs, so the package's dependency on libc6 follows.

use std::process::Command;

/// The first glibc that loads DT_RELR.
const RELR_GLIBC: (u32, u32) = (2, 36);

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = |name: &str| std::env::var(name).unwrap_or_default();
    let native = target("TARGET") == target("HOST");
    if native
        && target("CARGO_CFG_TARGET_OS") == "linux"
        && target("CARGO_CFG_TARGET_ENV") == "gnu"
        && glibc().is_some_and(|v| v >= RELR_GLIBC)
    {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}

/// The version of the build host's glibc, from `ldd --version` ("ldd (Debian GLIBC 2.36-9) 2.36").
fn glibc() -> Option<(u32, u32)> {
    let out = Command::new("ldd").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    if !first.contains("GLIBC") && !first.contains("GNU libc") {
        return None;
    }
    let (major, minor) = first.split_whitespace().last()?.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}
