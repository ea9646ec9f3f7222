//! `stringsearch`: finds strings in the bytes the guest reads and writes, per program point
//! (PANDA's `stringsearch`).
//!
//! Search strings come from `DIR/NAME_search_strings.txt`, one per line:
//!
//! * `"quoted text"` with C escapes (`\n \t \r \0 \\ \" \' \a \b \f \v \e`, `\xHH`, octal `\NNN`);
//! * hex bytes separated by colons, e.g. `de:ad:be:ef` (every group exactly two hex digits; a
//!   single group such as `ca` is one byte — quote it to search for the text);
//! * anything else is bare text (leading and trailing whitespace removed);
//! * blank lines and lines starting with `#` are ignored.
//!
//! Every memory access contributes its bytes (the little-endian bytes of the value, `size` of
//! them, in address order) to a match-progress state kept per (pc, asid, read/write), as in PANDA:
//! a string matches when one instruction (one pc) reads or writes its bytes consecutively, in one
//! access or spread over several (`rep movsb`, byte loops, a string copied in 4-byte words).
//! Unlike PANDA, which restarts from scratch on a mismatch, progress follows an Aho–Corasick
//! automaton over all strings, so no match is lost to a partial one (`aab` is found in `aaab`)
//! and overlapping matches are all counted.
//!
//! Speed: a 256-entry table classifies the bytes that occur in any string; an access without
//! such a byte only needs to clear its key's progress, and a counting filter over (pc, dir) says
//! whether any progress can exist for it, so the common access costs a few table lookups and no
//! hash-map access. Progress is stored only for keys with a partial match.
//!
//! Output: a plog record per match (kind `match`), `DIR/NAME_string_matches.txt` at the end (format
//! in [`StringSearch::matches_file`]), and a summary.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::path::{Path, PathBuf};

use ailuro_plugin::{hook, ArgInfo, Args, Cx, LoadCx, MemAccess, Plugin, PluginInfo};

/// Registry entry.
pub const INFO: PluginInfo = PluginInfo {
    name: "stringsearch",
    about: "find strings in the bytes read and written by each program point",
    args: ARGS,
    deps: &[],
    make,
};

const ARGS: &[ArgInfo] = &[
    ArgInfo {
        key: "name",
        help: "required: strings come from NAME_search_strings.txt, matches go to NAME_string_matches.txt",
    },
    ArgInfo { key: "dir", help: "directory of both files (default: the current directory)" },
];

fn make(args: &Args, _: &LoadCx) -> Result<Box<dyn Plugin>, String> {
    let name = args.required("name")?;
    let dir = args.path("dir").unwrap_or_else(|| PathBuf::from("."));
    let input = dir.join(format!("{name}_search_strings.txt"));
    let strings = read_strings(&input).map_err(|e| format!("plugin stringsearch: {e}"))?;
    let output = dir.join(format!("{name}_string_matches.txt"));
    Ok(Box::new(StringSearch::new(strings, output).map_err(|e| format!("plugin stringsearch: {e}"))?))
}

/// One search string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchString {
    /// The bytes searched for.
    pub bytes: Vec<u8>,
    /// How it is shown: `"text"` (C escapes as in the file) or `de:ad:be:ef`.
    pub display: String,
}

/// Read and parse a search-strings file; errors name the file (and line).
pub fn read_strings(path: &Path) -> Result<Vec<SearchString>, String> {
    let data = std::fs::read(path).map_err(|e| format!("cannot read search strings from {}: {e}", path.display()))?;
    let v = parse_strings(&data).map_err(|e| format!("{}: {e}", path.display()))?;
    if v.is_empty() {
        return Err(format!("{} holds no search strings", path.display()));
    }
    Ok(v)
}

