//! `run_code`: a model's Python 3 or POSIX sh program, run inside a bubblewrap (`bwrap`)
//! sandbox, never outside one.
//!
//! Each call gets a new sandbox: its own user, PID, network, IPC, UTS and cgroup namespaces
//! (no network at all: not even the host's loopback), the host's `/usr` read-only and
//! nothing else of the host's files but the dynamic linker's cache and `/etc/alternatives`,
//! a fresh `/proc` and `/dev`, a size-capped tmpfs at `/work` (also `/tmp`) as the only
//! writable place, an environment of five fixed variables (nothing of the host's: no
//! `$HOME`, no API keys), a new session (no terminal to inject keystrokes into), no
//! capabilities and no further user namespaces. Inside it, `prlimit` caps CPU seconds,
//! address space, processes, file size and open files ([`SandboxLimits`]); outside, a
//! wall-clock timer kills the sandbox (its init dies with bwrap, and the kernel then kills
//! every process of its PID namespace), and stdout and stderr are kept up to a byte cap
//! each. When belt runs as root, bwrap itself runs as `nobody` (65534): the kernel does
//! not enforce `RLIMIT_NPROC` for root, and a sandbox escape should land nowhere useful.
//!
//! [`Sandbox::probe`] checks that this works on this machine (it runs `true` inside);
//! [`run_code_tool`] turns its result into the tool, which refuses every call, saying why
//! and how to fix it, when the probe failed.
//!
//! ```no_run
//! use belt_tools::sandbox::{Language, Sandbox, run_code_tool};
//!
//! # async fn example() {
//! let sandbox = Sandbox::probe().await;
//! if let Ok(sandbox) = &sandbox {
//!     let report = sandbox.run(Language::Python, "print(6 * 7)", "").await.unwrap();
//!     assert_eq!(report.stdout, "42\n");
//! }
//! let tool = run_code_tool(sandbox); // for `Tools::with`
//! # }
//! ```

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use belt_core::effect::EffectError;
use belt_core::tools::{Tool, ToolOutput};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

/// The user and group bwrap runs as when belt runs as root (`nobody` on Debian and most
/// distributions).
const NOBODY: u32 = 65534;

/// util-linux's `prlimit`, which sets the limits inside the sandbox (under `/usr`, so it is
/// visible there). Setting `RLIMIT_NPROC` inside the new user namespace, not before bwrap,
/// makes it count this sandbox's processes only, not every process of the user.
const PRLIMIT: &str = "/usr/bin/prlimit";

/// The longest program accepted: it is passed as one argument, and Linux caps one argument
/// at 128 KiB.
pub const MAX_CODE_BYTES: usize = 100 * 1024;

/// The most standard input accepted.
pub const MAX_STDIN_BYTES: usize = 1024 * 1024;

/// What one run may use. The defaults suit a short computation: 10 s of CPU, 15 s in all,
/// 512 MiB of memory, 64 processes, 16 MiB per file, 64 MiB of scratch, 64 KiB of output.
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxLimits {
    /// CPU time of each process (`RLIMIT_CPU`); past it the kernel kills the process.
    pub cpu: Duration,
    /// Time from start to kill, whatever the program does (sleeping, waiting on stdin).
    pub wall: Duration,
    /// Address space of each process (`RLIMIT_AS`).
    pub memory_bytes: u64,
    /// Processes and threads in the sandbox (`RLIMIT_NPROC`), counting the shell or Python.
    pub processes: u32,
    /// Size of any one file written (`RLIMIT_FSIZE`).
    pub file_size_bytes: u64,
    /// Size of the writable tmpfs at `/work` (and `/tmp`), all files together.
    pub scratch_bytes: u64,
    /// Bytes of stdout, and of stderr, kept; the rest is read and discarded.
    pub output_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            cpu: Duration::from_secs(10),
            wall: Duration::from_secs(15),
            memory_bytes: 512 << 20,
            processes: 64,
            file_size_bytes: 16 << 20,
            scratch_bytes: 64 << 20,
            output_bytes: 64 << 10,
        }
    }
}

