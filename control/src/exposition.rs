//! The Prometheus text exposition format (version 0.0.4), written from typed values.
//!
//! Every metric is declared once as a family (name, help, type) and gets its samples from typed
//! fields, never by looking a value up by name: a renamed field is a compile error, not a
//! metric that silently reads 0. Label values are escaped as the format requires, so a gateway
//! named with a quote cannot break the page. Names get the `vpnlb_` prefix.

use std::fmt::{self, Write as _};

/// The `Content-Type` of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The prefix of every metric name.
pub const PREFIX: &str = "vpnlb_";

/// A sample's value.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(u64),
    Float(f64),
}

impl From<u64> for Number {
    fn from(v: u64) -> Self {
        Number::Int(v)
    }
}

impl From<u32> for Number {
    fn from(v: u32) -> Self {
        Number::Int(u64::from(v))
    }
}

impl From<usize> for Number {
    fn from(v: usize) -> Self {
        Number::Int(v as u64)
    }
}

impl From<bool> for Number {
    fn from(v: bool) -> Self {
        Number::Int(u64::from(v))
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Self {
        Number::Float(v)
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Number::Int(v) => write!(f, "{v}"),
            Number::Float(v) if v.is_nan() => f.write_str("NaN"),
            Number::Float(v) if v == f64::INFINITY => f.write_str("+Inf"),
            Number::Float(v) if v == f64::NEG_INFINITY => f.write_str("-Inf"),
            Number::Float(v) => write!(f, "{v}"),
        }
    }
}

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Labels of one sample: (name, value) pairs, values escaped when written.
pub type Labels<'a> = &'a [(&'a str, &'a str)];

/// A histogram's state: cumulative counts at each upper bound (ascending), the count of all
/// observations (the `+Inf` bucket) and their sum.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistogramValue {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

/// The page being written.
#[derive(Default)]
pub struct Exposition {
    out: String,
    /// Families declared so far: a name twice is a bug the format does not allow.
    #[cfg(debug_assertions)]
    names: std::collections::HashSet<String>,
}

impl Exposition {
    /// A counter family; `name` must end in `_total`.
    pub fn counter(&mut self, name: &str, help: &str) -> Family<'_> {
        debug_assert!(name.ends_with("_total"), "counter {name} without _total");
        self.family(name, help, Kind::Counter)
    }

    pub fn gauge(&mut self, name: &str, help: &str) -> Family<'_> {
        debug_assert!(
            !name.ends_with("_total"),
            "gauge {name} named like a counter"
        );
        self.family(name, help, Kind::Gauge)
    }

    pub fn histogram(&mut self, name: &str, help: &str) -> Family<'_> {
        self.family(name, help, Kind::Histogram)
    }

    fn family(&mut self, name: &str, help: &str, kind: Kind) -> Family<'_> {
        debug_assert!(valid_name(name), "metric name {name:?}");
        #[cfg(debug_assertions)]
        debug_assert!(self.names.insert(name.to_string()), "metric {name} twice");
        let _ = writeln!(self.out, "# HELP {PREFIX}{name} {}", escape_help(help));
        let _ = writeln!(self.out, "# TYPE {PREFIX}{name} {}", kind.as_str());
        Family {
            out: &mut self.out,
            name: name.to_string(),
            kind,
        }
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// The samples of one family.
pub struct Family<'a> {
    out: &'a mut String,
    name: String,
    kind: Kind,
}

