//! `--name value` / `--flag` parsing with defaults; unknown names are errors.

use std::collections::BTreeMap;
use std::net::{SocketAddr, SocketAddrV4};
use std::str::FromStr;

/// Flags that take no value.
const SWITCHES: &[&str] =
    &["busy-poll", "websocket", "deflate", "body-json", "json", "batch", "child", "quiet", "help"];

pub struct Args {
    values: BTreeMap<String, String>,
    used: std::cell::RefCell<Vec<String>>,
}

impl Args {
    pub fn parse(raw: &[String]) -> Result<Args, String> {
        let mut values = BTreeMap::new();
        let mut i = 0;
        while i < raw.len() {
            let a = &raw[i];
            let name = a.strip_prefix("--").ok_or_else(|| format!("unexpected argument {a:?}"))?;
            if let Some((n, v)) = name.split_once('=') {
                values.insert(n.to_string(), v.to_string());
            } else if SWITCHES.contains(&name) {
                values.insert(name.to_string(), "true".to_string());
            } else {
                let v = raw.get(i + 1).ok_or_else(|| format!("--{name} needs a value"))?;
                values.insert(name.to_string(), v.clone());
                i += 1;
            }
            i += 1;
        }
        Ok(Args { values, used: Default::default() })
    }

    pub fn get<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        self.used.borrow_mut().push(name.to_string());
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| format!("--{name}: cannot parse {v:?}")),
        }
    }

    pub fn opt<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        self.used.borrow_mut().push(name.to_string());
        match self.values.get(name) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| format!("--{name}: cannot parse {v:?}")),
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        self.used.borrow_mut().push(name.to_string());
        self.values.contains_key(name)
    }

    pub fn addr(&self, name: &str, default: &str) -> Result<SocketAddrV4, String> {
        let text: String = self.get(name, default.to_string())?;
        match SocketAddr::from_str(&text) {
            Ok(SocketAddr::V4(a)) => Ok(a),
            _ => Err(format!("--{name}: want an IPv4 address:port, got {text:?}")),
        }
    }

    /// Errors on any flag no getter asked for (typos).
    pub fn finish(&self) -> Result<(), String> {
        let used = self.used.borrow();
        for k in self.values.keys() {
            if !used.iter().any(|u| u == k) {
                return Err(format!("unknown flag --{k} for this subcommand"));
            }
        }
        Ok(())
    }
}
