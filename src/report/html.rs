//! The report as one self-contained HTML page: the same tables, and the timeline as an
//! inline SVG chart. No script, no style sheet or font from elsewhere (the page's own
//! Content-Security-Policy forbids both), and every value from the log HTML-escaped: the
//! log holds what clients sent.

use std::fmt::Write as _;
use std::io::{self, Write};

use super::{ROWS, Summary, Top, duration, percent, shown, thousands, time};

/// Appends `value` with `&`, `<`, `>`, `"` and `'` as entities.
fn escape(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

/// A table: a caption, column heads, rows of cells (escaped here).
fn table(out: &mut String, caption: &str, approximate: bool, heads: &[&str], rows: &[Vec<String>]) {
    if rows.is_empty() {
        return;
    }
    out.push_str("<table><caption>");
    escape(caption, out);
    if approximate {
        out.push_str(" (approximate counts)");
    }
    out.push_str("</caption><tr>");
    for head in heads {
        out.push_str("<th>");
        escape(head, out);
        out.push_str("</th>");
    }
    out.push_str("</tr>\n");
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            out.push_str("<td>");
            escape(cell, out);
            out.push_str("</td>");
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
}

fn plain(top: &Top) -> Vec<Vec<String>> {
    top.top(ROWS)
        .into_iter()
        .map(|(k, n, _)| vec![shown(k), n])
        .collect()
}

/// Writes the page for `s` to `out`.
pub(super) fn page(s: &Summary, out: &mut dyn Write) -> io::Result<()> {
    let mut h = String::new();
    h.push_str(concat!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n",
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\n",
        "<title>jwtguard report</title>\n<style>",
        "body{font-family:sans-serif;margin:2em;color:#222}",
        "table{border-collapse:collapse;margin:1em 0}caption{text-align:left;font-weight:bold}",
        "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}",
        "td:nth-child(2){text-align:right}.a{fill:#3a7}.r{fill:#c33}",
        "</style></head><body>\n<h1>jwtguard report</h1>\n"
    ));
    let total = s.allowed + s.refused;
    let span = match (s.first, s.last) {
        (Some(first), Some(last)) => format!(
            "From {} to {} ({}).",
            time(first / 1000),
            time(last / 1000),
            duration((last - first) / 1000)
        ),
        _ => "No events.".into(),
    };
    h.push_str("<p>");
    escape(&span, &mut h);
    let _ = writeln!(
        h,
        " {} files, {} lines ({} not jwtguard&#39;s, {} outside --since/--until).</p>",
        s.files,
        thousands(s.lines),
        thousands(s.unreadable),
        thousands(s.outside)
    );
    table(
        &mut h,
        "Requests",
        false,
        &["", "count", "share"],
        &[
            vec!["requests".into(), thousands(total), percent(total, total)],
            vec![
                "allowed".into(),
                thousands(s.allowed),
                percent(s.allowed, total),
            ],
            vec![
                "refused".into(),
                thousands(s.refused),
                percent(s.refused, total),
            ],
        ],
    );
    chart(s, &mut h);
    let reasons: Vec<Vec<String>> = s
        .refusals_by_reason()
        .into_iter()
        .map(|(r, n)| vec![shown(r), thousands(n)])
        .collect();
    table(
        &mut h,
        "Refusals by reason",
        false,
        &["reason", "refusals"],
        &reasons,
    );
    let clients: Vec<Vec<String>> = s
        .clients
        .top(ROWS)
        .into_iter()
        .map(|(a, n, r)| vec![shown(a), n, s.reasons_of(r)])
        .collect();
    table(
        &mut h,
        "Top refused clients",
        s.clients.approximate(),
        &["address", "refusals", "reasons"],
        &clients,
    );
    table(
        &mut h,
        "Top users",
        s.users.approximate(),
        &["user", "allowed"],
        &plain(&s.users),
    );
    table(
        &mut h,
        "Rate-limited clients",
        s.limited.approximate(),
        &["address", "windows"],
        &plain(&s.limited),
    );
    table(
        &mut h,
        "Upstream errors",
        false,
        &["reason", "count"],
        &plain(&s.upstream),
    );
    table(
        &mut h,
        "Process events",
        false,
        &["event", "count"],
        &plain(&s.process),
    );
    table(
        &mut h,
        "Seal events",
        false,
        &["reason", "count"],
        &plain(&s.seal),
    );
    h.push_str("</body></html>\n");
    out.write_all(h.as_bytes())
}

/// The timeline as stacked bars: allowed (green) under refused (red), one per row, each
/// with a `<title>` giving its figures.
fn chart(s: &Summary, h: &mut String) {
    let (rows, width) = s.timeline.rows();
    if rows.is_empty() {
        return;
    }
    const HEIGHT: u64 = 200;
    let bar = (800 / rows.len()).clamp(1, 40);
    let max = rows.iter().map(|r| r.1 + r.2).max().unwrap_or(0).max(1);
    let _ = write!(
        h,
        "<h2>Timeline per {}</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{}\" role=\"img\" aria-label=\"allowed and refused requests over time\">\n",
        duration(width),
        bar * rows.len(),
        HEIGHT + 20
    );
    for (i, &(start, a, r)) in rows.iter().enumerate() {
        let ha = a * HEIGHT / max;
        let hr = r * HEIGHT / max;
        let x = i * bar;
        let _ = writeln!(
            h,
            "<g><title>{}: {} allowed, {} refused</title><rect class=\"a\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{ha}\"/><rect class=\"r\" x=\"{x}\" y=\"{}\" width=\"{}\" height=\"{hr}\"/></g>",
            time(start),
            a,
            r,
            HEIGHT - ha,
            bar.saturating_sub(1).max(1),
            HEIGHT - ha - hr,
            bar.saturating_sub(1).max(1),
        );
    }
    let _ = write!(
        h,
        "<text x=\"0\" y=\"{}\" font-size=\"12\">{}</text></svg>\n<p>Green: allowed; red: refused. Tallest bar: {} requests.</p>\n",
        HEIGHT + 16,
        time(rows[0].0),
        thousands(max)
    );
}
