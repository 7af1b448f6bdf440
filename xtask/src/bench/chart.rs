//! The comparison as a hand-written SVG: for each workload, one bar per
//! configuration, its ratio to plain gunicorn of the same version (median,
//! whiskers min–max), on a log axis around 1×: worker CPU per request and
//! requests/s.

use std::fmt::Write as _;

use super::{
    report::{Results, Run, Stat},
    scenario::{Cell, Variant},
};

const WIDTH: f64 = 1100.0;
const PANEL_H: f64 = 300.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 70.0;
const GAP: f64 = 95.0;

fn color(v: Variant) -> &'static str {
    match v {
        Variant::EbpfSockets => "#2b8a3e",
        Variant::EmptySockets => "#8ce99a",
        Variant::EbpfSyscalls => "#5f3dc4",
        Variant::EmptySyscalls => "#b197fc",
        Variant::Statsd => "#e67700",
        Variant::PluginFile => "#1c7ed6",
        Variant::PluginRedis => "#c92a2a",
        Variant::Plain27 | Variant::Plain23 => "#868e96",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Ticks of a log axis between lo and hi: 1-2-5 steps.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut out = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi * 10.0 {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo * 0.999 && t <= hi * 1.001 {
                out.push(t);
            }
        }
        decade *= 10.0;
    }
    out
}

fn fmt_tick(t: f64) -> String {
    if t >= 1.0 {
        format!("{t:.0}×")
    } else {
        let s = format!("{t:.3}");
        format!("{}×", s.trim_end_matches('0'))
    }
}

struct Panel<'a> {
    title: &'a str,
    metric: fn(&Run) -> f64,
}

