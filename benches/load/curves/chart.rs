//! The growth curves' SVGs: one or more panels stacked on a shared log-scale x axis (the
//! counts), each a line per series with its points and their values, and, where a curve has a
//! point that a log scale cannot show (no idle connection), that point as a dashed baseline.

use std::path::Path;

use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::report::fmt_int;

pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub color: RGBColor,
}

pub struct Panel {
    pub y_label: String,
    pub series: Vec<Series>,
    /// A horizontal reference line, with its label (the point with no idle connection).
    pub baseline: Option<(String, f64, RGBColor)>,
}

impl Panel {
    /// Throughput with the cache on and off, the panel the session curves open with.
    pub fn cache_on_off(on: Vec<(f64, f64)>, off: Vec<(f64, f64)>) -> Self {
        Panel {
            y_label: "req/s".into(),
            series: vec![
                Series {
                    name: "cache on".into(),
                    points: on,
                    color: BLUE_,
                },
                Series {
                    name: "cache off".into(),
                    points: off,
                    color: ORANGE_,
                },
            ],
            baseline: None,
        }
    }
}

pub const BLUE_: RGBColor = RGBColor(40, 110, 200);
pub const ORANGE_: RGBColor = RGBColor(230, 140, 40);
pub const GREEN_: RGBColor = RGBColor(60, 150, 80);
pub const GREY_: RGBColor = RGBColor(120, 120, 120);

/// How a value is written next to its point: thousands separated, small ones with decimals.
fn value_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v >= 1000.0 {
        fmt_int(v)
    } else if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws `panels` under a title and a subtitle into `path`, x on a log scale over `x_range`.
pub fn line_chart(
    path: &Path,
    title: &str,
    subtitle: &str,
    x_label: &str,
    x_range: (f64, f64),
    panels: &[Panel],
) {
    let (w, panel_h, head) = (960u32, 300u32, 64u32);
    let h = head + panel_h * panels.len() as u32 + 8;
    let root = SVGBackend::new(path, (w, h)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let font = |size: f64| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        title.to_string(),
        (16, 24),
        font(21.0).style(FontStyle::Bold).color(&BLACK),
    ))
    .unwrap();
    root.draw(&Text::new(
        subtitle.to_string(),
        (16, 46),
        font(13.0).color(&RGBColor(90, 90, 90)),
    ))
    .unwrap();
    let (_, body) = root.split_vertically(head);
    let areas = body.split_evenly((panels.len(), 1));
    let (x0, x1) = x_range;
    for (area, panel) in areas.iter().zip(panels) {
        let ymax = panel
            .series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .chain(panel.baseline.iter().map(|b| b.1))
            .fold(0.0f64, f64::max)
            .max(1e-9)
            // Headroom above the highest point for the legend, a row per entry.
            * (1.3 + 0.1 * (panel.series.len() + panel.baseline.iter().count()) as f64);
        let mut chart = ChartBuilder::on(area)
            .margin_left(10)
            .margin_right(30)
            .margin_top(8)
            .margin_bottom(4)
            .x_label_area_size(42)
            .y_label_area_size(78)
            .build_cartesian_2d((x0..x1).log_scale(), 0f64..ymax)
            .unwrap();
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(panel.y_label.as_str())
            .x_label_formatter(&|v| fmt_int(*v))
            .y_label_formatter(&|v| value_label(*v))
            .label_style(font(13.0))
            .axis_desc_style(font(14.0))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .unwrap();
        if let Some((label, y, color)) = &panel.baseline {
            let (y, color) = (*y, *color);
            chart
                .draw_series(std::iter::once(DashedPathElement::new(
                    vec![(x0, y), (x1, y)],
                    6,
                    4,
                    color.stroke_width(2),
                )))
                .unwrap()
                .label(format!("{label}: {}", value_label(y)))
                .legend(move |(x, y)| {
                    DashedPathElement::new(vec![(x, y), (x + 20, y)], 4, 3, color.stroke_width(2))
                });
        }
        for s in &panel.series {
            let color = s.color;
            chart
                .draw_series(std::iter::once(PathElement::new(
                    s.points.clone(),
                    color.stroke_width(2),
                )))
                .unwrap()
                .label(s.name.as_str())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(s.points.iter().map(|&(x, y)| {
                    EmptyElement::at((x, y))
                        + Circle::new((0, 0), 4, color.filled())
                        + Text::new(value_label(y), (6, -16), font(12.0).color(&color))
                }))
                .unwrap();
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font(font(13.0))
            .draw()
            .unwrap();
    }
    root.present().unwrap();
}
