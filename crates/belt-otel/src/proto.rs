//! The OTLP trace messages belt sends, encoded by hand.
//!
//! Why by hand: a span is encoded once, on the task that builds it, straight into bytes,
//! and only the bytes are queued — no per-attribute `String` keys, no tree of small
//! allocations freed on another thread (that was ~35% of export's cost per call). Keys are
//! `&'static str`, values borrow what the run already shares (`Arc<str>` model names,
//! `StepId`s). Why not the `opentelemetry-proto` crate: it brings the OpenTelemetry API
//! and SDK along even for its message types.
//!
//! The field numbers are those of `opentelemetry/proto/trace/v1/trace.proto`,
//! `common/v1/common.proto`, `resource/v1/resource.proto` and
//! `collector/trace/v1/trace_service.proto`; the tests decode what this module encodes with
//! the official definitions, so a wrong number or length fails there.

use std::sync::Arc;

use belt_core::StepId;

/// `Status.StatusCode`.
pub const STATUS_OK: i32 = 1;
pub const STATUS_ERROR: i32 = 2;

/// `Span.SpanKind`.
pub const KIND_INTERNAL: i32 = 1;
pub const KIND_CLIENT: i32 = 3;

/// A string value, borrowed from what the run already holds where it can be.
#[derive(Debug, Clone, PartialEq)]
pub enum Text {
    Static(&'static str),
    Shared(Arc<str>),
    Step(StepId),
    /// Bytes `start..end` of a shared string.
    Part(Arc<str>, u32, u32),
    Owned(String),
}

impl Default for Text {
    fn default() -> Self {
        Text::Static("")
    }
}

impl Text {
    pub fn as_str(&self) -> &str {
        match self {
            Text::Static(s) => s,
            Text::Shared(s) => s,
            Text::Step(s) => s.as_str(),
            Text::Part(s, start, end) => s.get(*start as usize..*end as usize).unwrap_or(""),
            Text::Owned(s) => s,
        }
    }
}

impl Text {
    /// `part`, a piece of `whole` (as `provider_and_model` cuts a model name), shared
    /// with it rather than copied; a piece from elsewhere is copied.
    pub fn part_of(whole: &Arc<str>, part: &str) -> Text {
        let (start, base) = (part.as_ptr() as usize, whole.as_ptr() as usize);
        if part.len() == whole.len() && start == base {
            return Text::Shared(whole.clone());
        }
        match start.checked_sub(base) {
            Some(at) if at + part.len() <= whole.len() => {
                Text::Part(whole.clone(), at as u32, (at + part.len()) as u32)
            }
            _ => Text::Owned(part.to_string()),
        }
    }
}

impl From<&belt_core::Tier> for Text {
    /// belt's own tiers are static strings: no allocation per span.
    fn from(t: &belt_core::Tier) -> Self {
        use belt_core::Tier;
        match t {
            Tier::Decomposer => Text::Static("decomposer"),
            Tier::Worker => Text::Static("worker"),
            Tier::Synthesizer => Text::Static("synthesizer"),
            Tier::Executive => Text::Static("executive"),
            Tier::Agent => Text::Static("agent"),
            Tier::Custom(s) => Text::Shared(s.clone()),
        }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::Owned(s)
    }
}
impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::Owned(s.to_string())
    }
}
impl From<&Arc<str>> for Text {
    fn from(s: &Arc<str>) -> Self {
        Text::Shared(s.clone())
    }
}
impl From<&StepId> for Text {
    fn from(s: &StepId) -> Self {
        Text::Step(s.clone())
    }
}

/// `AnyValue`'s kinds belt uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(Text),
    Bool(bool),
    Int(i64),
    Double(f64),
    Strings(Vec<Text>),
}

/// One attribute.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    pub key: &'static str,
    pub value: Value,
}

