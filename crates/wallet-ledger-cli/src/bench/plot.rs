//! throughput.svg: transfers/s against client threads, one panel per workload, one line per
//! mode (the library, hold-capture, its pgbench references, the multi-statement variant and the
//! controls); and, when the expiry section ran, a panel of holds expired/s against workers.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::plan::Mode;
use super::report::Run;

const PANEL_WIDTH: u32 = 520;
const HEIGHT: u32 = 420;

/// Draws the plot of `runs` into `path`.
pub fn draw(runs: &[Run], path: &Path) -> Result<()> {
    let mut workloads: Vec<&str> = Vec::new();
    for r in runs {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload);
        }
    }
    let panels = workloads.len().max(1);
    let root = SVGBackend::new(path, (PANEL_WIDTH * panels as u32, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("plot: {e}"))?;
    let areas = root.split_evenly((1, panels));
    for (area, workload) in areas.iter().zip(&workloads) {
        let of_workload: Vec<&Run> = runs.iter().filter(|r| r.workload == *workload).collect();
        panel(area, workload, &of_workload).map_err(|e| anyhow!("plot {workload}: {e}"))?;
    }
    root.present().map_err(|e| anyhow!("write {}: {e}", path.display()))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// One workload: x = thread counts (evenly spaced, as they double), y = transfers/s.
fn panel(area: &Area<'_>, workload: &str, runs: &[&Run]) -> Result<(), Box<dyn std::error::Error>> {
    let mut threads: Vec<usize> = runs.iter().map(|r| r.threads).collect();
    threads.sort_unstable();
    threads.dedup();
    // Head room above the highest line for the legend.
    let top = runs.iter().map(|r| r.tps).fold(1.0, f64::max) * 1.5;
    let last = threads.len() as i32;
    let (unit, x_desc) =
        if workload == "expiry" { ("holds expired/s", "expiry workers") } else { ("transfers/s", "client threads") };
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{workload}: {unit}"), ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(-1..last, 0.0..top)?;
    let label = |x: &i32| usize::try_from(*x).ok().and_then(|i| threads.get(i)).map_or(String::new(), usize::to_string);
    chart
        .configure_mesh()
        .x_labels(threads.len() + 2)
        .x_label_formatter(&label)
        .y_label_formatter(&|y| format!("{y:.0}"))
        .x_desc(x_desc)
        .y_desc(unit)
        .draw()?;
    for mode in Mode::ALL {
        let points: Vec<(i32, f64)> = runs
            .iter()
            .filter(|r| r.mode == mode.name())
            .filter_map(|r| threads.iter().position(|&t| t == r.threads).map(|i| (i as i32, r.tps)))
            .collect();
        if points.is_empty() {
            continue;
        }
        let color = color(mode);
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
            .label(mode.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn color(mode: Mode) -> RGBColor {
    match mode {
        Mode::Library | Mode::Expire => RGBColor(31, 119, 180),
        Mode::Default => RGBColor(0, 100, 0),
        Mode::LibraryTwin => RGBColor(120, 170, 210),
        Mode::HoldCapture => RGBColor(23, 190, 207),
        Mode::PgbenchOwnSql => RGBColor(255, 127, 14),
        Mode::PgbenchTpcbLike => RGBColor(44, 160, 44),
        Mode::MultiStatement => RGBColor(148, 103, 189),
        Mode::Naive => RGBColor(214, 39, 40),
        Mode::RequestOrder => RGBColor(140, 86, 75),
        Mode::ExpireNoSkipLocked => RGBColor(227, 119, 194),
        Mode::Combined => RGBColor(0, 0, 128),
        Mode::Batch1 | Mode::Batch10 | Mode::Batch100 | Mode::Batch1000 => RGBColor(188, 189, 34),
        Mode::Posting3 => RGBColor(127, 127, 127),
        Mode::FExpression => RGBColor(255, 152, 150),
        Mode::Optimistic => RGBColor(197, 176, 213),
        Mode::Serializable => RGBColor(196, 156, 148),
        Mode::LibraryFeed => RGBColor(102, 153, 204),
        Mode::Async => RGBColor(255, 187, 120),
        Mode::AsyncDefault => RGBColor(152, 223, 138),
    }
}
