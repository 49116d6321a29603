//! The OTLP trace messages belt sends, encoded by hand.
//!
//! Why by hand: the tracer writes each span once, on the task that builds it, straight
//! into the bytes it is sent as ([`SpanWriter`]), and only the bytes are queued — no span
//! value, no per-attribute `String` keys, no tree of small allocations freed on another
//! thread. Keys are `&'static str`; values are written from what the run's events already
//! hold. Why not the `opentelemetry-proto` crate: it brings the OpenTelemetry API and SDK
//! along even for its message types, and builds each span as a tree of values.
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
            Text::Owned(s) => s,
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

/// A span written as it is built, straight into the bytes it is sent as: one
/// `ScopeSpans.spans` field (number 2), appended to the buffer it was opened on.
///
/// Why: the tracer builds two spans per LLM call, and building a value first (a `Span`
/// with a buffer of attributes), moving it through a queue and encoding it at the end
/// cost an allocation, a free, and two copies of every attribute per span. Here a span's
/// fields are written once, where they will be sent from. Protobuf lets a message's
/// fields come in any order, so the fixed fields go first, attributes as they are added,
/// and the name, status, events and links whenever they are known.
///
/// The span's length comes before its body, and is known only at [`SpanWriter::finish`]:
/// two bytes are kept for it, which is the varint of any length from 128 to 16,383 (a
/// span of ~25 attributes is ~600 bytes); a shorter or longer span moves its body once.
#[derive(Debug)]
pub struct SpanWriter<'b> {
    buf: &'b mut Vec<u8>,
    /// Where the span's key is; its length follows.
    key_at: usize,
    /// Where the span's body starts: after its key and the bytes kept for its length.
    body: usize,
    /// Where what follows the fixed fields starts (for [`SpanWriter::copy`]).
    after_head: usize,
    /// `gen_ai.request.model` and `gen_ai.provider.name` are among its attributes.
    pub model: bool,
    /// `error.type` is among them.
    pub error: bool,
}

/// What places a span: its ids, kind and times (`Span` fields 1, 2, 4, 6, 7, 8).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SpanHead {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// None for a root.
    pub parent_span_id: Option<[u8; 8]>,
    pub kind: i32,
    pub start_time_unix_nano: u64,
    pub end_time_unix_nano: u64,
}