pub fn svg(res: &Results) -> String {
    let cells: Vec<Cell> = res
        .cells
        .iter()
        .copied()
        .filter(|&c| res.runs.iter().any(|r| r.cell == c))
        .collect();
    let variants: Vec<Variant> = res
        .variants
        .iter()
        .copied()
        .filter(|v| !v.is_baseline())
        .collect();
    let panels = [
        Panel {
            title: "worker CPU per request, × plain gunicorn (lower is better)",
            metric: |r| r.worker_cpu_per_req_us(),
        },
        Panel {
            title: "requests/s, × plain gunicorn (higher is better)",
            metric: |r| r.wrk.rps(),
        },
    ];
    let height = TOP + panels.len() as f64 * (PANEL_H + GAP) + 10.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        s,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{LEFT}" y="24" font-size="16" font-weight="bold">Cost of request metrics on gunicorn: ratio to plain gunicorn of the same version</text>
<text x="{LEFT}" y="42" fill="#495057">bars: median over repetitions; whiskers: min–max; log scale; 2 workers, wrk -t1 -c8; plugin rows vs gunicorn 23, the others vs 27</text>"##
    );
    // Legend.
    let mut x = LEFT;
    for &v in &variants {
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="52" width="12" height="12" fill="{}"/><text x="{}" y="62">{}</text>"#,
            color(v),
            x + 16.0,
            esc(v.short())
        );
        x += 16.0 + 8.0 * v.short().len() as f64 + 14.0;
    }

    for (pi, panel) in panels.iter().enumerate() {
        let top = TOP + 20.0 + pi as f64 * (PANEL_H + GAP);
        let bottom = top + PANEL_H;
        let data: Vec<Vec<Option<Stat>>> = cells
            .iter()
            .map(|&c| {
                variants
                    .iter()
                    .map(|&v| res.ratio(c, v, panel.metric))
                    .collect()
            })
            .collect();
        let values = data.iter().flatten().flatten().flat_map(|s| [s.min, s.max]);
        let (mut lo, mut hi) = (0.8f64, 1.25f64);
        for v in values.filter(|v| *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        let (lo, hi) = (lo / 1.15, hi * 1.15);
        let y = |v: f64| {
            let v = v.clamp(lo, hi);
            bottom - (v.ln() - lo.ln()) / (hi.ln() - lo.ln()) * PANEL_H
        };
        let _ = writeln!(
            s,
            r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
            top - 8.0,
            esc(panel.title)
        );
        for t in ticks(lo, hi) {
            let ty = y(t);
            let (stroke, dash) = if (t - 1.0).abs() < 1e-9 {
                ("#212529", "")
            } else {
                ("#dee2e6", r#" stroke-dasharray="3,3""#)
            };
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{ty:.1}" x2="{}" y2="{ty:.1}" stroke="{stroke}"{dash}/><text x="{}" y="{:.1}" text-anchor="end" fill="#495057">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                ty + 4.0,
                fmt_tick(t)
            );
        }
        let group_w = (WIDTH - LEFT - RIGHT) / cells.len().max(1) as f64;
        let bar_w = ((group_w - 30.0) / variants.len().max(1) as f64).min(44.0);
        for (ci, cell) in cells.iter().enumerate() {
            let gx = LEFT + ci as f64 * group_w;
            let inner = bar_w * variants.len() as f64;
            let x0 = gx + (group_w - inner) / 2.0;
            for (vi, &v) in variants.iter().enumerate() {
                let Some(st) = data[ci][vi] else { continue };
                let bx = x0 + vi as f64 * bar_w;
                let (y1, ym) = (y(1.0), y(st.median));
                let (ry, rh) = if ym < y1 {
                    (ym, y1 - ym)
                } else {
                    (y1, ym - y1)
                };
                let _ = writeln!(
                    s,
                    r#"<rect x="{:.1}" y="{ry:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{}: {:.3}× ({:.3}–{:.3})</title></rect>"#,
                    bx + 2.0,
                    bar_w - 4.0,
                    rh.max(1.0),
                    color(v),
                    esc(&format!("{cell}, {}", v.short())),
                    st.median,
                    st.min,
                    st.max
                );
                let cx = bx + bar_w / 2.0;
                let (wy1, wy2) = (y(st.max), y(st.min));
                let _ = writeln!(
                    s,
                    r##"<line x1="{cx:.1}" y1="{wy1:.1}" x2="{cx:.1}" y2="{wy2:.1}" stroke="#212529"/><line x1="{:.1}" y1="{wy1:.1}" x2="{:.1}" y2="{wy1:.1}" stroke="#212529"/><line x1="{:.1}" y1="{wy2:.1}" x2="{:.1}" y2="{wy2:.1}" stroke="#212529"/>"##,
                    cx - 4.0,
                    cx + 4.0,
                    cx - 4.0,
                    cx + 4.0
                );
                let label_y = if ym < y1 {
                    wy1.min(ym) - 4.0
                } else {
                    wy2.max(ym) + 12.0
                };
                let digits = if (st.median - 1.0).abs() < 0.1 { 3 } else { 2 };
                let _ = writeln!(
                    s,
                    r#"<text x="{cx:.1}" y="{label_y:.1}" text-anchor="middle" font-size="10">{:.d$}</text>"#,
                    st.median,
                    d = digits
                );
            }
            let _ = writeln!(
                s,
                r##"<text x="{:.1}" y="{:.1}" text-anchor="middle">{} app</text><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#495057">{}, {}</text>"##,
                gx + group_w / 2.0,
                bottom + 18.0,
                cell.app.name(),
                gx + group_w / 2.0,
                bottom + 33.0,
                cell.workers.name(),
                cell.keepalive_name()
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::{Results, Run};

    #[test]
    fn log_ticks() {
        assert_eq!(ticks(0.8, 1.3), vec![1.0]);
        assert_eq!(
            ticks(0.04, 12.0),
            vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        );
        assert_eq!(fmt_tick(0.05), "0.05×");
        assert_eq!(fmt_tick(2.0), "2×");
    }

    #[test]
    fn draws_bars() {
        let cell = crate::bench::report::tests::cell();
        let mut res = Results {
            cells: vec![cell],
            variants: vec![Variant::Plain27, Variant::EbpfSockets],
            ..Default::default()
        };
        let run = |v, rep, cpu| -> Run { crate::bench::report::tests::run(v, rep, cpu, 1000) };
        res.runs.push(run(Variant::Plain27, 0, 1.0));
        res.runs.push(run(Variant::EbpfSockets, 0, 1.02));
        let svg = svg(&res);
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("1.020"), "{svg}");
        assert!(svg.contains(">ebpf-sockets<"), "{svg}");
    }
}