impl KeyValue {
    /// A string attribute; a literal value is best given as [`KeyValue::lit`].
    pub fn str(key: &'static str, value: impl Into<Text>) -> KeyValue {
        KeyValue { key, value: Value::String(value.into()) }
    }
    pub fn lit(key: &'static str, value: &'static str) -> KeyValue {
        KeyValue { key, value: Value::String(Text::Static(value)) }
    }
    pub fn int(key: &'static str, value: i64) -> KeyValue {
        KeyValue { key, value: Value::Int(value) }
    }
    pub fn double(key: &'static str, value: f64) -> KeyValue {
        KeyValue { key, value: Value::Double(value) }
    }
    pub fn bool(key: &'static str, value: bool) -> KeyValue {
        KeyValue { key, value: Value::Bool(value) }
    }
    pub fn strs(key: &'static str, values: &[&str]) -> KeyValue {
        KeyValue { key, value: Value::Strings(values.iter().map(|v| Text::from(*v)).collect()) }
    }
}

/// A span's attributes (`Span.attributes`, field 9), encoded as they are added: a span
/// holds one buffer of bytes instead of a `Vec` of values that borrow the run's strings,
/// and writing the span out is one copy. (A span gets its attributes once, in order; only
/// two of them need a memory of what was added, and [`Attributes`] keeps it as flags.)
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attributes {
    bytes: Vec<u8>,
    /// `gen_ai.request.model` and `gen_ai.provider.name` are among them.
    pub model: bool,
    /// `error.type` is among them.
    pub error: bool,
}

impl Attributes {
    /// Room for `bytes` of attributes.
    pub fn with_capacity(bytes: usize) -> Attributes {
        Attributes { bytes: Vec::with_capacity(bytes), ..Attributes::default() }
    }

    pub fn push(&mut self, kv: KeyValue) {
        kv.put(&mut self.bytes, 9);
    }

    pub fn extend(&mut self, kvs: impl IntoIterator<Item = KeyValue>) {
        for kv in kvs {
            self.push(kv);
        }
    }

    /// A string attribute, written from a borrowed string.
    pub fn str(&mut self, key: &'static str, value: &str) {
        self.head(key, field_len(value.len()));
        put_bytes(&mut self.bytes, 1, value.as_bytes());
    }

    pub fn int(&mut self, key: &'static str, value: i64) {
        let value_len = 1 + varint_len(value as u64);
        self.head(key, value_len);
        put_key(&mut self.bytes, 3, VARINT);
        put_varint(&mut self.bytes, value as u64);
    }

    pub fn double(&mut self, key: &'static str, value: f64) {
        self.head(key, 9);
        put_fixed64(&mut self.bytes, 4, value.to_bits());
    }

    pub fn bool(&mut self, key: &'static str, value: bool) {
        self.head(key, 2);
        put_key(&mut self.bytes, 2, VARINT);
        self.bytes.push(u8::from(value));
    }

    /// An attribute's field, key and value field up to the value's body (`value_len` bytes).
    fn head(&mut self, key: &'static str, value_len: usize) {
        put_len(&mut self.bytes, 9, field_len(key.len()) + field_len(value_len));
        put_bytes(&mut self.bytes, 1, key.as_bytes());
        put_len(&mut self.bytes, 2, value_len);
    }

    /// The encoded bytes (each a `Span.attributes` field).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl From<Vec<KeyValue>> for Attributes {
    fn from(kvs: Vec<KeyValue>) -> Attributes {
        let mut a = Attributes::default();
        a.extend(kvs);
        a
    }
}

/// A span, as the tracer builds it; [`Span::encode`] writes it out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Span {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// None for a root.
    pub parent_span_id: Option<[u8; 8]>,
    pub name: Name,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
    pub attributes: Attributes,
    pub events: Vec<SpanEvent>,
    pub links: Vec<Link>,
    pub status: Option<Status>,
}

/// A span's name: an operation (`chat`) and what it acts on (`gpt-4o`), written joined by a
/// space, so no name is formatted into a `String` per span.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Name {
    pub op: &'static str,
    pub target: Option<Text>,
}

impl Name {
    pub fn new(op: &'static str, target: impl Into<Text>) -> Name {
        Name { op, target: Some(target.into()) }
    }

    /// A name that is only the operation (`plan`).
    pub fn op(op: &'static str) -> Name {
        Name { op, target: None }
    }

    fn len(&self) -> usize {
        self.op.len() + self.target.as_ref().map_or(0, |t| 1 + t.as_str().len())
    }

