//! SVG charts: throughput and latency per workload, one bar per target.
//!
//! plotters is built with only its SVG backend and without TrueType support, so text is laid
//! out with its built-in estimate and drawn by the viewer's fonts: no system font libraries.

use std::path::Path;

use plotters::coord::combinators::IntoLogRange;
use plotters::prelude::*;

use crate::report::PhaseResult;

const COLOURS: [RGBColor; 6] = [
    RGBColor(230, 115, 0),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(127, 127, 127),
];

/// Which number a chart shows.
#[derive(Debug, Clone, Copy)]
pub enum Metric {
    /// Successful operations per second (linear axis).
    Throughput,
    /// Median latency in ms (log axis).
    P50,
    /// 99th-percentile latency in ms (log axis).
    P99,
}

impl Metric {
    fn value(self, r: &PhaseResult) -> f64 {
        match self {
            Metric::Throughput => r.ops_per_sec,
            Metric::P50 => r.latency.p50_us as f64 / 1000.0,
            Metric::P99 => r.latency.p99_us as f64 / 1000.0,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Metric::Throughput => "Throughput (successful ops/s, higher is better)",
            Metric::P50 => "Median latency (ms, log scale, lower is better)",
            Metric::P99 => "p99 latency (ms, log scale, lower is better)",
        }
    }
}

/// The workloads (in run order) and targets (in first-seen order) of `results`.
fn axes(results: &[PhaseResult]) -> (Vec<String>, Vec<String>) {
    let (mut labels, mut targets) = (Vec::<String>::new(), Vec::<String>::new());
    for r in results {
        if !labels.contains(&r.label()) {
            labels.push(r.label());
        }
        if !targets.contains(&r.target) {
            targets.push(r.target.clone());
        }
    }
    (labels, targets)
}

/// Draws `metric` for every workload and target of `results` into an SVG file at `path`.
/// Targets that cannot run a workload get no bar.
pub fn bar_chart(results: &[PhaseResult], metric: Metric, path: &Path) -> anyhow::Result<()> {
    let (labels, targets) = axes(results);
    let bars: Vec<(usize, usize, f64)> = results
        .iter()
        .filter(|r| r.not_applicable.is_none() && r.ops > 0)
        .filter_map(|r| {
            let x = labels.iter().position(|l| *l == r.label())?;
            let t = targets.iter().position(|t| *t == r.target)?;
            Some((x, t, metric.value(r)))
        })
        .collect();
    let max = bars.iter().map(|b| b.2).fold(0.0f64, f64::max).max(1e-3);
    let min_positive = bars
        .iter()
        .map(|b| b.2)
        .filter(|v| *v > 0.0)
        .fold(f64::INFINITY, f64::min);
    let n = labels.len().max(1) as f64;
    let width = (160 + 110 * labels.len()).max(640) as u32;
    let root = SVGBackend::new(path, (width, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    let slot = 0.8 / targets.len().max(1) as f64;
    let label_of = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < labels.len() {
            labels[i as usize].clone()
        } else {
            String::new()
        }
    };
    let series = |t: usize| {
        bars.iter()
            .filter(move |b| b.1 == t)
            .map(move |&(x, t, v)| (x as f64 - 0.4 + slot * t as f64, v))
    };
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(metric.title(), ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    match metric {
        Metric::Throughput => {
            let mut chart = builder
                .build_cartesian_2d(-0.5..n - 0.5, 0.0..max * 1.1)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(labels.len() + 1)
                .x_label_formatter(&label_of)
                .y_label_formatter(&|v: &f64| crate::report::fmt_rate(*v))
                .y_desc("ops/s")
                .draw()
                .map_err(plot_error)?;
            for (t, name) in targets.iter().enumerate() {
                let colour = COLOURS[t % COLOURS.len()];
                chart
                    .draw_series(series(t).map(|(x0, v)| {
                        Rectangle::new([(x0, 0.0), (x0 + slot * 0.9, v)], colour.filled())
                    }))
                    .map_err(plot_error)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                    });
            }
            legend(&mut chart)?;
        }
        Metric::P50 | Metric::P99 => {
            let floor = if min_positive.is_finite() {
                10f64.powf(min_positive.log10().floor())
            } else {
                0.01
            };
            let top = 10f64.powf(max.log10().ceil()).max(floor * 10.0);
            let mut chart = builder
                .build_cartesian_2d(-0.5..n - 0.5, (floor..top).log_scale())
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(labels.len() + 1)
                .x_label_formatter(&label_of)
                .y_label_formatter(&|v: &f64| format!("{v}"))
                .y_desc("ms")
                .draw()
                .map_err(plot_error)?;
            for (t, name) in targets.iter().enumerate() {
                let colour = COLOURS[t % COLOURS.len()];
                chart
                    .draw_series(series(t).map(|(x0, v)| {
                        Rectangle::new(
                            [(x0, floor), (x0 + slot * 0.9, v.max(floor))],
                            colour.filled(),
                        )
                    }))
                    .map_err(plot_error)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 10, y + 5)], colour.filled())
                    });
            }
            legend(&mut chart)?;
        }
    }
    root.present().map_err(plot_error)?;
    Ok(())
}

fn legend<'a, DB: DrawingBackend + 'a, CT: plotters::coord::CoordTranslate>(
    chart: &mut ChartContext<'a, DB, CT>,
) -> anyhow::Result<()>
where
    DB::ErrorType: 'static,
{
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(plot_error)
}

fn plot_error<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing chart: {e:?}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Distribution;
    use crate::phase::PhaseSpec;
    use crate::workload::Workload;
    use std::time::Duration;

    #[test]
    fn charts_are_written_as_svg() {
        let spec = |w| PhaseSpec {
            workload: w,
            distribution: Distribution::Uniform,
            keys: 10,
            value_size: 10,
            concurrency: 1,
            warmup: Duration::ZERO,
            duration: Duration::from_secs(1),
            ops: None,
            rate: None,
        };
        let mut results = Vec::new();
        for (i, t) in ["ferrisdb", "etcd"].iter().enumerate() {
            for w in [Workload::Writes, Workload::Reads, Workload::TimeTravel] {
                let mut r = PhaseResult::empty(t, &spec(w));
                r.ops = 100;
                r.ops_per_sec = 1000.0 * (i + 1) as f64;
                r.latency.p50_us = 300;
                r.latency.p99_us = 2500 * (i as u64 + 1);
                results.push(r);
            }
        }
        results[5].not_applicable = Some("no history".into());
        let dir = std::env::temp_dir().join(format!("loadtest-charts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (m, f) in [
            (Metric::Throughput, "t.svg"),
            (Metric::P50, "p50.svg"),
            (Metric::P99, "p99.svg"),
        ] {
            let p = dir.join(f);
            bar_chart(&results, m, &p).unwrap();
            let svg = std::fs::read_to_string(&p).unwrap();
            assert!(
                svg.starts_with("<svg") && svg.contains("ferrisdb") && svg.contains("time-travel")
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
