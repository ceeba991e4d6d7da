//! Latency distributions: an HDR histogram of microseconds per series, with
//! an exact sum and count, rendered as a Prometheus summary.
//!
//! Owns: the unit (µs), the range (1 µs to 60 s, two significant digits:
//! about 10 KB a series) and the quantiles exported. Must never: be
//! locked or shared between shards: each shard records into its own and
//! ships a copy with its online report, and a scrape merges them.

use hdrhistogram::Histogram;

/// Microseconds since the first call in this process, plus one (0 means
/// "not stamped"): one clock for every shard (a push stamped on one shard
/// is timed on another).
pub fn now_us() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed().as_micros() as u64 + 1
}

fn unix_now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// A `now_us` stamp as Unix microseconds, for another process (a cluster
/// node on another host adds its clock's offset). 0 stays 0 (not stamped).
pub fn to_unix_us(started_us: u64) -> u64 {
    if started_us == 0 {
        return 0;
    }
    unix_now_us().saturating_sub(now_us().saturating_sub(started_us))
}

/// The `now_us` stamp of Unix microseconds from another process (at least 1;
/// 0 stays 0).
pub fn from_unix_us(unix_us: u64) -> u64 {
    if unix_us == 0 {
        return 0;
    }
    now_us().saturating_sub(unix_now_us().saturating_sub(unix_us)).max(1)
}

/// Quantiles on /metrics.
pub const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];
const HIGHEST_US: u64 = 60_000_000;

#[derive(Clone, Debug)]
pub struct Latency {
    histogram: Histogram<u32>,
    sum_us: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            histogram: Histogram::new_with_bounds(1, HIGHEST_US, 2).expect("static histogram bounds are valid"),
            sum_us: 0,
        }
    }
}

impl Latency {
    /// Records one observation (clamped into the range).
    pub fn record_us(&mut self, us: u64) {
        let us = us.clamp(1, HIGHEST_US);
        // Saturating: a count past u32::MAX in one bucket is pinned, not lost.
        self.histogram.saturating_record(us);
        self.sum_us = self.sum_us.saturating_add(us);
    }

    pub fn add(&mut self, other: &Latency) {
        let _ = self.histogram.add(&other.histogram);
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    pub fn quantile_us(&self, quantile: f64) -> u64 {
        self.histogram.value_at_quantile(quantile)
    }

    /// Appends one summary series in seconds (`labels`: `key="value"` pairs).
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        use std::fmt::Write;
        let sep = if labels.is_empty() { "" } else { "," };
        for q in QUANTILES {
            let seconds = self.quantile_us(q) as f64 / 1e6;
            let _ = writeln!(out, "{name}{{{labels}{sep}quantile=\"{q}\"}} {seconds}");
        }
        let braces = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum_us as f64 / 1e6);
        let _ = writeln!(out, "{name}_count{braces} {}", self.count());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_merge_and_render_in_seconds() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        for us in 1..=900 {
            a.record_us(us);
        }
        for _ in 0..100 {
            b.record_us(10_000);
        }
        a.add(&b);
        assert_eq!(a.count(), 1000);
        assert!((495..=505).contains(&a.quantile_us(0.5)), "{}", a.quantile_us(0.5));
        assert!(a.quantile_us(0.99) >= 9_900);
        let mut text = String::new();
        a.render(&mut text, "x_seconds", "endpoint=\"keys\"");
        assert!(text.contains("x_seconds{endpoint=\"keys\",quantile=\"0.5\"} 0.0005"), "{text}");
        assert!(text.contains("x_seconds_count{endpoint=\"keys\"} 1000"));
    }
}
