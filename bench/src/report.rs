//! The result of one run: ordered key/value figures printed as one JSON line
//! on stdout (for scripts/bench.sh) and as a readable summary on stderr.

use hdrhistogram::Histogram;

pub enum Value {
    Int(i64),
    Num(f64),
    Str(String),
    Bool(bool),
    Null,
}

#[derive(Default)]
pub struct Report {
    fields: Vec<(String, Value)>,
}

impl Report {
    pub fn int(&mut self, k: &str, v: impl TryInto<i64>) -> &mut Self {
        let v = v.try_into().unwrap_or(i64::MAX);
        self.fields.push((k.to_string(), Value::Int(v)));
        self
    }

    pub fn num(&mut self, k: &str, v: f64) -> &mut Self {
        let v = if v.is_finite() { Value::Num(v) } else { Value::Null };
        self.fields.push((k.to_string(), v));
        self
    }

    pub fn opt_num(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        match v {
            Some(v) => self.num(k, v),
            None => {
                self.fields.push((k.to_string(), Value::Null));
                self
            }
        }
    }

    pub fn str(&mut self, k: &str, v: impl Into<String>) -> &mut Self {
        self.fields.push((k.to_string(), Value::Str(v.into())));
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.fields.push((k.to_string(), Value::Bool(v)));
        self
    }

    /// p50/p99/p99.9/max (and count) of a nanosecond histogram, in microseconds.
    pub fn latency_us(&mut self, prefix: &str, h: &Histogram<u64>) -> &mut Self {
        if h.is_empty() {
            for s in ["p50", "p99", "p999", "max"] {
                self.fields.push((format!("{prefix}_{s}_us"), Value::Null));
            }
            return self;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        self.num(&format!("{prefix}_p50_us"), us(h.value_at_quantile(0.50)));
        self.num(&format!("{prefix}_p99_us"), us(h.value_at_quantile(0.99)));
        self.num(&format!("{prefix}_p999_us"), us(h.value_at_quantile(0.999)));
        self.num(&format!("{prefix}_max_us"), us(h.max()));
        self
    }

    pub fn get_num(&self, k: &str) -> Option<f64> {
        self.fields.iter().find(|(n, _)| n == k).and_then(|(_, v)| match v {
            Value::Int(n) => Some(*n as f64),
            Value::Num(n) => Some(*n),
            _ => None,
        })
    }

    pub fn json(&self) -> String {
        let mut s = String::from("{");
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('"');
            s.push_str(k);
            s.push_str("\":");
            match v {
                Value::Int(n) => s.push_str(&n.to_string()),
                Value::Num(n) => s.push_str(&fmt_num(*n)),
                Value::Str(t) => {
                    s.push('"');
                    for c in t.chars() {
                        match c {
                            '"' => s.push_str("\\\""),
                            '\\' => s.push_str("\\\\"),
                            c if (c as u32) < 0x20 => s.push_str(&format!("\\u{:04x}", c as u32)),
                            c => s.push(c),
                        }
                    }
                    s.push('"');
                }
                Value::Bool(b) => s.push_str(if *b { "true" } else { "false" }),
                Value::Null => s.push_str("null"),
            }
        }
        s.push('}');
        s
    }

    pub fn human(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            let v = match v {
                Value::Int(n) => n.to_string(),
                Value::Num(n) => fmt_num(*n),
                Value::Str(t) => t.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Null => "-".into(),
            };
            s.push_str(&format!("  {k:<32} {v}\n"));
        }
        s
    }
}

fn fmt_num(n: f64) -> String {
    if n == n.trunc() && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else if n.abs() >= 100.0 {
        format!("{n:.1}")
    } else {
        format!("{n:.4}")
    }
}
