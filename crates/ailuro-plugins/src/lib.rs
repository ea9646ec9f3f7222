//! Ailuro's built-in analysis plugins, named as in PANDA (`docs/PLUGINS.md` documents their
//! arguments and output formats):
//!
//! * [`count`] — instructions and blocks per address space and kernel/user mode (PANDA's
//!   `asid_instr_count`, exact to the instruction);
//! * [`trace`] — an instruction trace with disassembly over an icount and/or pc range;
//! * [`stringsearch`] — finds strings in the bytes the guest reads and writes, per program point;
//! * [`memsavep`] — writes guest-physical memory as a raw image at a point of the replay and stops.
//!
//! [`registry`] lists them for [`ailuro_plugin::PluginSet::load`]. Each plugin's type is public so
//! that other plugins can read its results with `cx.plugin::<T>()`.

#![warn(missing_docs)]

pub mod count;
pub mod memsavep;
pub mod stringsearch;
pub mod trace;

pub use count::Count;
pub use memsavep::MemSave;
pub use stringsearch::StringSearch;
pub use trace::Trace;

use ailuro_plugin::PluginInfo;

/// The built-in plugins, in the order `info plugins` lists them.
pub fn registry() -> Vec<PluginInfo> {
    vec![count::INFO, trace::INFO, stringsearch::INFO, memsavep::INFO]
}

/// Open `path` for writing: a new file, or (with `overwrite`) a truncated existing one.
pub(crate) fn create_file(path: &std::path::Path, overwrite: bool) -> Result<std::fs::File, String> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true);
    if overwrite {
        o.create(true).truncate(true);
    } else {
        o.create_new(true);
    }
    o.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!("{} already exists (add overwrite=true to replace it)", path.display())
        } else {
            format!("cannot create {}: {e}", path.display())
        }
    })
}

#[cfg(test)]
pub(crate) mod testutil;

#[cfg(test)]
mod tests {
    use super::*;
    use ailuro_plugin::{parse_plugin_list, LoadCx, PluginSet};

    #[test]
    fn registry_names_and_documented_args() {
        let names: Vec<&str> = registry().iter().map(|p| p.name).collect();
        assert_eq!(names, ["count", "trace", "stringsearch", "memsavep"]);
        for p in registry() {
            assert!(!p.about.is_empty());
            for a in p.args {
                assert!(!a.help.is_empty(), "{}: {} has no help", p.name, a.key);
            }
        }
    }

    #[test]
    fn unknown_arguments_list_the_accepted_keys() {
        let dir = tempfile::tempdir().unwrap();
        let lcx = LoadCx { replay_range: Some((0, 1000)), ..LoadCx::default() };
        let d = dir.path().display();
        std::fs::write(dir.path().join("s_search_strings.txt"), "abc\n").unwrap();
        let cases = [
            ("count:fiel=x".to_string(), "accepts: file"),
            ("trace:strat=5".to_string(), "accepts: start, end, pc_lo, pc_hi, asid, regs, file, max, bits"),
            (format!("stringsearch:name=s,dir={d},nme=x"), "accepts: name, dir"),
            ("memsavep:icount=5,fil=x".to_string(), "accepts: percent, icount, file, overwrite"),
        ];
        for (spec, want) in cases {
            let e = PluginSet::load(&registry(), &parse_plugin_list(&spec).unwrap(), &lcx).err().unwrap();
            assert!(e.contains("unknown argument") && e.contains(want), "{spec}: {e}");
        }
        // Every declared key is accepted by its factory (no "unknown argument" for any of them).
        for p in registry() {
            for a in p.args {
                let spec = format!("{}:{}=zzz", p.name, a.key);
                let e = PluginSet::load(&registry(), &parse_plugin_list(&spec).unwrap(), &lcx).err();
                if let Some(e) = e {
                    assert!(!e.contains("unknown argument"), "{spec}: {e}");
                }
            }
        }
    }
}
