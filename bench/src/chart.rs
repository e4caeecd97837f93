//! The picture management reads at a glance: records per second for each
//! mode and size, with the servers' raw limits drawn across as dashed lines.

use crate::results::Results;
use anyhow::{anyhow, Result};
use plotters::prelude::*;
use std::path::Path;

const COLOURS: [RGBColor; 6] = [
    RGBColor(120, 120, 120),
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
];

pub fn draw(results: &Results, path: &Path) -> Result<()> {
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let sizes: Vec<f64> = results.sizes.iter().map(|s| s.records_per_file as f64).collect();
    let (x_min, x_max) = (
        sizes.iter().copied().fold(f64::INFINITY, f64::min) / 1.5,
        sizes.iter().copied().fold(0.0, f64::max) * 1.5,
    );
    let limits = [
        ("raw insert_many", results.limits.insert_many_per_s),
        ("raw consume, 1 record/message", results.limits.consume_one_row_per_s),
        (
            "raw confirmed publish, 1 record/message",
            results.limits.publish_one_row_per_s,
        ),
    ];
    let highest = results
        .sizes
        .iter()
        .flat_map(|s| s.modes.iter().map(|m| m.records_per_s))
        .chain(limits.iter().map(|l| l.1))
        .fold(0.0, f64::max);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "HP Norton import: records per second (end to end, median)",
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((x_min..x_max).log_scale(), 0.0..highest * 1.15)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("records per file (three files)")
        .y_desc("records/s")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| format!("{:.0}k", y / 1000.0))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    let modes: Vec<String> = results
        .sizes
        .first()
        .map(|s| s.modes.iter().map(|m| m.mode.clone()).collect())
        .unwrap_or_default();
    for (i, mode) in modes.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = results
            .sizes
            .iter()
            .filter_map(|s| {
                s.modes
                    .iter()
                    .find(|m| &m.mode == mode)
                    .map(|m| (s.records_per_file as f64, m.records_per_s))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(mode.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, colour.filled())))
            .map_err(|e| anyhow!("{e}"))?;
    }
    for (i, (name, value)) in limits.iter().enumerate() {
        let colour = [BLACK, RGBColor(140, 86, 75), RGBColor(227, 119, 194)][i];
        let dashes = DashedLineSeries::new(vec![(x_min, *value), (x_max, *value)], 8, 6, colour.stroke_width(1));
        chart
            .draw_series(dashes)
            .map_err(|e| anyhow!("{e}"))?
            .label(format!("{name} ({value:.0}/s)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 13))
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
