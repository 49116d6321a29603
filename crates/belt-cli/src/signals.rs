//! Ctrl-C (SIGINT) and SIGTERM, heard the same way by `belt run`, `belt resume` and `belt
//! serve`: both stop a run the same way (no new calls, what exists recorded and written);
//! only the exit code says which it was (130 or 143), as shells expect.

/// Which signal asked belt to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Interrupt,
    Terminate,
}

impl Signal {
    /// The exit code of a process stopped by this signal: 128 + its number.
    pub fn exit_code(self) -> i32 {
        match self {
            Signal::Interrupt => 130,
            Signal::Terminate => 143,
        }
    }
}

/// Listens for both signals from its creation on (a signal that comes before the first
/// [`Signals::next`] is not lost).
pub struct Signals {
    #[cfg(unix)]
    term: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    pub fn new() -> Signals {
        Signals {
            #[cfg(unix)]
            term: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok(),
        }
    }

    /// The next Ctrl-C or SIGTERM.
    pub async fn next(&mut self) -> Signal {
        #[cfg(unix)]
        if let Some(term) = self.term.as_mut() {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => Signal::Interrupt,
                _ = term.recv() => Signal::Terminate,
            };
        }
        let _ = tokio::signal::ctrl_c().await;
        Signal::Interrupt
    }
}
