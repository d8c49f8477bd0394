//! `--html FILE`: one self-contained page of a run, with inline SVG charts drawn here (no
//! network, no script): throughput over time per phase, latency percentiles per operation,
//! cache hit rate over time, group commit over time, and the raw engine beside strata when
//! both ran. The report itself is embedded as JSON (`<script type="application/json"
//! id="load-data">`), so the charts' numbers can be read back by tools and tests.

use std::fmt::Write as _;
use std::path::Path;

use super::report::{group, LoadReport};
use super::samples::Sample;
use strata::{Error, Result};

const WIDTH: f64 = 1280.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 34.0;
const STRATA_COLOR: &str = "#2563eb";
const RAW_COLOR: &str = "#ea580c";
const PHASE_FILLS: [&str; 2] = ["#f1f5f9", "#e2e8f0"];

/// Writes the page of `report` (with its raw run, if any) to `path`.
pub fn write(path: &Path, report: &LoadReport) -> Result<()> {
    std::fs::write(path, page(report)?).map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })
}

/// The page as a string.
pub fn page(report: &LoadReport) -> Result<String> {
    let data = serde_json::to_string(report).map_err(Error::closure)?;
    let runs: Vec<&LoadReport> = std::iter::once(report)
        .chain(report.raw.as_deref())
        .collect();
    let mut body = String::new();
    let engines = runs
        .iter()
        .map(|r| r.engine)
        .collect::<Vec<_>>()
        .join(" and ");
    let _ = write!(
        body,
        "<h1>strata load: {}</h1><p class=\"meta\">{} threads at most, read ratio {:.2}, zipf {:.2}, \
         {} users and {} expenses; {}{}</p>",
        escape(&engines),
        report.config.threads,
        report.config.read_ratio,
        report.config.zipf,
        group(report.dataset.users.max(0) as u64),
        group(report.dataset.expenses.max(0) as u64),
        runs.iter()
            .map(|r| format!(
                "{}: {} calls in {:.1} s, {} ops/s, {} errors",
                r.engine,
                group(r.total_ops),
                r.elapsed_ms as f64 / 1000.0,
                group(r.throughput.round() as u64),
                group(r.errors)
            ))
            .collect::<Vec<_>>()
            .join("; "),
        load_average()
            .map(|l| format!("; machine load average {l} when the page was written"))
            .unwrap_or_default(),
    );
    body.push_str(&legend(&runs));
    if let (Some(versus), Some(raw)) = (&report.versus, &report.raw) {
        body.push_str("<h2>strata vs raw</h2>");
        body.push_str(&versus_table(report, raw, versus));
    }

    body.push_str("<h2>Throughput over time</h2>");
    let series = runs
        .iter()
        .map(|r| Series {
            name: r.engine,
            color: color(r.engine),
            points: points(&r.samples, |s| Some(s.throughput)),
        })
        .collect::<Vec<_>>();
    body.push_str(&line_chart(
        "throughput",
        "calls per second",
        &series,
        &phase_bands(report),
        &|y| group(y.round() as u64),
    ));

    body.push_str("<h2>Latency per operation (p50, p95, p99; log scale)</h2>");
    body.push_str(&latency_chart(&runs));

    body.push_str("<h2>Cache hit rate over time</h2>");
    let hits = runs
        .iter()
        .filter(|r| r.samples.iter().any(|s| s.hit_rate.is_some()))
        .map(|r| Series {
            name: r.engine,
            color: color(r.engine),
            points: points(&r.samples, |s| s.hit_rate.map(|h| h * 100.0)),
        })
        .collect::<Vec<_>>();
    if hits.is_empty() {
        body.push_str("<p>No cache lookups (the raw engine has no caches).</p>");
    } else {
        body.push_str(&line_chart(
            "hit_rate",
            "% of lookups that hit",
            &hits,
            &phase_bands(report),
            &|y| format!("{y:.0}%"),
        ));
    }

    body.push_str("<h2>Group commit: writes per transaction over time</h2>");
    let groups = runs
        .iter()
        .map(|r| Series {
            name: r.engine,
            color: color(r.engine),
            points: points(&r.samples, |s| s.mean_group),
        })
        .collect::<Vec<_>>();
    body.push_str(&line_chart(
        "group_commit",
        "writes per commit",
        &groups,
        &phase_bands(report),
        &|y| format!("{y:.1}"),
    ));
    let _ = write!(
        body,
        "<p class=\"meta\">{}</p>",
        runs.iter()
            .map(|r| format!(
                "{}: {} commits for {} writes, mean group {:.2}, largest {}",
                r.engine,
                group(r.writes.stats.commits),
                group(r.writes.stats.writes),
                r.writes.mean_group,
                r.writes.stats.max_group
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>strata load report</title><style>{STYLE}</style></head><body>{body}\
         <script type=\"application/json\" id=\"load-data\">{}</script></body></html>\n",
        // `</` would end the script element early; JSON reads `<\/` as `</`.
        data.replace("</", "<\\/")
    ))
}

const STYLE: &str = "body{font:14px system-ui,sans-serif;margin:24px;color:#0f172a;max-width:1320px}\
h1{font-size:22px}h2{font-size:17px;margin-top:28px}.meta{color:#475569}\
table{border-collapse:collapse}td,th{padding:3px 10px;text-align:right;border-bottom:1px solid #e2e8f0}\
th:first-child,td:first-child{text-align:left}.ahead{color:#15803d}.behind{color:#b91c1c}\
svg text{font:12px system-ui,sans-serif;fill:#334155}.key span{display:inline-block;width:14px;\
height:4px;margin:0 6px 3px 14px;vertical-align:middle}";

fn color(engine: &str) -> &'static str {
    if engine == "raw" {
        RAW_COLOR
    } else {
        STRATA_COLOR
    }
}