impl<'b> SpanWriter<'b> {
    /// Start a span at the end of `buf`.
    pub fn open(buf: &'b mut Vec<u8>, head: &SpanHead) -> SpanWriter<'b> {
        buf.reserve(640);
        let key_at = buf.len();
        put_key(buf, 2, LEN);
        buf.extend_from_slice(&[0, 0]);
        let body = buf.len();
        put_bytes(buf, 1, &head.trace_id);
        put_bytes(buf, 2, &head.span_id);
        if let Some(parent) = &head.parent_span_id {
            put_bytes(buf, 4, parent);
        }
        put_key(buf, 6, VARINT);
        put_varint(buf, head.kind as u64);
        put_fixed64(buf, 7, head.start_time_unix_nano);
        put_fixed64(buf, 8, head.end_time_unix_nano.max(head.start_time_unix_nano));
        let after_head = buf.len();
        SpanWriter { buf, key_at, body, after_head, model: false, error: false }
    }

    /// Go on writing the one span `buf` holds (a span held back until the run's record
    /// could add to it): what is written now is added to it, and [`SpanWriter::finish`]
    /// writes its new length.
    pub fn reopen(buf: &'b mut Vec<u8>) -> SpanWriter<'b> {
        // The span's length follows its key: a varint, whose last byte is under 0x80.
        let len_bytes = buf.iter().skip(1).take(10).position(|b| b & 0x80 == 0).map_or(0, |i| i + 1);
        let body = (1 + len_bytes).min(buf.len());
        SpanWriter { after_head: buf.len(), body, buf, key_at: 0, model: false, error: false }
    }

    /// The span's name: an operation (`chat`) and what it acts on (`gpt-4o`), joined by a
    /// space.
    pub fn name(&mut self, op: &str, target: Option<&str>) {
        let len = op.len() + target.map_or(0, |t| 1 + t.len());
        put_len(self.buf, 5, len);
        self.buf.extend_from_slice(op.as_bytes());
        if let Some(t) = target {
            self.buf.push(b' ');
            self.buf.extend_from_slice(t.as_bytes());
        }
    }

    pub fn push(&mut self, kv: &KeyValue) {
        kv.put(self.buf, 9);
    }

    pub fn extend<'k>(&mut self, kvs: impl IntoIterator<Item = &'k KeyValue>) {
        for kv in kvs {
            self.push(kv);
        }
    }

    /// A string attribute, written from a borrowed string.
    pub fn str(&mut self, key: &'static str, value: &str) {
        attribute_head(self.buf, key, field_len(value.len()));
        put_bytes(self.buf, 1, value.as_bytes());
    }

    pub fn int(&mut self, key: &'static str, value: i64) {
        attribute_head(self.buf, key, 1 + varint_len(value as u64));
        put_key(self.buf, 3, VARINT);
        put_varint(self.buf, value as u64);
    }

    pub fn double(&mut self, key: &'static str, value: f64) {
        attribute_head(self.buf, key, 9);
        put_fixed64(self.buf, 4, value.to_bits());
    }

    pub fn bool(&mut self, key: &'static str, value: bool) {
        attribute_head(self.buf, key, 2);
        put_key(self.buf, 2, VARINT);
        self.buf.push(u8::from(value));
    }

    /// An array of strings (`gen_ai.response.finish_reasons`).
    pub fn strs(&mut self, key: &'static str, values: &[&str]) {
        // ArrayValue: repeated AnyValue values = 1, each a string_value = 1.
        let array_len: usize = values.iter().map(|v| field_len(field_len(v.len()))).sum();
        attribute_head(self.buf, key, field_len(array_len));
        put_len(self.buf, 5, array_len);
        for v in values {
            put_len(self.buf, 1, field_len(v.len()));
            put_bytes(self.buf, 1, v.as_bytes());
        }
    }

    /// The span's status (once: a span has one).
    pub fn status(&mut self, code: i32, message: &str) {
        let message_len = if message.is_empty() { 0 } else { field_len(message.len()) };
        put_len(self.buf, 15, message_len + 1 + varint_len(code as u64));
        if !message.is_empty() {
            put_bytes(self.buf, 2, message.as_bytes());
        }
        put_key(self.buf, 3, VARINT);
        put_varint(self.buf, code as u64);
    }

    pub fn event(&mut self, e: &SpanEvent) {
        put_len(self.buf, 11, e.len());
        put_fixed64(self.buf, 1, e.time_unix_nano);
        put_bytes(self.buf, 2, e.name.as_bytes());
        for kv in &e.attributes {
            kv.put(self.buf, 3);
        }
    }

    pub fn link(&mut self, l: &Link) {
        put_len(self.buf, 13, l.len());
        put_bytes(self.buf, 1, &l.trace_id);
        put_bytes(self.buf, 2, &l.span_id);
        for kv in &l.attributes {
            kv.put(self.buf, 4);
        }
    }

    /// Attributes encoded earlier ([`attribute_bytes`]).
    pub fn raw(&mut self, attributes: &[u8]) {
        self.buf.extend_from_slice(attributes);
    }

    /// Where the next attribute will start: with [`SpanWriter::copy`], attributes written
    /// once can be given to another span of the same buffer.
    pub fn at(&self) -> usize {
        self.buf.len()
    }

    /// Where what was written after the span's fixed fields (ids, kind, times) starts.
    pub fn after_head(&self) -> usize {
        self.after_head
    }

    /// Copy bytes `range` of the buffer (attributes of an earlier span, from
    /// [`SpanWriter::at`]) into this span.
    pub fn copy(&mut self, range: std::ops::Range<usize>) {
        self.buf.extend_from_within(range);
    }

    /// The span is complete: its length goes before its body, in the bytes kept for it
    /// (two when it was opened), which it fills or, rarely, resizes.
    pub fn finish(self) {
        let len = self.buf.len() - self.body;
        let slot = self.key_at + 1..self.body;
        if slot.len() == 2 && (128..16_384).contains(&len) {
            self.buf[slot.start] = (len as u8) | 0x80;
            self.buf[slot.start + 1] = (len >> 7) as u8;
            return;
        }
        let mut varint = Vec::with_capacity(10);
        put_varint(&mut varint, len as u64);
        self.buf.splice(slot, varint);
    }
}

/// An attribute encoded as a span's (for [`SpanWriter::raw`]): what many spans carry,
/// encoded once.
pub fn attribute_bytes(kv: &KeyValue) -> Vec<u8> {
    let mut buf = Vec::new();
    kv.put(&mut buf, 9);
    buf
}

/// The bytes of the first `n` spans of `spans` (spans written back to back by
/// [`SpanWriter`]): where to cut to keep `n` of them.
pub fn spans_prefix(spans: &[u8], n: usize) -> usize {
    let mut at = 0;
    for _ in 0..n {
        let (mut len, mut shift, mut i) = (0usize, 0, at + 1);
        while let Some(&b) = spans.get(i) {
            len |= usize::from(b & 0x7f) << shift;
            (shift, i) = (shift + 7, i + 1);
            if b & 0x80 == 0 || shift > 63 {
                break;
            }
        }
        at = (i + len).min(spans.len());
    }
    at
}

/// An attribute's field, key and value field, up to the value's body (`value_len` bytes):
/// put together on the stack and appended in one copy (it was a dozen small pushes, each
/// checking the buffer's room, and the largest share of a span's cost).
fn attribute_head(buf: &mut Vec<u8>, key: &'static str, value_len: usize) {
    let total = field_len(key.len()) + field_len(value_len);
    // Room for belt's keys (the longest is 40 bytes) and three lengths: a small array is
    // cheap to clear.
    let mut head = [0u8; 80];
    if key.len() > head.len() - 3 * 11 {
        put_len(buf, 9, total);
        put_bytes(buf, 1, key.as_bytes());
        put_len(buf, 2, value_len);
        return;
    }
    head[0] = (9 << 3) | LEN;
    let mut n = 1 + varint_into(&mut head[1..], total);
    head[n] = (1 << 3) | LEN;
    head[n + 1] = key.len() as u8;
    n += 2;
    head[n..n + key.len()].copy_from_slice(key.as_bytes());
    n += key.len();
    head[n] = (2 << 3) | LEN;
    n += 1 + varint_into(&mut head[n + 1..], value_len);
    buf.extend_from_slice(&head[..n]);
}

/// `v` as a varint at the start of `out` (which has room for one); how many bytes.
fn varint_into(out: &mut [u8], mut v: usize) -> usize {
    let mut n = 0;
    while v >= 0x80 {
        out[n] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n] = v as u8;
    n + 1
}

/// A span as a value, for a caller that builds one to send ([`crate::Exporter::send`]);
/// [`Span::encode`] writes it with a [`SpanWriter`], as the tracer writes its own.
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
    pub attributes: Vec<KeyValue>,
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

impl Span {
    /// Append this span to `buf` as one `ScopeSpans.spans` field (number 2): bytes that
    /// [`request`] puts together with others into a request body.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let head = SpanHead {
            trace_id: self.trace_id,
            span_id: self.span_id,
            parent_span_id: self.parent_span_id,
            kind: self.kind,
            start_time_unix_nano: self.start_time_unix_nano,
            end_time_unix_nano: self.end_time_unix_nano,
        };
        let mut w = SpanWriter::open(buf, &head);
        w.name(self.name.op, self.name.target.as_ref().map(Text::as_str));
        w.extend(&self.attributes);
        self.events.iter().for_each(|e| w.event(e));
        self.links.iter().for_each(|l| w.link(l));
        if let Some(s) = &self.status {
            w.status(s.code, &s.message);
        }
        w.finish();
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
    fn a_name_is_its_operation_and_target() {
        let model: Arc<str> = Arc::from("gpt-4o");
        assert_eq!(Name::new("chat", &model).to_string(), "chat gpt-4o");
        assert_eq!(Name::op("plan").to_string(), "plan");
    }

