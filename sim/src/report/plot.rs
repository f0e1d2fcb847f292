//! SVG charts (plotters, SVG backend only): line charts (optionally with a log x axis)
//! and stacked bar charts. Text is written as SVG `<text>` elements, so no font files
//! are needed, and the same data always gives the same bytes.

use std::ops::Range;

use plotters::prelude::*;

/// Width and height of every chart, in SVG pixels.
pub const SIZE: (u32, u32) = (960, 480);

/// One line of a line chart.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn thin and pale (e.g. maxima next to means, or a reference line).
    pub secondary: bool,
    /// Palette index of the colour (default: the series' position).
    pub color: Option<usize>,
}

impl Series {
    pub fn new(name: impl Into<String>, points: Vec<(f64, f64)>) -> Series {
        Series {
            name: name.into(),
            points,
            secondary: false,
            color: None,
        }
    }

    pub fn color(mut self, index: usize) -> Series {
        self.color = Some(index);
        self
    }

    pub fn secondary(mut self) -> Series {
        self.secondary = true;
        self
    }
}

/// A line chart: title and axis labels (with units) and its series.
#[derive(Debug, Clone, PartialEq)]
pub struct LineChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Logarithmic x axis (only positive x values are drawn).
    pub log_x: bool,
    /// The y axis includes 0.
    pub y_from_zero: bool,
}

/// A stacked bar chart: one bar per category, one stacked segment per series.
#[derive(Debug, Clone, PartialEq)]
pub struct BarChart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub categories: Vec<String>,
    /// (series name, one value per category).
    pub series: Vec<(String, Vec<f64>)>,
}

/// The i-th series colour: a fixed, colour-blind friendly palette (Okabe-Ito), then
/// plotters' 99-colour palette.
pub fn color(i: usize) -> RGBColor {
    const BASE: [(u8, u8, u8); 8] = [
        (0, 114, 178),
        (213, 94, 0),
        (0, 158, 115),
        (204, 121, 167),
        (230, 159, 0),
        (86, 180, 233),
        (120, 120, 120),
        (240, 228, 66),
    ];
    match BASE.get(i) {
        Some(&(r, g, b)) => RGBColor(r, g, b),
        None => {
            let c = Palette99::pick(i - BASE.len()).to_rgba();
            RGBColor(c.0, c.1, c.2)
        }
    }
}

fn padded(lo: f64, hi: f64) -> Range<f64> {
    if !lo.is_finite() || !hi.is_finite() {
        return 0.0..1.0;
    }
    if hi - lo < 1e-9 {
        let pad = if lo.abs() < 1e-9 { 1.0 } else { lo.abs() * 0.1 };
        return (lo - pad)..(hi + pad);
    }
    lo..(hi + (hi - lo) * 0.05)
}

