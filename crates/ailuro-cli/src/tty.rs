//! Raw terminal mode for an interactive serial console (keys reach the guest as typed).

/// Restores the terminal's previous mode when dropped.
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Put stdin's terminal in raw mode (optionally keeping Ctrl-C/Ctrl-Z as signals); `None` if stdin is not a terminal or that fails.
    pub fn enter(keep_signals: bool) -> Option<RawMode> {
        // SAFETY: termios is plain data; tcgetattr/tcsetattr only read/write the struct we pass.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut t) != 0 {
                return None;
            }
            let saved = t;
            libc::cfmakeraw(&mut t);
            // Keep output post-processing so the emulator's own messages still start at column 0.
            t.c_oflag |= libc::OPOST;
            if keep_signals {
                // Plain `-serial stdio`: Ctrl-C still stops the emulator, as with QEMU.
                t.c_lflag |= libc::ISIG;
            }
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &t) != 0 {
                return None;
            }
            Some(RawMode { saved })
        }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the struct saved by `enter`.
        unsafe {
            libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.saved);
        }
    }
}
