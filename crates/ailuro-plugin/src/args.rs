//! Plugin selection and arguments: PANDA's `-panda NAME:key=val,key=val` syntax.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

/// One plugin named on the command line with its arguments, in the order given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PluginSpec {
    /// Plugin name.
    pub name: String,
    /// `key=value` pairs (a bare `key` means `key=true`).
    pub args: Vec<(String, String)>,
}

/// Parse one `-panda` value: `NAME[:k=v[,k=v]...][;NAME2[:...]]...`.
pub fn parse_plugin_list(spec: &str) -> Result<Vec<PluginSpec>, String> {
    let mut out = Vec::new();
    for part in spec.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, rest) = match part.split_once(':') {
            Some((n, r)) => (n.trim(), Some(r)),
            None => (part, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(format!("invalid plugin name '{name}' in '{spec}'"));
        }
        let mut args: Vec<(String, String)> = Vec::new();
        for kv in rest.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = match kv.split_once('=') {
                Some((k, v)) => (k.trim(), v.trim()),
                None => (kv, "true"),
            };
            if k.is_empty() {
                return Err(format!("plugin {name}: empty argument name in '{kv}'"));
            }
            if args.iter().any(|(x, _)| x == k) {
                return Err(format!("plugin {name}: argument '{k}' given twice"));
            }
            args.push((k.to_string(), v.to_string()));
        }
        out.push(PluginSpec { name: name.to_string(), args });
    }
    if out.is_empty() {
        return Err(format!("no plugin named in '{spec}'"));
    }
    Ok(out)
}

/// Description of one argument a plugin accepts (for errors and `info plugins`).
#[derive(Clone, Copy, Debug)]
pub struct ArgInfo {
    /// Key.
    pub key: &'static str,
    /// One-line help, including the default.
    pub help: &'static str,
}

/// The arguments of one plugin, with typed accessors. Every accessor marks its key as known;
/// [`Args::finish`] then rejects any key the plugin did not ask for.
#[derive(Debug)]
pub struct Args {
    plugin: String,
    values: BTreeMap<String, String>,
    asked: RefCell<BTreeSet<String>>,
}

impl Args {
    /// Arguments of `plugin`.
    pub fn new(plugin: &str, pairs: &[(String, String)]) -> Args {
        Args {
            plugin: plugin.to_string(),
            values: pairs.iter().cloned().collect(),
            asked: RefCell::new(BTreeSet::new()),
        }
    }

    fn raw(&self, key: &str) -> Option<&str> {
        self.asked.borrow_mut().insert(key.to_string());
        self.values.get(key).map(String::as_str)
    }

    fn bad(&self, key: &str, v: &str, what: &str) -> String {
        format!("plugin {}: argument {key}={v} is not {what}", self.plugin)
    }

    /// A string argument.
    pub fn str(&self, key: &str) -> Option<String> {
        self.raw(key).map(str::to_string)
    }

    /// A required string argument.
    pub fn required(&self, key: &str) -> Result<String, String> {
        self.str(key).ok_or_else(|| format!("plugin {}: argument {key}=... is required", self.plugin))
    }

    /// An unsigned integer (decimal, `0x` hex, or with a `k`/`M`/`G` suffix for 10^3/10^6/10^9).
    pub fn u64(&self, key: &str) -> Result<Option<u64>, String> {
        let Some(v) = self.raw(key) else { return Ok(None) };
        parse_u64(v).map(Some).ok_or_else(|| self.bad(key, v, "an unsigned integer"))
    }

    /// A floating-point number.
    pub fn f64(&self, key: &str) -> Result<Option<f64>, String> {
        let Some(v) = self.raw(key) else { return Ok(None) };
        v.parse::<f64>().ok().filter(|x| x.is_finite()).map(Some).ok_or_else(|| self.bad(key, v, "a number"))
    }

    /// A boolean (`true/false/on/off/yes/no/1/0`), `default` if absent.
    pub fn bool(&self, key: &str, default: bool) -> Result<bool, String> {
        let Some(v) = self.raw(key) else { return Ok(default) };
        match v.to_ascii_lowercase().as_str() {
            "1" | "true" | "on" | "yes" => Ok(true),
            "0" | "false" | "off" | "no" => Ok(false),
            _ => Err(self.bad(key, v, "a boolean (true/false)")),
        }
    }

    /// A path.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.raw(key).map(PathBuf::from)
    }

    /// Reject keys the plugin never asked for, listing the ones it accepts.
    pub fn finish(&self, accepted: &[ArgInfo]) -> Result<(), String> {
        let asked = self.asked.borrow();
        let unknown: Vec<&String> = self.values.keys().filter(|k| !asked.contains(*k)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        let list: Vec<&str> = accepted.iter().map(|a| a.key).collect();
        Err(format!(
            "plugin {}: unknown argument{} {}; it accepts: {}",
            self.plugin,
            if unknown.len() > 1 { "s" } else { "" },
            unknown.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
            if list.is_empty() { "no arguments".to_string() } else { list.join(", ") }
        ))
    }
}

/// Parse `123`, `0x7b`, `5k`, `2M`, `1G`, `1_000`.
pub fn parse_u64(s: &str) -> Option<u64> {
    let s = s.trim().replace('_', "");
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        return u64::from_str_radix(h, 16).ok();
    }
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1_000),
        'M' => (&s[..s.len() - 1], 1_000_000),
        'G' => (&s[..s.len() - 1], 1_000_000_000),
        _ => (&s[..], 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panda_syntax() {
        let l = parse_plugin_list("count;stringsearch:name=foo, x ;trace:start=5k,end=0x100,disasm").unwrap();
        assert_eq!(l.len(), 3);
        assert_eq!(l[0], PluginSpec { name: "count".into(), args: vec![] });
        assert_eq!(l[1].args, vec![("name".into(), "foo".into()), ("x".into(), "true".into())]);
        assert_eq!(l[2].args[2], ("disasm".into(), "true".into()));
        assert!(parse_plugin_list("").is_err());
        assert!(parse_plugin_list("a b").is_err());
        assert!(parse_plugin_list("a:k=1,k=2").is_err());
        assert!(parse_plugin_list("a:=1").is_err());
    }

    #[test]
    fn typed_args_and_unknown_keys() {
        let a = Args::new("t", &[("n".into(), "2M".into()), ("f".into(), "off".into()), ("bad".into(), "x".into())]);
        assert_eq!(a.u64("n").unwrap(), Some(2_000_000));
        assert!(!a.bool("f", true).unwrap());
        assert_eq!(a.u64("missing").unwrap(), None);
        let err = a.finish(&[ArgInfo { key: "n", help: "" }, ArgInfo { key: "f", help: "" }]).unwrap_err();
        assert!(err.contains("unknown argument bad") && err.contains("accepts: n, f"), "{err}");
        let b = Args::new("t", &[("n".into(), "12x".into())]);
        assert!(b.u64("n").unwrap_err().contains("not an unsigned integer"));
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("1_000"), Some(1000));
        assert_eq!(parse_u64("99999999999G"), None);
    }
}
