//! `load.svg`: one bar per row, req/s with the p99 beside it, the machine in the subtitle.

use std::path::Path;

use crate::report::{fmt_int, is_reference, Row};

pub fn chart(path: &Path, rows: &[Row], machine: &[(String, String)]) {
    use plotters::prelude::*;
    use plotters::style::text_anchor::{HPos, Pos, VPos};

    let measured: Vec<&Row> = rows.iter().filter(|r| r.stats.is_some()).collect();
    let skipped: Vec<&Row> = rows.iter().filter(|r| r.stats.is_none()).collect();
    let (w, left, bar_max) = (1060i32, 330i32, 460i32);
    let row_h = 40i32;
    let top = 70i32;
    let h = top + row_h * (measured.len() + skipped.len()) as i32 + 56;
    let root = SVGBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    root.fill(&WHITE).unwrap();
    let font = |size: f64| ("sans-serif", size).into_font();
    root.draw(&Text::new(
        "sessiongate load bench: requests per second (p99 latency)",
        (16, 24),
        font(22.0).style(FontStyle::Bold).color(&BLACK),
    ))
    .unwrap();
    let cpu = machine
        .iter()
        .find(|(k, _)| k == "CPU")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let load = machine
        .iter()
        .find(|(k, _)| k == "load")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    root.draw(&Text::new(
        format!("{cpu}; {load}"),
        (16, 46),
        font(14.0).color(&RGBColor(90, 90, 90)),
    ))
    .unwrap();
    let max = measured
        .iter()
        .filter_map(|r| r.rps())
        .fold(1.0f64, f64::max);
    let left_style = font(17.0)
        .color(&BLACK)
        .pos(Pos::new(HPos::Right, VPos::Center));
    let value_style = font(16.0)
        .color(&RGBColor(40, 40, 40))
        .pos(Pos::new(HPos::Left, VPos::Center));
    for (i, r) in measured.iter().enumerate() {
        let y = top + row_h * i as i32;
        let mid = y + row_h / 2;
        let rps = r.rps().unwrap();
        let len = ((rps / max) * bar_max as f64).round().max(1.0) as i32;
        let color = match r.key {
            "express" | "express-defaults" | "fa-express" => RGBColor(230, 140, 40),
            key if is_reference(key) => RGBColor(150, 150, 150),
            _ => RGBColor(40, 110, 200),
        };
        root.draw(&Text::new(
            r.label.to_string(),
            (left - 10, mid),
            left_style.clone(),
        ))
        .unwrap();
        root.draw(&Rectangle::new(
            [(left, y + 8), (left + len, y + row_h - 8)],
            color.filled(),
        ))
        .unwrap();
        root.draw(&Text::new(
            format!("{} req/s  ·  p99 {:.2} ms", fmt_int(rps), r.p99().unwrap()),
            (left + len + 8, mid),
            value_style.clone(),
        ))
        .unwrap();
    }
    for (j, r) in skipped.iter().enumerate() {
        let mid = top + row_h * (measured.len() + j) as i32 + row_h / 2;
        root.draw(&Text::new(
            r.label.to_string(),
            (left - 10, mid),
            left_style.clone(),
        ))
        .unwrap();
        root.draw(&Text::new(
            r.skipped.clone().unwrap_or_else(|| "not run".into()),
            (left + 8, mid),
            value_style.clone(),
        ))
        .unwrap();
    }
    root.draw(&PathElement::new(
        vec![
            (left, top),
            (left, top + row_h * (measured.len() + skipped.len()) as i32),
        ],
        BLACK.stroke_width(1),
    ))
    .unwrap();
    root.draw(&Text::new(
        "one worker per server, all processes on the same machine; bars are linear in req/s",
        (16, h - 24),
        font(14.0).color(&RGBColor(90, 90, 90)),
    ))
    .unwrap();
    root.present().unwrap();
}
