//! The chart of duration and cost per agent, grouped by tier: two bar panels sharing one
//! x axis, a column group per tier (synthesizers per level), failed steps in red. Drawn
//! as SVG by hand (a few hundred lines of markup need no plotting library); the DOCX gets
//! it as a PNG rasterized with resvg.
//!
//! Past [`MAX_BARS`] agents, each bar stands for a run of consecutive agents of its tier
//! and shows the largest of them, so the chart has the same size for 100 or 100,000
//! agents.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};

use belt_core::{AgentRecord, AgentStatus};

use crate::model::Group;

/// At most this many bars per panel.
pub const MAX_BARS: usize = 320;

/// Font stacks: a browser picks the system's sans serif; typst and resvg have the fonts of
/// typst-assets.
pub const SANS: &str = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif";
pub const EMBEDDED: &str = "Libertinus Serif";

/// Colours by [`Group::color`]; failures are [`FAILED`].
pub const PALETTE: [&str; 7] = ["#8a94a6", "#3b75af", "#2a9d8f", "#57a773", "#8ab17d", "#d08c2f", "#7b6d8d"];
pub const FAILED: &str = "#c8553d";

const WIDTH: f64 = 760.0;
const LEFT: f64 = 62.0;
const RIGHT: f64 = 14.0;
const PANEL_H: f64 = 120.0;
const GAP: f64 = 10.0;
const FONT: f64 = 12.0;

/// The chart as a standalone SVG document.
pub fn svg(groups: &[Group<'_>], font: &str) -> String {
    let plot_w = WIDTH - LEFT - RIGHT;
    let total: usize = groups.iter().map(|g| g.agents.len()).sum();
    let per_bar = total.div_ceil(MAX_BARS).max(1);
    let slots: Vec<usize> = groups.iter().map(|g| g.agents.len().div_ceil(per_bar)).collect();
    let widths = group_widths(&slots, plot_w - GAP * groups.len().saturating_sub(1) as f64);

    let dur_max = nice(
        groups.iter().flat_map(|g| &g.agents).map(|a| a.outcome.duration_ms).max().unwrap_or(0) as f64
            / 1000.0,
    );
    let cost_max =
        nice(groups.iter().flat_map(|g| &g.agents).map(|a| a.outcome.cost_usd).fold(0.0, f64::max));

    // Layout, top to bottom.
    let p1 = 30.0;
    let p2 = p1 + PANEL_H + 44.0;
    let labels_y = p2 + PANEL_H + 16.0;
    let legend = legend_rows(groups, plot_w);
    let legend_y = labels_y + 18.0;
    let height = legend_y + legend.len() as f64 * 18.0 + 6.0;

    let mut s = String::with_capacity(8192 + total * 16);
    let _ = write!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0}" width="{WIDTH}" height="{height:.0}" role="img" aria-labelledby="belt-chart-title" font-family="{}" font-size="{FONT}">"##,
        xml(font)
    );
    s.push_str(r##"<title id="belt-chart-title">Duration and cost per agent, grouped by tier</title>"##);
    let _ = write!(s, r##"<rect width="{WIDTH}" height="{height:.0}" fill="#ffffff"/>"##);

    let panels = [
        (p1, "Duration per agent (seconds)", dur_max, Metric::Duration),
        (p2, "Cost per agent (US dollars)", cost_max, Metric::Cost),
    ];
    for (top, label, max, metric) in panels {
        let bottom = top + PANEL_H;
        let _ = write!(
            s,
            r##"<text x="{LEFT}" y="{:.1}" font-weight="bold" fill="#2d3748">{label}</text>"##,
            top - 12.0
        );
        if max <= 0.0 {
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{bottom}" x2="{:.1}" y2="{bottom}" stroke="#a0aec0" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#718096">none recorded</text>"##,
                LEFT + plot_w,
                LEFT + plot_w / 2.0,
                top + PANEL_H / 2.0
            );
            continue;
        }
        // Grid and y labels.
        let (step, n) = ticks(max);
        for i in 0..=n {
            let v = step * i as f64;
            let y = bottom - v / max * PANEL_H;
            let stroke = if i == 0 { "#a0aec0" } else { "#e2e8f0" };
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="{stroke}" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" fill="#4a5568">{}</text>"##,
                LEFT + plot_w,
                LEFT - 6.0,
                y + 3.5,
                metric.label(v, step)
            );
        }
        // Bars: one path per group and colour keeps the file small.
        let mut x = LEFT;
        for (g, (&w, &n)) in groups.iter().zip(widths.iter().zip(&slots)) {
            let slot = w / n.max(1) as f64;
            let bar = if slot >= 4.0 { slot * 0.78 } else { slot };
            let (mut ok, mut bad) = (String::new(), String::new());
            for (i, chunk) in g.agents.chunks(per_bar).enumerate() {
                let v = chunk.iter().map(|a| metric.value(a)).fold(0.0, f64::max);
                let failed = chunk.iter().any(|a| a.status.is_failure());
                let h = (v / max * PANEL_H).max(if v > 0.0 { 0.8 } else { 0.0 });
                if h <= 0.0 {
                    continue;
                }
                let bx = x + i as f64 * slot + (slot - bar) / 2.0;
                let path = if failed { &mut bad } else { &mut ok };
                let _ = write!(path, "M{bx:.1} {bottom:.1}v-{h:.1}h{bar:.2}v{h:.1}z");
            }
            for (d, fill) in [(ok, PALETTE[g.color % PALETTE.len()]), (bad, FAILED)] {
                if !d.is_empty() {
                    let _ = write!(s, r##"<path d="{d}" fill="{fill}"/>"##);
                }
            }
            x += w + GAP;
        }
    }

    // Group names under the lower panel where they fit.
    let mut x = LEFT;
    for (g, &w) in groups.iter().zip(&widths) {
        let text = format!("{} ({})", g.name, g.agents.len());
        if text_width(&text) <= w + GAP {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{labels_y:.1}" text-anchor="middle" fill="#4a5568">{}</text>"##,
                x + w / 2.0,
                xml(&text)
            );
        }
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#4a5568" stroke-width="1.2"/>"##,
            p2 + PANEL_H + 3.0,
            x + w,
            p2 + PANEL_H + 3.0
        );
        x += w + GAP;
    }

    // Legend.
    for (row, items) in legend.iter().enumerate() {
        let y = legend_y + row as f64 * 18.0;
        let mut x = LEFT;
        for (text, fill) in items {
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{:.1}" width="10" height="10" rx="2" fill="{fill}"/><text x="{:.1}" y="{y:.1}" fill="#2d3748">{}</text>"##,
                y - 9.0,
                x + 14.0,
                xml(text)
            );
            x += 14.0 + text_width(text) + 18.0;
        }
    }
    if per_bar > 1 {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#718096">each bar: the largest of up to {per_bar} consecutive agents</text>"##,
            LEFT + plot_w,
            p1 - 12.0
        );
    }
    // An unpriced agent's bar stands at $0: say that its cost is unknown, not nothing.
    let unpriced = groups.iter().flat_map(|g| &g.agents).filter(|a| a.outcome.unpriced).count();
    if unpriced > 0 {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="end" fill="#718096">cost unknown for {} (no price known): drawn at 0</text>"##,
            LEFT + plot_w,
            p2 - 12.0,
            crate::words::count(unpriced as u64, "agent")
        );
    }
    s.push_str("</svg>");
    s
}