/// Why code could not be run. Nothing ever runs outside the sandbox instead.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SandboxError {
    #[error(
        "bubblewrap (`bwrap`) is not installed or not on PATH, and code is only ever run inside it: \
         install it (Debian/Ubuntu: `apt-get install bubblewrap`, Fedora: `dnf install bubblewrap`, \
         Arch: `pacman -S bubblewrap`)"
    )]
    BwrapMissing,
    #[error(
        "`{PRLIMIT}` (util-linux) is missing, and the sandbox's resource limits are set with it: \
         install util-linux"
    )]
    PrlimitMissing,
    #[error("bubblewrap is installed at {bwrap} but cannot create a sandbox here: {stderr}{hint}")]
    BwrapBroken { bwrap: PathBuf, stderr: String, hint: &'static str },
    #[error("bubblewrap at {bwrap} did not start a sandbox within {secs} s; is the machine overloaded?")]
    ProbeTimeout { bwrap: PathBuf, secs: u64 },
    #[error(
        "Python 3 is not installed under /usr, so Python code cannot run: install it (`apt-get install python3`) or use `sh`"
    )]
    PythonMissing,
    #[error("the {what} is {bytes} bytes; at most {max} are accepted")]
    TooLarge { what: &'static str, bytes: usize, max: usize },
    #[error("the code contains a NUL byte, which no program can be given as an argument")]
    NulInCode,
    #[error("could not start bubblewrap ({bwrap}): {source}")]
    Spawn { bwrap: PathBuf, source: std::io::Error },
    #[error("could not wait for the sandboxed program: {0}")]
    Wait(std::io::Error),
}

/// The languages `run_code` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    /// Python 3, the host's `/usr/bin/python3` (or `/usr/local/bin/python3`).
    Python,
    /// POSIX sh, the host's `/usr/bin/sh` (dash on Debian).
    Sh,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct RunReport {
    /// The exit code; 128 + N when signal N killed the program (bwrap's convention).
    pub exit_code: Option<i32>,
    /// The wall-clock limit was reached and the sandbox was killed.
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    /// How many bytes the program wrote to each stream, kept or not.
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    /// The cap both streams were cut at.
    pub output_cap: usize,
    pub elapsed: Duration,
}

impl RunReport {
    /// The program exited with status 0 within its limits.
    pub fn success(&self) -> bool {
        !self.timed_out && self.exit_code == Some(0)
    }

    /// The report as the model reads it: status, time, then stdout and stderr, labelled.
    pub fn render(&self) -> String {
        let status = match (self.timed_out, self.exit_code) {
            (true, _) => "killed: the wall-clock limit was reached".to_string(),
            (false, Some(0)) => "exit code 0 (success)".to_string(),
            (false, Some(code)) if code > 128 => {
                format!("exit code {code}: killed by signal {}{}", code - 128, signal_hint(code - 128))
            }
            (false, Some(code)) => format!("exit code {code}"),
            (false, None) => "no exit code (killed by a signal)".to_string(),
        };
        let mut out = format!("status: {status}\ntime: {:.2} s\n", self.elapsed.as_secs_f64());
        for (label, text, total) in
            [("stdout", &self.stdout, self.stdout_bytes), ("stderr", &self.stderr, self.stderr_bytes)]
        {
            out.push_str(&format!("--- {label} ---\n"));
            out.push_str(if text.is_empty() { "(empty)\n" } else { text });
            if !text.is_empty() && !text.ends_with('\n') {
                out.push('\n');
            }
            if total > self.output_cap as u64 {
                out.push_str(&format!("[output cut at {} bytes; {total} bytes in all]\n", self.output_cap));
            }
        }
        out
    }
}

fn signal_hint(signal: i32) -> &'static str {
    match signal {
        9 => " (SIGKILL: the CPU-time limit, or the sandbox was stopped)",
        24 => " (SIGXCPU: the CPU-time limit)",
        25 => " (SIGXFSZ: the file-size limit)",
        11 => " (SIGSEGV: a crash, possibly out of memory)",
        6 => " (SIGABRT: the program aborted, possibly out of memory)",
        _ => "",
    }
}

