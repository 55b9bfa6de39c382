//! The `--report` HTML page: one self-contained file (inline CSS and SVG, no script, nothing
//! fetched) with the confusion matrix as a heat map, the reliability diagram and the
//! coverage–accuracy curve.

use std::fmt::Write as _;

use super::metrics::CalibrationBin;
use super::Evaluation;

/// Side of a plot's square drawing area, in SVG units.
const PLOT: f64 = 300.0;
/// Room for axes and their labels around a plot.
const MARGIN: f64 = 40.0;
/// Side of a confusion matrix cell.
const CELL: f64 = 22.0;
/// Room for class names left of and above the heat map.
const NAMES: f64 = 180.0;

/// `text` safe inside HTML elements and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// The whole page; `title` names the data set (escaped here).
pub fn html(evaluation: &Evaluation, title: &str) -> String {
    let title = escape(title);
    let c = &evaluation.calibration;
    let mut page = format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>edgeclass eval: {title}</title>\n<style>\n\
         body {{ font-family: sans-serif; margin: 2em; }}\n\
         table {{ border-collapse: collapse; }}\n\
         td, th {{ padding: 2px 8px; text-align: right; }}\n\
         td:first-child, th:first-child {{ text-align: left; }}\n\
         svg text {{ font-size: 11px; }}\n</style>\n</head>\n<body>\n\
         <h1>edgeclass eval: {title}</h1>\n\
         <p>{} images: top-1 {:.1} %, top-5 {:.1} %. Expected calibration error {:.4}; \
         temperature {:.3} would give {:.4}.</p>\n",
        evaluation.images,
        evaluation.top1_accuracy * 100.0,
        evaluation.top5_accuracy * 100.0,
        c.ece,
        c.temperature,
        c.ece_calibrated
    );
    page.push_str("<h2>Confusion matrix</h2>\n<p>Rows: true class; columns: predicted class, last: any class outside the set. Colour: share of the row.</p>\n");
    page.push_str(&heat_map(evaluation));
    page.push_str("<h2>Reliability</h2>\n<p>Bars: accuracy per confidence bin (raw scores); dots: after temperature scaling; line: perfect calibration.</p>\n");
    page.push_str(&reliability(&c.bins, &c.bins_calibrated));
    page.push_str("<h2>Coverage and accuracy</h2>\n<p>Each point is a global threshold 0.00–0.99: the share of frames that reach it against the accuracy of those frames.</p>\n");
    page.push_str(&coverage_curve(evaluation));
    page.push_str(&class_table(evaluation));
    page.push_str("</body>\n</html>\n");
    page
}

/// An `<svg>` of `width` x `height` around `body`.
fn svg(width: f64, height: f64, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         viewBox=\"0 0 {width:.0} {height:.0}\">\n{body}</svg>\n"
    )
}

/// Plot coordinates of a point in the unit square (y up).
fn at(x: f64, y: f64) -> (f64, f64) {
    (MARGIN + x * PLOT, MARGIN + (1.0 - y) * PLOT)
}

/// A unit-square frame with 0, 0.5 and 1 marked on both axes and the axes named.
fn axes(x_name: &str, y_name: &str) -> String {
    let mut out = format!(
        "<rect x=\"{MARGIN}\" y=\"{MARGIN}\" width=\"{PLOT}\" height=\"{PLOT}\" fill=\"none\" stroke=\"#888\"/>\n"
    );
    for tick in [0.0, 0.5, 1.0] {
        let (x, y) = at(tick, tick);
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{tick}</text>\
             <text x=\"{:.1}\" y=\"{y:.1}\" text-anchor=\"end\">{tick}</text>",
            MARGIN + PLOT + 14.0,
            MARGIN - 4.0
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>\
         <text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        MARGIN + PLOT / 2.0,
        MARGIN + PLOT + 32.0,
        escape(x_name),
        MARGIN + PLOT / 2.0,
        MARGIN + PLOT / 2.0,
        escape(y_name)
    );
    out
}

/// The confusion matrix, cells shaded by their share of the row.
fn heat_map(evaluation: &Evaluation) -> String {
    let n = evaluation.classes.len();
    let mut body = String::new();
    let names = evaluation
        .classes
        .iter()
        .map(|c| escape(&c.class.name))
        .chain(std::iter::once("other".to_string()));
    for (column, name) in names.enumerate() {
        let x = NAMES + (column as f64 + 0.5) * CELL;
        let _ = writeln!(
            body,
            "<text x=\"{x:.1}\" y=\"{:.1}\" transform=\"rotate(-60 {x:.1} {:.1})\">{name}</text>",
            NAMES - 4.0,
            NAMES - 4.0
        );
    }
    for (row, (class, counts)) in evaluation
        .classes
        .iter()
        .zip(&evaluation.confusion)
        .enumerate()
    {
        let name = escape(&class.class.name);
        let y = NAMES + row as f64 * CELL;
        let _ = writeln!(
            body,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{name}</text>",
            NAMES - 4.0,
            y + CELL * 0.7
        );
        let total: usize = counts.iter().sum();
        for (column, &count) in counts.iter().enumerate() {
            let share = count as f64 / total.max(1) as f64;
            // White to dark blue.
            let shade = |full: f64| 255.0 - share * (255.0 - full);
            let x = NAMES + column as f64 * CELL;
            let predicted = evaluation
                .classes
                .get(column)
                .map_or("other".to_string(), |c| escape(&c.class.name));
            let _ = writeln!(
                body,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{CELL}\" height=\"{CELL}\" stroke=\"#ddd\" \
                 fill=\"rgb({:.0},{:.0},{:.0})\"><title>{name} as {predicted}: {count}</title></rect>",
                shade(8.0),
                shade(48.0),
                shade(107.0)
            );
            if count > 0 {
                let colour = if share > 0.5 { "#fff" } else { "#000" };
                let _ = writeln!(
                    body,
                    "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{colour}\">{count}</text>",
                    x + CELL / 2.0,
                    y + CELL * 0.7
                );
            }
        }
    }
    let side = NAMES + (n + 1) as f64 * CELL + 10.0;
    svg(side, NAMES + n as f64 * CELL + 10.0, &body)
}