    fn put(&self, buf: &mut Vec<u8>, field: u8) {
        put_len(buf, field, self.len());
        buf.extend_from_slice(self.op.as_bytes());
        if let Some(t) = &self.target {
            buf.push(b' ');
            buf.extend_from_slice(t.as_str().as_bytes());
        }
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Some(t) => write!(f, "{} {}", self.op, t.as_str()),
            None => f.write_str(self.op),
        }
    }
}

/// `Span.Event`: something that happened at one moment of a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanEvent {
    pub time_unix_nano: u64,
    pub name: &'static str,
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub attributes: Vec<KeyValue>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Status {
    pub message: String,
    pub code: i32,
}

// ---- the wire format ----------------------------------------------------------------

const LEN: u8 = 2;
const FIXED64: u8 = 1;
const VARINT: u8 = 0;

fn varint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// A field's key (all of belt's field numbers are below 16: one byte).
fn put_key(buf: &mut Vec<u8>, field: u8, wire: u8) {
    buf.push((field << 3) | wire);
}

/// A length-delimited field of `len` bytes: its key and length (the caller writes the rest).
fn put_len(buf: &mut Vec<u8>, field: u8, len: usize) {
    put_key(buf, field, LEN);
    put_varint(buf, len as u64);
}

/// The size of a length-delimited field whose body is `len` bytes.
fn field_len(len: usize) -> usize {
    1 + varint_len(len as u64) + len
}

fn put_bytes(buf: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    put_len(buf, field, bytes.len());
    buf.extend_from_slice(bytes);
}

fn put_fixed64(buf: &mut Vec<u8>, field: u8, v: u64) {
    put_key(buf, field, FIXED64);
    buf.extend_from_slice(&v.to_le_bytes());
}

impl Value {
    /// The `AnyValue` message's body.
    fn len(&self) -> usize {
        match self {
            Value::String(s) => field_len(s.as_str().len()),
            Value::Bool(_) => 2,
            Value::Int(v) => 1 + varint_len(*v as u64),
            Value::Double(_) => 9,
            Value::Strings(values) => field_len(array_len(values)),
        }
    }

    fn put(&self, buf: &mut Vec<u8>) {
        match self {
            Value::String(s) => put_bytes(buf, 1, s.as_str().as_bytes()),
            Value::Bool(b) => {
                put_key(buf, 2, VARINT);
                buf.push(u8::from(*b));
            }
            Value::Int(v) => {
                put_key(buf, 3, VARINT);
                put_varint(buf, *v as u64);
            }
            Value::Double(v) => put_fixed64(buf, 4, v.to_bits()),
            Value::Strings(values) => {
                put_len(buf, 5, array_len(values));
                // ArrayValue: repeated AnyValue values = 1.
                for v in values {
                    put_len(buf, 1, field_len(v.as_str().len()));
                    put_bytes(buf, 1, v.as_str().as_bytes());
                }
            }
        }
    }
}

fn array_len(values: &[Text]) -> usize {
    values.iter().map(|v| field_len(field_len(v.as_str().len()))).sum()
}

impl KeyValue {
    fn len(&self) -> usize {
        field_len(self.key.len()) + field_len(self.value.len())
    }

    /// As field `field` of the message holding it.
    pub(crate) fn put(&self, buf: &mut Vec<u8>, field: u8) {
        let value_len = self.value.len();
        put_len(buf, field, field_len(self.key.len()) + field_len(value_len));
        put_bytes(buf, 1, self.key.as_bytes());
        put_len(buf, 2, value_len);
        self.value.put(buf);
    }
}

fn attributes_len(attributes: &[KeyValue]) -> usize {
    attributes.iter().map(|kv| field_len(kv.len())).sum()
}

impl SpanEvent {
    fn len(&self) -> usize {
        9 + field_len(self.name.len()) + attributes_len(&self.attributes)
    }
}

impl Link {
    fn len(&self) -> usize {
        field_len(16) + field_len(8) + attributes_len(&self.attributes)
    }
}

