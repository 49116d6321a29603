//! The OpenAPI 3.1 document served at `/openapi.json`, built from [`ROUTES`] (the same
//! table the contract test walks, so a route cannot be missing from the document) and
//! the JSON schemas of the request and response types.

use schemars::JsonSchema;
use serde_json::{Map, Value, json};

use crate::api::{Accepted, Health, PatternList, RunInfo, RunList, RunView};

/// One documented route.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    /// As in OpenAPI: `{id}` for a path parameter.
    pub path: &'static str,
    pub summary: &'static str,
    /// Schema name of the JSON body, if any.
    pub body: Option<&'static str>,
    /// Status and schema name (or a media type after `=`) of the success response.
    pub ok: (u16, &'static str),
    /// Other statuses it can answer with.
    pub errors: &'static [u16],
    pub public: bool,
}

const E_RUN: &[u16] = &[401, 404, 429];

/// Every route of the server.
pub const ROUTES: &[Route] = &[
    Route {
        method: "get",
        path: "/healthz",
        summary: "Liveness: ok, and runs running and queued",
        body: None,
        ok: (200, "Health"),
        errors: &[],
        public: true,
    },
    Route {
        method: "get",
        path: "/openapi.json",
        summary: "This document",
        body: None,
        ok: (200, "=application/json"),
        errors: &[401, 429],
        public: false,
    },
    Route {
        method: "post",
        path: "/v1/runs",
        summary: "Start a run (202); queued when every run slot is busy, 429 with Retry-After when the queue is full",
        body: Some("RunRequest"),
        ok: (202, "Accepted"),
        errors: &[400, 401, 413, 422, 429, 503],
        public: false,
    },
    Route {
        method: "get",
        path: "/v1/runs",
        summary: "Runs, newest first; ?status=&limit=&offset=",
        body: None,
        ok: (200, "RunList"),
        errors: &[400, 401, 429],
        public: false,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}",
        summary: "One run: its RunResult once finished, the steps completed so far before",
        body: None,
        ok: (200, "RunView"),
        errors: E_RUN,
        public: false,
    },
    Route {
        method: "post",
        path: "/v1/runs/{id}/cancel",
        summary: "Cancel a run: completed steps stay recorded and `belt resume` continues it",
        body: None,
        ok: (202, "RunInfo"),
        errors: &[401, 404, 409, 429],
        public: false,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/events",
        summary: "Server-Sent Events: `id:` is the sequence number, `event:` the event's type, `data:` its JSON; resume with Last-Event-ID or ?after=N; ends after run_finished; ?token= is accepted here for EventSource",
        body: None,
        ok: (200, "=text/event-stream"),
        errors: &[400, 401, 404, 429],
        public: false,
    },
    Route {
        method: "get",
        path: "/v1/runs/{id}/documents/{format}",
        summary: "The finished run's report rendered as md, html, pdf or docx",
        body: None,
        ok: (200, "=application/octet-stream"),
        errors: &[401, 404, 409, 429],
        public: false,
    },
    Route {
        method: "get",
        path: "/v1/patterns",
        summary: "The patterns this server runs: belt's, then those its program registered (with their args_schema and MCP tool)",
        body: None,
        ok: (200, "PatternList"),
        errors: &[401, 429],
        public: false,
    },
];

fn schema_of<T: JsonSchema>() -> Value {
    let mut v = serde_json::to_value(schemars::schema_for!(T)).unwrap_or(Value::Null);
    // Definitions of nested types move to components; references are rewritten to match.
    if let Some(obj) = v.as_object_mut() {
        obj.remove("$schema");
    }
    v
}

/// Move `$defs` of every schema into `components.schemas`, and point `$ref`s there.
fn hoist(schemas: &mut Map<String, Value>) {
    let mut defs = Map::new();
    for schema in schemas.values_mut() {
        if let Some(d) =
            schema.as_object_mut().and_then(|o| o.remove("$defs")).and_then(|d| d.as_object().cloned())
        {
            defs.extend(d);
        }
    }
    schemas.extend(defs);
    fn rewrite(v: &mut Value) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get_mut("$ref") {
                    *r = r.replace("#/$defs/", "#/components/schemas/");
                }
                o.values_mut().for_each(rewrite);
            }
            Value::Array(a) => a.iter_mut().for_each(rewrite),
            _ => {}
        }
    }
    for schema in schemas.values_mut() {
        rewrite(schema);
    }
}

/// The whole document, for `routes` (normally [`ROUTES`]).
pub fn document(routes: &[Route], extra_schemas: Vec<(String, Value)>) -> Value {
    let mut schemas = Map::new();
    schemas.insert("RunRequest".into(), schema_of::<belt_app::RunSpec>());
    schemas.insert("Accepted".into(), schema_of::<Accepted>());
    schemas.insert("RunInfo".into(), schema_of::<RunInfo>());
    schemas.insert("RunList".into(), schema_of::<RunList>());
    schemas.insert("RunView".into(), schema_of::<RunView>());
    schemas.insert("PatternList".into(), schema_of::<PatternList>());
    schemas.insert("Health".into(), schema_of::<Health>());
    schemas.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {"error": {"type": "object",
            "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}}}}),
    );
    schemas.insert("ApprovalList".into(), schema_of::<crate::approvals::ApprovalList>());
    schemas.insert("AnswerBody".into(), schema_of::<crate::approvals::AnswerBody>());
    schemas.insert("Answered".into(), schema_of::<crate::approvals::Answered>());
    schemas.insert("WebhookSpec".into(), schema_of::<crate::webhooks::WebhookSpec>());
    schemas.insert("WebhookInfo".into(), schema_of::<crate::webhooks::WebhookInfo>());
    schemas.insert("WebhookList".into(), schema_of::<crate::webhooks::WebhookList>());
    schemas.extend(extra_schemas);
    hoist(&mut schemas);

    let mut paths = Map::new();
    for r in routes {
        let mut op = Map::new();
        op.insert("summary".into(), json!(r.summary));
        let params: Vec<Value> = r
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op.insert("parameters".into(), Value::Array(params));
        }
        if let Some(body) = r.body {
            op.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{body}")}}}}),
            );
        }
        let mut responses = Map::new();
        let ok = match r.ok.1.strip_prefix('=') {
            Some(media) => json!({"description": "OK", "content": {media: {}}}),
            None => {
                json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{}", r.ok.1)}}}})
            }
        };
        responses.insert(r.ok.0.to_string(), ok);
        for code in r.errors {
            responses.insert(
                code.to_string(),
                json!({"description": reason(*code), "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}),
            );
        }
        op.insert("responses".into(), Value::Object(responses));
        if r.public {
            op.insert("security".into(), json!([]));
        }
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(r.method.to_string(), Value::Object(op));
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "belt", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Multi-agent LLM orchestration as a service: start runs, stream their events, fetch their reports."},
        "security": [{"bearer": []}],
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}, "schemas": schemas},
        "paths": paths,
    })
}

fn reason(code: u16) -> &'static str {
    match code {
        400 => "Malformed request (the message has the parse error)",
        401 => "Missing or wrong bearer token",
        404 => "Unknown run or resource",
        409 => "The run is not in a state that allows this",
        413 => "Body over the size limit (1 MiB)",
        422 => "The request is well-formed but cannot run (the message says what to fix)",
        429 => "Rate limit or run queue full; see Retry-After",
        503 => "Shutting down",
        _ => "Error",
    }
}