/// Parse the contents of a search-strings file (format in the module documentation).
pub fn parse_strings(data: &[u8]) -> Result<Vec<SearchString>, String> {
    let mut out = Vec::new();
    for (n, line) in data.split(|&b| b == b'\n').enumerate() {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let s = parse_line(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        if s.bytes.is_empty() {
            return Err(format!("line {}: empty search string", n + 1));
        }
        out.push(s);
    }
    Ok(out)
}

fn parse_line(line: &[u8]) -> Result<SearchString, String> {
    let text = String::from_utf8_lossy(line).into_owned();
    if line[0] == b'"' {
        let (bytes, rest) = unescape(&line[1..])?;
        if !rest.is_empty() {
            return Err(format!("text after the closing quote: {}", String::from_utf8_lossy(rest)));
        }
        return Ok(SearchString { bytes, display: text });
    }
    if let Some(bytes) = parse_hex(line) {
        return Ok(SearchString { bytes, display: text.to_ascii_lowercase() });
    }
    Ok(SearchString { bytes: line.to_vec(), display: format!("\"{}\"", text.escape_default()) })
}

/// `de:ad:be:ef` → bytes; `None` unless every group is exactly two hex digits.
fn parse_hex(line: &[u8]) -> Option<Vec<u8>> {
    line.split(|&b| b == b':')
        .map(|g| match g {
            [a, b] => Some((hex_digit(*a)? << 4) | hex_digit(*b)?),
            _ => None,
        })
        .collect()
}

fn hex_digit(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// Decode a quoted string's body up to its closing quote; returns the bytes and what follows.
fn unescape(s: &[u8]) -> Result<(Vec<u8>, &[u8]), String> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        i += 1;
        match c {
            b'"' => return Ok((out, s[i..].trim_ascii())),
            b'\\' => {
                let Some(&e) = s.get(i) else { break };
                i += 1;
                let v = match e {
                    b'n' => b'\n',
                    b't' => b'\t',
                    b'r' => b'\r',
                    b'a' => 7,
                    b'b' => 8,
                    b'f' => 12,
                    b'v' => 11,
                    b'e' => 27,
                    b'\\' | b'"' | b'\'' | b'?' => e,
                    b'x' => {
                        let mut v = 0u32;
                        let mut n = 0;
                        while n < 2 && i < s.len() && s[i].is_ascii_hexdigit() {
                            v = v * 16 + hex_digit(s[i]).unwrap_or(0) as u32;
                            i += 1;
                            n += 1;
                        }
                        if n == 0 {
                            return Err("\\x needs hex digits".to_string());
                        }
                        v as u8
                    }
                    b'0'..=b'7' => {
                        let mut v = u32::from(e - b'0');
                        let mut n = 1;
                        while n < 3 && i < s.len() && (b'0'..=b'7').contains(&s[i]) {
                            v = v * 8 + u32::from(s[i] - b'0');
                            i += 1;
                            n += 1;
                        }
                        if v > 255 {
                            return Err(format!("octal escape \\{v:o} is more than one byte"));
                        }
                        v as u8
                    }
                    _ => return Err(format!("unknown escape \\{}", e as char)),
                };
                out.push(v);
            }
            _ => out.push(c),
        }
    }
    Err("missing closing quote".to_string())
}

/// A multiply-rotate hasher for the progress map (keys are plain integers; iteration order of
/// the map never reaches the output or the guest).
#[derive(Default, Clone, Copy)]
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, x: u64) {
        self.0 = (self.0.rotate_left(5) ^ x).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.add(u64::from(b));
        }
    }
    #[inline]
    fn write_u8(&mut self, x: u8) {
        self.add(u64::from(x));
    }
    #[inline]
    fn write_u64(&mut self, x: u64) {
        self.add(x);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// A progress key: program point, address space, direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Key {
    pc: u64,
    asid: u64,
    write: bool,
}

/// Bit of a transition telling that the target state completes at least one string.
const OUT: u32 = 1 << 31;
/// Largest transition table allowed (entries).
const MAX_TABLE: usize = 16 << 20;
/// Buckets of the counting filter over (pc, dir).
const FILTER_BITS: u32 = 14;
/// Matches kept in memory for [`StringSearch::matches`] (counts stay exact beyond it).
pub const MAX_KEPT: usize = 100_000;

