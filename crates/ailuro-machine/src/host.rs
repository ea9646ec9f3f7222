//! What the machine needs from the host side (terminal, monitor connections), as a trait so the
//! run loop can be driven by the CLI or by tests.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::Duration;

/// Something from outside the emulator that the run loop must handle between slices.
#[derive(Debug)]
pub enum HostEvent {
    /// Bytes typed at (or piped into) the guest's serial console.
    SerialInput(Vec<u8>),
    /// The serial console's input ended (EOF on stdin).
    SerialInputClosed,
    /// The host asks the emulator to end the run (a termination signal): the description, e.g.
    /// "terminating on signal 15 from pid 42 (bash)". A recording in progress is finished.
    Terminate(String),
    /// A monitor command line; the reply (possibly empty) goes back on `reply` if present.
    Command {
        /// The command line as typed.
        line: String,
        /// Where to send the answer.
        reply: Option<Sender<String>>,
    },
}

/// The run loop's view of the host.
pub trait Host {
    /// Guest console output (live UART output, or reconstructed during replay).
    fn console_output(&mut self, bytes: &[u8]);
    /// The next host event: `Some(Duration::ZERO)` polls, `None` blocks until one arrives. Returns
    /// `None` on timeout or when no event source is left.
    fn next_event(&mut self, timeout: Option<Duration>) -> Option<HostEvent>;
    /// A message from the emulator to its user (goes to stderr in the CLI).
    fn message(&mut self, text: &str);
    /// Output of QEMU's isa-debugcon (`-debugcon`; SeaBIOS's log on port 0x402), live or
    /// reconstructed during replay. Discarded unless the host has somewhere to put it.
    fn debugcon_output(&mut self, _bytes: &[u8]) {}
    /// Replay progress: `done` of `total` instructions (total unknown for incomplete logs).
    fn replay_progress(&mut self, _done: u64, _total: Option<u64>) {}
    /// Replay finished (successfully or not); progress display can be cleared.
    fn replay_done(&mut self) {}
    /// A failure of the host side that must end the run (e.g. console output could not be
    /// written); polled by the run loop between slices. Returned once.
    fn take_failure(&mut self) -> Option<String> {
        None
    }
}

/// A simple [`Host`] backed by a channel of events, a console sink and a message sink.
pub struct ChannelHost<C: FnMut(&[u8]), M: FnMut(&str)> {
    events: Option<Receiver<HostEvent>>,
    console: C,
    messages: M,
}

impl<C: FnMut(&[u8]), M: FnMut(&str)> ChannelHost<C, M> {
    /// A host reading events from `events` (or none), writing console bytes to `console` and
    /// messages to `messages`.
    pub fn new(events: Option<Receiver<HostEvent>>, console: C, messages: M) -> Self {
        Self { events, console, messages }
    }
}

impl<C: FnMut(&[u8]), M: FnMut(&str)> Host for ChannelHost<C, M> {
    fn console_output(&mut self, bytes: &[u8]) {
        (self.console)(bytes)
    }

    fn next_event(&mut self, timeout: Option<Duration>) -> Option<HostEvent> {
        let rx = self.events.as_ref()?;
        let r = match timeout {
            Some(t) if t.is_zero() => rx.try_recv().map_err(|e| matches!(e, TryRecvError::Disconnected)),
            Some(t) => rx.recv_timeout(t).map_err(|e| matches!(e, RecvTimeoutError::Disconnected)),
            None => rx.recv().map_err(|_| true),
        };
        match r {
            Ok(ev) => Some(ev),
            Err(disconnected) => {
                if disconnected {
                    self.events = None;
                }
                None
            }
        }
    }

    fn message(&mut self, text: &str) {
        (self.messages)(text)
    }
}
