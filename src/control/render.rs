//! What `--who` and `--stats` print: an aligned table, `name value` lines, or the OpenMetrics or Prometheus text format.

use std::fmt::Write;

use super::protocol::WhoRow;
use super::protocol::{SESSIONS, UPTIME};
use crate::counters;

/// `--who`: a header, then one line per session sorted by user (then
/// client address); sessions not logged in (`-`) last.
pub fn who_table(rows: &mut [WhoRow]) -> String {
    rows.sort_by(|a, b| {
        let key = |r: &WhoRow| {
            (
                r.user.is_empty() || r.user == "-",
                r.user.clone(),
                r.client.clone(),
            )
        };
        key(a).cmp(&key(b))
    });
    let header = [
        "USER",
        "CLIENT",
        "PORT",
        "TLS",
        "STATE",
        "SINCE (UTC)",
        "SENT",
        "COMMANDS",
    ];
    let mut table: Vec<[String; 8]> = vec![header.map(str::to_owned)];
    table.extend(rows.iter().map(|r| {
        [
            if r.user.is_empty() {
                "-".into()
            } else {
                r.user.clone()
            },
            r.client.clone(),
            r.local_port.to_string(),
            r.tls.clone(),
            r.state.clone(),
            r.since.map_or_else(|| "-".into(), utc),
            r.bytes_sent.to_string(),
            r.commands.to_string(),
        ]
    }));
    aligned(&table)
}

