//! Read marks held by this process, so that a commit's read side costs no system call.
//!
//! In WAL mode every SQLite transaction, a write included, first starts a read: it takes a
//! shared lock on one of the WAL's *read marks* (four slots in the `-shm` file, each the
//! WAL frame a reader's snapshot reaches). When the newest mark is older than the WAL's last
//! frame (always, for a connection that committed since), it first moves a free mark up: an
//! exclusive `fcntl` lock on the slot, the new value, the unlock; then the shared lock, and
//! the unlock when the transaction ends. Four of the six `fcntl` calls of every one-row
//! commit, each a trip through the kernel's lock list.
//!
//! SQLite's unix VFS counts the shm locks of one process's connections itself and calls
//! `fcntl` only when the process's own lock changes. So while other connections of this
//! process hold every read mark (each an open read transaction, begun one commit after the
//! other so that each moved a mark of its own), a transaction's attempt to move a mark fails
//! at once inside the process, it takes the newest held mark, and taking and releasing its
//! shared lock only count. What is left per commit is the write lock and its unlock.
//!
//! Nothing about what is read or written changes: the writer's transaction still reads the
//! WAL's newest snapshot (a mark only promises that the frames up to it stay), and other
//! processes read and write as before (they share the marks; moving one fails for them too,
//! and they use the newest). What a held mark does hold back is the checkpoint: frames after
//! the oldest held mark are not copied into the database, and the WAL does not start over
//! while one is held. So the marks are let go before each checkpoint (the writer's, see
//! [`crate::writer`]), and when commits stop: a mark is only taken when the last commit was
//! less than [`IDLE`] ago, and the writer thread lets them all go once none came for as long.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

/// The read marks SQLite's WAL has besides mark 0 (which is for a WAL copied whole into the
/// database, when readers need no frame of it): `WAL_NREADER - 1`.
pub(crate) const MARKS: usize = 4;

/// How long after the last commit held marks are let go (and how recent the last commit must
/// be for a commit to take one more).
pub(crate) const IDLE: Duration = Duration::from_millis(100);

/// A connection per read mark, the first `held` of them in a read transaction.
pub(crate) struct ReadMarks {
    conns: Vec<Connection>,
    held: usize,
}

impl ReadMarks {
    /// Open the connections (no transaction yet).
    pub(crate) fn open(path: &Path) -> rusqlite::Result<Self> {
        let flags =
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI;
        let conns = (0..MARKS).map(|_| Connection::open_with_flags(path, flags)).collect::<Result<_, _>>()?;
        Ok(ReadMarks { conns, held: 0 })
    }

    /// How many marks are held now.
    pub(crate) fn held(&self) -> usize {
        self.held
    }

    /// Hold one more mark, if not all are held: begin a read transaction on the next
    /// connection. Called right after a commit, so that it moves a mark to the new last frame,
    /// one the marks held so far do not reach. A failure (the database busy with a recovery)
    /// only leaves the mark to a later commit.
    pub(crate) fn hold_one(&mut self) {
        let Some(conn) = self.conns.get(self.held) else { return };
        let begun = conn.prepare_cached("BEGIN").and_then(|mut s| s.execute([])).and_then(|_| {
            // Any read starts the transaction's snapshot; page 1 is always there.
            conn.prepare_cached("SELECT 1 FROM sqlite_master LIMIT 1")?.query([])?.next().map(drop)
        });
        match begun {
            Ok(()) => self.held += 1,
            Err(_) => {
                if !conn.is_autocommit() {
                    let _ = conn.execute_batch("ROLLBACK");
                }
            }
        }
    }

    /// Let every held mark go (end the read transactions).
    pub(crate) fn release(&mut self) {
        for conn in &self.conns[..self.held] {
            // A read transaction ends without error; were it to fail, closing the
            // connection would still end it, and the store stays correct either way.
            if conn.prepare_cached("COMMIT").and_then(|mut s| s.execute([])).is_err() && !conn.is_autocommit()
            {
                let _ = conn.execute_batch("ROLLBACK");
            }
        }
        self.held = 0;
    }
}