fn legend(runs: &[&LoadReport]) -> String {
    let mut out = String::from("<p class=\"key\">");
    for r in runs {
        let _ = write!(
            out,
            "<span style=\"background:{}\"></span>{}",
            color(r.engine),
            r.engine
        );
    }
    out.push_str("</p>");
    out
}

fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn versus_table(strata: &LoadReport, raw: &LoadReport, versus: &super::versus::Versus) -> String {
    let mut out = String::from(
        "<table data-chart=\"versus\"><tr><th>operation</th><th>strata ops/s</th><th>raw ops/s</th>\
         <th>throughput</th><th>p50 strata µs</th><th>p50 raw µs</th><th>p50</th>\
         <th>p99 strata µs</th><th>p99 raw µs</th><th>p99</th></tr>",
    );
    let x = |v: f64| {
        let class = if v >= 1.0 { "ahead" } else { "behind" };
        format!("<td class=\"{class}\">{v:.2}x</td>")
    };
    let mut row =
        |name: &str, s: (f64, f64, f64), r: (f64, f64, f64), t: &super::versus::Ratios| {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td>{}<td>{:.1}</td><td>{:.1}</td>{}\
             <td>{:.1}</td><td>{:.1}</td>{}</tr>",
                escape(name),
                group(s.0.round() as u64),
                group(r.0.round() as u64),
                x(t.throughput),
                s.1,
                r.1,
                x(t.p50),
                s.2,
                r.2,
                x(t.p99)
            );
        };
    for (name, ratios) in &versus.operations {
        if let (Some(s), Some(r)) = (strata.operations.get(name), raw.operations.get(name)) {
            let (s, r) = (&s.latency, &r.latency);
            row(
                name,
                (s.throughput, s.p50_us, s.p99_us),
                (r.throughput, r.p50_us, r.p99_us),
                ratios,
            );
        }
    }
    row(
        "total",
        (
            strata.throughput,
            strata.overall.p50_us,
            strata.overall.p99_us,
        ),
        (raw.throughput, raw.overall.p50_us, raw.overall.p99_us),
        &versus.total,
    );
    out.push_str(
        "</table><p class=\"meta\">x: times better for strata (throughput strata/raw, \
                  latency raw/strata); each engine ran on its own copy of the same database.</p>",
    );
    out
}

