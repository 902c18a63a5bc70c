//! How `vpnlbctl` prints a reply's data for a person: a table for a list of objects, `key  value`
//! lines for an object, the value itself otherwise.
//!
//! Wide lists (`show gateways` has over twenty columns) print by default only the columns an
//! operator reads first ([`default_columns`]), chosen by key name so that the daemon may add
//! or reorder fields; `-o wide` prints them all, in the daemon's order. A chosen key that a row
//! lacks prints `-`.

use serde_json::{Map, Value};

use crate::ctlsock::Request;

/// How much of a list to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// The view's main columns when its rows have more than [`MAX_COLUMNS`].
    Compact,
    /// Every column.
    Wide,
}

/// Lists with at most this many columns are printed whole: they fit a terminal.
pub const MAX_COLUMNS: usize = 9;

/// The columns `request`'s list prints by default, or `None`: all of them.
///
/// `rows` decides what depends on the daemon's mode: a redirecting service's gateways carry a
/// `load` (what redirects choose by), which is then shown.
pub fn default_columns(request: &Request, rows: &[Value]) -> Option<Vec<&'static str>> {
    let columns: &[&str] = match request {
        Request::ShowGateways => &[
            "service",
            "gateway",
            "state",
            "admin_state",
            "health",
            "weight",
            "clients",
            "new_clients_per_s",
        ],
        Request::ShowPorts => &[
            "name",
            "link_up",
            "speed_mbps",
            "rx_packets",
            "tx_packets",
            "rx_missed",
            "rx_nombuf",
            "rx_errors",
            "tx_errors",
        ],
        Request::ShowWorkers => &[
            "worker",
            "core",
            "utilisation",
            "rx_packets",
            "tx_packets",
            "drops",
            "clients",
            "stalled",
            "loop_max_us",
        ],
        Request::ShowHealth => &[
            "service",
            "gateway",
            "check",
            "target",
            "state",
            "for_s",
            "last",
            "rtt_ms",
            "transitions",
        ],
        _ => return None,
    };
    let mut columns = columns.to_vec();
    if *request == Request::ShowGateways && rows.iter().any(|r| r.get("load").is_some()) {
        columns.push("load");
    }
    Some(columns)
}

/// The human form of `request`'s reply data.
pub fn render(request: &Request, data: &Value, layout: Layout) -> String {
    match data {
        Value::Null => String::new(),
        Value::Array(rows) if rows.is_empty() => "(none)\n".into(),
        Value::Array(rows) if rows.iter().all(Value::is_object) => {
            let all = all_columns(rows);
            let columns = match (layout, default_columns(request, rows)) {
                (Layout::Compact, Some(main)) if all.len() > MAX_COLUMNS => {
                    main.into_iter().map(str::to_string).collect()
                }
                _ => all,
            };
            table(&columns, rows)
        }
        Value::Array(items) => items.iter().map(|v| format!("{}\n", cell(v))).collect(),
        Value::Object(map) => {
            let mut lines = Vec::new();
            flatten("", map, &mut lines);
            let width = lines.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            lines
                .iter()
                .map(|(k, v)| trim_line(&format!("{k:width$}  {v}")))
                .collect()
        }
        scalar => format!("{}\n", cell(scalar)),
    }
}

