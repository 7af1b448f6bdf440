//! The comparison chart, drawn with plotters: for each workload, one bar per
//! configuration, its ratio to plain gunicorn of the same version (median,
//! whiskers min–max), on a log axis around 1×: worker CPU per request and
//! requests/s.

use anyhow::Result;
use plotters::{
    coord::Shift,
    prelude::*,
    style::text_anchor::{HPos, Pos, VPos},
};

use super::{
    report::{Metric, Results, Run, Stat},
    scenario::{Cell, Variant},
};

const SIZE: (u32, u32) = (1100, 860);
const FONT: &str = "sans-serif";

/// The panels: title and per-run figure.
const PANELS: [(&str, Metric); 2] = [
    (
        "worker CPU per request, × plain gunicorn (lower is better)",
        Run::worker_cpu_per_req_us,
    ),
    ("requests/s, × plain gunicorn (higher is better)", |r| {
        r.wrk.rps()
    }),
];

fn color(v: Variant) -> RGBColor {
    match v {
        Variant::EbpfSockets => RGBColor(0x2b, 0x8a, 0x3e),
        Variant::EbpfRedis => RGBColor(0x0c, 0x85, 0x99),
        Variant::EmptySockets => RGBColor(0x8c, 0xe9, 0x9a),
        Variant::EbpfSocketsNoroutes => RGBColor(0x0c, 0xa6, 0x78),
        Variant::EbpfSyscalls => RGBColor(0x5f, 0x3d, 0xc4),
        Variant::EmptySyscalls => RGBColor(0xb1, 0x97, 0xfc),
        Variant::Statsd => RGBColor(0xe6, 0x77, 0x00),
        Variant::PluginFile => RGBColor(0x1c, 0x7e, 0xd6),
        Variant::PluginRedis => RGBColor(0xc9, 0x2a, 0x2a),
        Variant::Plain27 | Variant::Plain23 => RGBColor(0x86, 0x8e, 0x96),
    }
}

pub fn svg(res: &Results) -> Result<String> {
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
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        let body = root.titled(
            "Request metrics on gunicorn: ratio to plain gunicorn of the same version \
             (bars: median, whiskers: min–max over repetitions)",
            (FONT, 18),
        )?;
        let (legend, panels) = body.split_vertically(30);
        draw_legend(&legend, &variants)?;
        for (area, (title, metric)) in panels.split_evenly((2, 1)).iter().zip(PANELS) {
            let ratios: Vec<Vec<Option<Stat>>> = cells
                .iter()
                .map(|&c| variants.iter().map(|&v| res.ratio(c, v, metric)).collect())
                .collect();
            panel(&root, area, title, &cells, &variants, &ratios)?;
        }
        root.present()?;
    }
    Ok(svg)
}

/// A row of the configurations' colours, above both panels.
fn draw_legend(area: &DrawingArea<SVGBackend, Shift>, variants: &[Variant]) -> Result<()> {
    let style = TextStyle::from((FONT, 13).into_font());
    let mut x = 70;
    for &v in variants {
        area.draw(&Rectangle::new([(x, 8), (x + 12, 20)], color(v).filled()))?;
        area.draw(&Text::new(v.short(), (x + 16, 8), style.clone()))?;
        x += 16 + area.estimate_text_size(v.short(), &style)?.0 as i32 + 24;
    }
    Ok(())
}

/// Ticks of a log axis between `lo` and `hi`, in 1-2-5 steps.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    (-3..=3)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .filter(|t| (lo..=hi).contains(t))
        .collect()
}

/// One panel: `ratios[cell][variant]`. Cell names go under the axis, on
/// `root` (plotters labels a numeric axis by its own ticks).
fn panel(
    root: &DrawingArea<SVGBackend, Shift>,
    area: &DrawingArea<SVGBackend, Shift>,
    title: &str,
    cells: &[Cell],
    variants: &[Variant],
    ratios: &[Vec<Option<Stat>>],
) -> Result<()> {
    let (lo, hi) = ratios
        .iter()
        .flatten()
        .flatten()
        .flat_map(|s| [s.min, s.max])
        .filter(|v| *v > 0.0)
        .fold((0.8f64, 1.25f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = (lo / 1.15, hi * 1.15);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FONT, 15))
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0.0..cells.len() as f64,
            (lo..hi).log_scale().with_key_points(ticks(lo, hi)),
        )?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(0)
        .bold_line_style(BLACK.mix(0.15))
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&|y| format!("{y}×"))
        .draw()?;
    chart.draw_series([PathElement::new(
        [(0.0, 1.0), (cells.len() as f64, 1.0)],
        BLACK.stroke_width(1),
    )])?;

    // Each cell is one unit wide: a bar per variant, half a bar of space on
    // either side.
    let bar = 1.0 / (variants.len() as f64 + 1.0);
    let label = TextStyle::from((FONT, 10).into_font());
    for (vi, &v) in variants.iter().enumerate() {
        let bars: Vec<(f64, Stat)> = ratios
            .iter()
            .enumerate()
            .filter_map(|(ci, row)| Some((ci as f64 + bar * (vi as f64 + 1.0), row[vi]?)))
            .collect();
        chart.draw_series(bars.iter().map(|&(x, s)| {
            Rectangle::new(
                [(x - 0.4 * bar, 1.0), (x + 0.4 * bar, s.median)],
                color(v).filled(),
            )
        }))?;
        let cap = 0.1 * bar;
        chart.draw_series(bars.iter().flat_map(|&(x, s)| {
            [
                [(x, s.min), (x, s.max)],
                [(x - cap, s.min), (x + cap, s.min)],
                [(x - cap, s.max), (x + cap, s.max)],
            ]
            .map(|line| PathElement::new(line, BLACK))
        }))?;
        chart.draw_series(bars.iter().map(|&(x, s)| {
            let digits = if (s.median - 1.0).abs() < 0.1 { 3 } else { 2 };
            let text = format!("{:.digits$}", s.median);
            if s.median >= 1.0 {
                let pos = Pos::new(HPos::Center, VPos::Bottom);
                Text::new(text, (x, s.max * 1.02), label.pos(pos))
            } else {
                let pos = Pos::new(HPos::Center, VPos::Top);
                Text::new(text, (x, s.min / 1.02), label.pos(pos))
            }
        }))?;
    }

    let under = TextStyle::from((FONT, 12).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    for (ci, cell) in cells.iter().enumerate() {
        let (x, y) = chart.backend_coord(&(ci as f64 + 0.5, lo));
        root.draw(&Text::new(
            format!("{} app", cell.app.name()),
            (x, y + 8),
            under.clone(),
        ))?;
        root.draw(&Text::new(
            format!("{}, {}", cell.workers.name(), cell.keepalive_name()),
            (x, y + 24),
            under.clone(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::tests::{cell, run};

    #[test]
    fn log_ticks() {
        assert_eq!(ticks(0.8, 1.3), [1.0]);
        assert_eq!(
            ticks(0.04, 12.0),
            [0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]
        );
    }

    #[test]
    fn draws_bars() {
        let mut res = Results {
            cells: vec![cell()],
            variants: vec![Variant::Plain27, Variant::EbpfSockets],
            ..Default::default()
        };
        res.runs.push(run(Variant::Plain27, 0, 1.0, 1000));
        res.runs.push(run(Variant::EbpfSockets, 0, 1.02, 1000));
        let svg = svg(&res).unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("1.020"), "{svg}");
        assert!(svg.contains("ebpf-sockets"), "{svg}");
        assert!(svg.contains("trivial app"), "{svg}");
    }
}