/// A sandbox that [`Sandbox::probe`] found working, with its limits.
#[derive(Debug, Clone)]
pub struct Sandbox {
    bwrap: PathBuf,
    python: Option<PathBuf>,
    /// bwrap knows `--disable-userns` (0.8+): the code cannot nest user namespaces.
    disable_userns: bool,
    /// The user and group bwrap runs as (belt is root), or none (it runs as belt's user).
    run_as: Option<u32>,
    limits: SandboxLimits,
}

impl Sandbox {
    /// How long the probe waits for `true` to run in a sandbox.
    const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Find bwrap and check that it can create this sandbox here, by running `true` inside
    /// it (with `--disable-userns` if this bwrap has it). The limits are the defaults.
    pub async fn probe() -> Result<Sandbox, SandboxError> {
        let bwrap = find_on_path("bwrap").ok_or(SandboxError::BwrapMissing)?;
        if !Path::new(PRLIMIT).exists() {
            return Err(SandboxError::PrlimitMissing);
        }
        let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists());
        let run_as = running_as_root().then_some(NOBODY);
        let mut sandbox =
            Sandbox { bwrap, python, disable_userns: true, run_as, limits: SandboxLimits::default() };
        if let Err(first) = sandbox.probe_true().await {
            // An older bwrap without `--disable-userns` fails on the flag alone.
            sandbox.disable_userns = false;
            if sandbox.probe_true().await.is_err() {
                return Err(first);
            }
        }
        tracing::debug!(bwrap = %sandbox.bwrap.display(), disable_userns = sandbox.disable_userns, run_as = ?sandbox.run_as, "sandbox probed");
        Ok(sandbox)
    }

    async fn probe_true(&self) -> Result<(), SandboxError> {
        let mut command = self.command(vec!["/usr/bin/true".into()]);
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let child =
            command.spawn().map_err(|source| SandboxError::Spawn { bwrap: self.bwrap.clone(), source })?;
        let output = tokio::time::timeout(Self::PROBE_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| SandboxError::ProbeTimeout {
                bwrap: self.bwrap.clone(),
                secs: Self::PROBE_TIMEOUT.as_secs(),
            })?
            .map_err(SandboxError::Wait)?;
        if output.status.success() {
            return Ok(());
        }
        let stderr =
            String::from_utf8_lossy(&output.stderr[..output.stderr.len().min(2048)]).trim().to_string();
        Err(SandboxError::BwrapBroken { bwrap: self.bwrap.clone(), hint: broken_hint(&stderr), stderr })
    }

    /// The same sandbox with other limits.
    pub fn with_limits(mut self, limits: SandboxLimits) -> Sandbox {
        self.limits = limits;
        self
    }

    pub fn limits(&self) -> &SandboxLimits {
        &self.limits
    }

    /// Run `code` in a new sandbox, with `stdin` as its standard input. A program that
    /// fails, crashes or is killed is a report, not an error; errors are runs that could not
    /// start.
    pub async fn run(&self, language: Language, code: &str, stdin: &str) -> Result<RunReport, SandboxError> {
        check_size("code", code.len(), MAX_CODE_BYTES)?;
        check_size("standard input", stdin.len(), MAX_STDIN_BYTES)?;
        if code.contains('\0') {
            return Err(SandboxError::NulInCode);
        }
        let program = match language {
            Language::Python => {
                let python = self.python.as_ref().ok_or(SandboxError::PythonMissing)?;
                vec![python.display().to_string(), "-B".into(), "-c".into(), code.into()]
            }
            Language::Sh => vec!["/usr/bin/sh".into(), "-c".into(), code.into()],
        };
        let mut argv = self.prlimit_args();
        argv.extend(program);
        let mut command = self.command(argv);
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = Instant::now();
        let mut child =
            command.spawn().map_err(|source| SandboxError::Spawn { bwrap: self.bwrap.clone(), source })?;
        let cap = self.limits.output_bytes;
        let stdout = child.stdout.take().map(|s| tokio::spawn(read_capped(s, cap)));
        let stderr = child.stderr.take().map(|s| tokio::spawn(read_capped(s, cap)));
        if let Some(mut pipe) = child.stdin.take() {
            let input = stdin.as_bytes().to_vec();
            // A program that never reads its input must not block the run: the write is its
            // own task, and a closed pipe is not an error.
            tokio::spawn(async move {
                let _ = pipe.write_all(&input).await;
            });
        }
        let (exit_code, timed_out) = match tokio::time::timeout(self.limits.wall, child.wait()).await {
            Ok(status) => (status.map_err(SandboxError::Wait)?.code(), false),
            Err(_) => {
                // Killing bwrap kills the sandbox's init (`--die-with-parent`), and with it
                // every process in its PID namespace.
                let _ = child.kill().await;
                (None, true)
            }
        };
        let elapsed = started.elapsed();
        let (stdout, stdout_bytes) = collect(stdout).await;
        let (stderr, stderr_bytes) = collect(stderr).await;
        Ok(RunReport {
            exit_code,
            timed_out,
            stdout,
            stderr,
            stdout_bytes,
            stderr_bytes,
            output_cap: cap,
            elapsed,
        })
    }

    /// `prlimit` with this sandbox's limits, ready for the program's argv.
    fn prlimit_args(&self) -> Vec<String> {
        let l = &self.limits;
        vec![
            PRLIMIT.into(),
            format!("--cpu={}", l.cpu.as_secs().max(1)),
            format!("--as={}", l.memory_bytes),
            format!("--nproc={}", l.processes),
            format!("--fsize={}", l.file_size_bytes),
            "--nofile=256".into(),
            "--core=0".into(),
            "--".into(),
        ]
    }

    /// bwrap with the sandbox's options, running `argv` inside it.
    fn command(&self, argv: Vec<String>) -> Command {
        let mut command = Command::new(&self.bwrap);
        command.args(bwrap_args(self.disable_userns, self.limits.scratch_bytes)).arg("--").args(argv);
        // bwrap's own environment is emptied too (`--clearenv` empties the program's).
        command.env_clear().current_dir("/").kill_on_drop(true).process_group(0);
        if let Some(id) = self.run_as {
            command.uid(id).gid(id);
        }
        command
    }
}

