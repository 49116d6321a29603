//! What each fake local server writes: its chunks, whole replies, discovery bodies and
//! error bodies, with the keys in the order the real server writes them (JSON objects are
//! assembled as text for that reason; `serde_json` only escapes strings).

use super::Flavor;

/// `value` as a JSON string literal.
fn s(value: &str) -> String {
    serde_json::Value::String(value.to_string()).to_string()
}

/// llama.cpp's `system_fingerprint`: its build info.
const LLAMA_BUILD: &str = "b6916-fake0000";

/// One reply being written: what every chunk of it repeats.
pub(crate) struct Reply<'a> {
    pub flavor: Flavor,
    pub id: &'a str,
    pub created: u64,
    pub model: &'a str,
}

/// Token counts and timings of a finished reply.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    pub prompt: u64,
    pub completion: u64,
}

impl Reply<'_> {
    /// The frame that opens a stream (the assistant's role).
    pub fn role_frame(&self) -> String {
        match self.flavor {
            Flavor::LlamaCpp => self.llama_chunk(r#"{"role":"assistant","content":null}"#, "null", ""),
            Flavor::Ollama => self.ollama_chunk(r#"{"role":"assistant","content":""}"#, "null", ""),
            Flavor::Vllm => self.vllm_chunk(r#"{"role":"assistant","content":""}"#, "null"),
        }
    }

    /// A frame carrying one token's text.
    pub fn delta_frame(&self, text: &str) -> String {
        match self.flavor {
            Flavor::LlamaCpp => self.llama_chunk(&format!(r#"{{"content":{}}}"#, s(text)), "null", ""),
            Flavor::Ollama => {
                self.ollama_chunk(&format!(r#"{{"role":"assistant","content":{}}}"#, s(text)), "null", "")
            }
            Flavor::Vllm => self.vllm_chunk(&format!(r#"{{"content":{}}}"#, s(text)), "null"),
        }
    }

    /// The frames that end a stream: the finish reason, usage when asked for (llama.cpp
    /// adds its `timings` to the last), and `[DONE]`.
    pub fn end_frames(&self, finish: &str, counts: Counts, include_usage: bool) -> Vec<String> {
        let finish = s(finish);
        let timings = timings(counts);
        let mut frames = Vec::new();
        match self.flavor {
            Flavor::LlamaCpp => {
                let usage = format!(
                    r#"{{"completion_tokens":{},"prompt_tokens":{},"total_tokens":{},"prompt_tokens_details":{{"cached_tokens":0}}}}"#,
                    counts.completion,
                    counts.prompt,
                    counts.prompt + counts.completion
                );
                let last_timings = format!(r#","timings":{timings}"#);
                if include_usage {
                    frames.push(self.llama_chunk("{}", &finish, ""));
                    frames.push(self.llama_usage_chunk(&usage, &last_timings));
                } else {
                    frames.push(self.llama_chunk("{}", &finish, &last_timings));
                }
            }
            Flavor::Ollama => {
                frames.push(self.ollama_chunk(r#"{"role":"assistant","content":""}"#, &finish, ""));
                if include_usage {
                    let usage = format!(
                        r#","usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}"#,
                        counts.prompt,
                        counts.completion,
                        counts.prompt + counts.completion
                    );
                    frames.push(self.ollama_chunk_raw("[]", &usage));
                }
            }
            Flavor::Vllm => {
                frames.push(self.frame(format!(
                    r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"choices":[{{"index":0,"delta":{{"content":""}},"logprobs":null,"finish_reason":{finish},"stop_reason":null}}]}}"#,
                    s(self.id),
                    self.created,
                    s(self.model)
                )));
                if include_usage {
                    frames.push(self.frame(format!(
                        r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"choices":[],"usage":{{"prompt_tokens":{},"total_tokens":{},"completion_tokens":{}}}}}"#,
                        s(self.id),
                        self.created,
                        s(self.model),
                        counts.prompt,
                        counts.prompt + counts.completion,
                        counts.completion
                    )));
                }
            }
        }
        frames.push("data: [DONE]\n\n".into());
        frames
    }

    /// A whole (non-streamed) reply.
    pub fn whole(&self, text: &str, finish: &str, counts: Counts) -> String {
        let (p, c, t) = (counts.prompt, counts.completion, counts.prompt + counts.completion);
        match self.flavor {
            Flavor::LlamaCpp => format!(
                r#"{{"choices":[{{"finish_reason":{},"index":0,"message":{{"role":"assistant","content":{}}}}}],"created":{},"model":{},"system_fingerprint":{},"object":"chat.completion","usage":{{"completion_tokens":{c},"prompt_tokens":{p},"total_tokens":{t},"prompt_tokens_details":{{"cached_tokens":0}}}},"id":{},"timings":{}}}"#,
                s(finish),
                s(text),
                self.created,
                s(self.model),
                s(LLAMA_BUILD),
                s(self.id),
                timings(counts)
            ),
            Flavor::Ollama => format!(
                r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"system_fingerprint":"fp_ollama","choices":[{{"index":0,"message":{{"role":"assistant","content":{}}},"finish_reason":{}}}],"usage":{{"prompt_tokens":{p},"completion_tokens":{c},"total_tokens":{t}}}}}"#,
                s(self.id),
                self.created,
                s(self.model),
                s(text),
                s(finish)
            ),
            Flavor::Vllm => format!(
                r#"{{"id":{},"object":"chat.completion","created":{},"model":{},"choices":[{{"index":0,"message":{{"role":"assistant","reasoning_content":null,"content":{},"tool_calls":[]}},"logprobs":null,"finish_reason":{},"stop_reason":null}}],"usage":{{"prompt_tokens":{p},"total_tokens":{t},"completion_tokens":{c},"prompt_tokens_details":null}},"prompt_logprobs":null}}"#,
                s(self.id),
                self.created,
                s(self.model),
                s(text),
                s(finish)
            ),
        }
    }

    fn frame(&self, json: String) -> String {
        format!("data: {json}\n\n")
    }

    fn llama_chunk(&self, delta: &str, finish: &str, extra: &str) -> String {
        self.frame(format!(
            r#"{{"choices":[{{"finish_reason":{finish},"index":0,"delta":{delta}}}],"created":{},"id":{},"model":{},"system_fingerprint":{},"object":"chat.completion.chunk"{extra}}}"#,
            self.created,
            s(self.id),
            s(self.model),
            s(LLAMA_BUILD)
        ))
    }

    fn llama_usage_chunk(&self, usage: &str, extra: &str) -> String {
        self.frame(format!(
            r#"{{"choices":[],"created":{},"id":{},"model":{},"system_fingerprint":{},"object":"chat.completion.chunk","usage":{usage}{extra}}}"#,
            self.created,
            s(self.id),
            s(self.model),
            s(LLAMA_BUILD)
        ))
    }

    fn ollama_chunk(&self, delta: &str, finish: &str, extra: &str) -> String {
        self.ollama_chunk_raw(&format!(r#"[{{"index":0,"delta":{delta},"finish_reason":{finish}}}]"#), extra)
    }

    fn ollama_chunk_raw(&self, choices: &str, extra: &str) -> String {
        self.frame(format!(
            r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"system_fingerprint":"fp_ollama","choices":{choices}{extra}}}"#,
            s(self.id),
            self.created,
            s(self.model)
        ))
    }

    fn vllm_chunk(&self, delta: &str, finish: &str) -> String {
        self.frame(format!(
            r#"{{"id":{},"object":"chat.completion.chunk","created":{},"model":{},"choices":[{{"index":0,"delta":{delta},"logprobs":null,"finish_reason":{finish}}}]}}"#,
            s(self.id),
            self.created,
            s(self.model)
        ))
    }
}

/// llama.cpp's `timings`, with figures derived from the counts (0.5 ms a prompt token,
/// 10 ms an output token) so that they are deterministic.
fn timings(counts: Counts) -> String {
    let prompt_ms = counts.prompt as f64 * 0.5;
    let predicted_ms = counts.completion as f64 * 10.0;
    let per = |ms: f64, n: u64| if n == 0 { 0.0 } else { ms / n as f64 };
    let rate = |ms: f64, n: u64| if ms == 0.0 { 0.0 } else { n as f64 * 1000.0 / ms };
    format!(
        r#"{{"cache_n":0,"prompt_n":{},"prompt_ms":{prompt_ms:?},"prompt_per_token_ms":{:?},"prompt_per_second":{:?},"predicted_n":{},"predicted_ms":{predicted_ms:?},"predicted_per_token_ms":{:?},"predicted_per_second":{:?}}}"#,
        counts.prompt,
        per(prompt_ms, counts.prompt),
        rate(prompt_ms, counts.prompt),
        counts.completion,
        per(predicted_ms, counts.completion),
        rate(predicted_ms, counts.completion),
    )
}

/// The 400 each server answers for a prompt that does not fit, or `None` when it fits.
/// `max_tokens` is the request's cap, if it set one.
pub(crate) fn overflow(flavor: Flavor, prompt: u64, max_tokens: Option<u64>, window: u64) -> Option<String> {
    match flavor {
        // server-context.cpp: `if (slot.task->n_tokens() >= slot.n_ctx)`.
        Flavor::LlamaCpp if prompt >= window => Some(format!(
            r#"{{"error":{{"code":400,"message":"request ({prompt} tokens) exceeds the available context size ({window} tokens), try increasing it","type":"exceed_context_size_error","n_prompt_tokens":{prompt},"n_ctx":{window}}}}}"#
        )),
        // serving_engine.py `_validate_input`: prompt and max_tokens against max_model_len.
        Flavor::Vllm => {
            let message = match max_tokens {
                Some(m) if prompt + m > window => format!(
                    "This model's maximum context length is {window} tokens. However, you requested {} tokens ({prompt} in the messages, {m} in the completion). Please reduce the length of the messages or completion.",
                    prompt + m
                ),
                None if prompt >= window => format!(
                    "This model's maximum context length is {window} tokens. However, your request has {prompt} input tokens. Please reduce the length of the input messages."
                ),
                _ => return None,
            };
            Some(format!(r#"{{"error":{{"message":{},"type":"BadRequestError","param":null,"code":400}}}}"#, s(&message)))
        }
        // Ollama with `truncate: false` (its runner's error, through the OpenAI middleware).
        Flavor::Ollama if prompt > window => Some(
            r#"{"error":{"message":"the input length exceeds the context length","type":"invalid_request_error","param":null,"code":null}}"#
                .to_string(),
        ),
        _ => None,
    }
}

/// llama.cpp's error when a unified KV cache runs out in the middle of a reply: the body
/// of a 500, and (as `data: {…}`) the event that ends a stream.
pub(crate) const LLAMA_KV_FULL: &str =
    r#"{"error":{"code":500,"message":"Context size has been exceeded.","type":"server_error"}}"#;

/// The 404 of a path the server does not have.
pub(crate) fn not_found(flavor: Flavor) -> (u16, String) {
    match flavor {
        Flavor::LlamaCpp => {
            (404, r#"{"error":{"code":404,"message":"File Not Found","type":"not_found_error"}}"#.into())
        }
        Flavor::Ollama => (404, "404 page not found".into()),
        Flavor::Vllm => (404, r#"{"detail":"Not Found"}"#.into()),
    }
}

/// A request body that is not JSON.
pub(crate) fn bad_json(flavor: Flavor, detail: &str) -> (u16, String) {
    match flavor {
        Flavor::LlamaCpp => {
            (500, format!(r#"{{"error":{{"code":500,"message":{},"type":"server_error"}}}}"#, s(detail)))
        }
        Flavor::Ollama => (
            400,
            format!(
                r#"{{"error":{{"message":{},"type":"invalid_request_error","param":null,"code":null}}}}"#,
                s(detail)
            ),
        ),
        Flavor::Vllm => (
            400,
            format!(
                r#"{{"error":{{"message":{},"type":"BadRequestError","param":null,"code":400}}}}"#,
                s(detail)
            ),
        ),
    }
}

/// llama.cpp's `GET /props` (the fields a client reads; the chat template elided).
pub(crate) fn llama_props(model: &str, n_ctx: u64, slots: usize, vision: bool) -> String {
    format!(
        r#"{{"default_generation_settings":{{"params":{{"n_predict":-1,"seed":4294967295,"temperature":0.800000011920929,"top_k":40,"top_p":0.949999988079071,"min_p":0.05000000074505806,"max_tokens":-1,"n_keep":0,"stream":true}},"n_ctx":{n_ctx}}},"total_slots":{slots},"model_alias":{},"model_path":{},"modalities":{{"vision":{vision},"audio":false}},"endpoint_slots":true,"endpoint_props":false,"endpoint_metrics":false,"webui":true,"chat_template":"{{{{- bos_token }}}}","bos_token":"<|begin_of_text|>","eos_token":"<|eot_id|>","build_info":{}}}"#,
        s(model),
        s(&format!("/models/{model}.gguf")),
        s(LLAMA_BUILD)
    )
}

/// Ollama's `POST /api/show`: `parameters` holds `num_ctx` when the Modelfile sets it;
/// `model_info` has the trained context length.
pub(crate) fn ollama_show(num_ctx: Option<u64>, trained: u64, vision: bool) -> String {
    let mut parameters = Vec::new();
    if let Some(n) = num_ctx {
        parameters.push(format!("{:<30} {n}", "num_ctx"));
    }
    parameters.push(format!("{:<30} {}", "stop", "\"<|eot_id|>\""));
    let capabilities = if vision { r#"["completion","vision"]"# } else { r#"["completion","tools"]"# };
    format!(
        r##"{{"license":"LLAMA 3.2 COMMUNITY LICENSE AGREEMENT","modelfile":"# Modelfile generated by \"ollama show\"\nFROM /root/.ollama/models/blobs/sha256-dde5aa3fc5ff\n","parameters":{},"template":"{{{{ .Prompt }}}}","details":{{"parent_model":"","format":"gguf","family":"llama","families":["llama"],"parameter_size":"3.2B","quantization_level":"Q4_K_M"}},"model_info":{{"general.architecture":"llama","general.parameter_count":3212749888,"llama.context_length":{trained},"llama.embedding_length":3072}},"capabilities":{capabilities},"modified_at":"2025-11-20T10:00:00.000000000Z"}}"##,
        s(&parameters.join("\n"))
    )
}

/// Ollama's native 404 for a model it does not have.
pub(crate) fn ollama_no_model(model: &str) -> String {
    format!(r#"{{"error":{}}}"#, s(&format!("model '{model}' not found")))
}

/// vLLM's `GET /v1/models`.
pub(crate) fn vllm_models(model: &str, max_model_len: u64) -> String {
    format!(
        r#"{{"object":"list","data":[{{"id":{m},"object":"model","created":1763632800,"owned_by":"vllm","root":{m},"parent":null,"max_model_len":{max_model_len},"permission":[{{"id":"modelperm-0a1b2c3d4e5f","object":"model_permission","created":1763632800,"allow_create_engine":false,"allow_sampling":true,"allow_logprobs":true,"allow_search_indices":false,"allow_view":true,"allow_fine_tuning":false,"organization":"*","group":null,"is_blocking":false}}]}}]}}"#,
        m = s(model)
    )
}

/// llama.cpp's `GET /v1/models`.
pub(crate) fn llama_models(model: &str, n_ctx_train: u64) -> String {
    format!(
        r#"{{"models":[{{"name":{m},"model":{m},"modified_at":"","size":"","digest":"","type":"model","description":"","tags":[""],"capabilities":["completion"],"parameters":"","details":{{"parent_model":"","format":"gguf","family":"","families":[""],"parameter_size":"","quantization_level":""}}}}],"object":"list","data":[{{"id":{m},"object":"model","created":1763632800,"owned_by":"llamacpp","meta":{{"vocab_type":2,"n_vocab":128256,"n_ctx_train":{n_ctx_train},"n_embd":3072,"n_params":3212749888,"size":2019373056}}}}]}}"#,
        m = s(model)
    )
}
