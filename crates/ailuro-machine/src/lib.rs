//! The Ailuro machine: CPU + RAM + board, the run loop, and the live, recording and replaying
//! implementations of the CPU's platform seam.
//!
//! A live machine runs its devices on a virtual clock; a recording machine additionally logs every
//! value that crosses into CPU+RAM; a replaying machine has no devices at all and takes those
//! values from the log, stopping with a precise report when the execution no longer fits it.

pub mod clock;
pub mod config;
pub mod console_plugin;
pub mod host;
pub mod machine;
pub mod monitor;
pub mod platforms;
pub mod plugins;
mod rrfiles;
pub mod scissors;
pub mod tap;

pub use ailuro_x86::{Engine, JitStats, DEFAULT_JIT_HOT};
pub use config::{GuestArch, MachineConfig};
pub use host::{ChannelHost, Host, HostEvent};
pub use machine::{hex, BootImage, Machine, ReplaySummary, RunOptions, Stop, CHECKPOINT_INTERVAL};
pub use platforms::Divergence;
