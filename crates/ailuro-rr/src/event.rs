//! Non-deterministic events and their compact encoding inside log chunks.
//!
//! Every entry is `varint(icount - previous icount)`, one kind byte, then the kind's fields
//! (see docs/FORMATS.md). Kind numbers are part of the file format: never renumber, only add.

use crate::codec::{DecodeError, Put, Reader};

/// Largest payload of a single [`Event::Dma`] or [`Event::HostEvent`] (16 MiB). Larger transfers
/// must be split by the recorder; the limit keeps any single chunk bounded for the reader.
pub const MAX_EVENT_DATA: usize = 16 << 20;

/// One non-deterministic input crossing into CPU+RAM.
///
/// Synchronous events are consumed by the CPU when it asks (at the icount of the instruction
/// performing the access); asynchronous ones are applied by the run loop before the instruction
/// at their icount. New kinds may be added in later versions; an old reader fails on them with
/// [`crate::RecordingError::UnsupportedEventKind`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Event {
    /// Synchronous: value returned by a port read (`in`, `ins`).
    IoRead {
        /// I/O port.
        port: u16,
        /// Access size in bytes (1, 2 or 4).
        size: u8,
        /// Value returned to the CPU.
        value: u32,
    },
    /// Synchronous: value returned by an MMIO load.
    MmioRead {
        /// Guest-physical address.
        addr: u64,
        /// Access size in bytes.
        size: u8,
        /// Value returned to the CPU.
        value: u64,
    },
    /// Synchronous: value of a time source read (`rdtsc`, ARM counter).
    Timestamp {
        /// Value returned to the CPU.
        value: u64,
    },
    /// Synchronous: vector returned by the interrupt controller on acknowledge.
    InterruptAck {
        /// Vector.
        vector: u32,
    },
    /// Asynchronous: new level of an interrupt pin (x86: 0 = INTR, 1 = NMI; ARM: 0 = IRQ, 1 = FIQ).
    IrqLine {
        /// Pin number.
        line: u8,
        /// New level.
        level: bool,
    },
    /// Asynchronous: a device wrote `data` into guest RAM at `addr`.
    Dma {
        /// Guest-physical address.
        addr: u64,
        /// Bytes written (at most [`MAX_EVENT_DATA`]).
        data: Vec<u8>,
    },
    /// Asynchronous: periodic state check; replay compares its own state with these values.
    Checkpoint {
        /// Program counter before the instruction at this icount.
        pc: u64,
        /// First 16 bytes of the CPU state hash.
        cpu_hash: [u8; 16],
    },
    /// Asynchronous: machine reset.
    Reset,
    /// Asynchronous: the machine's virtual clock jumped (an idle CPU skipped ahead to the next
    /// device deadline): from this icount on, virtual time is `now_ns` plus the instructions
    /// retired since. From log version 2 time-stamp reads are derived from this clock during
    /// replay instead of being logged one by one.
    Clock {
        /// Virtual nanoseconds at this icount.
        now_ns: u64,
    },
    /// Asynchronous: anything else from the host (catch-all, `code` defined by the machine crate).
    HostEvent {
        /// Machine-defined event code.
        code: u32,
        /// Payload (at most [`MAX_EVENT_DATA`]).
        data: Vec<u8>,
    },
}

/// Kind bytes as stored in the file.
pub(crate) mod kind {
    pub const IO_READ: u8 = 1;
    pub const MMIO_READ: u8 = 2;
    pub const TIMESTAMP: u8 = 3;
    pub const INTERRUPT_ACK: u8 = 4;
    pub const IRQ_LINE: u8 = 5;
    pub const DMA: u8 = 6;
    pub const CHECKPOINT: u8 = 7;
    pub const RESET: u8 = 8;
    pub const HOST_EVENT: u8 = 9;
    pub const CLOCK: u8 = 10;
    /// Highest kind this build knows; per-kind statistics arrays have `MAX + 1` slots.
    pub const MAX: u8 = 10;
}

impl Event {
    /// The kind byte stored in the file for this event.
    pub fn kind(&self) -> u8 {
        match self {
            Self::IoRead { .. } => kind::IO_READ,
            Self::MmioRead { .. } => kind::MMIO_READ,
            Self::Timestamp { .. } => kind::TIMESTAMP,
            Self::InterruptAck { .. } => kind::INTERRUPT_ACK,
            Self::IrqLine { .. } => kind::IRQ_LINE,
            Self::Dma { .. } => kind::DMA,
            Self::Checkpoint { .. } => kind::CHECKPOINT,
            Self::Reset => kind::RESET,
            Self::HostEvent { .. } => kind::HOST_EVENT,
            Self::Clock { .. } => kind::CLOCK,
        }
    }

