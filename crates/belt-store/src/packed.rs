//! A run's result as the stores keep it: its JSON, LZ4-compressed in chunks as it is
//! serialized.
//!
//! A result holds every agent's record and output: about 600 bytes of JSON per step, so
//! 700 MB for a 1,000,000-agent cascade. Serializing it whole and then compressing it held
//! the JSON and the compressed copy at once, the largest peak of such a run. Here the JSON
//! goes through a [`Packer`] that compresses each [`CHUNK`] as it fills, so only the
//! compressed bytes (about a tenth) and one chunk are held.
//!
//! Layout: [`CHUNKED`] (four 0xFF bytes), then per chunk its length as a little-endian u32
//! and the chunk as `lz4_flex::compress_prepend_size` writes it. Results written before
//! this layout are one such block whole, whose first four bytes are the JSON's length: four
//! 0xFF bytes there would mean 4 GiB of JSON, which that layout could not hold, so the two
//! never meet. [`unpack`] reads both.

use std::io::Write;

use belt_core::RunResult;

/// Marks the chunked layout (see the module docs).
pub(crate) const CHUNKED: [u8; 4] = [0xFF; 4];

/// JSON bytes compressed at a time.
pub(crate) const CHUNK: usize = 1 << 20;

/// `result` as JSON, compressed chunk by chunk while it is serialized.
pub(crate) fn pack_result(result: &RunResult) -> Result<Vec<u8>, String> {
    let mut packer = Packer { out: CHUNKED.to_vec(), chunk: Vec::with_capacity(CHUNK) };
    serde_json::to_writer(&mut packer, result).map_err(|e| e.to_string())?;
    packer.flush_chunk();
    packer.out.shrink_to_fit();
    Ok(packer.out)
}

/// Compresses what is written to it, [`CHUNK`] bytes at a time.
struct Packer {
    out: Vec<u8>,
    chunk: Vec<u8>,
}

impl Packer {
    fn flush_chunk(&mut self) {
        if self.chunk.is_empty() {
            return;
        }
        let block = lz4_flex::compress_prepend_size(&self.chunk);
        self.out.extend_from_slice(&(block.len() as u32).to_le_bytes());
        self.out.extend_from_slice(&block);
        self.chunk.clear();
    }
}

impl Write for Packer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.chunk.len();
        let n = buf.len().min(room);
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() == CHUNK {
            self.flush_chunk();
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The JSON of a packed result, in either layout (see the module docs).
pub(crate) fn unpack(packed: &[u8]) -> Result<Vec<u8>, String> {
    let Some(mut rest) = packed.strip_prefix(&CHUNKED[..]) else { return unpack_block(packed) };
    let mut json = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .filter(|&len| len <= rest.len() - 4)
            .ok_or("a chunk of the compressed result has a wrong length")?;
        json.extend_from_slice(&unpack_block(&rest[4..4 + len])?);
        rest = &rest[4 + len..];
    }
    Ok(json)
}

/// The bytes of an LZ4 block written by `lz4_flex::compress_prepend_size`.
fn unpack_block(packed: &[u8]) -> Result<Vec<u8>, String> {
    // The length prefix comes from the file: check it against the most LZ4 can expand
    // (255 to 1) before it sizes an allocation.
    let size = packed.get(..4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize);
    match size {
        Some(size) if size <= packed.len().saturating_mul(255) => {
            lz4_flex::decompress_size_prepended(packed).map_err(|e| e.to_string())
        }
        _ => Err("the compressed result has a wrong length".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(agents: usize) -> RunResult {
        let mut r = RunResult::not_started(
            "r1",
            "cascade",
            "a task",
            chrono::Utc::now(),
            belt_core::RunStatus::Completed,
            "done",
        );
        // Varied text, so that the JSON spans several chunks even compressed.
        r.final_output = Some((0..agents).map(|i| format!("line {i} of the output\n")).collect());
        r
    }

    #[test]
    fn a_result_of_several_chunks_reads_back_whole() {
        let r = result(200_000);
        let json = serde_json::to_vec(&r).unwrap();
        assert!(json.len() > 2 * CHUNK, "the test needs several chunks: {} bytes", json.len());
        let packed = pack_result(&r).unwrap();
        assert!(packed.starts_with(&CHUNKED));
        assert!(packed.len() < json.len() / 2, "compressed: {} of {}", packed.len(), json.len());
        assert_eq!(unpack(&packed).unwrap(), json);
    }

    #[test]
    fn results_packed_whole_before_chunks_still_read() {
        let json = serde_json::to_vec(&result(10)).unwrap();
        let old = lz4_flex::compress_prepend_size(&json);
        assert_eq!(unpack(&old).unwrap(), json);
    }

    #[test]
    fn a_damaged_chunk_length_is_an_error_not_a_panic() {
        let mut packed = pack_result(&result(10)).unwrap();
        packed[4] = 0xEE;
        assert!(unpack(&packed).is_err());
        assert!(unpack(&CHUNKED[..2]).is_err());
    }
}