/// bwrap's options: everything of the sandbox but the program.
fn bwrap_args(disable_userns: bool, scratch_bytes: u64) -> Vec<String> {
    let mut args: Vec<String> = [
        "--unshare-all",
        "--unshare-user",
        "--uid",
        "65534",
        "--gid",
        "65534",
        "--hostname",
        "sandbox",
        "--cap-drop",
        "ALL",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--ro-bind-try",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--ro-bind-try",
        "/etc/alternatives",
        "/etc/alternatives",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
    ]
    .map(String::from)
    .to_vec();
    if disable_userns {
        args.push("--disable-userns".into());
    }
    // /bin, /lib... are links into /usr on merged-/usr systems, directories elsewhere.
    for dir in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        match std::fs::symlink_metadata(dir) {
            Ok(meta) if meta.is_symlink() => {
                if let Ok(target) = std::fs::read_link(dir) {
                    args.extend(["--symlink".into(), target.display().to_string(), dir.into()]);
                }
            }
            Ok(meta) if meta.is_dir() => args.extend(["--ro-bind".into(), dir.into(), dir.into()]),
            _ => {}
        }
    }
    args.extend(["--size".into(), scratch_bytes.to_string(), "--tmpfs".into(), "/work".into()]);
    let env = [
        ("PATH", "/usr/local/bin:/usr/bin:/bin"),
        ("HOME", "/work"),
        ("TMPDIR", "/tmp"),
        ("LANG", "C.UTF-8"),
        ("PYTHONDONTWRITEBYTECODE", "1"),
    ];
    args.extend(
        ["--symlink", "/work", "/tmp", "--remount-ro", "/", "--chdir", "/work", "--clearenv"]
            .map(String::from),
    );
    for (name, value) in env {
        args.extend(["--setenv".into(), name.into(), value.into()]);
    }
    args
}