/// Aho–Corasick automaton over byte classes, as a full transition table.
struct Automaton {
    /// Byte → class (0: the byte occurs in no string).
    class: [u16; 256],
    classes: usize,
    /// `delta[state * classes + class]` = next state, with [`OUT`] set if it completes a string.
    delta: Vec<u32>,
    /// Strings completed in each state (itself or by a suffix): `outputs[out_start[s]..out_start[s+1]]`.
    out_start: Vec<u32>,
    outputs: Vec<u32>,
    /// A state with the same future: itself if it has children in the trie, else its failure
    /// state's (so a key that just completed a string and cannot extend it keeps no progress).
    canon: Vec<u32>,
}

impl Automaton {
    fn new(strings: &[SearchString]) -> Result<Automaton, String> {
        let mut class = [0u16; 256];
        let mut classes = 1usize;
        for s in strings {
            for &b in &s.bytes {
                if class[b as usize] == 0 {
                    class[b as usize] = classes as u16;
                    classes += 1;
                }
            }
        }
        let nodes = 1 + strings.iter().map(|s| s.bytes.len()).sum::<usize>();
        if nodes.saturating_mul(classes) > MAX_TABLE {
            return Err(format!(
                "search strings too long: {} bytes in all with {} distinct byte values (the table \
                 would need more than {MAX_TABLE} entries)",
                nodes - 1,
                classes - 1
            ));
        }
        const NONE: u32 = u32::MAX;
        // Trie.
        let mut go: Vec<u32> = vec![NONE; classes];
        let mut ends: Vec<Vec<u32>> = vec![Vec::new()];
        for (i, s) in strings.iter().enumerate() {
            let mut st = 0usize;
            for &b in &s.bytes {
                let c = class[b as usize] as usize;
                if go[st * classes + c] == NONE {
                    go[st * classes + c] = ends.len() as u32;
                    go.extend(std::iter::repeat_n(NONE, classes));
                    ends.push(Vec::new());
                }
                st = go[st * classes + c] as usize;
            }
            ends[st].push(i as u32);
        }
        let n = ends.len();
        // Breadth-first: failure links, complete transitions, outputs through suffixes.
        let mut fail = vec![0u32; n];
        let mut delta = vec![0u32; n * classes];
        let mut order = Vec::with_capacity(n);
        for c in 0..classes {
            let t = go[c];
            if t != NONE {
                delta[c] = t;
                order.push(t);
            }
        }
        let mut k = 0;
        while k < order.len() {
            let s = order[k] as usize;
            k += 1;
            let f = fail[s] as usize;
            let inherited = ends[f].clone();
            ends[s].extend(inherited);
            for c in 0..classes {
                let t = go[s * classes + c];
                if t != NONE {
                    fail[t as usize] = delta[f * classes + c];
                    delta[s * classes + c] = t;
                    order.push(t);
                } else {
                    delta[s * classes + c] = delta[f * classes + c];
                }
            }
        }
        let mut canon = vec![0u32; n];
        for &s in &order {
            let s = s as usize;
            let leaf = go[s * classes..(s + 1) * classes].iter().all(|&t| t == NONE);
            canon[s] = if leaf { canon[fail[s] as usize] } else { s as u32 };
        }
        let mut out_start = Vec::with_capacity(n + 1);
        let mut outputs = Vec::new();
        for e in &mut ends {
            e.sort_unstable();
            e.dedup();
            out_start.push(outputs.len() as u32);
            outputs.extend_from_slice(e);
        }
        out_start.push(outputs.len() as u32);
        for d in &mut delta {
            if !ends[*d as usize].is_empty() {
                *d |= OUT;
            }
        }
        Ok(Automaton { class, classes, delta, out_start, outputs, canon })
    }

    fn outputs(&self, state: u32) -> &[u32] {
        let s = state as usize;
        &self.outputs[self.out_start[s] as usize..self.out_start[s + 1] as usize]
    }
}

/// One match, as kept in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Match {
    /// Index of the string (line order of the strings file, comments not counted).
    pub index: usize,
    /// Instruction count of the access that completed the match.
    pub icount: u64,
    /// pc of the instruction.
    pub pc: u64,
    /// Address space.
    pub asid: u64,
    /// Found in written (`true`) or read bytes.
    pub write: bool,
    /// Virtual address of the string's last byte.
    pub vaddr: u64,
}