struct Series {
    name: &'static str,
    color: &'static str,
    points: Vec<(f64, f64)>,
}

/// (seconds since the start, value) of each sample that has a value.
fn points(samples: &[Sample], value: impl Fn(&Sample) -> Option<f64>) -> Vec<(f64, f64)> {
    samples
        .iter()
        .filter_map(|s| Some((s.t_ms as f64 / 1000.0, value(s)?)))
        .collect()
}

/// The phases of the run as (start s, end s, label).
fn phase_bands(report: &LoadReport) -> Vec<(f64, f64, String)> {
    let mut start = 0.0;
    report
        .phases
        .iter()
        .map(|p| {
            let end = start + p.elapsed.as_secs_f64();
            let band = (start, end, format!("{} · {} threads", p.name, p.threads));
            start = end;
            band
        })
        .collect()
}

/// A round step for about `ticks` ticks up to `max`.
fn nice_step(max: f64, ticks: f64) -> f64 {
    let raw = (max / ticks).max(f64::MIN_POSITIVE);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    step.max(f64::MIN_POSITIVE)
}

fn line_chart(
    id: &str,
    y_label: &str,
    series: &[Series],
    bands: &[(f64, f64, String)],
    y_fmt: &dyn Fn(f64) -> String,
) -> String {
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(bands.iter().map(|b| b.1))
        .fold(1.0f64, f64::max);
    let y_top = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let y_step = nice_step(if y_top > 0.0 { y_top } else { 1.0 }, 4.0);
    let y_max = (y_top / y_step).ceil().max(1.0) * y_step;
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let x = |v: f64| LEFT + v / x_max * plot_w;
    let y = |v: f64| TOP + plot_h - v / y_max * plot_h;
    let mut svg = format!(
        "<svg data-chart=\"{id}\" width=\"{WIDTH}\" height=\"{HEIGHT}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" \
         xmlns=\"http://www.w3.org/2000/svg\">"
    );
    for (i, (start, end, label)) in bands.iter().enumerate() {
        let _ = write!(
            svg,
            "<rect x=\"{:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{plot_h}\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            x(*start),
            (x(*end) - x(*start)).max(0.0),
            PHASE_FILLS[i % 2],
            x(*start) + 6.0,
            TOP + 14.0,
            escape(label)
        );
    }
    let mut v = 0.0;
    while v <= y_max + y_step / 2.0 {
        let _ = write!(
            svg,
            "<line x1=\"{LEFT}\" x2=\"{:.1}\" y1=\"{:.1}\" y2=\"{:.1}\" stroke=\"#cbd5e1\" stroke-width=\"0.5\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            WIDTH - RIGHT,
            y(v),
            y(v),
            LEFT - 6.0,
            y(v) + 4.0,
            escape(&y_fmt(v))
        );
        v += y_step;
    }
    let x_step = nice_step(x_max, 10.0);
    let mut t = 0.0;
    while t <= x_max + 1e-9 {
        let _ = write!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{t}s</text>",
            x(t),
            HEIGHT - BOTTOM + 16.0
        );
        t += x_step;
    }
    let _ = write!(
        svg,
        "<text x=\"{LEFT}\" y=\"{:.1}\" class=\"axis\">{}</text>",
        HEIGHT - 2.0,
        escape(y_label)
    );
    for s in series {
        let path = s
            .points
            .iter()
            .map(|(px, py)| format!("{:.1},{:.1}", x(*px), y(*py)))
            .collect::<Vec<_>>()
            .join(" ");
        let _ = write!(
            svg,
            "<polyline data-series=\"{}\" points=\"{path}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            s.name, s.color
        );
    }
    svg.push_str("</svg>");
    svg
}

