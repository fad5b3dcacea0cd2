//! A self-contained HTML dashboard: KPI tiles and inline SVG charts, no script, no network.
//!
//! Values arrive already aggregated (the warehouse computes them exactly, in DECIMAL); here they
//! only become geometry, so `f64` is fine.

use std::fmt::Write as _;

/// How a chart draws its series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChartKind {
    /// Vertical bars, one group per category, one bar per series.
    Bars,
    /// Horizontal bars (one series), for ranked lists.
    HBars,
    /// Lines over ordered categories (e.g. days).
    Lines,
    /// A donut of one series' shares.
    Donut,
}

#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub values: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct Chart {
    /// Stable identifier (`data-chart` attribute), used by tests and links.
    pub id: &'static str,
    pub title: String,
    pub subtitle: String,
    pub kind: ChartKind,
    pub categories: Vec<String>,
    pub series: Vec<Series>,
    /// Unit shown after values (`kWh`, `COP`, `rows`…).
    pub unit: String,
}

#[derive(Debug, Clone)]
pub struct Kpi {
    pub label: String,
    pub value: String,
    pub note: String,
}

#[derive(Debug, Clone)]
pub struct Dashboard {
    pub title: String,
    pub subtitle: String,
    pub kpis: Vec<Kpi>,
    pub charts: Vec<Chart>,
}