/// The `stringsearch` plugin.
pub struct StringSearch {
    strings: Vec<SearchString>,
    ac: Automaton,
    output: PathBuf,
    /// Automaton state of each key with a partial match (never 0).
    progress: HashMap<Key, u32, BuildHasherDefault<FxHasher>>,
    /// Number of `progress` keys per bucket of (pc, dir).
    filter: Vec<u32>,
    /// Per (pc, asid): per string, [reads, writes].
    counts: BTreeMap<(u64, u64), Vec<[u64; 2]>>,
    totals: Vec<[u64; 2]>,
    matches: Vec<Match>,
}

impl StringSearch {
    /// A searcher for `strings`, writing the per-program-point table to `output` at the end.
    pub fn new(strings: Vec<SearchString>, output: PathBuf) -> Result<StringSearch, String> {
        let ac = Automaton::new(&strings)?;
        let n = strings.len();
        Ok(StringSearch {
            strings,
            ac,
            output,
            progress: HashMap::default(),
            filter: vec![0; 1 << FILTER_BITS],
            counts: BTreeMap::new(),
            totals: vec![[0; 2]; n],
            matches: Vec::new(),
        })
    }

    /// The search strings.
    pub fn strings(&self) -> &[SearchString] {
        &self.strings
    }

    /// Matches so far, in order (the first [`MAX_KEPT`]).
    pub fn matches(&self) -> &[Match] {
        &self.matches
    }

    /// Matches of each string so far: [reads, writes].
    pub fn totals(&self) -> &[[u64; 2]] {
        &self.totals
    }

    /// Number of keys currently holding a partial match.
    pub fn partial_keys(&self) -> usize {
        self.progress.len()
    }

    /// Where the table goes: one line per (pc, asid) with a match, sorted by pc then asid, after
    /// `#` comment lines naming the strings. Each line is PANDA's: pc and asid in hex, a space,
    /// then for each string (file order) a space and its number of matches (reads plus writes)
    /// there, e.g. `c01234ab 1f3e000  2 0`.
    pub fn matches_file(&self) -> &Path {
        &self.output
    }

    #[inline]
    fn bucket(pc: u64, write: bool) -> usize {
        ((pc ^ u64::from(write)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FILTER_BITS)) as usize
    }

    /// Feed the bytes of one access.
    #[inline]
    fn access(&mut self, cx: &mut Cx, a: &MemAccess, write: bool) {
        let size = usize::from(a.size.min(8));
        let bytes = a.value.to_le_bytes();
        let mut relevant = 0u16;
        for &b in &bytes[..size] {
            relevant |= self.ac.class[b as usize];
        }
        let pc = cx.pc;
        let bucket = Self::bucket(pc, write);
        let maybe = self.filter[bucket] != 0;
        if relevant == 0 && !maybe {
            return;
        }
        self.slow(cx, a, write, &bytes[..size], relevant != 0, maybe, bucket);
    }

    #[allow(clippy::too_many_arguments)]
    fn slow(
        &mut self,
        cx: &mut Cx,
        a: &MemAccess,
        write: bool,
        bytes: &[u8],
        relevant: bool,
        maybe: bool,
        bucket: usize,
    ) {
        let key = Key { pc: cx.pc, asid: cx.asid(), write };
        if !relevant {
            // No byte can continue a match: the key's progress (if any) is lost.
            if self.progress.remove(&key).is_some() {
                self.filter[bucket] -= 1;
            }
            return;
        }
        let s0 = if maybe { self.progress.get(&key).copied().unwrap_or(0) } else { 0 };
        let mut s = s0;
        let classes = self.ac.classes;
        for (i, &b) in bytes.iter().enumerate() {
            let v = self.ac.delta[s as usize * classes + self.ac.class[b as usize] as usize];
            s = v & !OUT;
            if v & OUT != 0 {
                self.found(cx, key, s, a.vaddr.wrapping_add(i as u64), a.paddr.wrapping_add(i as u64));
            }
        }
        s = self.ac.canon[s as usize];
        if s != s0 {
            if s0 == 0 {
                self.progress.insert(key, s);
                self.filter[bucket] += 1;
            } else if s == 0 {
                self.progress.remove(&key);
                self.filter[bucket] -= 1;
            } else {
                self.progress.insert(key, s);
            }
        }
    }