impl Status {
    fn len(&self) -> usize {
        let message = if self.message.is_empty() { 0 } else { field_len(self.message.len()) };
        message + 1 + varint_len(self.code as u64)
    }
}

impl Span {
    /// The `Span` message's body.
    fn len(&self) -> usize {
        let mut n = field_len(16) + field_len(8) + self.parent_span_id.map_or(0, |_| field_len(8));
        n += field_len(self.name.len()) + 1 + varint_len(self.kind as u64) + 9 + 9;
        n += self.attributes.bytes.len();
        n += self.events.iter().map(|e| field_len(e.len())).sum::<usize>();
        n += self.links.iter().map(|l| field_len(l.len())).sum::<usize>();
        n + self.status.as_ref().map_or(0, |s| field_len(s.len()))
    }

    /// Append this span to `buf` as one `ScopeSpans.spans` field (number 2): bytes that
    /// [`request`] puts together with others into a request body.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let len = self.len();
        buf.reserve(field_len(len));
        put_len(buf, 2, len);
        put_bytes(buf, 1, &self.trace_id);
        put_bytes(buf, 2, &self.span_id);
        if let Some(parent) = &self.parent_span_id {
            put_bytes(buf, 4, parent);
        }
        self.name.put(buf, 5);
        put_key(buf, 6, VARINT);
        put_varint(buf, self.kind as u64);
        put_fixed64(buf, 7, self.start_time_unix_nano);
        put_fixed64(buf, 8, self.end_time_unix_nano);
        buf.extend_from_slice(&self.attributes.bytes);
        for e in &self.events {
            put_len(buf, 11, e.len());
            put_fixed64(buf, 1, e.time_unix_nano);
            put_bytes(buf, 2, e.name.as_bytes());
            for kv in &e.attributes {
                kv.put(buf, 3);
            }
        }
        for l in &self.links {
            put_len(buf, 13, l.len());
            put_bytes(buf, 1, &l.trace_id);
            put_bytes(buf, 2, &l.span_id);
            for kv in &l.attributes {
                kv.put(buf, 4);
            }
        }
        if let Some(s) = &self.status {
            put_len(buf, 15, s.len());
            if !s.message.is_empty() {
                put_bytes(buf, 2, s.message.as_bytes());
            }
            put_key(buf, 3, VARINT);
            put_varint(buf, s.code as u64);
        }
    }
}