fn check_size(what: &'static str, bytes: usize, max: usize) -> Result<(), SandboxError> {
    if bytes > max { Err(SandboxError::TooLarge { what, bytes, max }) } else { Ok(()) }
}

/// Read a stream to its end, keeping its first `cap` bytes: the rest is discarded (so the
/// program is not blocked on a full pipe) but counted.
async fn read_capped(mut stream: impl AsyncRead + Unpin, cap: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, total),
            Ok(n) => {
                total += n as u64;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// A reader's result; a reader still running a few seconds after the sandbox ended (a pipe
/// held open by something unexpected) is given up on.
async fn collect(reader: Option<tokio::task::JoinHandle<(Vec<u8>, u64)>>) -> (String, u64) {
    let Some(reader) = reader else { return (String::new(), 0) };
    match tokio::time::timeout(Duration::from_secs(5), reader).await {
        Ok(Ok((bytes, total))) => (String::from_utf8_lossy(&bytes).into_owned(), total),
        _ => (String::new(), 0),
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| std::fs::metadata(p).map(|m| m.is_file() && m.mode() & 0o111 != 0).unwrap_or(false))
}

/// Whether this process runs as root: `/proc/self` belongs to the effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").map(|m| m.uid() == 0).unwrap_or(false)
}

/// What to do about bwrap's complaint.
fn broken_hint(stderr: &str) -> &'static str {
    let s = stderr.to_ascii_lowercase();
    if s.contains("namespace")
        || s.contains("uid map")
        || s.contains("operation not permitted")
        || s.contains("permission denied")
    {
        " (user namespaces look disabled: allow them with `sysctl -w kernel.unprivileged_userns_clone=1` \
         (Debian's older kernels) or `sysctl -w user.max_user_namespaces=15000`; on Ubuntu 23.10+ also \
         `sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` or an AppArmor profile for bwrap; \
         inside a container, allow `unshare`/`clone` with namespaces in its seccomp profile, or run it privileged)"
    } else {
        ""
    }
}

/// The `run_code` tool's arguments.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunCodeArgs {
    language: Language,
    code: String,
    #[serde(default)]
    stdin: Option<String>,
}

/// The `run_code` tool over a probed sandbox, or, when the probe failed, a tool that refuses
/// every call with the probe's reason (the model sees it, and so does the run's record).
///
/// It is idempotent: a run has no effect outside its sandbox (no network, no host files
/// written, a fresh scratch directory each time), so running it again is harmless. Its
/// timeout is the wall-clock limit plus a margin, so the engine's limit never cuts a run
/// the sandbox would have reported.
pub fn run_code_tool(sandbox: Result<Sandbox, SandboxError>) -> Tool {
    let wall = sandbox.as_ref().map_or(Duration::from_secs(15), |s| s.limits.wall);
    let sandbox = sandbox.map_err(|e| format!("run_code is unavailable: {e}"));
    tool_over(move || std::future::ready(sandbox.clone()), wall)
}

/// [`run_code_tool`] for a caller that builds its tools before it can wait for the probe
/// (a pattern built when a run is prepared): the sandbox is probed on the first call, once
/// per tool, and every call after uses that probe's answer.
pub fn run_code_tool_probing() -> Tool {
    let probe = Arc::new(tokio::sync::OnceCell::<Result<Sandbox, String>>::new());
    let sandbox = move || {
        let probe = probe.clone();
        async move {
            let probed = probe.get_or_init(|| async {
                Sandbox::probe().await.map_err(|e| format!("run_code is unavailable: {e}"))
            });
            probed.await.clone()
        }
    };
    tool_over(sandbox, SandboxLimits::default().wall)
}