    /// A span written by [`Span::encode`], decoded with the official definitions.
    fn decoded(span: &Span) -> opentelemetry_proto::tonic::trace::v1::Span {
        use prost::Message;
        let mut buf = Vec::new();
        span.encode(&mut buf);
        // `ScopeSpans` holds the span as its field 2: decode that message.
        let scope = opentelemetry_proto::tonic::trace::v1::ScopeSpans::decode(&buf[..]).unwrap();
        assert_eq!(scope.spans.len(), 1);
        scope.spans.into_iter().next().unwrap()
    }

    #[test]
    fn attributes_written_directly_are_the_attributes_as_values() {
        let (mut direct, mut values) = (Vec::new(), Vec::new());
        let mut w = SpanWriter::open(&mut direct, &SpanHead::default());
        w.str("s", "text");
        w.int("i", -3);
        w.double("d", 0.25);
        w.bool("b", true);
        w.str("k".repeat(70).leak(), "a key longer than the stack's head");
        w.finish();
        let mut w = SpanWriter::open(&mut values, &SpanHead::default());
        w.extend(&[
            KeyValue::str("s", "text"),
            KeyValue::int("i", -3),
            KeyValue::double("d", 0.25),
            KeyValue::bool("b", true),
            KeyValue::str("k".repeat(70).leak(), "a key longer than the stack's head"),
        ]);
        w.finish();
        assert_eq!(direct, values);
    }

