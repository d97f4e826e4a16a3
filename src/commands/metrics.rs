//! `metrics`: the events log summed up per command and engine — count, errors, p50/p99 latency
//! and how often the command fell back from the native engine — as a table, JSON or Prometheus
//! text.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::cli::{Cli, MetricsArgs, MetricsFormat};
use crate::error::{Error, Result};
use crate::eventlog::{self, Event};

#[derive(Serialize, Debug, PartialEq)]
pub struct Row {
    pub command: String,
    pub engine: String,
    pub count: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub sum_us: u64,
    pub fallbacks: u64,
    pub fallback_rate: f64,
}

pub fn run(cli: &Cli, args: &MetricsArgs) -> Result<i32> {
    let rows = summarise(&eventlog::read_all(&cli.root));
    let text = match args.format {
        MetricsFormat::Json => {
            serde_json::to_string_pretty(&rows).map_err(|e| Error::invalid(e.to_string()))?
        }
        MetricsFormat::Table => table(&rows),
        MetricsFormat::Prometheus => prometheus(&rows),
    };
    println!("{}", text.trim_end());
    Ok(0)
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn summarise(events: &[Event]) -> Vec<Row> {
    let mut groups: BTreeMap<(&str, &str), Vec<&Event>> = BTreeMap::new();
    for e in events {
        groups
            .entry((e.command.as_str(), e.engine.as_str()))
            .or_default()
            .push(e);
    }
    groups
        .into_iter()
        .map(|((command, engine), list)| {
            let mut d: Vec<u64> = list.iter().map(|e| e.duration_us).collect();
            d.sort_unstable();
            let count = list.len() as u64;
            let fallbacks = list.iter().filter(|e| e.fallback_reason.is_some()).count() as u64;
            Row {
                command: command.into(),
                engine: engine.into(),
                count,
                errors: list.iter().filter(|e| e.outcome != "ok").count() as u64,
                p50_us: percentile(&d, 0.50),
                p99_us: percentile(&d, 0.99),
                sum_us: d.iter().sum(),
                fallbacks,
                fallback_rate: fallbacks as f64 / count as f64,
            }
        })
        .collect()
}

fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<12} {:<8} {:>7} {:>7} {:>10} {:>10} {:>9}\n",
        "COMMAND", "ENGINE", "COUNT", "ERRORS", "P50(us)", "P99(us)", "FALLBACK"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<12} {:<8} {:>7} {:>7} {:>10} {:>10} {:>8.1}%",
            r.command,
            r.engine,
            r.count,
            r.errors,
            r.p50_us,
            r.p99_us,
            r.fallback_rate * 100.0
        );
    }
    s
}

fn prometheus(rows: &[Row]) -> String {
    let mut s = String::new();
    let labels = |r: &Row| format!("command=\"{}\",engine=\"{}\"", r.command, r.engine);
    let counters = [
        (
            "commands_total",
            "Commands run",
            (|r: &Row| r.count) as fn(&Row) -> u64,
        ),
        ("command_errors_total", "Commands that failed", |r: &Row| {
            r.errors
        }),
        (
            "command_fallbacks_total",
            "Commands that fell back from the native engine",
            |r: &Row| r.fallbacks,
        ),
    ];
    for (name, help, value) in counters {
        let _ = writeln!(s, "# HELP proxmox_lxcri_{name} {help}.");
        let _ = writeln!(s, "# TYPE proxmox_lxcri_{name} counter");
        for r in rows {
            let _ = writeln!(s, "proxmox_lxcri_{name}{{{}}} {}", labels(r), value(r));
        }
    }
    let name = "proxmox_lxcri_command_duration_seconds";
    let _ = writeln!(s, "# HELP {name} Command latency.");
    let _ = writeln!(s, "# TYPE {name} summary");
    for r in rows {
        let l = labels(r);
        let _ = writeln!(
            s,
            "{name}{{{l},quantile=\"0.5\"}} {}",
            r.p50_us as f64 / 1e6
        );
        let _ = writeln!(
            s,
            "{name}{{{l},quantile=\"0.99\"}} {}",
            r.p99_us as f64 / 1e6
        );
        let _ = writeln!(s, "{name}_sum{{{l}}} {}", r.sum_us as f64 / 1e6);
        let _ = writeln!(s, "{name}_count{{{l}}} {}", r.count);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(command: &str, engine: &str, us: u64, ok: bool, fallback: bool) -> Event {
        Event {
            time: String::new(),
            command: command.into(),
            id: None,
            engine: engine.into(),
            duration_us: us,
            outcome: if ok { "ok" } else { "error" }.into(),
            error: None,
            fallback_reason: fallback.then(|| "x".into()),
        }
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let d: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&d, 0.5), 50);
        assert_eq!(percentile(&d, 0.99), 99);
        assert_eq!(percentile(&[7], 0.99), 7);
    }

    #[test]
    fn rows_group_by_command_and_engine() {
        let rows = summarise(&[
            ev("create", "runc", 300, true, true),
            ev("create", "native", 100, true, false),
            ev("create", "native", 200, false, false),
        ]);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].engine.as_str(), rows[0].count, rows[0].errors),
            ("native", 2, 1)
        );
        assert_eq!((rows[1].fallbacks, rows[1].fallback_rate), (1, 1.0));
        assert!(prometheus(&rows)
            .contains("proxmox_lxcri_commands_total{command=\"create\",engine=\"native\"} 2"));
    }
}
