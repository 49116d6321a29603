//! A fake local model server as a process, for trying belt by hand against a server with a
//! small window, few slots, or an outage (stop it, start it again with the same `--port`).
//!
//! ```text
//! cargo run -p belt-llm --features fake-server --example fake_local -- llamacpp --n-ctx 1024 --slots 4
//! ```
//!
//! The first line of its output is the OpenAI-compatible base URL
//! (`http://127.0.0.1:PORT/v1`); it serves until stdin closes or Ctrl-C. Flags:
//! `llamacpp|ollama|vllm`, `--port N`, `--n-ctx N`, `--slots N`, `--reply-tokens N`,
//! `--token-delay-ms N`, `--unified-kv`, `--keep-connections` (llama.cpp: do not close
//! after streamed replies), `--model NAME`.

use std::time::Duration;

use belt_llm::fake_local::{FakeLocalServer, LocalConfig};
use std::io::Read;

fn parse(args: &[String]) -> Result<(LocalConfig, u16), String> {
    let mut config = LocalConfig::llamacpp();
    let mut port = 0u16;
    let mut i = 0;
    let number = |i: usize| -> Result<u64, String> {
        let value = args.get(i + 1).ok_or_else(|| format!("{} needs a value", args[i]))?;
        value.parse().map_err(|_| format!("{}: `{value}` is not a number", args[i]))
    };
    while i < args.len() {
        match args[i].as_str() {
            "llamacpp" => config = LocalConfig::llamacpp(),
            "ollama" => config = LocalConfig::ollama(),
            "vllm" => config = LocalConfig::vllm(),
            "--port" => port = u16::try_from(number(i)?).map_err(|_| "--port: too large")?,
            "--n-ctx" => config = config.n_ctx(number(i)?),
            "--slots" => config = config.slots(number(i)? as usize),
            "--reply-tokens" => config = config.reply_tokens(number(i)?),
            "--token-delay-ms" => config = config.token_delay(Duration::from_millis(number(i)?)),
            "--model" => config = config.model(args.get(i + 1).ok_or("--model needs a value")?),
            "--unified-kv" => {
                config = config.unified_kv(true);
                i -= 1;
            }
            "--keep-connections" => {
                config = config.close_after_stream(None);
                i -= 1;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
        i += if matches!(args[i].as_str(), "llamacpp" | "ollama" | "vllm") { 1 } else { 2 };
    }
    Ok((config, port))
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (config, port) = match parse(&args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("fake_local: {e}");
            std::process::exit(2);
        }
    };
    let server = match FakeLocalServer::start_on(config, port).await {
        Ok(server) => server,
        Err(e) => {
            eprintln!("fake_local: cannot listen: {e}");
            std::process::exit(1);
        }
    };
    println!("{}", server.openai_base_url());
    // Serve until stdin closes (the parent process is done) or Ctrl-C.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut sink = [0u8; 1024];
        while matches!(std::io::stdin().read(&mut sink), Ok(n) if n > 0) {}
    });
    tokio::select! {
        _ = stdin_closed => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    eprintln!(
        "fake_local: {} connections, {} chat requests, {} replies, {} overflows",
        server.connections(),
        server.chat_requests(),
        server.completions(),
        server.overflows()
    );
}
