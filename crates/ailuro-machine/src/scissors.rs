//! `scissors:start=N,end=M,name=NEW`: cut the instruction range `[N, M]` of a replay into a new
//! recording that replays on its own. The plugin only carries its arguments; the replay machine
//! does the work (it takes a snapshot at `N` and writes again every log entry it consumes up to
//! `M`, then ends the replay), see [`crate::Machine::set_cut`].

use std::any::Any;
use std::path::PathBuf;

use ailuro_plugin::{ArgInfo, Args, LoadCx, Plugin, PluginInfo};

/// The `scissors` plugin's arguments.
#[derive(Clone, Debug)]
pub struct Scissors {
    /// First instruction count of the cut (its snapshot point).
    pub start: u64,
    /// Last instruction count of the cut (its end).
    pub end: u64,
    /// Name of the new recording.
    pub name: PathBuf,
    /// Replace an existing recording of that name.
    pub overwrite: bool,
}

impl Plugin for Scissors {
    fn name(&self) -> &'static str {
        "scissors"
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

const ARGS: &[ArgInfo] = &[
    ArgInfo { key: "start", help: "first instruction count of the cut (default: the recording's start)" },
    ArgInfo { key: "end", help: "last instruction count of the cut (default: the recording's end)" },
    ArgInfo { key: "name", help: "name of the new recording (required)" },
    ArgInfo { key: "overwrite", help: "replace an existing recording of that name (default false)" },
];

fn make(a: &Args, lcx: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let Some((first, last)) = lcx.replay_range else {
        return Err("plugin scissors: works only on a replay (-replay NAME)".into());
    };
    let start = a.u64("start")?.unwrap_or(first);
    let end = a.u64("end")?.unwrap_or(last);
    let name = PathBuf::from(a.required("name")?);
    let overwrite = a.bool("overwrite", false)?;
    if start < first || end > last || start >= end {
        return Err(format!(
            "plugin scissors: the range [{start}, {end}] must lie inside the recording [{first}, {last}] with start < end"
        ));
    }
    Ok(Box::new(Scissors { start, end, name, overwrite }))
}

/// Registry entry.
pub fn info() -> PluginInfo {
    PluginInfo {
        name: "scissors",
        about: "cut [start, end] of a replay into a new recording that replays on its own",
        args: ARGS,
        deps: &[],
        make,
    }
}
