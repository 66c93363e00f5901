//! Plain-text tables for the terminal.

use flotilla_protocol::{MemberView, NodeId};

use crate::http::ClusterView;

/// Renders rows under headers with columns padded to their widest cell.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

fn gib(bytes: u64) -> String {
    format!("{:.1} GiB", bytes as f64 / (1u64 << 30) as f64)
}

fn ago(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms}ms ago")
    } else if ms < 120_000 {
        format!("{:.1}s ago", ms as f64 / 1000.0)
    } else {
        format!("{}m ago", ms / 60_000)
    }
}

/// The `flotilla nodes` table.
pub fn members(members: &[MemberView]) -> String {
    members_with_evictions(members, &[])
}

/// The `flotilla nodes` table; members in `evicted` show the state `evicted` (the membership
/// view holds them as left).
pub fn members_with_evictions(members: &[MemberView], evicted: &[NodeId]) -> String {
    let rows: Vec<Vec<String>> = members
        .iter()
        .map(|m| {
            let i = &m.info;
            let id = if m.is_self {
                format!("{} *", i.id)
            } else {
                i.id.to_string()
            };
            let addr = i
                .api_addr
                .clone()
                .or_else(|| i.listen_addrs.first().cloned())
                .unwrap_or_else(|| "-".into());
            vec![
                id,
                addr,
                if evicted.contains(&i.id) {
                    "evicted".into()
                } else {
                    m.state.to_string()
                },
                i.gpus.summary(),
                i.cores.to_string(),
                gib(i.ram_bytes),
                format!("{:.1}", i.compute_score),
                format!("{:.2}", i.load),
                if m.is_self {
                    "self".into()
                } else {
                    ago(m.last_seen_ms_ago)
                },
            ]
        })
        .collect();
    render(
        &[
            "ID",
            "ADDRESS",
            "STATE",
            "GPUS",
            "CORES",
            "RAM",
            "SCORE (GFLOP/s)",
            "LOAD",
            "LAST SEEN",
        ],
        &rows,
    )
}

/// The `flotilla status` summary.
pub fn status(view: &ClusterView) -> String {
    let mut out = format!("node:     {}\n", view.node_id);
    if let Some(me) = view.members.iter().find(|m| m.is_self) {
        out += &format!("version:  {}\n", me.info.version);
        out += &format!("api:      {}\n", me.info.api_addr.as_deref().unwrap_or("-"));
        out += &format!(
            "machine:  {} cores, {}, GPUs: {}\n",
            me.info.cores,
            gib(me.info.ram_bytes),
            me.info.gpus.summary()
        );
        out += &format!(
            "score:    {:.1} GFLOP/s   load: {:.2}\n",
            me.info.compute_score, me.info.load
        );
    }
    let counts: Vec<String> = view
        .counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect();
    out += &format!(
        "cluster:  {} members ({})\n",
        view.members.len(),
        counts.join(", ")
    );
    out
}

/// A node id shortened for tables: its last 8 characters, which differ between nodes (the
/// first ones are the same multihash prefix for every node).
pub fn short_id(id: &str) -> String {
    let n = id.chars().count();
    if n <= 10 {
        id.to_string()
    } else {
        format!("…{}", id.chars().skip(n - 8).collect::<String>())
    }
}

/// Milliseconds since the Unix epoch as an RFC 3339 UTC time with milliseconds.
pub fn utc_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align() {
        let t = render(
            &["A", "LONGER"],
            &[
                vec!["xxxx".into(), "y".into()],
                vec!["z".into(), "w".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "A     LONGER");
        assert_eq!(lines[1], "xxxx  y");
        assert_eq!(lines[2], "z     w");
    }
}
