//! The PNG figures in docs/benchmarks.md, drawn from the measured data so
//! they are regenerated with every run (plotters, bitmap backend; text in
//! the system's DejaVu Sans, read at run time).

use crate::stats::Summary;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error>>;

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// One peer's figures at each concurrency level of one model.
pub struct Curve {
    pub peer: String,
    /// `(concurrency, p50 ms, p99 ms, requests/s)`, medians over the runs.
    pub points: Vec<(usize, f64, f64, f64)>,
}

/// One model's curves, one per peer.
pub struct Panel {
    pub model: String,
    pub curves: Vec<Curve>,
}

/// One bar of the cold-start figure.
pub struct Bar {
    pub model: String,
    pub peer: String,
    /// Milliseconds.
    pub summary: Summary,
}

/// Makes text available to plotters (once per process).
pub fn init_fonts() -> Result {
    let bytes: &'static [u8] = Box::leak(
        std::fs::read(FONT).map_err(|e| format!("{FONT}: {e} (apt install fonts-dejavu-core)"))?.into_boxed_slice(),
    );
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{FONT} is not a font"))?;
    Ok(())
}

/// One color per peer in every figure.
fn color(peer: &str) -> RGBColor {
    match peer {
        "native" => RGBColor(90, 90, 90),
        "python" => RGBColor(200, 80, 40),
        _ => RGBColor(30, 110, 200),
    }
}

fn tick(v: &f64) -> String {
    if *v >= 1.0 { format!("{v:.0}") } else { format!("{v:.2}") }
}

fn log_range(values: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) =
        values.filter(|v| v.is_finite() && *v > 0.0).fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    (lo / 1.5)..(hi * 1.5)
}

/// Latency (p50 solid, p99 dashed) and throughput against concurrency: a
/// column per model, log scales.
pub fn concurrency(path: &Path, panels: &[Panel]) -> Result {
    let root = BitMapBackend::new(path, (480 * panels.len() as u32, 820)).into_drawing_area();
    root.fill(&WHITE)?;
    let columns = root.split_evenly((2, panels.len()));
    let levels: Vec<usize> = panels[0].curves[0].points.iter().map(|p| p.0).collect();
    for (i, panel) in panels.iter().enumerate() {
        let all = || panel.curves.iter().flat_map(|c| c.points.iter());
        let y = log_range(all().flat_map(|p| [p.1, p.2]));
        let caption = format!("{}: latency", panel.model);
        let mut latency = log_chart(&columns[i], caption, &levels, y, "ms (p50 solid, p99 dashed)")?;
        for curve in &panel.curves {
            let c = color(&curve.peer);
            let p50 = curve.points.iter().enumerate().map(|(j, p)| (j as f64, p.1));
            latency
                .draw_series(LineSeries::new(p50.clone(), c.stroke_width(2)).point_size(3))?
                .label(&curve.peer)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
            let p99 = curve.points.iter().enumerate().map(|(j, p)| (j as f64, p.2));
            latency.draw_series(DashedLineSeries::new(p99, 6, 4, c.stroke_width(1)))?;
        }
        latency.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;

        let caption = format!("{}: throughput", panel.model);
        let y = log_range(all().map(|p| p.3));
        let mut throughput = log_chart(&columns[panels.len() + i], caption, &levels, y, "requests / s")?;
        for curve in &panel.curves {
            let points = curve.points.iter().enumerate().map(|(j, p)| (j as f64, p.3));
            throughput.draw_series(LineSeries::new(points, color(&curve.peer).stroke_width(2)).point_size(3))?;
        }
    }
    root.present()?;
    Ok(())
}

type LogChart<'a, 'b> = ChartContext<'a, BitMapBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// A panel with the concurrency levels along x and a log-scale y.
fn log_chart<'a, 'b>(
    area: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    caption: String,
    levels: &[usize],
    y: std::ops::Range<f64>,
    y_desc: &str,
) -> Result<LogChart<'a, 'b>> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(56)
        .build_cartesian_2d(-0.2..(levels.len() as f64 - 0.8), y.log_scale())?;
    let x_label = |x: &f64| levels.get(x.round() as usize).map(|c| c.to_string()).unwrap_or_default();
    chart
        .configure_mesh()
        .x_desc("concurrent clients")
        .y_desc(y_desc)
        .x_labels(levels.len())
        .x_label_formatter(&x_label)
        .y_labels(8)
        .y_label_formatter(&tick)
        .draw()?;
    Ok(chart)
}

/// Cold start per model and peer: bars at the median, whiskers min..p99,
/// log scale (a process start and a scale-from-zero differ by orders).
pub fn cold_start(path: &Path, bars: &[Bar]) -> Result {
    let root = BitMapBackend::new(path, (900, 480)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut models: Vec<&str> = bars.iter().map(|b| b.model.as_str()).collect();
    models.dedup();
    let mut peers: Vec<&str> = bars.iter().map(|b| b.peer.as_str()).collect();
    peers.sort_unstable();
    peers.dedup();
    let mut chart = ChartBuilder::on(&root)
        .caption("Cold start: first answer after zero (ms)", ("sans-serif", 22))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(
            -0.5..(models.len() as f64 - 0.5),
            log_range(bars.iter().flat_map(|b| [b.summary.min, b.summary.p99])).log_scale(),
        )?;
    let label = |x: &f64| models.get(x.round() as usize).map(|m| m.to_string()).unwrap_or_default();
    chart
        .configure_mesh()
        .x_labels(models.len())
        .x_label_formatter(&label)
        .y_labels(8)
        .y_label_formatter(&tick)
        .y_desc("ms")
        .disable_x_mesh()
        .draw()?;
    let width = 0.8 / peers.len() as f64;
    let floor = chart.y_range().start;
    for (k, peer) in peers.iter().enumerate() {
        let c = color(peer);
        let mine: Vec<(f64, &Summary)> = bars
            .iter()
            .filter(|b| b.peer == *peer)
            .map(|b| (models.iter().position(|m| *m == b.model).unwrap_or(0) as f64, &b.summary))
            .collect();
        let left = |x: f64| x - 0.4 + k as f64 * width;
        chart
            .draw_series(
                mine.iter()
                    .map(|(x, s)| Rectangle::new([(left(*x), floor), (left(*x) + width * 0.9, s.median)], c.filled())),
            )?
            .label(*peer)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
        chart.draw_series(mine.iter().map(|(x, s)| {
            let mid = left(*x) + width * 0.45;
            PathElement::new([(mid, s.min), (mid, s.p99)], BLACK.stroke_width(2))
        }))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