/// Columns padded to their widest cell, two spaces apart, no trailing blanks.
pub fn aligned<const N: usize>(table: &[[String; N]]) -> String {
    let mut widths = [0usize; N];
    for row in table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in table {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// `2026-12-06 19:41:36` for seconds since the epoch, in UTC.
pub fn utc(secs: u64) -> String {
    let days = secs / 86_400;
    let rest = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (H. Hinnant's
/// algorithm, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// `--stats`: `name value`, aligned.
fn stats_text(stats: &[(String, u64)]) -> String {
    let table: Vec<[String; 2]> = stats
        .iter()
        .map(|(name, value)| [name.clone(), value.to_string()])
        .collect();
    aligned(&table)
}

/// How `--stats` prints the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsFormat {
    /// `name value`, aligned.
    Table,
    /// `--openmetrics`: the OpenMetrics text format (`# EOF` at the end).
    OpenMetrics,
    /// `--prometheus`: the Prometheus text format 0.0.4, the one
    /// node_exporter's textfile collector parses.
    Prometheus,
}

/// `--stats` in `format`.
pub fn stats(stats: &[(String, u64)], format: StatsFormat) -> String {
    match format {
        StatsFormat::Table => stats_text(stats),
        StatsFormat::OpenMetrics | StatsFormat::Prometheus => exposition(stats, format),
    }
}

/// The metrics text: gauges for uptime and sessions, one counter family
/// per event (labelled by reason or method). Counters a newer daemon
/// reports that this binary does not know are exported unlabelled under
/// their own name.
///
/// The two formats differ in a counter's `# TYPE` and `# HELP` name:
/// OpenMetrics names the family without the `_total` of its samples; the
/// Prometheus format names it as its samples are named, and node_exporter
/// (its parser) reads `ironpop_x_total` samples after an OpenMetrics
/// `# TYPE ironpop_x counter` as another, untyped metric. Only OpenMetrics
/// ends with `# EOF`.
fn exposition(stats: &[(String, u64)], format: StatsFormat) -> String {
    let value = |name: &str| stats.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let mut out = String::new();
    let header = |out: &mut String, family: &str, kind: &str, help: Option<&str>| {
        let name = match (format, kind) {
            (StatsFormat::Prometheus, "counter") => format!("ironpop_{family}_total"),
            _ => format!("ironpop_{family}"),
        };
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if let Some(help) = help {
            let _ = writeln!(out, "# HELP {name} {help}");
        }
    };
    for (name, help, v) in [
        (
            "uptime_seconds",
            "Seconds since the daemon started.",
            value(UPTIME),
        ),
        ("sessions", "Sessions open now.", value(SESSIONS)),
    ] {
        if let Some(v) = v {
            header(&mut out, name, "gauge", Some(help));
            let _ = writeln!(out, "ironpop_{name} {v}");
        }
    }
    let mut family_done: Option<&str> = None;
    for &c in counters::ALL.iter() {
        let Some(v) = value(&c.name()) else {
            continue;
        };
        let (family, label) = c.family();
        if family_done != Some(family) {
            header(&mut out, family, "counter", Some(c.help()));
            family_done = Some(family);
        }
        match label {
            Some((key, val)) => {
                let _ = writeln!(out, "ironpop_{family}_total{{{key}=\"{val}\"}} {v}");
            }
            None => {
                let _ = writeln!(out, "ironpop_{family}_total {v}");
            }
        }
    }
    let known = |name: &str| {
        name == UPTIME || name == SESSIONS || counters::ALL.iter().any(|c| c.name() == name)
    };
    for (name, v) in stats.iter().filter(|(n, _)| !known(n)) {
        header(&mut out, name, "counter", None);
        let _ = writeln!(out, "ironpop_{name}_total {v}");
    }
    if format == StatsFormat::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: &str, client: &str) -> WhoRow {
        WhoRow {
            user: user.into(),
            client: client.into(),
            local_port: 110,
            tls: "none".into(),
            state: "TRANSACTION".into(),
            since: Some(1_796_577_696),
            bytes_sent: 10,
            commands: 2,
        }
    }

    #[test]
    fn who_is_sorted_by_user_with_a_header() {
        let mut rows = vec![
            row("bob", "192.0.2.2"),
            row("-", "192.0.2.9"),
            row("alice", "192.0.2.1"),
        ];
        rows[1].since = None;
        rows[1].state = "AUTHORIZATION".into();
        assert_eq!(
            who_table(&mut rows),
            "USER   CLIENT     PORT  TLS   STATE          SINCE (UTC)          SENT  COMMANDS\n\
             alice  192.0.2.1  110   none  TRANSACTION    2026-12-06 17:21:36  10    2\n\
             bob    192.0.2.2  110   none  TRANSACTION    2026-12-06 17:21:36  10    2\n\
             -      192.0.2.9  110   none  AUTHORIZATION  -                    10    2\n"
        );
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
        assert_eq!(utc(4_102_444_799), "2099-12-31 23:59:59");
    }

    fn sample() -> Vec<(String, u64)> {
        vec![
            (UPTIME.into(), 5),
            (SESSIONS.into(), 1),
            ("connections_refused_limit".into(), 2),
            ("connections_refused_per_address".into(), 3),
            ("logins_failed_user".into(), 1),
            ("from_the_future".into(), 7),
        ]
    }

    /// The gauges of [`sample`], the same in both formats.
    const GAUGES: &str = "# TYPE ironpop_uptime_seconds gauge\n\
             # HELP ironpop_uptime_seconds Seconds since the daemon started.\n\
             ironpop_uptime_seconds 5\n\
             # TYPE ironpop_sessions gauge\n\
             # HELP ironpop_sessions Sessions open now.\n\
             ironpop_sessions 1\n";

    #[test]
    fn openmetrics_families_labels_and_eof() {
        assert_eq!(
            stats(&sample(), StatsFormat::OpenMetrics),
            GAUGES.to_owned()
                + "# TYPE ironpop_connections_refused counter\n\
             # HELP ironpop_connections_refused Connections refused, by reason.\n\
             ironpop_connections_refused_total{reason=\"limit\"} 2\n\
             ironpop_connections_refused_total{reason=\"per_address\"} 3\n\
             # TYPE ironpop_logins_failed counter\n\
             # HELP ironpop_logins_failed Logins refused for wrong credentials, by method.\n\
             ironpop_logins_failed_total{method=\"USER\"} 1\n\
             # TYPE ironpop_from_the_future counter\n\
             ironpop_from_the_future_total 7\n\
             # EOF\n"
        );
    }

    #[test]
    fn prometheus_names_counters_as_their_samples_without_eof() {
        assert_eq!(
            stats(&sample(), StatsFormat::Prometheus),
            GAUGES.to_owned()
                + "# TYPE ironpop_connections_refused_total counter\n\
             # HELP ironpop_connections_refused_total Connections refused, by reason.\n\
             ironpop_connections_refused_total{reason=\"limit\"} 2\n\
             ironpop_connections_refused_total{reason=\"per_address\"} 3\n\
             # TYPE ironpop_logins_failed_total counter\n\
             # HELP ironpop_logins_failed_total Logins refused for wrong credentials, by method.\n\
             ironpop_logins_failed_total{method=\"USER\"} 1\n\
             # TYPE ironpop_from_the_future_total counter\n\
             ironpop_from_the_future_total 7\n"
        );
    }

    #[test]
    fn stats_are_aligned() {
        let stats = vec![("a".to_owned(), 1), ("long_name".to_owned(), 22)];
        assert_eq!(stats_text(&stats), "a          1\nlong_name  22\n");
    }
}
