//! Server-sent events: the framing both streaming wire formats use.
//!
//! OpenAI-compatible servers send `data: {json}` events and end with `data: [DONE]`;
//! Anthropic sends `event: NAME` + `data: {json}` pairs. Both follow the
//! [SSE specification](https://html.spec.whatwg.org/multipage/server-sent-events.html):
//! lines end with LF, CRLF or a lone CR; a blank line ends an event; `data` lines of one
//! event are joined with LF; one space after the colon is dropped; lines starting with a
//! colon are comments (OpenRouter's `: OPENROUTER PROCESSING` keep-alives); `id` and
//! `retry` are ignored here, as are unknown fields; a UTF-8 byte order mark at the start
//! is skipped.
//!
//! [`SseDecoder`] is fed the body's chunks as they arrive, which may split the stream at
//! any byte: inside a line, inside a multi-byte UTF-8 character, or between the CR and LF
//! of one line ending. Only complete lines are interpreted, so no split can change what
//! is decoded (a test feeds every split position). Complete lines are read in place from
//! the chunk; only a line spanning chunks is copied. An event of one `data` line whose
//! blank line is in the same chunk (a streamed reply's every `data: {json}\n\n`) reaches
//! the caller in place too, not copied.
//!
//! One deliberate departure from the specification: at the end of the body, a last line
//! without its newline and an event without its blank line are still delivered (the
//! specification drops them). Some servers omit the final blank line after `[DONE]`; a
//! stream truly cut inside an event fails later, when its JSON does not parse or its end
//! marker never came.

/// An incremental SSE decoder. See the [module docs](self).
#[derive(Debug, Default)]
pub struct SseDecoder {
    /// The start of a line whose end has not arrived yet.
    partial: Vec<u8>,
    /// The `data` of the event being read.
    data: String,
    /// Whether the event being read has a `data` field (an empty one counts).
    has_data: bool,
    /// The `event` field of the event being read.
    event: String,
    /// The previous chunk ended with CR: an LF at the start of the next one belongs to it.
    after_cr: bool,
    /// Whether the first line has been seen (for the byte order mark).
    started: bool,
    bytes: u64,
    events: u64,
}

impl SseDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes fed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Events delivered so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Decode `chunk`, calling `on_event(event_name, data)` for every complete event.
    /// `event_name` is `message` when the event has no `event` field. An error returned by
    /// `on_event` stops decoding and is returned.
    pub fn feed<E>(
        &mut self,
        chunk: &[u8],
        on_event: &mut impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        self.bytes += chunk.len() as u64;
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if rest[0] == b'\n' {
                rest = &rest[1..];
            }
        }
        // An event's one `data` line, still in `chunk`: delivered from there when its blank
        // line is in `chunk` too (the usual `data: {json}\n\n`), else copied into `data`.
        let mut held: Option<&[u8]> = None;
        while let Some(end) = line_end(rest) {
            let line = &rest[..end];
            let cr = rest[end] == b'\r';
            rest = &rest[end + 1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if !self.partial.is_empty() {
                let mut whole = std::mem::take(&mut self.partial);
                whole.extend_from_slice(line);
                let field = self.field(&whole);
                let result = self.apply(field, on_event);
                whole.clear();
                self.partial = whole;
                result?;
                continue;
            }
            match self.field(line) {
                Field::Data(value) if !self.has_data && held.is_none() => held = Some(value),
                Field::Blank if held.is_some() => {
                    let value = held.take().unwrap_or_default();
                    self.dispatch_held(value, on_event)?;
                }
                field => {
                    if let Some(value) = held.take() {
                        self.push_data(value);
                    }
                    self.apply(field, on_event)?;
                }
            }
        }
        if let Some(value) = held {
            self.push_data(value);
        }
        self.partial.extend_from_slice(rest);
        Ok(())
    }

    /// The body ended: deliver a last unterminated line and event, if any.
    pub fn finish<E>(&mut self, on_event: &mut impl FnMut(&str, &str) -> Result<(), E>) -> Result<(), E> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            let field = self.field(&line);
            self.apply(field, on_event)?;
        }
        self.dispatch(on_event)
    }

    /// What `line` says.
    fn field<'l>(&mut self, mut line: &'l [u8]) -> Field<'l> {
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            return Field::Blank;
        }
        if line[0] == b':' {
            return Field::Ignored; // a comment or keep-alive
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => Field::Data(value),
            b"event" => Field::Event(value),
            _ => Field::Ignored, // id, retry and unknown fields
        }
    }

    /// Act on a line's field, copying what it says into the event being read.
    fn apply<E>(
        &mut self,
        field: Field<'_>,
        on_event: &mut impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        match field {
            Field::Blank => return self.dispatch(on_event),
            Field::Data(value) => self.push_data(value),
            Field::Event(value) => {
                self.event.clear();
                push_utf8(&mut self.event, value);
            }
            Field::Ignored => {}
        }
        Ok(())
    }

    fn push_data(&mut self, value: &[u8]) {
        if self.has_data {
            self.data.push('\n');
        }
        self.has_data = true;
        push_utf8(&mut self.data, value);
    }

    /// Deliver the event whose only data is `value`, in place.
    fn dispatch_held<E>(
        &mut self,
        value: &[u8],
        on_event: &mut impl FnMut(&str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        let Ok(data) = std::str::from_utf8(value) else {
            // Invalid UTF-8: replaced as `push_utf8` does, through the copying path.
            self.push_data(value);
            return self.dispatch(on_event);
        };
        self.events += 1;
        let name = if self.event.is_empty() { "message" } else { self.event.as_str() };
        let result = on_event(name, data);
        self.event.clear();
        result
    }

    fn dispatch<E>(&mut self, on_event: &mut impl FnMut(&str, &str) -> Result<(), E>) -> Result<(), E> {
        let result = if self.has_data {
            self.events += 1;
            let name = if self.event.is_empty() { "message" } else { self.event.as_str() };
            on_event(name, &self.data)
        } else {
            Ok(())
        };
        self.data.clear();
        self.event.clear();
        self.has_data = false;
        result
    }
}

