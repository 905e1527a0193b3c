//! `latency.svg`: end-to-end latency over the schedule, so that a queue building up
//! (latency climbing while the rate stays flat) is visible at a glance.

use std::path::Path;

use plotters::prelude::*;

use crate::loadgen::LoadError;
use crate::loadgen::report::Second;

/// Which value of a second a line shows.
type Pick = fn(&Second) -> f64;

pub fn latency_svg(path: &Path, timeline: &[Second], title: &str) -> Result<(), LoadError> {
    let fail = |e: &dyn std::fmt::Display| LoadError::Plot {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let x_max = timeline.last().map_or(1.0, |s| s.second as f64 + 1.0);
    let y_max = timeline.iter().map(|s| s.max_ms).fold(1.0, f64::max) * 1.05;
    let root = SVGBackend::new(path, (960, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..x_max, 0f64..y_max)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("intended send time, s after the start")
        .y_desc("end-to-end latency, ms")
        .draw()
        .map_err(|e| fail(&e))?;
    let series: [(&str, RGBColor, Pick); 3] = [
        ("p50", BLUE, |s| s.p50_ms),
        ("p99", RED, |s| s.p99_ms),
        ("max", BLACK, |s| s.max_ms),
    ];
    for (label, color, value) in series {
        chart
            .draw_series(LineSeries::new(
                timeline.iter().map(|s| (s.second as f64 + 0.5, value(s))),
                color.stroke_width(2),
            ))
            .map_err(|e| fail(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_plot_is_an_svg_with_three_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("latency.svg");
        let tl: Vec<Second> = (0..5)
            .map(|i| Second {
                second: i,
                completed: 10,
                p50_ms: 10.0 + i as f64,
                p99_ms: 20.0 + i as f64,
                max_ms: 30.0 + i as f64,
            })
            .collect();
        latency_svg(&path, &tl, "test").unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.matches("<polyline").count() >= 3);
        assert!(svg.contains("p99"));
        // An empty timeline still draws axes.
        latency_svg(&path, &[], "empty").unwrap();
    }
}