const PALETTE: [&str; 8] = [
    "#2563eb", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#06b6d4", "#84cc16", "#f97316",
];

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1234567.8` → `1.2 M`; small values keep two decimals.
pub fn compact(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1} B", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1} M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1} k", v / 1e3)
    } else if a >= 100.0 || v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

const W: f64 = 560.0;
const H: f64 = 280.0;

fn nice_max(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(v.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if m * mag >= v {
            return m * mag;
        }
    }
    10.0 * mag
}

fn svg_open(c: &Chart, h: f64) -> String {
    format!(
        r#"<svg viewBox="0 0 {W} {h}" role="img" aria-label="{}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(&c.title)
    )
}

fn legend(c: &Chart) -> String {
    if c.series.len() < 2 {
        return String::new();
    }
    let mut s = String::from(r#"<div class="legend">"#);
    for (i, se) in c.series.iter().enumerate() {
        let _ = write!(
            s,
            r#"<span><i style="background:{}"></i>{}</span>"#,
            PALETTE[i % PALETTE.len()],
            esc(&se.name)
        );
    }
    s.push_str("</div>");
    s
}

/// Four gridlines from `min` (0 but for lines) to `max`.
fn axis(s: &mut String, min: f64, max: f64, left: f64, top: f64, bottom: f64, unit: &str) {
    for k in 0..=4 {
        let v = min + (max - min) * f64::from(k) / 4.0;
        let y = bottom - (bottom - top) * f64::from(k) / 4.0;
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{W}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e7eb"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
            left - 6.0,
            y + 4.0,
            esc(&compact(v))
        );
    }
    let _ = write!(
        s,
        r#"<text x="4" y="{:.1}" class="unit">{}</text>"#,
        top - 8.0,
        esc(unit)
    );
}

fn bars(c: &Chart) -> String {
    let (left, top, bottom) = (64.0, 24.0, H - 44.0);
    let max = nice_max(
        c.series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let mut s = svg_open(c, H);
    axis(&mut s, 0.0, max, left, top, bottom, &c.unit);
    let n = c.categories.len().max(1) as f64;
    let group = (W - left - 8.0) / n;
    let k = c.series.len().max(1) as f64;
    let bw = (group * 0.8 / k).max(1.0);
    let every = c.categories.len().div_ceil(8).max(1);
    for (ci, cat) in c.categories.iter().enumerate() {
        let gx = left + group * ci as f64 + group * 0.1;
        for (si, se) in c.series.iter().enumerate() {
            let v = se.values.get(ci).copied().unwrap_or(0.0).max(0.0);
            let h = (bottom - top) * v / max;
            let _ = write!(
                s,
                r#"<rect x="{:.1}" y="{:.1}" width="{bw:.1}" height="{h:.1}" fill="{}"><title>{} · {}: {} {}</title></rect>"#,
                gx + bw * si as f64,
                bottom - h,
                PALETTE[si % PALETTE.len()],
                esc(cat),
                esc(&se.name),
                esc(&compact(v)),
                esc(&c.unit)
            );
        }
        // At most about eight labels fit under the axis; the bars keep their tooltips.
        if ci % every != 0 {
            continue;
        }
        let label: String = cat.chars().take(12).collect();
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="cat" text-anchor="middle">{}</text>"#,
            gx + group * 0.4,
            bottom + 16.0,
            esc(&label)
        );
    }
    s.push_str("</svg>");
    s
}

fn hbars(c: &Chart) -> String {
    let rows = c.categories.len().max(1);
    let row_h = 24.0;
    let h = 16.0 + row_h * rows as f64;
    let left = 170.0;
    let values = c
        .series
        .first()
        .map(|s| s.values.clone())
        .unwrap_or_default();
    let max = nice_max(values.iter().copied().fold(0.0, f64::max));
    let mut s = svg_open(c, h);
    for (i, cat) in c.categories.iter().enumerate() {
        let v = values.get(i).copied().unwrap_or(0.0).max(0.0);
        let y = 8.0 + row_h * i as f64;
        let w = (W - left - 80.0) * v / max;
        let label: String = cat.chars().take(26).collect();
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="cat" text-anchor="end">{}</text><rect x="{left}" y="{y:.1}" width="{w:.1}" height="{:.1}" fill="{}" rx="2"><title>{}: {} {}</title></rect><text x="{:.1}" y="{:.1}" class="val">{}</text>"#,
            left - 8.0,
            y + 15.0,
            esc(&label),
            row_h - 6.0,
            PALETTE[0],
            esc(cat),
            esc(&compact(v)),
            esc(&c.unit),
            left + w + 6.0,
            y + 15.0,
            esc(&compact(v))
        );
    }
    s.push_str("</svg>");
    s
}

/// The y range of a line chart: from 0, unless every value sits in the upper half of it (a rate
/// such as the TRM, 3,900–4,300 COP), where the line's shape is what there is to see.
fn line_range(c: &Chart) -> (f64, f64) {
    let values = || c.series.iter().flat_map(|s| s.values.iter().copied());
    let hi = values().fold(0.0, f64::max);
    let lo = values().fold(f64::INFINITY, f64::min);
    if !lo.is_finite() || lo <= hi / 2.0 || hi <= lo {
        return (0.0, nice_max(hi));
    }
    let step = 10f64.powf((hi - lo).log10().floor());
    let min = (lo / step).floor() * step;
    (min, min + nice_max(hi - min))
}

fn lines(c: &Chart) -> String {
    let (left, top, bottom) = (64.0, 24.0, H - 44.0);
    let (min, max) = line_range(c);
    let mut s = svg_open(c, H);
    axis(&mut s, min, max, left, top, bottom, &c.unit);
    let n = c.categories.len();
    let step = if n > 1 {
        (W - left - 16.0) / (n - 1) as f64
    } else {
        0.0
    };
    for (si, se) in c.series.iter().enumerate() {
        let pts: Vec<String> = se
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| {
                format!(
                    "{:.1},{:.1}",
                    left + step * i as f64,
                    bottom - (bottom - top) * (v.max(min) - min) / (max - min)
                )
            })
            .collect();
        let _ = write!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2"><title>{}</title></polyline>"#,
            pts.join(" "),
            PALETTE[si % PALETTE.len()],
            esc(&se.name)
        );
    }
    let every = (n / 6).max(1);
    for (i, cat) in c
        .categories
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
    {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" class="cat" text-anchor="middle">{}</text>"#,
            left + step * i as f64,
            bottom + 16.0,
            esc(cat)
        );
    }
    s.push_str("</svg>");
    s
}

fn donut(c: &Chart) -> String {
    let values = c
        .series
        .first()
        .map(|s| s.values.clone())
        .unwrap_or_default();
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let mut s = svg_open(c, H);
    let (cx, cy, r) = (140.0, H / 2.0, 100.0);
    let circ = 2.0 * std::f64::consts::PI * r;
    let mut offset = 0.0;
    let _ = write!(
        s,
        r##"<circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="#f3f4f6" stroke-width="42"/>"##
    );
    for (i, v) in values.iter().enumerate() {
        let share = if total > 0.0 { v.max(0.0) / total } else { 0.0 };
        let len = circ * share;
        let cat = c.categories.get(i).map(String::as_str).unwrap_or("");
        let _ = write!(
            s,
            r#"<circle cx="{cx}" cy="{cy}" r="{r}" fill="none" stroke="{}" stroke-width="42" stroke-dasharray="{len:.2} {:.2}" stroke-dashoffset="{:.2}" transform="rotate(-90 {cx} {cy})"><title>{}: {} ({:.1}%)</title></circle>"#,
            PALETTE[i % PALETTE.len()],
            circ - len,
            -offset,
            esc(cat),
            esc(&compact(*v)),
            share * 100.0
        );
        offset += len;
        let ly = 40.0 + 26.0 * i as f64;
        let _ = write!(
            s,
            r#"<rect x="290" y="{:.1}" width="14" height="14" fill="{}" rx="2"/><text x="312" y="{:.1}" class="cat">{} — {} ({:.1}%)</text>"#,
            ly - 11.0,
            PALETTE[i % PALETTE.len()],
            ly,
            esc(cat),
            esc(&compact(*v)),
            share * 100.0
        );
    }
    let _ = write!(
        s,
        r#"<text x="{cx}" y="{:.1}" class="center" text-anchor="middle">{}</text>"#,
        cy + 6.0,
        esc(&compact(total))
    );
    s.push_str("</svg>");
    s
}

fn chart_svg(c: &Chart) -> String {
    if c.categories.is_empty() || c.series.iter().all(|s| s.values.is_empty()) {
        return format!(
            r#"{}<text x="20" y="40" class="cat">no data</text></svg>"#,
            svg_open(c, 80.0)
        );
    }
    match c.kind {
        ChartKind::Bars => bars(c),
        ChartKind::HBars => hbars(c),
        ChartKind::Lines => lines(c),
        ChartKind::Donut => donut(c),
    }
}

const CSS: &str = r#"
*{box-sizing:border-box}body{margin:0;font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:#f8fafc;color:#0f172a}
header{padding:24px 32px;background:#0f172a;color:#f8fafc}header h1{margin:0 0 4px;font-size:24px}header p{margin:0;color:#cbd5e1}
.kpis{display:grid;grid-template-columns:repeat(auto-fit,minmax(180px,1fr));gap:12px;padding:20px 32px 0}
.kpi{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:14px 16px}.kpi b{display:block;font-size:22px;margin:4px 0}.kpi span{color:#64748b;font-size:13px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:16px;padding:20px 32px 32px}
.chart{background:#fff;border:1px solid #e2e8f0;border-radius:10px;padding:16px}.chart h2{font-size:16px;margin:0}.chart p{margin:2px 0 8px;color:#64748b;font-size:13px}
svg{width:100%;height:auto}.tick,.cat,.val,.unit{font-size:11px;fill:#475569}.center{font-size:18px;font-weight:600;fill:#0f172a}
.legend{display:flex;flex-wrap:wrap;gap:12px;font-size:12px;color:#475569;margin-top:6px}.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
footer{padding:0 32px 24px;color:#94a3b8;font-size:12px}
"#;

/// The whole page.
pub fn render(d: &Dashboard) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!doctype html>\n<html lang=\"es\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><title>{}</title><style>{CSS}</style></head><body>",
        esc(&d.title)
    );
    let _ = write!(
        s,
        "<header><h1>{}</h1><p>{}</p></header><section class=\"kpis\">",
        esc(&d.title),
        esc(&d.subtitle)
    );
    for k in &d.kpis {
        let _ = write!(
            s,
            "<div class=\"kpi\"><span>{}</span><b>{}</b><span>{}</span></div>",
            esc(&k.label),
            esc(&k.value),
            esc(&k.note)
        );
    }
    s.push_str("</section><main class=\"grid\">");
    for c in &d.charts {
        let _ = write!(
            s,
            "<section class=\"chart\" data-chart=\"{}\"><h2>{}</h2><p>{}</p>{}{}</section>",
            esc(c.id),
            esc(&c.title),
            esc(&c.subtitle),
            chart_svg(c),
            legend(c)
        );
    }
    s.push_str("</main><footer>Generated by lago from the local warehouse. Self-contained: no scripts, no network.</footer></body></html>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(kind: ChartKind) -> Chart {
        Chart {
            id: "c1",
            title: "Energía <comprada>".into(),
            subtitle: "por tipo".into(),
            kind,
            categories: vec!["solar".into(), "eólica".into()],
            series: vec![
                Series {
                    name: "compra".into(),
                    values: vec![10.0, 20.0],
                },
                Series {
                    name: "venta".into(),
                    values: vec![5.0, 0.0],
                },
            ],
            unit: "kWh".into(),
        }
    }

    #[test]
    fn every_chart_kind_renders_escaped_svg_with_its_id() {
        for kind in [
            ChartKind::Bars,
            ChartKind::HBars,
            ChartKind::Lines,
            ChartKind::Donut,
        ] {
            let d = Dashboard {
                title: "t".into(),
                subtitle: "s".into(),
                kpis: vec![],
                charts: vec![chart(kind)],
            };
            let html = render(&d);
            assert!(html.contains(r#"data-chart="c1""#));
            assert!(html.contains("<svg"));
            assert!(html.contains("Energía &lt;comprada&gt;"));
            assert!(!html.contains("<comprada>"));
            assert!(!html.contains("<script"));
        }
    }

    #[test]
    fn empty_data_says_so_instead_of_failing() {
        let mut c = chart(ChartKind::Bars);
        c.categories.clear();
        assert!(chart_svg(&c).contains("no data"));
    }

    #[test]
    fn numbers_are_compact() {
        assert_eq!(compact(1_234_567.0), "1.2 M");
        assert_eq!(compact(12_345.0), "12.3 k");
        assert_eq!(compact(12.5), "12.50");
        assert_eq!(compact(300.0), "300");
        assert_eq!(nice_max(73.0), 100.0);
        assert_eq!(nice_max(0.0), 1.0);
    }

    #[test]
    fn a_line_far_from_zero_gets_an_axis_around_it() {
        let mut c = chart(ChartKind::Lines);
        assert_eq!(line_range(&c), (0.0, 20.0));
        c.series = vec![Series {
            name: "valor".into(),
            values: vec![3_912.4, 4_287.15, 4_101.0],
        }];
        assert_eq!(line_range(&c), (3_900.0, 4_400.0));
        assert!(lines(&c).contains(">3900<"));
    }
}