/// An axis tick: at most 3 significant digits, no trailing zeros.
fn tick(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return "0".to_string();
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    let text = format!("{v:.digits$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// Draw into an SVG document of `SIZE`.
fn render_svg(draw: impl FnOnce(&Area<'_>) -> Result<(), String>) -> String {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        draw(&root).expect("drawing into a string cannot fail");
        root.present().expect("drawing into a string cannot fail");
    }
    svg
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl LineChart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        render_svg(|root| self.draw(root))
    }

    fn visible(&self) -> impl Iterator<Item = &(f64, f64)> {
        self.series
            .iter()
            .flat_map(|s| &s.points)
            .filter(|(x, y)| x.is_finite() && y.is_finite() && (!self.log_x || *x > 0.0))
    }

    fn draw(&self, root: &Area<'_>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let (mut x_lo, mut x_hi, mut y_lo, mut y_hi) =
            (f64::INFINITY, f64::NEG_INFINITY, f64::INFINITY, f64::NEG_INFINITY);
        for &(x, y) in self.visible() {
            x_lo = x_lo.min(x);
            x_hi = x_hi.max(x);
            y_lo = y_lo.min(y);
            y_hi = y_hi.max(y);
        }
        if self.y_from_zero {
            y_lo = y_lo.min(0.0);
        }
        if !y_lo.is_finite() {
            (y_lo, y_hi) = (0.0, 1.0);
        }
        let y = padded(y_lo, y_hi);
        let y = if self.y_from_zero && y_lo >= 0.0 { 0.0..y.end } else { y };
        let x = if self.log_x {
            if !x_lo.is_finite() {
                (x_lo, x_hi) = (1.0, 10.0);
            }
            // Whole decades at both ends, at least one.
            let lo = x_lo.log10().floor();
            let hi = x_hi.log10().ceil().max(lo + 1.0);
            lo..hi
        } else {
            padded(x_lo, x_hi)
        };
        self.draw_in(root, x, y)
    }

    fn draw_in(
        &self,
        root: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
        x: Range<f64>,
        y: Range<f64>,
    ) -> Result<(), String> {
        let log_x = self.log_x;
        let x_tick = move |v: &f64| tick(if log_x { 10f64.powf(*v) } else { *v });
        // On a log axis spanning 3 decades or more, one tick per decade.
        let decades = (x.end - x.start).round() as usize;
        let x_labels = if log_x && decades >= 3 { decades + 1 } else { 10 };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(x, y)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_labels(x_labels)
            .x_label_formatter(&x_tick)
            .y_label_formatter(&|v| tick(*v))
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        for (i, series) in self.series.iter().enumerate() {
            let c = color(series.color.unwrap_or(i));
            let points: Vec<(f64, f64)> = series
                .points
                .iter()
                .copied()
                .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_x || *x > 0.0))
                .map(|(x, y)| (if log_x { x.log10() } else { x }, y))
                .collect();
            let style = ShapeStyle {
                color: if series.secondary { c.mix(0.55) } else { c.to_rgba() },
                filled: false,
                stroke_width: if series.secondary { 1 } else { 2 },
            };
            let drawn = chart.draw_series(LineSeries::new(points, style)).map_err(err)?;
            drawn
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
        if !self.series.is_empty() {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    }
}

impl BarChart {
    /// The chart as an SVG document.
    pub fn to_svg(&self) -> String {
        render_svg(|root| self.draw(root))
    }

    fn draw(&self, root: &Area<'_>) -> Result<(), String> {
        root.fill(&WHITE).map_err(err)?;
        let n = self.categories.len().max(1);
        let total = |c: usize| -> f64 {
            self.series
                .iter()
                .map(|(_, v)| v.get(c).copied().unwrap_or(0.0).max(0.0))
                .sum()
        };
        let top = (0..n).map(total).fold(0.0, f64::max);
        let top = if top > 0.0 { top * 1.1 } else { 1.0 };
        let categories = &self.categories;
        let label = |x: &SegmentValue<usize>| match x {
            SegmentValue::CenterOf(i) => categories.get(*i).cloned().unwrap_or_default(),
            _ => String::new(),
        };
        let mut chart = ChartBuilder::on(root)
            .caption(&self.title, ("sans-serif", 22))
            .margin(12)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d((0usize..n - 1).into_segmented(), 0.0..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(&self.x_label)
            .y_desc(&self.y_label)
            .x_labels(n)
            .x_label_formatter(&label)
            .disable_x_mesh()
            .light_line_style(WHITE.mix(0.0))
            .draw()
            .map_err(err)?;
        let mut base = vec![0.0; n];
        for (s, (name, values)) in self.series.iter().enumerate() {
            let c = color(s);
            let mut bars = Vec::new();
            for (i, base) in base.iter_mut().enumerate() {
                let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
                if v > 0.0 {
                    let mut bar = Rectangle::new(
                        [(SegmentValue::Exact(i), *base), (SegmentValue::Exact(i + 1), *base + v)],
                        c.filled(),
                    );
                    bar.set_margin(0, 0, 12, 12);
                    bars.push(bar);
                }
                *base += v;
            }
            let drawn = chart.draw_series(bars).map_err(err)?;
            if self.series.len() > 1 {
                drawn
                    .label(name)
                    .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            }
        }
        if self.series.len() > 1 {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .draw()
                .map_err(err)?;
        }
        Ok(())
    }
}

/// The structure of an SVG chart, for tests and snapshots: its text elements (title,
/// axis labels, legend) and how many data lines (coloured polylines: one per series in
/// the plot plus one per legend entry; axes and ticks are black) and rectangles it draws.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SvgStructure {
    pub title: String,
    pub series_lines: usize,
    pub rects: usize,
    pub texts: Vec<String>,
}

/// Reads the structure of an SVG document written by this module.
pub fn svg_structure(svg: &str) -> SvgStructure {
    let mut texts = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find("<text") {
        let after = &rest[start..];
        let Some(open_end) = after.find('>') else { break };
        let body = &after[open_end + 1..];
        let Some(close) = body.find("</text>") else { break };
        texts.push(unescape(body[..close].trim()));
        rest = &body[close..];
    }
    SvgStructure {
        title: texts.first().cloned().unwrap_or_default(),
        series_lines: svg
            .split("<polyline")
            .skip(1)
            .filter(|p| !p.split('>').next().unwrap_or("").contains("stroke=\"#000000\""))
            .count(),
        rects: svg.matches("<rect").count(),
        texts,
    }
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