#[derive(Clone, Copy)]
enum Metric {
    Duration,
    Cost,
}

impl Metric {
    fn value(self, a: &AgentRecord) -> f64 {
        match self {
            Metric::Duration => a.outcome.duration_ms as f64 / 1000.0,
            Metric::Cost => a.outcome.cost_usd,
        }
    }
    fn label(self, v: f64, step: f64) -> String {
        // As many decimals as the step needs to be exact.
        let decimals = (0..=6)
            .find(|&d| {
                let x = step * 10f64.powi(d);
                (x - x.round()).abs() < 1e-6 * x.max(1.0)
            })
            .unwrap_or(6) as usize;
        match self {
            Metric::Duration => format!("{v:.decimals$}"),
            Metric::Cost => format!("${v:.decimals$}"),
        }
    }
}

/// The legend's items in rows that fit the width: (text, colour).
fn legend_rows(groups: &[Group<'_>], width: f64) -> Vec<Vec<(String, &'static str)>> {
    let mut items: Vec<(String, &'static str)> = groups
        .iter()
        .map(|g| (format!("{} ({})", g.name, g.agents.len()), PALETTE[g.color % PALETTE.len()]))
        .collect();
    if groups.iter().any(|g| g.count(AgentStatus::Failed) > 0) {
        items.push(("failed".to_string(), FAILED));
    }
    let mut rows: Vec<Vec<(String, &'static str)>> = vec![Vec::new()];
    let mut used = 0.0;
    for item in items {
        let w = 14.0 + text_width(&item.0) + 18.0;
        if used + w > width && !rows.last().is_some_and(Vec::is_empty) {
            rows.push(Vec::new());
            used = 0.0;
        }
        used += w;
        if let Some(r) = rows.last_mut() {
            r.push(item);
        }
    }
    rows
}

/// Widths of the column groups: proportional to their bars, at least 8 px each.
fn group_widths(slots: &[usize], available: f64) -> Vec<f64> {
    const MIN: f64 = 8.0;
    let mut fixed = vec![false; slots.len()];
    loop {
        let fixed_w: f64 = fixed.iter().filter(|f| **f).count() as f64 * MIN;
        let free: usize = slots.iter().zip(&fixed).filter(|(_, f)| !**f).map(|(s, _)| *s).sum();
        let unit = if free == 0 { 0.0 } else { ((available - fixed_w) / free as f64).max(0.0) };
        let mut changed = false;
        for (i, &s) in slots.iter().enumerate() {
            if !fixed[i] && s as f64 * unit < MIN {
                fixed[i] = true;
                changed = true;
            }
        }
        if !changed {
            return slots.iter().zip(&fixed).map(|(&s, &f)| if f { MIN } else { s as f64 * unit }).collect();
        }
    }
}

/// The smallest of 1, 2, 2.5, 5 × 10^k at or above `v` (0 for nothing to show).
fn nice(v: f64) -> f64 {
    if !(v > 0.0 && v.is_finite()) {
        return 0.0;
    }
    let exp = 10f64.powf(v.log10().floor());
    let f = v / exp;
    let m = [1.0, 2.0, 2.5, 5.0, 10.0].into_iter().find(|m| f <= *m + 1e-9).unwrap_or(10.0);
    m * exp
}

/// Tick step and count for an axis from 0 to `max` (a [`nice`] value).
fn ticks(max: f64) -> (f64, usize) {
    let exp = 10f64.powf(max.log10().floor());
    let m = (max / exp * 10.0).round() / 10.0;
    let n = if (m - 2.0).abs() < 1e-9 { 4 } else { 5 };
    (max / n as f64, n)
}

/// Rough width of `text` at the chart's font size.
fn text_width(text: &str) -> f64 {
    text.chars().count() as f64 * FONT * 0.56
}

fn xml(s: &str) -> String {
    crate::html::escape(s)
}

/// The chart rasterized at `scale` × its size, as PNG, with its pixel size.
pub fn png(svg: &str, scale: f32) -> Result<(Vec<u8>, u32, u32), String> {
    use resvg::{tiny_skia, usvg};
    static FONTS: OnceLock<Arc<usvg::fontdb::Database>> = OnceLock::new();
    let fontdb = FONTS
        .get_or_init(|| {
            let mut db = usvg::fontdb::Database::new();
            for font in typst_assets::fonts() {
                db.load_font_data(font.to_vec());
            }
            db.set_serif_family(EMBEDDED);
            db.set_sans_serif_family(EMBEDDED);
            Arc::new(db)
        })
        .clone();
    let options = usvg::Options { fontdb, font_family: EMBEDDED.to_string(), ..Default::default() };
    let tree = usvg::Tree::from_str(svg, &options).map_err(|e| format!("the chart is not valid SVG: {e}"))?;
    let size = tree.size().to_int_size().scale_by(scale).ok_or("the chart has no size")?;
    let mut pixmap =
        tiny_skia::Pixmap::new(size.width(), size.height()).ok_or("the chart is too large to rasterize")?;
    resvg::render(&tree, tiny_skia::Transform::from_scale(scale, scale), &mut pixmap.as_mut());
    let png = pixmap.encode_png().map_err(|e| format!("encoding the chart as PNG failed: {e}"))?;
    Ok((png, size.width(), size.height()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_numbers_and_ticks() {
        assert_eq!(nice(0.0), 0.0);
        assert_eq!(nice(0.73), 1.0);
        assert_eq!(nice(1.2), 2.0);
        assert_eq!(nice(2.2), 2.5);
        assert_eq!(nice(3.0), 5.0);
        assert_eq!(nice(0.0031), 0.005);
        assert_eq!(ticks(2.0), (0.5, 4));
        assert_eq!(ticks(2.5), (0.5, 5));
        assert_eq!(ticks(5.0), (1.0, 5));
        assert_eq!(Metric::Cost.label(0.0025, 0.0005), "$0.0025");
        assert_eq!(Metric::Duration.label(1.5, 0.5), "1.5");
        assert_eq!(Metric::Duration.label(2.0, 1.0), "2");
        assert_eq!(Metric::Cost.label(0.00125, 0.00025), "$0.00125");
    }

    #[test]
    fn small_groups_keep_a_minimum_width() {
        let w = group_widths(&[1, 300, 60, 12, 1], 600.0);
        assert!(w[0] >= 8.0 && w[4] >= 8.0);
        assert!((w.iter().sum::<f64>() - 600.0).abs() < 1e-6, "{w:?}");
    }
}
