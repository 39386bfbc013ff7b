//! SVG plots of the results (plotters, SVG backend only): goodput vs RTT per loss rate and
//! protocol for `long-flow`, and every scenario's time series / per-flow points.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use plotters::prelude::*;

use crate::record::Record;
use crate::scenarios::Series;

/// One line (or point set) of a panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// Legend label.
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Caption.
    pub title: String,
    /// Lines.
    pub lines: Vec<Line>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn color_for(label: &str, idx: usize) -> RGBColor {
    // Protocols keep their colour across figures.
    if label.starts_with("mef") {
        COLORS[0]
    } else if label.starts_with("quinn-cubic") {
        COLORS[1]
    } else if label.starts_with("quinn-bbr") {
        COLORS[2]
    } else {
        COLORS[(idx + 3) % COLORS.len()]
    }
}

/// Draws panels side by side (up to 3 per row) into an SVG file.
pub fn draw(
    path: &Path,
    title: &str,
    panels: &[Panel],
    x_desc: &str,
    y_desc: &str,
    scatter: bool,
) -> anyhow::Result<()> {
    let cols = panels.len().clamp(1, 3);
    let rows = panels.len().div_ceil(cols).max(1);
    let root =
        SVGBackend::new(path, (480 * cols as u32, 360 * rows as u32 + 40)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(e)?;
    for (area, panel) in root.split_evenly((rows, cols)).iter().zip(panels) {
        let pts = panel.lines.iter().flat_map(|l| l.points.iter());
        let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
        for &(x, y) in pts {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if !x0.is_finite() {
            continue;
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        let y1 = if y1 > 0.0 { y1 * 1.08 } else { 1.0 };
        let mut chart = ChartBuilder::on(area)
            .caption(&panel.title, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(x0..x1, 0.0..y1)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc(y_desc)
            .draw()
            .map_err(e)?;
        for (i, line) in panel.lines.iter().enumerate() {
            let c = color_for(&line.label, i);
            let drawn = if scatter {
                chart.draw_series(line.points.iter().map(|&p| Circle::new(p, 3, c.filled())))
            } else {
                chart.draw_series(LineSeries::new(
                    line.points.iter().copied(),
                    c.stroke_width(2),
                ))
            }
            .map_err(e)?;
            drawn.label(line.label.clone()).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2))
            });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
    }
    root.present().map_err(e)?;
    Ok(())
}

/// One panel of a [`bar_chart`]: labelled vertical bars, optionally with a target drawn as a
/// red horizontal line.
#[derive(Debug, Clone, PartialEq)]
pub struct BarPanel {
    /// Caption.
    pub title: String,
    /// Y axis description (the unit).
    pub y_desc: String,
    /// Bars left to right: label and value.
    pub bars: Vec<(String, f64)>,
    /// A target value and its legend label (e.g. `("target >= 200", 200.0)`).
    pub target: Option<(String, f64)>,
}

/// A bar's value as printed above it: three significant figures or so.
fn bar_value_label(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "n/a".to_owned()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Draws bar chart panels side by side into an SVG file (`title` above them all, if not
/// empty). Each bar carries its value; non-finite values are drawn as zero.
pub fn bar_chart(path: &Path, title: &str, panels: &[BarPanel]) -> anyhow::Result<()> {
    // Each panel as wide as its bars need.
    let widths: Vec<u32> = panels
        .iter()
        .map(|p| (140 + 110 * p.bars.len()).clamp(480, 900) as u32)
        .collect();
    let width = widths.iter().sum::<u32>().max(480);
    let height = if title.is_empty() { 420 } else { 460 };
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<std::io::Error>| anyhow!("plotting {}: {e}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let root = if title.is_empty() {
        root
    } else {
        root.titled(title, ("sans-serif", 20)).map_err(e)?
    };
    let breaks: Vec<i32> = widths
        .iter()
        .take(widths.len().saturating_sub(1))
        .scan(0i32, |acc, w| {
            *acc += *w as i32;
            Some(*acc)
        })
        .collect();
    let areas = root.split_by_breakpoints(breaks, Vec::<i32>::new());
    for (area, p) in areas.iter().zip(panels) {
        let value = |v: f64| if v.is_finite() { v.max(0.0) } else { 0.0 };
        let top = p
            .bars
            .iter()
            .map(|b| value(b.1))
            .chain(p.target.as_ref().map(|t| value(t.1)))
            .fold(0.0f64, f64::max);
        let top = if top > 0.0 { top * 1.15 } else { 1.0 };
        let k = p.bars.len().max(1) as u32;
        let mut chart = ChartBuilder::on(area)
            .caption(&p.title, ("sans-serif", 16))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(70)
            .build_cartesian_2d((0..k).into_segmented(), 0.0..top)
            .map_err(e)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(k as usize)
            .x_label_formatter(&|x| match x {
                SegmentValue::CenterOf(i) => p
                    .bars
                    .get(*i as usize)
                    .map_or(String::new(), |b| b.0.clone()),
                _ => String::new(),
            })
            .y_desc(p.y_desc.as_str())
            .draw()
            .map_err(e)?;
        chart
            .draw_series(p.bars.iter().enumerate().map(|(i, b)| {
                let i = i as u32;
                let mut r = Rectangle::new(
                    [
                        (SegmentValue::Exact(i), 0.0),
                        (SegmentValue::Exact(i + 1), value(b.1)),
                    ],
                    COLORS[1].mix(0.6).filled(),
                );
                r.set_margin(0, 0, 12, 12);
                r
            }))
            .map_err(e)?;
        chart
            .draw_series(p.bars.iter().enumerate().map(|(i, b)| {
                Text::new(
                    bar_value_label(b.1),
                    (SegmentValue::CenterOf(i as u32), value(b.1) + top * 0.02),
                    ("sans-serif", 13).into_font(),
                )
            }))
            .map_err(e)?;
        if let Some((label, t)) = &p.target {
            let t = value(*t);
            chart
                .draw_series(LineSeries::new(
                    [(SegmentValue::Exact(0), t), (SegmentValue::Exact(k), t)],
                    COLORS[0].stroke_width(2),
                ))
                .map_err(e)?
                .label(label.clone())
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 16, y)], COLORS[0].stroke_width(2))
                });
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Goodput vs RTT, one panel per loss rate, one line per protocol.
pub fn long_flow_panels(records: &[Record]) -> Vec<Panel> {
    let mut by_loss: BTreeMap<u64, BTreeMap<String, Vec<(f64, f64)>>> = BTreeMap::new();
    for r in records.iter().filter(|r| r.scenario == "long-flow") {
        let key = (r.loss * 1e6).round() as u64;
        by_loss
            .entry(key)
            .or_default()
            .entry(r.protocol.clone())
            .or_default()
            .push((r.rtt_ms, r.goodput_mbps));
    }
    by_loss
        .into_iter()
        .map(|(loss, protos)| Panel {
            title: format!("loss {}%", loss as f64 / 1e4),
            lines: protos
                .into_iter()
                .map(|(label, mut points)| {
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Line { label, points }
                })
                .collect(),
        })
        .collect()
}

/// Series of one scenario grouped into panels by cell, lines by protocol and label.
pub fn series_panels(series: &[Series], scenario: &str) -> Vec<Panel> {
    let mut by_cell: BTreeMap<String, Vec<Line>> = BTreeMap::new();
    for s in series.iter().filter(|s| s.scenario == scenario) {
        let label = if s.label.is_empty() {
            s.protocol.clone()
        } else {
            format!("{} {}", s.protocol, s.label)
        };
        by_cell.entry(s.cell.clone()).or_default().push(Line {
            label,
            points: s.points.clone(),
        });
    }
    by_cell
        .into_iter()
        .map(|(title, lines)| Panel { title, lines })
        .collect()
}

/// Axis descriptions and drawing style of each scenario's series.
fn series_style(scenario: &str) -> (&'static str, &'static str, bool) {
    match scenario {
        "fairness-rtt" => ("RTT (ms)", "goodput (Mbit/s)", true),
        "short-flows" => ("flow size (packets)", "FCT / PS ideal", true),
        "parking-lot" | "coexistence" | "cheater" | "fairness" => {
            ("flow", "share of fair rate", true)
        }
        _ => ("time (s)", "goodput (Mbit/s)", false),
    }
}

/// Writes every plot the data allows into `dir`; returns the files written.
pub fn write_all(
    dir: &Path,
    records: &[Record],
    series: &[Series],
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let panels = long_flow_panels(records);
    if !panels.is_empty() {
        let p = dir.join("long-flow.svg");
        draw(
            &p,
            "long flow: goodput vs RTT",
            &panels,
            "RTT (ms)",
            "goodput (Mbit/s)",
            false,
        )?;
        written.push(p);
    }
    let mut scenarios: Vec<&str> = series.iter().map(|s| s.scenario.as_str()).collect();
    scenarios.sort_unstable();
    scenarios.dedup();
    for sc in scenarios {
        let panels = series_panels(series, sc);
        let (x, y, scatter) = series_style(sc);
        let p = dir.join(format!("{sc}.svg"));
        draw(&p, sc, &panels, x, y, scatter)?;
        written.push(p);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_bar_chart_svg() {
        let dir = std::env::temp_dir().join(format!("mef-bench-bars-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let p = dir.join("bars.svg");
        let panels = [
            BarPanel {
                title: "rates".into(),
                y_desc: "MB/s".into(),
                bars: vec![("sha2-256".into(), 900.0), ("import".into(), 450.4)],
                target: Some(("target >= 200".into(), 200.0)),
            },
            BarPanel {
                title: "times".into(),
                y_desc: "s".into(),
                bars: vec![("p2p".into(), 3.5), ("baseline".into(), f64::NAN)],
                target: None,
            },
        ];
        bar_chart(&p, "title", &panels).expect("bar chart");
        let svg = std::fs::read_to_string(&p).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("sha2-256") && svg.contains("baseline"));
        let texts: Vec<&str> = svg.lines().map(str::trim).collect();
        assert!(svg.contains("target") && texts.contains(&"450"), "{svg}");
        assert!(texts.contains(&"n/a"), "{svg}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_long_flow_svg() {
        let dir = std::env::temp_dir().join(format!("mef-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("tmp dir");
        let mut recs = Vec::new();
        for (proto, g) in [("mef", 90.0), ("quinn-cubic", 40.0)] {
            for rtt in [50.0, 200.0] {
                let mut r = Record::new("long-flow", proto, 1, true);
                r.rtt_ms = rtt;
                r.goodput_mbps = g / (rtt / 50.0);
                recs.push(r);
            }
        }
        let files = write_all(&dir, &recs, &[]).expect("plots");
        assert_eq!(files.len(), 1);
        let svg = std::fs::read_to_string(&files[0]).expect("svg");
        assert!(svg.contains("<svg") && svg.contains("quinn-cubic"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
