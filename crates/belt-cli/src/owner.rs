//! Who drives a run: `host:pid:nonce`, recorded in the run's lease. A lease held by a
//! process that no longer exists on this host can be taken over at once, so `belt resume`
//! right after a crash does not wait for the lease to expire.

use std::sync::OnceLock;

/// This process, as a lease owner.
pub fn this_process() -> String {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER
        .get_or_init(|| {
            let nonce = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() % 1_000_000_000);
            format!("{}:{}:{nonce}", host(), std::process::id())
        })
        .clone()
}

/// True when `owner` names a process of this host that has exited.
pub fn is_dead(owner: &str) -> bool {
    let mut parts = owner.rsplitn(3, ':');
    let (Some(_nonce), Some(pid), Some(host_part)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<i32>() else { return false };
    if host_part != host() || pid <= 0 || pid as u32 == std::process::id() {
        return false;
    }
    // SAFETY: kill with signal 0 sends nothing; it only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    !alive
}

pub fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
        .replace(':', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_exited_local_processes_are_dead() {
        let me = this_process();
        assert!(!is_dead(&me), "this process is alive");
        // A child that has exited and been reaped.
        let mut child = std::process::Command::new("true").spawn().expect("spawn true");
        let pid = child.id();
        child.wait().expect("wait");
        assert!(is_dead(&format!("{}:{pid}:1", host())));
        assert!(!is_dead(&format!("another-host:{pid}:1")), "other hosts are never presumed dead");
        assert!(!is_dead("pid:12:uuid-like"), "unknown formats are never presumed dead");
        assert!(!is_dead(&format!("{}:1:1", host())), "pid 1 exists");
    }
}