    /// Human-readable name of a kind byte (for statistics and messages).
    pub fn kind_name(kind: u8) -> &'static str {
        match kind {
            kind::IO_READ => "IoRead",
            kind::MMIO_READ => "MmioRead",
            kind::TIMESTAMP => "Timestamp",
            kind::INTERRUPT_ACK => "InterruptAck",
            kind::IRQ_LINE => "IrqLine",
            kind::DMA => "Dma",
            kind::CHECKPOINT => "Checkpoint",
            kind::RESET => "Reset",
            kind::HOST_EVENT => "HostEvent",
            kind::CLOCK => "Clock",
            _ => "unknown",
        }
    }

    /// Whether the CPU consumes this event when it asks (as opposed to the run loop applying it
    /// before an instruction).
    pub fn is_synchronous(&self) -> bool {
        matches!(self, Self::IoRead { .. } | Self::MmioRead { .. } | Self::Timestamp { .. } | Self::InterruptAck { .. })
    }

    /// Check limits that the encoding relies on.
    pub(crate) fn validate(&self) -> Result<(), String> {
        match self {
            Self::Dma { data, .. } | Self::HostEvent { data, .. } if data.len() > MAX_EVENT_DATA => {
                Err(format!("event payload of {} bytes exceeds the {MAX_EVENT_DATA}-byte limit", data.len()))
            }
            _ => Ok(()),
        }
    }

    /// Append kind byte and fields.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.put_u8(self.kind());
        match self {
            Self::IoRead { port, size, value } => {
                out.put_var(u64::from(*port));
                out.put_u8(*size);
                out.put_var(u64::from(*value));
            }
            Self::MmioRead { addr, size, value } => {
                out.put_var(*addr);
                out.put_u8(*size);
                out.put_var(*value);
            }
            Self::Timestamp { value } => out.put_var(*value),
            Self::InterruptAck { vector } => out.put_var(u64::from(*vector)),
            Self::IrqLine { line, level } => {
                out.put_u8(*line);
                out.put_u8(u8::from(*level));
            }
            Self::Dma { addr, data } => {
                out.put_var(*addr);
                out.put_var(data.len() as u64);
                out.put_bytes(data);
            }
            Self::Checkpoint { pc, cpu_hash } => {
                out.put_var(*pc);
                out.put_bytes(cpu_hash);
            }
            Self::Reset => {}
            Self::HostEvent { code, data } => {
                out.put_var(u64::from(*code));
                out.put_var(data.len() as u64);
                out.put_bytes(data);
            }
            Self::Clock { now_ns } => out.put_var(*now_ns),
        }
    }
}

/// Why an event could not be decoded.
#[derive(Debug)]
pub(crate) enum EventDecodeError {
    /// Malformed bytes.
    Bytes(DecodeError),
    /// A kind byte this build does not know.
    UnknownKind(u8),
}

impl From<DecodeError> for EventDecodeError {
    fn from(e: DecodeError) -> Self {
        Self::Bytes(e)
    }
}

/// Decode kind byte and fields (the icount delta has already been read).
pub(crate) fn decode_event(r: &mut Reader<'_>) -> Result<Event, EventDecodeError> {
    let k = r.u8()?;
    Ok(match k {
        kind::IO_READ => Event::IoRead {
            port: r.var_max("port", u64::from(u16::MAX))? as u16,
            size: r.u8()?,
            value: r.var_max("value", u64::from(u32::MAX))? as u32,
        },
        kind::MMIO_READ => Event::MmioRead { addr: r.var()?, size: r.u8()?, value: r.var()? },
        kind::TIMESTAMP => Event::Timestamp { value: r.var()? },
        kind::INTERRUPT_ACK => Event::InterruptAck { vector: r.var_max("vector", u64::from(u32::MAX))? as u32 },
        kind::IRQ_LINE => {
            let line = r.u8()?;
            let at = r.pos();
            let level = match r.u8()? {
                0 => false,
                1 => true,
                v => return Err(DecodeError::Range { at, what: "irq level", value: u64::from(v) }.into()),
            };
            Event::IrqLine { line, level }
        }
        kind::DMA => {
            let addr = r.var()?;
            let len = r.var_max("dma length", MAX_EVENT_DATA as u64)? as usize;
            Event::Dma { addr, data: r.bytes(len)?.to_vec() }
        }
        kind::CHECKPOINT => Event::Checkpoint { pc: r.var()?, cpu_hash: r.array()? },
        kind::RESET => Event::Reset,
        kind::HOST_EVENT => {
            let code = r.var_max("host event code", u64::from(u32::MAX))? as u32;
            let len = r.var_max("host event length", MAX_EVENT_DATA as u64)? as usize;
            Event::HostEvent { code, data: r.bytes(len)?.to_vec() }
        }
        kind::CLOCK => Event::Clock { now_ns: r.var()? },
        other => return Err(EventDecodeError::UnknownKind(other)),
    })
}

/// One log entry: an event at a program point.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LogEntry {
    /// Guest instruction count (see docs/ARCHITECTURE.md, "Program point").
    pub icount: u64,
    /// The event.
    pub event: Event,
}