/// Every key of the rows: the first row's in order, then keys that only later rows have.
fn all_columns(rows: &[Value]) -> Vec<String> {
    let mut columns: Vec<String> = Vec::new();
    for row in rows {
        if let Value::Object(map) = row {
            for key in map.keys() {
                if !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    columns
}

/// The line without trailing padding, `\n` added.
fn trim_line(line: &str) -> String {
    format!("{}\n", line.trim_end())
}

/// A column-aligned table of `columns`; a column whose values are all numbers (or missing) is
/// right-aligned.
fn table(columns: &[String], rows: &[Value]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row.get(c.as_str()).map_or_else(|| "-".into(), cell))
                .collect()
        })
        .collect();
    let numeric: Vec<bool> = columns
        .iter()
        .map(|c| {
            rows.iter().all(|r| {
                r.get(c.as_str())
                    .is_none_or(|v| v.is_number() || v.is_null())
            })
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .chain(std::iter::once(c.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |values: Vec<&str>| {
        let mut out = String::new();
        for (i, v) in values.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let pad = widths[i].saturating_sub(v.chars().count());
            if numeric[i] {
                out.push_str(&" ".repeat(pad));
                out.push_str(v);
            } else {
                out.push_str(v);
                out.push_str(&" ".repeat(pad));
            }
        }
        trim_line(&out)
    };
    let mut out = line(columns.iter().map(String::as_str).collect());
    for row in &cells {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// One value in a cell: strings bare, null as `-`, nested values as compact JSON.
fn cell(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `key  value` lines: nested objects flattened with dots, arrays of objects with indices
/// (`workers.0.rx_packets`), other arrays compactly.
fn flatten(prefix: &str, map: &Map<String, Value>, out: &mut Vec<(String, String)>) {
    for (k, v) in map {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        match v {
            Value::Object(inner) if !inner.is_empty() => flatten(&key, inner, out),
            Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_object) => {
                for (i, item) in items.iter().enumerate() {
                    if let Value::Object(inner) = item {
                        flatten(&format!("{key}.{i}"), inner, out);
                    }
                }
            }
            other => out.push((key, cell(other))),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A `show gateways` row as the daemon sends it (NAT mode: no load).
    fn gateway_row(name: &str, clients: u64) -> Value {
        json!({
            "service": "vpn", "gateway": name, "ipv4": "198.19.0.11", "ipv6": null,
            "state": "up", "admin_state": "up", "health": "up", "weight": 1,
            "clients": clients, "new_clients": 7, "admin_state_source": "config",
            "weight_source": "config", "new_clients_per_s": 0.5,
            "to_gateway_packets": 10, "from_gateway_packets": 11, "to_gateway_bytes": 1000,
            "from_gateway_bytes": 1100, "health_transitions": 0, "redirects": 0,
            "routed_to_gateway_packets": 0, "routed_from_gateway_packets": 0,
            "routed_to_gateway_bytes": 0, "routed_from_gateway_bytes": 0,
        })
    }

    fn header(text: &str) -> Vec<&str> {
        text.lines().next().unwrap().split_whitespace().collect()
    }

    #[test]
    fn gateways_print_the_main_columns_by_default_and_all_when_wide() {
        let rows = json!([gateway_row("gw1", 3), gateway_row("gw2", 12)]);
        let out = render(&Request::ShowGateways, &rows, Layout::Compact);
        assert_eq!(
            header(&out),
            [
                "service",
                "gateway",
                "state",
                "admin_state",
                "health",
                "weight",
                "clients",
                "new_clients_per_s"
            ]
        );
        assert_eq!(
            out.lines()
                .nth(2)
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>(),
            ["vpn", "gw2", "up", "up", "up", "1", "12", "0.5"]
        );
        let wide = render(&Request::ShowGateways, &rows, Layout::Wide);
        let all = header(&wide);
        assert_eq!(all.len(), 23);
        assert_eq!(all[..4], ["service", "gateway", "ipv4", "ipv6"]);
        assert_eq!(all[22], "routed_from_gateway_bytes");
        // null prints `-`.
        assert_eq!(
            wide.lines().nth(1).unwrap().split_whitespace().nth(3),
            Some("-")
        );
    }

    #[test]
    fn gateways_in_redirect_mode_show_their_load() {
        let mut row = gateway_row("gw1", 3);
        row["load"] = json!(0.25);
        row["reported_tunnels"] = json!(40);
        let out = render(&Request::ShowGateways, &json!([row]), Layout::Compact);
        assert_eq!(header(&out).last(), Some(&"load"));
        assert!(!out.contains("reported_tunnels"), "{out}");
        assert_eq!(
            out.lines().nth(1).unwrap().split_whitespace().last(),
            Some("0.25")
        );
    }

    #[test]
    fn a_missing_key_prints_a_dash() {
        let mut row = gateway_row("gw1", 3);
        row.as_object_mut().unwrap().remove("health");
        let out = render(&Request::ShowGateways, &json!([row]), Layout::Compact);
        let cells: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
        assert_eq!(cells[4], "-", "{out}");
    }

    #[test]
    fn narrow_lists_print_whole() {
        // Fewer than MAX_COLUMNS: every column even in the compact layout.
        let rows = json!([
            {"worker": 0, "core": 2, "rx_packets": 100, "state": "running", "queues": [0, 1]},
        ]);
        let out = render(&Request::ShowWorkers, &rows, Layout::Compact);
        assert_eq!(
            header(&out),
            ["worker", "core", "rx_packets", "state", "queues"]
        );
        let rows =
            json!([{"address": "198.19.0.11", "mac": null, "state": "static", "interface": null}]);
        let out = render(&Request::ShowNeighbors, &rows, Layout::Compact);
        // A column of nulls only counts as numeric (right-aligned), as numbers with gaps do.
        assert_eq!(
            out,
            "address      mac  state   interface\n198.19.0.11    -  static          -\n"
        );
    }

    #[test]
    fn workers_ports_and_health_are_compact() {
        let worker = json!({
            "worker": 0, "core": 2, "utilisation": 0.5, "bursts": 9, "rx_packets": 100,
            "tx_packets": 99, "drops": 1, "to_control": 0, "clients": 4, "handoff_out": 0,
            "handoff_in": 0, "handoff_dropped": 0, "tx_dropped": 0, "stalled": false,
            "stalls": 0, "loop_max_us": 12, "loop_max_us_ever": 30,
        });
        let out = render(&Request::ShowWorkers, &json!([worker]), Layout::Compact);
        assert_eq!(header(&out).len(), 9, "{out}");
        assert!(!out.contains("handoff"), "{out}");
        let port = json!({
            "name": "client0", "device": "0000:01:00.0", "link_up": true, "speed_mbps": 10000,
            "rx_packets": 1, "tx_packets": 2, "rx_missed": 3, "rx_errors": 4, "tx_errors": 5,
            "rx_nombuf": 6, "steering": "hardware",
        });
        let out = render(&Request::ShowPorts, &json!([port]), Layout::Compact);
        assert_eq!(header(&out)[..3], ["name", "link_up", "speed_mbps"]);
        assert!(!out.contains("steering"), "{out}");
        assert!(render(&Request::ShowPorts, &json!([port]), Layout::Wide).contains("steering"));
        let check = json!({
            "service": "vpn", "gateway": "gw1", "check": "ike:500", "target": "198.19.0.11:500",
            "state": "up", "for_s": 42, "last": "INVALID_KE_PAYLOAD", "rtt_ms": 0.31,
            "probes": 9, "alive": 9, "timeouts": 0, "refused": 0, "unreachable": 0,
            "bad_responses": 0, "socket_errors": 0, "transitions": 1,
        });
        let out = render(&Request::ShowHealth, &json!([check]), Layout::Compact);
        assert_eq!(header(&out).len(), 9, "{out}");
        assert!(!out.contains("socket_errors"), "{out}");
    }

    #[test]
    fn views_without_main_columns_print_whole() {
        let row: Map<String, Value> = (0..12).map(|i| (format!("k{i}"), json!(i))).collect();
        let out = render(&Request::ShowDrops, &json!([row]), Layout::Compact);
        assert_eq!(header(&out).len(), 12);
    }

    #[test]
    fn numbers_align_right_strings_left() {
        let rows = json!([
            {"name": "a", "n": 5},
            {"name": "bbbb", "n": 12345},
        ]);
        let out = render(&Request::ShowClasses, &rows, Layout::Compact);
        assert_eq!(out, "name      n\na         5\nbbbb  12345\n");
    }

    #[test]
    fn rows_with_extra_keys_add_columns() {
        let rows = json!([{"a": 1}, {"a": 2, "b": "x"}]);
        let out = render(&Request::ShowAffinity { client: None }, &rows, Layout::Wide);
        assert_eq!(out, "a  b\n1  -\n2  x\n");
    }

    #[test]
    fn objects_are_key_value_lines() {
        let data = json!({
            "uptime_s": 12,
            "ports": {"client0": {"rx": 5, "tx": 6}},
            "routers": [{"interface": "eth0"}],
            "empty": {},
            "list": [1, 2],
        });
        assert_eq!(
            render(&Request::ShowStats, &data, Layout::Compact),
            "uptime_s             12\nports.client0.rx     5\nports.client0.tx     6\n\
             routers.0.interface  eth0\nempty                {}\nlist                 [1,2]\n"
        );
    }

    #[test]
    fn scalars_and_empty_lists() {
        assert_eq!(
            render(&Request::Ping, &json!("pong"), Layout::Compact),
            "pong\n"
        );
        assert_eq!(
            render(&Request::ShowDrops, &json!([]), Layout::Compact),
            "(none)\n"
        );
        assert_eq!(render(&Request::Reload, &Value::Null, Layout::Compact), "");
    }
}
