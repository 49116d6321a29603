//! What every end-to-end test of the `belt` binary shares: a command with a clean
//! environment, so no test ever reaches a real provider, a local Ollama, the user's store or
//! configuration, whatever the machine has set.

use std::path::Path;
use std::process::{Command, Stdio};

/// API key variables of the built-in providers.
const KEYS: &[&str] = &[
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "XAI_API_KEY",
    "GROQ_API_KEY",
    "OPENROUTER_API_KEY",
    "DEEPSEEK_API_KEY",
    "MISTRAL_API_KEY",
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
];

/// `belt ARGS` in `cwd`, keeping its runs under `home` (`BELT_HOME`); stdin empty,
/// stdout and stderr piped. Callers add or override variables after this.
pub fn belt_command(cwd: &Path, home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_belt"));
    cmd.args(args)
        .current_dir(cwd)
        .env("BELT_HOME", home)
        .env_remove("BELT_MODEL")
        .env_remove("BELT_STORE")
        .env_remove("BELT_CONFIG")
        .env_remove("BELT_SIM_CALL_LOG")
        // Never a local Ollama: nothing listens on port 9.
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for key in KEYS {
        cmd.env_remove(key);
    }
    cmd
}