/// One line of the stream, read.
enum Field<'l> {
    /// The end of an event.
    Blank,
    Data(&'l [u8]),
    Event(&'l [u8]),
    /// A comment, `id`, `retry` or an unknown field.
    Ignored,
}

/// The position of the first LF or CR in `bytes`. Eight bytes at a time (a body is
/// scanned once, byte by byte this was the decoder's main cost): a word has a zero byte
/// where it equalled the searched byte, which the classic "has zero byte" test detects.
fn line_end(bytes: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let has_zero = |w: u64| w.wrapping_sub(LO) & !w & HI;
    let mut at = 0;
    while let Some(word) = bytes.get(at..at + 8) {
        let mut eight = [0u8; 8];
        eight.copy_from_slice(word);
        let w = u64::from_le_bytes(eight);
        if has_zero(w ^ (LO * u64::from(b'\n'))) | has_zero(w ^ (LO * u64::from(b'\r'))) != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| b == b'\n' || b == b'\r').map(|i| at + i)
}

fn push_utf8(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => out.push_str(s),
        // Invalid UTF-8 cannot be valid JSON either; the JSON parser reports it.
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn line_ends_are_found_at_every_position_and_byte_value() {
        let naive = |b: &[u8]| b.iter().position(|&c| c == b'\n' || c == b'\r');
        for len in 0..40 {
            for at in 0..=len {
                for (end, filler) in
                    [(b'\n', b'a'), (b'\r', 0x8d), (b'\n', 0x0b), (b'\r', 0xff), (b'\n', 0x0c)]
                {
                    let mut bytes = vec![filler; len];
                    if at < len {
                        bytes[at] = end;
                    }
                    assert_eq!(line_end(&bytes), naive(&bytes), "{bytes:?}");
                }
            }
        }
        // Every byte value next to one another.
        let all: Vec<u8> = (0..=255).collect();
        for start in 0..256 {
            assert_eq!(line_end(&all[start..]), naive(&all[start..]), "from {start}");
        }
    }

    use super::*;

    fn decode_chunks(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut decoder = SseDecoder::new();
        let mut out = Vec::new();
        let mut push = |e: &str, d: &str| -> Result<(), ()> {
            out.push((e.to_string(), d.to_string()));
            Ok(())
        };
        for chunk in chunks {
            decoder.feed(chunk, &mut push).unwrap();
        }
        decoder.finish(&mut push).unwrap();
        out
    }

    fn decode(body: &[u8]) -> Vec<(String, String)> {
        decode_chunks(&[body])
    }

    fn ev(e: &str, d: &str) -> (String, String) {
        (e.to_string(), d.to_string())
    }

    #[test]
    fn data_events_comments_and_fields() {
        let body = b": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\nid: 7\nretry: 100\nevent: ping\ndata: {}\n\ndata:x\ndata:  y\n\n: keep-alive\n\ndata: [DONE]\n\n";
        assert_eq!(
            decode(body),
            vec![
                ev("message", "{\"a\":1}"),
                ev("ping", "{}"),
                ev("message", "x\n y"),
                ev("message", "[DONE]")
            ]
        );
    }

    #[test]
    fn crlf_and_lone_cr_line_endings() {
        let lf = decode(b"event: a\ndata: 1\n\ndata: 2\n\n");
        assert_eq!(decode(b"event: a\r\ndata: 1\r\n\r\ndata: 2\r\n\r\n"), lf);
        assert_eq!(decode(b"event: a\rdata: 1\r\rdata: 2\r\r"), lf);
    }

    #[test]
    fn events_without_data_are_not_delivered_but_empty_data_is() {
        assert_eq!(decode(b"event: x\n\ndata\n\ndata:\n\n"), vec![ev("message", ""), ev("message", "")]);
    }

    #[test]
    fn a_last_event_without_its_blank_line_is_still_delivered() {
        assert_eq!(decode(b"data: 1\n\ndata: [DONE]\n"), vec![ev("message", "1"), ev("message", "[DONE]")]);
        assert_eq!(decode(b"data: 1\n\ndata: [DONE]"), vec![ev("message", "1"), ev("message", "[DONE]")]);
    }

    #[test]
    fn a_byte_order_mark_is_skipped() {
        assert_eq!(decode(b"\xEF\xBB\xBFdata: 1\n\n"), vec![ev("message", "1")]);
    }

    #[test]
    fn every_split_position_decodes_the_same() {
        let body = "\u{feff}event: message_start\r\ndata: {\"t\":\"héllo — 世界\"}\r\n\r\n: ping\r\ndata: a\rdata: b\r\rdata: [DONE]\n\n"
            .as_bytes();
        let whole = decode(body);
        assert_eq!(whole.len(), 3);
        assert_eq!(whole[0].1, "{\"t\":\"héllo — 世界\"}");
        for i in 0..=body.len() {
            for j in i..=body.len() {
                assert_eq!(decode_chunks(&[&body[..i], &body[i..j], &body[j..]]), whole, "split at {i}, {j}");
            }
        }
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode_chunks(&bytes), whole, "one byte at a time");
    }

    #[test]
    fn events_delivered_in_place_and_copied_agree() {
        // One data line (in place), several (copied), with an event name, invalid UTF-8 (replaced).
        let body = b"data: 1\n\nevent: e\ndata: 2\n\ndata: 3\ndata: 4\n\ndata: \xff!\n\ndata: 5\nid: 9\n\n";
        let expected = vec![
            ev("message", "1"),
            ev("e", "2"),
            ev("message", "3\n4"),
            ev("message", "\u{fffd}!"),
            ev("message", "5"),
        ];
        assert_eq!(decode(body), expected);
        for i in 0..=body.len() {
            assert_eq!(decode_chunks(&[&body[..i], &body[i..]]), expected, "split at {i}");
        }
    }

    #[test]
    fn an_error_from_the_callback_stops_decoding() {
        let mut decoder = SseDecoder::new();
        let mut seen = 0;
        let result = decoder.feed(b"data: 1\n\ndata: 2\n\n", &mut |_, d| {
            seen += 1;
            if d == "1" { Err("stop") } else { Ok(()) }
        });
        assert_eq!(result, Err("stop"));
        assert_eq!(seen, 1);
        assert_eq!(decoder.events(), 1);
        assert_eq!(decoder.bytes(), 18);
    }
}
