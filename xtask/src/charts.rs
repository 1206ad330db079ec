//! The bench's SVG charts, hand-written (a few polylines and axes need no plotting crate):
//! connect-time CDFs of the legit clients under the flood, one line per protection, and the
//! SYN and SYN+ACK rates over the window.

use std::fmt::Write;

use synguard_harness::scenario::ScenarioReport;

const W: f64 = 840.0;
const H: f64 = 420.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 250.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 55.0;
/// One colour per protection, in bench order (colour-blind-safe Okabe-Ito).
const COLOURS: [&str; 6] = [
    "#D55E00", "#0072B2", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The frame of a chart: title, axis labels, a plot area of (x0, y0, width, height).
fn frame(title: &str, xlabel: &str, ylabel: &str) -> (String, (f64, f64, f64, f64)) {
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" \
         viewBox=\"0 0 {W} {H}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(16,{}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n\
         <rect x=\"{LEFT}\" y=\"{TOP}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" \
         stroke=\"#333\"/>\n",
        W / 2.0,
        esc(title),
        LEFT + pw / 2.0,
        H - 14.0,
        esc(xlabel),
        TOP + ph / 2.0,
        esc(ylabel),
    );
    s.push('\n');
    (s, (LEFT, TOP, pw, ph))
}

fn legend(s: &mut String, names: &[(String, &str, &str)]) {
    for (i, (name, colour, dash)) in names.iter().enumerate() {
        let y = TOP + 12.0 + 20.0 * i as f64;
        let x = W - RIGHT + 14.0;
        let _ = writeln!(
            s,
            "<line x1=\"{x}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"{colour}\" \
             stroke-width=\"2.5\" stroke-dasharray=\"{dash}\"/>\
             <text x=\"{}\" y=\"{}\">{}</text>",
            x + 24.0,
            x + 30.0,
            y + 4.0,
            esc(name)
        );
    }
}

fn polyline(s: &mut String, pts: &[(f64, f64)], colour: &str, dash: &str) {
    if pts.is_empty() {
        return;
    }
    let p: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(
        s,
        "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" \
         stroke-dasharray=\"{dash}\" points=\"{}\"/>",
        p.join(" ")
    );
}

/// Connect-time CDFs: x is the connect time on a log scale, y the share of all the legit
/// connections attempted that had connected by then (a protection that loses some never
/// reaches 100%).
pub fn connect_cdf(reports: &[ScenarioReport]) -> String {
    let (mut s, (x0, y0, pw, ph)) = frame(
        "Legit connect time under a spoofed SYN flood",
        "connect time (ms, log scale)",
        "connections done (% of attempted)",
    );
    // 0.01 ms .. 10 s.
    let (lo, hi) = (-2.0f64, 4.0f64);
    let x = |ms: f64| x0 + (ms.max(1e-2).log10() - lo) / (hi - lo) * pw;
    let y = |f: f64| y0 + ph - f * ph;
    for d in (lo as i32)..=(hi as i32) {
        let xv = x(10f64.powi(d));
        let label = match d {
            -2 => "0.01".to_string(),
            -1 => "0.1".to_string(),
            d => format!("{}", 10u64.pow(d as u32)),
        };
        let _ = writeln!(
            s,
            "<line x1=\"{xv:.1}\" y1=\"{y0}\" x2=\"{xv:.1}\" y2=\"{}\" stroke=\"#ddd\"/>\
             <text x=\"{xv:.1}\" y=\"{}\" text-anchor=\"middle\">{label}</text>",
            y0 + ph,
            y0 + ph + 16.0
        );
    }
    for q in 0..=4 {
        let f = q as f64 / 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
            y(f),
            x0 + pw,
            x0 - 6.0,
            y(f) + 4.0,
            q * 25
        );
    }
    let mut names = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let total = r.clients_total.max(1) as f64;
        // A step function: flat from the left edge to the first connect, then one step up
        // per connection.
        let mut pts = vec![(x0, y(0.0))];
        for (k, ms) in r.connect_ms.iter().enumerate() {
            pts.push((x(*ms), y(k as f64 / total)));
            pts.push((x(*ms), y((k + 1) as f64 / total)));
        }
        let done = r.connect_ms.len() as f64 / total;
        pts.push((x0 + pw, y(done)));
        polyline(&mut s, &pts, c, "");
        names.push((
            format!(
                "{} ({}/{})",
                r.protection,
                r.connect_ms.len(),
                r.clients_total
            ),
            c,
            "",
        ));
    }
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

/// SYNs arriving (solid) and SYN+ACKs sent (dashed) per protection over the SYN window.
pub fn rates(reports: &[ScenarioReport]) -> String {
    let (mut s, (x0, y0, pw, ph)) = frame(
        "SYNs in and SYN+ACKs out during the flood",
        "time in the measurement window (s)",
        "packets per second (thousands)",
    );
    let t_max = reports
        .iter()
        .flat_map(|r| r.timeline.iter().map(|p| p.t_secs))
        .fold(1.0f64, f64::max)
        .ceil();
    let peak = reports
        .iter()
        .flat_map(|r| {
            r.timeline
                .iter()
                .map(|p| p.syn_in_pps.max(p.synack_out_pps))
        })
        .fold(1.0f64, f64::max);
    // A round top: 1, 2 or 5 times a power of ten, in thousands.
    let k = peak / 1e3;
    let mag = 10f64.powf(k.log10().floor());
    let top = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|&t| t >= k)
        .unwrap_or(10.0 * mag);
    let x = |t: f64| x0 + t / t_max * pw;
    let y = |pps: f64| y0 + ph - (pps / 1e3 / top).min(1.0) * ph;
    let step = (t_max / 8.0).ceil().max(1.0);
    let mut t = 0.0;
    while t <= t_max {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{y0}\" x2=\"{0:.1}\" y2=\"{1}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{2}\" text-anchor=\"middle\">{t}</text>",
            x(t),
            y0 + ph,
            y0 + ph + 16.0
        );
        t += step;
    }
    for q in 0..=4 {
        let v = top * q as f64 / 4.0;
        let yv = y(v * 1e3);
        let _ = writeln!(
            s,
            "<line x1=\"{x0}\" y1=\"{yv:.1}\" x2=\"{}\" y2=\"{yv:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{v}</text>",
            x0 + pw,
            x0 - 6.0,
            yv + 4.0,
        );
    }
    let mut names = Vec::new();
    for (i, r) in reports.iter().enumerate() {
        let c = COLOURS[i % COLOURS.len()];
        let syn: Vec<_> = r
            .timeline
            .iter()
            .map(|p| (x(p.t_secs), y(p.syn_in_pps)))
            .collect();
        let out: Vec<_> = r
            .timeline
            .iter()
            .map(|p| (x(p.t_secs), y(p.synack_out_pps)))
            .collect();
        polyline(&mut s, &syn, c, "");
        polyline(&mut s, &out, c, "6 4");
        names.push((format!("{}: SYNs in", r.protection), c, ""));
        names.push((format!("{}: SYN+ACKs", r.protection), c, "6 4"));
    }
    legend(&mut s, &names);
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_bench_still_draws_well_formed_charts() {
        for svg in [connect_cdf(&[]), rates(&[])] {
            assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
            assert_eq!(svg.matches("<svg").count(), 1);
        }
    }
}