    #[test]
    fn spans_of_every_length_decode_as_what_was_written() {
        // Bodies under 128 bytes, between 128 and 16,383 (the two bytes kept for the
        // length), and over: each is what the official definitions read back.
        for text_len in [0, 300, 20_000] {
            let span = Span {
                trace_id: [7; 16],
                span_id: [8; 8],
                name: Name::new("x", "x".repeat(text_len.min(199))),
                parent_span_id: (text_len > 0).then_some([1; 8]),
                attributes: vec![
                    KeyValue::int("i", -1),
                    KeyValue::strs("a", &["p", "q"]),
                    KeyValue::str("s", "y".repeat(text_len)),
                ],
                events: vec![SpanEvent {
                    time_unix_nano: 1,
                    name: "e",
                    attributes: vec![KeyValue::bool("b", true)],
                }],
                links: vec![Link { trace_id: [2; 16], span_id: [3; 8], attributes: Vec::new() }],
                status: Some(Status { message: "m".into(), code: STATUS_ERROR }),
                start_time_unix_nano: 5,
                end_time_unix_nano: 9,
                kind: KIND_CLIENT,
            };
            let got = decoded(&span);
            assert_eq!(got.name, span.name.to_string());
            assert_eq!(got.trace_id, vec![7; 16]);
            assert_eq!(got.parent_span_id, if text_len > 0 { vec![1; 8] } else { Vec::new() });
            assert_eq!((got.start_time_unix_nano, got.end_time_unix_nano, got.kind), (5, 9, KIND_CLIENT));
            assert_eq!(got.attributes.len(), 3);
            assert_eq!(got.attributes[2].key, "s");
            assert_eq!(got.events[0].name, "e");
            assert_eq!(got.links[0].span_id, vec![3; 8]);
            assert_eq!(got.status.unwrap().code, STATUS_ERROR);
        }
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(u64::MAX), 10);
    }

    #[test]
    fn a_prefix_of_spans_is_whole_spans() {
        let mut buf = Vec::new();
        let mut ends = vec![0];
        for n in [0, 100, 300, 20_000] {
            let span = Span { attributes: vec![KeyValue::str("s", "y".repeat(n))], ..Span::default() };
            span.encode(&mut buf);
            ends.push(buf.len());
        }
        for (n, end) in ends.iter().enumerate() {
            assert_eq!(spans_prefix(&buf, n), *end);
        }
        assert_eq!(spans_prefix(&buf, 9), buf.len());
    }

    #[test]
    fn a_held_span_reopened_gets_its_name_and_more_attributes() {
        let mut held = Vec::new();
        let mut w = SpanWriter::open(&mut held, &SpanHead { span_id: [4; 8], ..SpanHead::default() });
        w.str("belt.step", "w/1/round/01/tool/1");
        w.finish();
        let mut w = SpanWriter::reopen(&mut held);
        w.name("execute_tool", Some("add"));
        w.str("gen_ai.tool.name", "add");
        w.finish();
        use prost::Message;
        let scope = opentelemetry_proto::tonic::trace::v1::ScopeSpans::decode(&held[..]).unwrap();
        let span = &scope.spans[0];
        assert_eq!(span.name, "execute_tool add");
        assert_eq!(span.span_id, vec![4; 8]);
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(keys, ["belt.step", "gen_ai.tool.name"]);
    }
}