/// The `run_code` tool over whatever `sandbox` yields (the probed sandbox, or why not).
fn tool_over<F, Fut>(sandbox: F, wall: Duration) -> Tool
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Sandbox, String>> + Send + 'static,
{
    let description = "Run a short Python 3 or POSIX sh program in an isolated sandbox (no network, no \
        host files, a scratch directory at /work, limited CPU time, memory and output) and get its exit \
        status, stdout and stderr. Print what you need to see.";
    let parameters = serde_json::json!({
        "type": "object",
        "properties": {
            "language": {"type": "string", "enum": ["python", "sh"], "description": "The program's language."},
            "code": {"type": "string", "description": "The whole program."},
            "stdin": {"type": ["string", "null"], "description": "Its standard input, if any."}
        },
        "required": ["language", "code", "stdin"],
        "additionalProperties": false
    });
    let sandbox = Arc::new(sandbox);
    Tool::dynamic("run_code", description, parameters, move |arguments| {
        let sandbox = sandbox.clone();
        async move {
            let sandbox = sandbox().await.map_err(EffectError::new)?;
            let args: RunCodeArgs = serde_json::from_value(arguments).map_err(|e| {
                EffectError::new(format!("the arguments do not match run_code's parameters: {e}"))
            })?;
            let report = sandbox
                .run(args.language, &args.code, args.stdin.as_deref().unwrap_or(""))
                .await
                .map_err(|e| EffectError::new(e.to_string()))?;
            Ok(ToolOutput::new(report.render()))
        }
    })
    .idempotent()
    .timeout(wall + Duration::from_secs(10))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn read_capped_keeps_the_cap_and_counts_the_rest() {
        let data = vec![b'x'; 200_000];
        let (kept, total) = read_capped(&data[..], 1000).await;
        assert_eq!((kept.len(), total), (1000, 200_000));
    }

    #[test]
    fn a_report_labels_streams_and_says_where_output_was_cut() {
        let report = RunReport {
            exit_code: Some(137),
            timed_out: false,
            stdout: "a".repeat(10),
            stderr: String::new(),
            stdout_bytes: 50,
            stderr_bytes: 0,
            output_cap: 10,
            elapsed: Duration::from_millis(1500),
        };
        let text = report.render();
        assert!(text.starts_with("status: exit code 137: killed by signal 9 (SIGKILL"), "{text}");
        assert!(text.contains(
            "time: 1.50 s\n--- stdout ---\naaaaaaaaaa\n[output cut at 10 bytes; 50 bytes in all]\n"
        ));
        assert!(text.ends_with("--- stderr ---\n(empty)\n"), "{text}");
        assert!(!report.success());
    }

    #[test]
    fn the_sandbox_has_no_network_no_host_home_and_a_clean_env() {
        let args = bwrap_args(true, 1 << 20).join(" ");
        for needed in [
            "--unshare-all",
            "--unshare-user",
            "--clearenv",
            "--new-session",
            "--die-with-parent",
            "--disable-userns",
            "--remount-ro /",
        ] {
            assert!(args.contains(needed), "{needed} missing from {args}");
        }
        assert!(
            !args.contains("--share-net") && !args.contains("--bind /root") && !args.contains("--bind /home")
        );
    }

    #[tokio::test]
    async fn a_failed_probe_makes_a_tool_that_refuses_with_the_reason() {
        let tool = run_code_tool(Err(SandboxError::BwrapMissing));
        let err = tool
            .call(serde_json::json!({"language": "sh", "code": "true", "stdin": null}))
            .await
            .unwrap_err();
        assert!(err.message.contains("apt-get install bubblewrap"), "{}", err.message);
        assert!(!err.transient);
    }

    #[test]
    fn hints_name_the_user_namespace_switch() {
        assert!(
            broken_hint("bwrap: No permissions to creating new namespace")
                .contains("unprivileged_userns_clone")
        );
        assert_eq!(broken_hint("bwrap: something else"), "");
    }
}