/// Per operation and engine, bars to p99, p95 and p50 (darker is lower), on a log axis.
fn latency_chart(runs: &[&LoadReport]) -> String {
    let ops: Vec<&String> = runs[0].operations.keys().collect();
    let row_h = 18.0;
    let group_h = row_h * runs.len() as f64 + 10.0;
    let label_w = 150.0;
    let values_w = 330.0;
    let height = TOP + group_h * ops.len() as f64 + BOTTOM;
    let (lo, hi) = runs
        .iter()
        .flat_map(|r| r.operations.values())
        .filter(|o| o.latency.count > 0)
        .fold((f64::MAX, 0.0f64), |(lo, hi), o| {
            (lo.min(o.latency.p50_us), hi.max(o.latency.p99_us))
        });
    let lo = 10f64.powf(lo.max(0.1).log10().floor());
    let hi = 10f64.powf(hi.max(lo * 10.0).log10().ceil());
    let plot_w = WIDTH - label_w - values_w - RIGHT;
    let x =
        |us: f64| label_w + (us.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10()) * plot_w;
    let mut svg = format!(
        "<svg data-chart=\"latency\" width=\"{WIDTH}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {WIDTH} {height:.0}\" xmlns=\"http://www.w3.org/2000/svg\">"
    );
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let _ = write!(
            svg,
            "<line x1=\"{0:.1}\" x2=\"{0:.1}\" y1=\"{TOP}\" y2=\"{1:.1}\" stroke=\"#cbd5e1\" stroke-width=\"0.5\"/>\
             <text x=\"{0:.1}\" y=\"{2:.1}\" text-anchor=\"middle\">{3} µs</text>",
            x(decade),
            height - BOTTOM,
            height - BOTTOM + 16.0,
            group(decade.round() as u64)
        );
        decade *= 10.0;
    }
    for (i, op) in ops.iter().enumerate() {
        let top = TOP + group_h * i as f64;
        let _ = write!(
            svg,
            "<text x=\"0\" y=\"{:.1}\">{}</text>",
            top + row_h * runs.len() as f64 / 2.0 + 4.0,
            escape(op)
        );
        for (j, r) in runs.iter().enumerate() {
            let Some(o) = r.operations.get(*op) else {
                continue;
            };
            let l = &o.latency;
            let y = top + row_h * j as f64;
            for (value, opacity) in [(l.p99_us, 0.3), (l.p95_us, 0.55), (l.p50_us, 1.0)] {
                if l.count == 0 {
                    break;
                }
                let _ = write!(
                    svg,
                    "<rect x=\"{label_w}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{}\" \
                     fill-opacity=\"{opacity}\"/>",
                    y + 2.0,
                    (x(value) - label_w).max(1.0),
                    row_h - 4.0,
                    color(r.engine)
                );
            }
            let _ = write!(
                svg,
                "<text data-op=\"{}\" data-engine=\"{}\" data-p50=\"{}\" data-p95=\"{}\" data-p99=\"{}\" \
                 x=\"{:.1}\" y=\"{:.1}\">{}: p50 {:.1} · p95 {:.1} · p99 {:.1} µs</text>",
                escape(op),
                r.engine,
                l.p50_us,
                l.p95_us,
                l.p99_us,
                label_w + plot_w + 10.0,
                y + row_h - 5.0,
                r.engine,
                l.p50_us,
                l.p95_us,
                l.p99_us
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_round() {
        assert_eq!(nice_step(100.0, 4.0), 25.0);
        assert_eq!(nice_step(9_000.0, 4.0), 2_500.0);
        assert_eq!(nice_step(1.0, 4.0), 0.25);
        assert_eq!(escape("<a & \"b\">"), "&lt;a &amp; &quot;b&quot;&gt;");
    }
}
