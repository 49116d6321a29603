//! The one way belt reads a file it is given (a plan, a workflow, belt.toml): regular files
//! only, at most a limit, UTF-8 — so `/dev/zero`, a FIFO with no writer or a huge file is a
//! clear error at once, never memory without end or a hang.

use std::io::Read;
use std::path::Path;

/// Why a file could not be read; the message names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(
        "{path} is not a regular file (a directory, device or pipe); save what it holds to a file and pass that"
    )]
    NotAFile { path: String },
    #[error("{path} is larger than {limit} bytes, the most belt reads for it")]
    TooLarge { path: String, limit: u64 },
    #[error("{path} is not UTF-8 text")]
    NotText { path: String },
}

/// The text of the regular file at `path`, at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, ReadError> {
    let name = || path.display().to_string();
    let io = |source| ReadError::Io { path: name(), source };
    // Checked before opening: opening a FIFO waits for a writer.
    if !std::fs::metadata(path).map_err(io)?.is_file() {
        return Err(ReadError::NotAFile { path: name() });
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path).map_err(io)?.take(limit + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > limit {
        return Err(ReadError::TooLarge { path: name(), limit });
    }
    String::from_utf8(bytes).map_err(|_| ReadError::NotText { path: name() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_pipes_directories_and_big_files_are_refused() {
        assert!(matches!(read_text(Path::new("/dev/zero"), 10), Err(ReadError::NotAFile { .. })));
        assert!(matches!(read_text(Path::new("/tmp"), 10), Err(ReadError::NotAFile { .. })));
        let dir = std::env::temp_dir().join(format!("belt-app-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("fifo");
        let _ = std::fs::remove_file(&fifo);
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        assert!(matches!(read_text(&fifo, 10), Err(ReadError::NotAFile { .. })), "no hang on a FIFO");
        let big = dir.join("big");
        std::fs::write(&big, vec![b'x'; 11]).unwrap();
        let e = read_text(&big, 10).unwrap_err();
        assert!(e.to_string().contains("larger than 10 bytes"), "{e}");
        assert_eq!(read_text(&big, 11).unwrap().len(), 11);
        std::fs::write(&big, [0xff, 0xfe]).unwrap();
        assert!(matches!(read_text(&big, 11), Err(ReadError::NotText { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