    #[cold]
    fn found(&mut self, cx: &mut Cx, key: Key, state: u32, vaddr: u64, paddr: u64) {
        let n = self.strings.len();
        let outs = self.ac.outputs(state).to_vec();
        for i in outs {
            let index = i as usize;
            let dir = usize::from(key.write);
            self.counts.entry((key.pc, key.asid)).or_insert_with(|| vec![[0; 2]; n])[index][dir] += 1;
            self.totals[index][dir] += 1;
            if self.matches.len() < MAX_KEPT {
                self.matches.push(Match {
                    index,
                    icount: cx.icount,
                    pc: key.pc,
                    asid: key.asid,
                    write: key.write,
                    vaddr,
                });
            }
            let s = &self.strings[index].display;
            cx.log("stringsearch", "match", |r| {
                r.field("index", index)
                    .field("string", s.as_str())
                    .field("access", if key.write { "write" } else { "read" })
                    .field("vaddr", vaddr)
                    .field("paddr", paddr)
            });
        }
    }

    /// The text of the matches file.
    pub fn table(&self) -> String {
        let mut s = String::from("# ailuro stringsearch: matches per program point\n# strings:");
        for (i, x) in self.strings.iter().enumerate() {
            let _ = write!(s, " [{i}] {}", x.display);
        }
        s.push_str("\n# pc asid  then the number of matches of each string (reads + writes)\n");
        for (&(pc, asid), c) in &self.counts {
            let _ = write!(s, "{pc:x} {asid:x} ");
            for x in c {
                let _ = write!(s, " {}", x[0] + x[1]);
            }
            s.push('\n');
        }
        s
    }
}