/// Accuracy per confidence bin: bars for `raw`, dots for `calibrated`, and the diagonal.
fn reliability(raw: &[CalibrationBin], calibrated: &[CalibrationBin]) -> String {
    let mut body = axes("confidence (top-1 score)", "accuracy");
    let (x0, y0) = at(0.0, 0.0);
    let (x1, y1) = at(1.0, 1.0);
    let _ = writeln!(
        body,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y1}\" stroke=\"#888\" stroke-dasharray=\"4\"/>"
    );
    for bin in raw {
        if let Some(accuracy) = bin.accuracy {
            let (x, y) = at(bin.lower, accuracy);
            let _ = writeln!(
                body,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#4a7ebb\" \
                 stroke=\"#fff\"><title>{:.2}-{:.2}: {} frames</title></rect>",
                (bin.upper - bin.lower) * PLOT,
                y0 - y,
                bin.lower,
                bin.upper,
                bin.count
            );
        }
    }
    for bin in calibrated {
        if let (Some(confidence), Some(accuracy)) = (bin.confidence, bin.accuracy) {
            let (x, y) = at(confidence, accuracy);
            let _ = writeln!(
                body,
                "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4\" fill=\"#e07b00\"/>"
            );
        }
    }
    svg(PLOT + 2.0 * MARGIN, PLOT + 2.0 * MARGIN, &body)
}

/// Global covered accuracy against coverage, with the target and the recommendation marked.
fn coverage_curve(evaluation: &Evaluation) -> String {
    let mut body = axes(
        "coverage (share of frames not unknown)",
        "accuracy of covered frames",
    );
    let points: Vec<String> = evaluation
        .trade_off
        .iter()
        .filter_map(|p| {
            let (x, y) = at(p.coverage, p.accuracy?);
            Some(format!("{x:.1},{y:.1}"))
        })
        .collect();
    let _ = writeln!(
        body,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#4a7ebb\" stroke-width=\"2\"/>",
        points.join(" ")
    );
    if let Some(target) = evaluation.target_precision {
        let (x0, y) = at(0.0, target);
        let (x1, _) = at(1.0, target);
        let _ = writeln!(
            body,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#c00\" stroke-dasharray=\"4\"/>"
        );
    }
    if let Some(point) = evaluation.recommended.and_then(|r| r.reached) {
        let (x, y) = at(point.coverage, point.accuracy.unwrap_or(0.0));
        let _ = writeln!(
            body,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"5\" fill=\"#c00\"><title>threshold {:.2}</title></circle>",
            point.threshold
        );
    }
    svg(PLOT + 2.0 * MARGIN, PLOT + 2.0 * MARGIN, &body)
}

/// Per-class figures and recommended thresholds.
fn class_table(evaluation: &Evaluation) -> String {
    let mut out = String::from(
        "<h2>Classes</h2>\n<table>\n<tr><th>class</th><th>key</th><th>support</th><th>precision</th>\
         <th>recall</th><th>F1</th><th>threshold</th></tr>\n",
    );
    for class in &evaluation.classes {
        let s = &class.scores;
        let threshold = match class.recommended {
            None => String::new(),
            Some(r) => r
                .reached
                .map_or("unreachable".to_string(), |p| format!("{:.2}", p.threshold)),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{threshold}</td></tr>",
            escape(&class.class.name),
            escape(&class.class.key),
            s.support,
            s.precision,
            s.recall,
            s.f1
        );
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::evaluate::{LabelledClass, Sample};

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            escape(r#"<b>"Tom" & 'Jerry'</b>"#),
            "&lt;b&gt;&quot;Tom&quot; &amp; &#39;Jerry&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn page_has_three_plots_and_no_raw_label() {
        let samples = [
            Sample {
                logits: vec![2.0, 0.0],
                truth: 0,
            },
            Sample {
                logits: vec![2.0, 0.0],
                truth: 1,
            },
        ];
        let classes = vec![
            LabelledClass {
                index: 0,
                key: "n1".into(),
                name: "<script>".into(),
            },
            LabelledClass {
                index: 1,
                key: "n2".into(),
                name: "a&b".into(),
            },
        ];
        let page = html(&Evaluation::new(&samples, classes, Some(0.5)), "set <1>");
        assert_eq!(page.matches("<svg ").count(), 3);
        assert_eq!(page.matches("</svg>").count(), 3);
        assert!(!page.contains("<script>") && page.contains("&lt;script&gt;"));
        assert!(!page.contains("a&b") && page.contains("a&amp;b"));
        assert!(page.contains("set &lt;1&gt;"));
    }
}
