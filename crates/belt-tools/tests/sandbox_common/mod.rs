//! What the sandbox's test files share: a sandbox that works, installing bubblewrap (and
//! Python 3 under /usr) first when the machine lacks them, as CI's clean Debian does. The
//! tests never skip: a machine where the sandbox cannot work fails them, saying why.

use std::process::Command;
use std::time::Duration;

use belt_tools::sandbox::{Sandbox, SandboxLimits};

/// A probed sandbox with limits small enough for tests to hit quickly. The wall-clock limit
/// is generous: tests run side by side on few cores, and only the tests of the wall clock
/// itself should ever reach it (they set a shorter one).
pub async fn sandbox() -> Sandbox {
    install_missing();
    let sandbox = Sandbox::probe().await.unwrap_or_else(|e| panic!("the sandbox does not work here: {e}"));
    sandbox.with_limits(SandboxLimits {
        cpu: Duration::from_secs(2),
        wall: Duration::from_secs(20),
        memory_bytes: 256 << 20,
        processes: 32,
        file_size_bytes: 1 << 20,
        scratch_bytes: 8 << 20,
        output_bytes: 4096,
    })
}

/// Install bubblewrap and Python 3 with apt-get when missing, one test process at a time
/// (a file lock: apt-get would fail on its own lock anyway, and test binaries run at once).
fn install_missing() {
    let missing = || !on_path("bwrap") || !std::path::Path::new("/usr/bin/python3").exists();
    if !missing() {
        return;
    }
    let lock = std::fs::File::create(std::env::temp_dir().join("belt-test-apt.lock")).unwrap();
    lock.lock().unwrap();
    if !missing() {
        return;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "bubblewrap", "python3"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .is_ok_and(|s| s.success())
    };
    if !install() {
        let updated = Command::new("apt-get").arg("update").status().is_ok_and(|s| s.success());
        assert!(
            updated && install(),
            "bwrap or python3 is missing and `apt-get install bubblewrap python3` failed (are we root?)"
        );
    }
}

fn on_path(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
}