impl Plugin for StringSearch {
    fn name(&self) -> &'static str {
        "stringsearch"
    }

    fn hooks(&self) -> u32 {
        hook::MEM_READ | hook::MEM_WRITE
    }

    #[inline]
    fn mem_read(&mut self, cx: &mut Cx, access: &MemAccess) {
        self.access(cx, access, false);
    }

    #[inline]
    fn mem_write(&mut self, cx: &mut Cx, access: &MemAccess) {
        self.access(cx, access, true);
    }

    fn finish(&mut self, _cx: &mut Cx) -> Result<Option<String>, String> {
        std::fs::write(&self.output, self.table())
            .map_err(|e| format!("cannot write {}: {e}", self.output.display()))?;
        let total: u64 = self.totals.iter().map(|t| t[0] + t[1]).sum();
        let mut s = format!(
            "stringsearch: {total} match{} of {} string{} at {} program point{}; table in {}",
            if total == 1 { "" } else { "es" },
            self.strings.len(),
            if self.strings.len() == 1 { "" } else { "s" },
            self.counts.len(),
            if self.counts.len() == 1 { "" } else { "s" },
            self.output.display()
        );
        for (x, t) in self.strings.iter().zip(&self.totals) {
            let _ = write!(s, "\n  {}: {} read, {} written", x.display, t[0], t[1]);
        }
        for m in self.matches.iter().take(10) {
            let _ = write!(
                s,
                "\n  icount {} pc {:#x} asid {:#x} {} {} at {:#x}",
                m.icount,
                m.pc,
                m.asid,
                if m.write { "writes" } else { "reads" },
                self.strings[m.index].display,
                m.vaddr
            );
        }
        if self.matches.len() > 10 {
            let _ = write!(s, "\n  ...");
        }
        Ok(Some(s))
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{plog, read_plog, FakeCpu};
    use ailuro_bus::{CpuObserver, GuestRam, ProgramPoint};
    use ailuro_plugin::{parse_plugin_list, PluginSet};

    fn setup(strings: &str) -> (tempfile::TempDir, PluginSet) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t_search_strings.txt"), strings).unwrap();
        let spec = format!("stringsearch:name=t,dir={}", dir.path().display());
        let mut set =
            PluginSet::load(&crate::registry(), &parse_plugin_list(&spec).unwrap(), &LoadCx::default()).unwrap();
        assert_eq!(CpuObserver::hooks(&set), hook::MEM_READ | hook::MEM_WRITE);
        set.set_plog(plog(dir.path()));
        (dir, set)
    }

    struct Driver {
        cpu: FakeCpu,
        ram: GuestRam,
        addr: u64,
    }

    impl Driver {
        fn new() -> Driver {
            Driver {
                cpu: FakeCpu { asid: 0x7000, ..FakeCpu::default() },
                ram: GuestRam::new(0, 1 << 20).unwrap(),
                addr: 0x8000,
            }
        }
        /// One access of `bytes` (1..=8) by `pc`.
        fn access(&mut self, set: &mut PluginSet, pc: u64, write: bool, bytes: &[u8]) {
            let mut v = [0u8; 8];
            v[..bytes.len()].copy_from_slice(bytes);
            let a = MemAccess {
                vaddr: self.addr,
                paddr: self.addr,
                size: bytes.len() as u8,
                value: u64::from_le_bytes(v),
                ram: true,
            };
            self.cpu.pc = pc;
            if write {
                set.mem_write(&self.cpu, &self.ram, &a);
            } else {
                set.mem_read(&self.cpu, &self.ram, &a);
            }
            self.addr += bytes.len() as u64;
            self.cpu.icount += 1;
        }
        fn bytewise(&mut self, set: &mut PluginSet, pc: u64, write: bool, s: &[u8]) {
            for b in s {
                self.access(set, pc, write, std::slice::from_ref(b));
            }
        }
        fn finish(&self, set: &mut PluginSet) -> Vec<String> {
            set.finish(ProgramPoint { icount: self.cpu.icount, pc: 0 }, &self.cpu, &self.ram).unwrap()
        }
    }

    fn totals(set: &PluginSet) -> Vec<[u64; 2]> {
        set.get::<StringSearch>().unwrap().totals().to_vec()
    }

    #[test]
    fn parses_quoted_hex_bare_and_comments() {
        let v = parse_strings(b"# comment\n\n\"a\\tb\\x41\\101\\0\\\"q\"\r\nde:AD:be:ef\n  bare text  \nca\ncafe\n")
            .unwrap();
        let bytes: Vec<&[u8]> = v.iter().map(|s| s.bytes.as_slice()).collect();
        assert_eq!(bytes, [&b"a\tbAA\0\"q"[..], &[0xde, 0xad, 0xbe, 0xef], b"bare text", &[0xca], b"cafe"]);
        assert_eq!(v[1].display, "de:ad:be:ef");
        assert_eq!(v[2].display, "\"bare text\"");
        for (bad, want) in [
            ("\"abc", "line 1: missing closing quote"),
            ("x\n\"a\\q\"", "line 2: unknown escape \\q"),
            ("\"\"", "empty search string"),
            ("\"a\" b", "text after the closing quote"),
            ("\"\\777\"", "more than one byte"),
        ] {
            let e = parse_strings(bad.as_bytes()).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn missing_or_empty_strings_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display().to_string();
        let load = |spec: &str| {
            PluginSet::load(&crate::registry(), &parse_plugin_list(spec).unwrap(), &LoadCx::default()).err().unwrap()
        };
        let e = load(&format!("stringsearch:name=none,dir={d}"));
        assert!(e.contains("cannot read search strings from") && e.contains("none_search_strings.txt"), "{e}");
        std::fs::write(dir.path().join("e_search_strings.txt"), "# only a comment\n\n").unwrap();
        let e = load(&format!("stringsearch:name=e,dir={d}"));
        assert!(e.contains("e_search_strings.txt holds no search strings"), "{e}");
        let e = load("stringsearch");
        assert!(e.contains("name=... is required"), "{e}");
    }

    #[test]
    fn bytewise_split_hex_and_no_false_matches() {
        let (dir, mut set) = setup("\"hello\"\nsecret\nde:ad:be:ef\n");
        let mut d = Driver::new();
        // Written one byte at a time by one pc.
        d.bytewise(&mut set, 0x100, true, b"xxhello");
        assert_eq!(totals(&set), [[0, 1], [0, 0], [0, 0]]);
        // Across two accesses (4 + 4 bytes) read by one pc.
        d.access(&mut set, 0x200, false, b"a se");
        d.access(&mut set, 0x200, false, b"cret");
        assert_eq!(totals(&set)[1], [1, 0]);
        // Hex string in one 4-byte value (little-endian bytes de ad be ef).
        d.access(&mut set, 0x300, false, &0xefbe_adde_u32.to_le_bytes());
        assert_eq!(totals(&set)[2], [1, 0]);
        // Different pcs, different directions, interruptions: no match.
        d.bytewise(&mut set, 0x400, true, b"hel");
        d.bytewise(&mut set, 0x401, true, b"lo");
        d.bytewise(&mut set, 0x400, false, b"lo");
        d.bytewise(&mut set, 0x500, true, b"hel");
        d.access(&mut set, 0x500, true, b"\0");
        d.bytewise(&mut set, 0x500, true, b"lo");
        d.bytewise(&mut set, 0x600, true, b"hel");
        d.access(&mut set, 0x600, true, b"e");
        d.bytewise(&mut set, 0x600, true, b"lo");
        // Another address space at the same pc has its own progress.
        d.bytewise(&mut set, 0x700, true, b"hel");
        d.cpu.asid = 0x9000;
        d.bytewise(&mut set, 0x700, true, b"lo");
        d.cpu.asid = 0x7000;
        assert_eq!(totals(&set), [[0, 1], [1, 0], [1, 0]]);
        // A partial match is not lost to another one: "hehello", overlapping prefixes.
        d.bytewise(&mut set, 0x800, true, b"hehello");
        d.access(&mut set, 0x800, true, b"hellohel");
        d.access(&mut set, 0x800, true, b"lo");
        assert_eq!(totals(&set)[0], [0, 4]);
        let s = set.get::<StringSearch>().unwrap();
        let m = s.matches()[0];
        assert_eq!((m.index, m.pc, m.asid, m.write, m.vaddr, m.icount), (0, 0x100, 0x7000, true, 0x8006, 6));
        let out = d.finish(&mut set);
        assert!(out[0].starts_with("stringsearch: 6 matches of 3 strings at 4 program points"), "{}", out[0]);
        assert!(out[0].contains("\n  \"hello\": 0 read, 4 written"), "{}", out[0]);
        let text = std::fs::read_to_string(dir.path().join("t_string_matches.txt")).unwrap();
        let body: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(body, ["100 7000  1 0 0", "200 7000  0 1 0", "300 7000  0 0 1", "800 7000  3 0 0"]);
        assert!(text.contains("# strings: [0] \"hello\" [1] \"secret\" [2] de:ad:be:ef\n"), "{text}");
        let recs = read_plog(dir.path());
        assert_eq!(recs.len(), 6);
        let r = &recs[1];
        assert_eq!((r.kind.as_str(), r.pc, r.asid, r.icount), ("match", 0x200, Some(0x7000), 8));
        assert_eq!(r.get("index").unwrap().as_u64(), Some(1));
        assert_eq!(r.get("string").unwrap().as_str(), Some("\"secret\""));
        assert_eq!(r.get("access").unwrap().as_str(), Some("read"));
        assert_eq!(r.get("vaddr").unwrap().as_u64(), Some(0x800e));
    }

    #[test]
    fn progress_is_kept_only_for_partial_matches() {
        let (_dir, mut set) = setup("abc\n");
        let mut d = Driver::new();
        for pc in 0..1000u64 {
            d.access(&mut set, pc, true, &pc.to_le_bytes()[..4]);
        }
        assert_eq!(set.get::<StringSearch>().unwrap().partial_keys(), 0);
        d.bytewise(&mut set, 5, true, b"ab");
        assert_eq!(set.get::<StringSearch>().unwrap().partial_keys(), 1);
        d.access(&mut set, 5, true, &[0]);
        assert_eq!(set.get::<StringSearch>().unwrap().partial_keys(), 0);
        d.bytewise(&mut set, 5, true, b"abc");
        assert_eq!(set.get::<StringSearch>().unwrap().partial_keys(), 0);
        assert_eq!(totals(&set), [[0, 1]]);
    }

    /// Not a timed assertion: prints the cost of one access through the whole dispatch
    /// (`PluginSet` → plugin) for a mixed workload. `cargo test --release -- --nocapture`.
    #[test]
    fn per_access_cost() {
        let (_dir, mut set) = setup("\"password\"\n\"/etc/passwd\"\nde:ad:be:ef\n\"GET / HTTP/1.1\"\n");
        let ram = GuestRam::new(0, 1 << 20).unwrap();
        let mut cpu = FakeCpu { asid: 0x7000, ..FakeCpu::default() };
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let text = b"the quick brown fox jumps over the lazy dog; password=/etc/passwd GET / HTTP/1.1 ";
        let n = 4_000_000u64;
        let mut accesses = Vec::with_capacity(4096);
        let (mut t1, mut t4) = (0usize, 0usize);
        for i in 0..4096u64 {
            let r = next();
            let mut pc = 0xc010_0000 + (r >> 40) % 2048 * 4;
            let (size, value) = match r % 8 {
                // Zeros, small integers, pointers: the bulk of a kernel's memory traffic.
                0..=2 => (4, 0),
                3 => (4, r % 256),
                4 => (4, 0xc000_0000 | (r & 0xfff_fffc)),
                5 => (1 << (r % 4), r >> 8),
                // Text copied one byte at a time by one pc, and four bytes at a time by another.
                6 => {
                    pc = 0xc020_0000;
                    t1 += 1;
                    (1, u64::from(text[t1 % text.len()]))
                }
                _ => {
                    pc = 0xc020_0010;
                    t4 = (t4 + 4) % (text.len() / 4 * 4);
                    (4, u64::from(u32::from_le_bytes(text[t4..t4 + 4].try_into().unwrap())))
                }
            };
            let a = MemAccess { vaddr: 0x1000 + i * 4, paddr: 0x1000 + i * 4, size, value, ram: true };
            accesses.push((pc, r & 1 == 0 || pc >= 0xc020_0000, a));
        }
        let t = std::time::Instant::now();
        for i in 0..n {
            let (pc, write, a) = &accesses[(i % 4096) as usize];
            cpu.pc = *pc;
            cpu.icount = i;
            if *write {
                set.mem_write(&cpu, &ram, a);
            } else {
                set.mem_read(&cpu, &ram, a);
            }
        }
        let mixed = t.elapsed().as_nanos() as f64 / n as f64;
        // The common case: values with no byte of any string.
        let a = MemAccess { vaddr: 0x1000, paddr: 0x1000, size: 4, value: 0xc012_3400, ram: true };
        let t = std::time::Instant::now();
        for i in 0..n {
            cpu.pc = 0xc010_0000 + (i % 2048) * 4;
            set.mem_write(&cpu, &ram, &a);
        }
        let plain = t.elapsed().as_nanos() as f64 / n as f64;
        // The dispatch alone: a plugin that wants memory writes and does nothing.
        struct Nop;
        impl Plugin for Nop {
            fn name(&self) -> &'static str {
                "nop"
            }
            fn hooks(&self) -> u32 {
                hook::MEM_WRITE
            }
            fn as_any(&self) -> &dyn Any {
                self
            }
        }
        let mut nop = PluginSet::from_plugins(vec![Box::new(Nop)]);
        let t = std::time::Instant::now();
        for i in 0..n {
            cpu.pc = 0xc010_0000 + (i % 2048) * 4;
            nop.mem_write(&cpu, &ram, std::hint::black_box(&a));
        }
        let dispatch = t.elapsed().as_nanos() as f64 / n as f64;
        let s = set.get::<StringSearch>().unwrap();
        eprintln!(
            "stringsearch per-access cost (through PluginSet dispatch, which alone costs {dispatch:.1} ns): \
             {mixed:.1} ns mixed workload ({} matches written to the plog, {} partial keys left), \
             {plain:.1} ns for accesses with no string byte",
            s.totals().iter().map(|t| t[0] + t[1]).sum::<u64>(),
            s.partial_keys()
        );
    }
}