/// The resource every request names: `service.name` and the SDK's attributes.
fn resource_attributes(service_name: &str) -> [KeyValue; 4] {
    [
        KeyValue::str("service.name", service_name),
        KeyValue::lit("telemetry.sdk.name", "belt-otel"),
        KeyValue::lit("telemetry.sdk.language", "rust"),
        KeyValue::lit("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
    ]
}

/// The instrumentation scope: `belt` and its version.
const SCOPE: (&str, &str) = ("belt", env!("CARGO_PKG_VERSION"));

/// An `ExportTraceServiceRequest` body: one resource (`service.name` and the SDK's
/// attributes), one scope (`belt`), and the spans of `parts` — each part spans encoded by
/// [`Span::encode`], copied once, into the body.
pub fn request(service_name: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let mut buf = request_head(service_name, parts);
    buf.reserve(parts.iter().map(Vec::len).sum());
    for part in parts {
        buf.extend_from_slice(part);
    }
    buf
}

/// What comes before the spans in [`request`]'s body: a body is this followed by `parts`,
/// which the exporter sends as they are (no copy into one buffer).
pub fn request_head(service_name: &str, parts: &[Vec<u8>]) -> Vec<u8> {
    let resource = resource_attributes(service_name);
    let (name, version) = SCOPE;
    let scope_len = field_len(name.len()) + field_len(version.len());
    let spans_len: usize = parts.iter().map(Vec::len).sum();
    let scope_spans_len = field_len(scope_len) + spans_len;
    let resource_len = attributes_len(&resource);
    let resource_spans_len = field_len(resource_len) + field_len(scope_spans_len);
    let mut buf = Vec::with_capacity(field_len(resource_spans_len) - spans_len);
    // ExportTraceServiceRequest.resource_spans = 1
    put_len(&mut buf, 1, resource_spans_len);
    // ResourceSpans.resource = 1 → Resource.attributes = 1
    put_len(&mut buf, 1, resource_len);
    for kv in &resource {
        kv.put(&mut buf, 1);
    }
    // ResourceSpans.scope_spans = 2 → ScopeSpans.scope = 1, .spans = 2
    put_len(&mut buf, 2, scope_spans_len);
    put_len(&mut buf, 1, scope_len);
    put_scope(&mut buf);
    buf
}

// ---- plain nested encoding, for messages sent rarely (metrics) ----------------------

/// A message as field `field`: its body written by `body` into a buffer of its own, then
/// its length and the body.
pub(crate) fn put_message(buf: &mut Vec<u8>, field: u8, body: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    body(&mut inner);
    put_bytes(buf, field, &inner);
}

pub(crate) fn put_str(buf: &mut Vec<u8>, field: u8, s: &str) {
    put_bytes(buf, field, s.as_bytes());
}

pub(crate) fn put_varint_field(buf: &mut Vec<u8>, field: u8, v: u64) {
    put_key(buf, field, VARINT);
    put_varint(buf, v);
}

pub(crate) fn put_fixed64_field(buf: &mut Vec<u8>, field: u8, v: u64) {
    put_fixed64(buf, field, v);
}

/// A packed `repeated fixed64` or `repeated double` (given as bits).
pub(crate) fn put_packed_fixed64(buf: &mut Vec<u8>, field: u8, values: &[u64]) {
    put_len(buf, field, values.len() * 8);
    for v in values {
        buf.extend_from_slice(&v.to_le_bytes());
    }
}

/// A `Resource` message's body.
pub(crate) fn put_resource(buf: &mut Vec<u8>, service_name: &str) {
    for kv in &resource_attributes(service_name) {
        kv.put(buf, 1);
    }
}

/// An `InstrumentationScope` message's body.
pub(crate) fn put_scope(buf: &mut Vec<u8>) {
    put_bytes(buf, 1, SCOPE.0.as_bytes());
    put_bytes(buf, 2, SCOPE.1.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_of_a_shared_string_are_not_copied() {
        let model: Arc<str> = Arc::from("openai/gpt-4o");
        let (provider, name) = model.split_once('/').unwrap();
        assert_eq!(Text::part_of(&model, name), Text::Part(model.clone(), 7, 13));
        assert_eq!(Text::part_of(&model, provider).as_str(), "openai");
        assert_eq!(Text::part_of(&model, &model), Text::Shared(model.clone()));
        assert_eq!(Text::part_of(&model, "elsewhere"), Text::Owned("elsewhere".into()));
        assert_eq!(Name::new("chat", Text::part_of(&model, name)).to_string(), "chat gpt-4o");
    }

    #[test]
    fn attributes_written_directly_are_the_attributes_as_values() {
        let mut direct = Attributes::default();
        direct.str("s", "text");
        direct.int("i", -3);
        direct.double("d", 0.25);
        direct.bool("b", true);
        let values: Attributes = vec![
            KeyValue::str("s", "text"),
            KeyValue::int("i", -3),
            KeyValue::double("d", 0.25),
            KeyValue::bool("b", true),
        ]
        .into();
        assert_eq!(direct.bytes(), values.bytes());
    }

    #[test]
    fn lengths_are_what_is_written() {
        let span = Span {
            name: Name::new("x", "x".repeat(199)),
            parent_span_id: Some([1; 8]),
            attributes: vec![
                KeyValue::int("i", -1),
                KeyValue::strs("a", &["p", "q"]),
                KeyValue::str("s", "y".repeat(300)),
            ]
            .into(),
            events: vec![SpanEvent {
                time_unix_nano: 1,
                name: "e",
                attributes: vec![KeyValue::bool("b", true)],
            }],
            links: vec![Link { trace_id: [2; 16], span_id: [3; 8], attributes: Vec::new() }],
            status: Some(Status { message: "m".into(), code: STATUS_ERROR }),
            ..Span::default()
        };
        let mut buf = Vec::new();
        span.encode(&mut buf);
        assert_eq!(buf.len(), field_len(span.len()));
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::MAX), 10);
    }
}