impl Family<'_> {
    /// One sample of a counter or gauge.
    pub fn sample(&mut self, labels: Labels<'_>, value: impl Into<Number>) -> &mut Self {
        debug_assert!(self.kind != Kind::Histogram);
        let name = self.name.clone();
        self.line(&name, labels, None, value.into());
        self
    }

    /// The unlabelled sample.
    pub fn value(&mut self, value: impl Into<Number>) -> &mut Self {
        self.sample(&[], value)
    }

    /// One set of `_bucket`, `_sum` and `_count` series of a histogram.
    pub fn observe(&mut self, labels: Labels<'_>, h: &HistogramValue) -> &mut Self {
        debug_assert!(self.kind == Kind::Histogram);
        let bucket = format!("{}_bucket", self.name);
        for &(le, n) in &h.buckets {
            self.line(&bucket, labels, Some(Number::Float(le)), Number::Int(n));
        }
        self.line(
            &bucket,
            labels,
            Some(Number::Float(f64::INFINITY)),
            Number::Int(h.count),
        );
        let sum = format!("{}_sum", self.name);
        self.line(&sum, labels, None, Number::Float(h.sum));
        let count = format!("{}_count", self.name);
        self.line(&count, labels, None, Number::Int(h.count));
        self
    }

    fn line(&mut self, name: &str, labels: Labels<'_>, le: Option<Number>, value: Number) {
        let out = &mut *self.out;
        out.push_str(PREFIX);
        out.push_str(name);
        if !labels.is_empty() || le.is_some() {
            out.push('{');
            let mut first = true;
            for (k, v) in labels {
                debug_assert!(valid_label(k), "label name {k:?}");
                if !first {
                    out.push(',');
                }
                first = false;
                let _ = write!(out, "{k}=\"");
                escape_label_value(out, v);
                out.push('"');
            }
            if let Some(le) = le {
                if !first {
                    out.push(',');
                }
                let _ = write!(out, "le=\"{le}\"");
            }
            out.push('}');
        }
        let _ = writeln!(out, " {value}");
    }
}

/// `\`, `"` and newlines escaped, as label values need.
fn escape_label_value(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Help text: `\` and newlines escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_label(name: &str) -> bool {
    valid_name(name) && !name.starts_with("__") && name != "le"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut x = Exposition::default();
        x.counter("rx_packets_total", "Frames received.")
            .value(7u64);
        x.gauge("gateway_up", "1 when up.\nSecond line.")
            .sample(&[("service", "vpn"), ("gateway", "gw\"1\\\n")], true)
            .sample(&[("service", "vpn"), ("gateway", "gw2")], false);
        x.gauge("ratio", "A float.")
            .value(0.25)
            .sample(&[("k", "nan")], f64::NAN);
        let page = x.finish();
        assert_eq!(
            page,
            "# HELP vpnlb_rx_packets_total Frames received.\n\
             # TYPE vpnlb_rx_packets_total counter\n\
             vpnlb_rx_packets_total 7\n\
             # HELP vpnlb_gateway_up 1 when up.\\nSecond line.\n\
             # TYPE vpnlb_gateway_up gauge\n\
             vpnlb_gateway_up{service=\"vpn\",gateway=\"gw\\\"1\\\\\\n\"} 1\n\
             vpnlb_gateway_up{service=\"vpn\",gateway=\"gw2\"} 0\n\
             # HELP vpnlb_ratio A float.\n\
             # TYPE vpnlb_ratio gauge\n\
             vpnlb_ratio 0.25\n\
             vpnlb_ratio{k=\"nan\"} NaN\n"
        );
    }

    #[test]
    fn a_histogram_has_cumulative_buckets_inf_sum_and_count() {
        let mut x = Exposition::default();
        x.histogram("burst_latency_seconds", "Per burst.").observe(
            &[("worker", "0")],
            &HistogramValue {
                buckets: vec![(1e-6, 3), (0.5, 5)],
                count: 6,
                sum: 2.5,
            },
        );
        let page = x.finish();
        assert!(page.contains("# TYPE vpnlb_burst_latency_seconds histogram\n"));
        assert!(
            page.contains("vpnlb_burst_latency_seconds_bucket{worker=\"0\",le=\"0.000001\"} 3\n")
        );
        assert!(page.contains("vpnlb_burst_latency_seconds_bucket{worker=\"0\",le=\"0.5\"} 5\n"));
        assert!(page.contains("vpnlb_burst_latency_seconds_bucket{worker=\"0\",le=\"+Inf\"} 6\n"));
        assert!(page.contains("vpnlb_burst_latency_seconds_sum{worker=\"0\"} 2.5\n"));
        assert!(page.contains("vpnlb_burst_latency_seconds_count{worker=\"0\"} 6\n"));
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("gateway_up") && valid_name("_x1"));
        assert!(!valid_name("1x") && !valid_name("a-b") && !valid_name(""));
        assert!(!valid_label("le") && !valid_label("__name"));
    }
}
