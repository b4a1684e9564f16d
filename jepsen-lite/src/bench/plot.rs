//! `bench.svg`: throughput against clients (one line per db × workload) and the latency
//! CDF of each db × workload at its highest client count.

use std::path::Path;

use plotters::prelude::*;

use super::report::BenchResult;
use crate::db::DbKind;

fn colour(db: DbKind, workload_index: usize) -> RGBColor {
    // ferrokv in oranges, etcd in blues; workloads step through shades.
    let shade = (workload_index % 5) as u8 * 30;
    match db {
        DbKind::Ferrokv => RGBColor(230u8.saturating_sub(shade), 90 + shade / 2, 20),
        DbKind::Etcd => RGBColor(20, 90 + shade / 2, 220u8.saturating_sub(shade)),
    }
}

fn series(results: &[BenchResult]) -> Vec<(DbKind, String, usize)> {
    let mut workloads: Vec<String> = Vec::new();
    for r in results {
        if !workloads.contains(&r.workload) {
            workloads.push(r.workload.clone());
        }
    }
    let mut out = Vec::new();
    for db in [DbKind::Ferrokv, DbKind::Etcd] {
        for (i, w) in workloads.iter().enumerate() {
            if results.iter().any(|r| r.db == db && &r.workload == w) {
                out.push((db, w.clone(), i));
            }
        }
    }
    out
}

fn label(db: DbKind, workload: &str) -> String {
    let db = match db {
        DbKind::Ferrokv => "ferrokv",
        DbKind::Etcd => "etcd",
    };
    format!("{db} {workload}")
}

/// Draws `results` into the SVG at `path`.
pub fn write_svg(path: &Path, results: &[BenchResult]) -> Result<(), String> {
    let root = SVGBackend::new(path, (1200, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(600);
    let lines = series(results);

    let max_clients = results.iter().map(|r| r.clients).max().unwrap_or(1).max(2) as f64;
    let max_ops = results.iter().map(|r| r.ops_per_sec).fold(1.0, f64::max) * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .caption("throughput vs clients", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((1f64..max_clients * 1.2).log_scale(), 0f64..max_ops)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("clients")
        .y_desc("ops/s")
        .draw()
        .map_err(|e| e.to_string())?;
    for (db, workload, i) in &lines {
        let mut points: Vec<(f64, f64)> = results
            .iter()
            .filter(|r| r.db == *db && &r.workload == workload)
            .map(|r| (r.clients as f64, r.ops_per_sec))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let c = colour(*db, *i);
        chart
            .draw_series(LineSeries::new(points.clone(), c.stroke_width(2)))
            .map_err(|e| e.to_string())?
            .label(label(*db, workload))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 3, c.filled())))
            .map_err(|e| e.to_string())?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| e.to_string())?;

    // The CDF of each db × workload at its highest client count.
    let cdfs: Vec<_> = lines
        .iter()
        .filter_map(|(db, w, i)| {
            let r = results
                .iter()
                .filter(|r| r.db == *db && &r.workload == w && !r.latency_cdf.is_empty())
                .max_by_key(|r| r.clients)?;
            Some((*db, w.clone(), *i, r.clients, &r.latency_cdf))
        })
        .collect();
    let lo = cdfs
        .iter()
        .flat_map(|c| c.4.iter().map(|p| p.0))
        .fold(f64::MAX, f64::min)
        .clamp(0.001, 1e6);
    let hi = cdfs
        .iter()
        .flat_map(|c| c.4.iter().map(|p| p.0))
        .fold(0.0, f64::max)
        .max(lo * 2.0);
    let mut chart = ChartBuilder::on(&right)
        .caption("latency CDF (highest client count)", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(50)
        .build_cartesian_2d((lo * 0.9..hi * 1.1).log_scale(), 0f64..1.0)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("latency ms")
        .y_desc("fraction ≤")
        .draw()
        .map_err(|e| e.to_string())?;
    for (db, workload, i, clients, cdf) in cdfs {
        let c = colour(db, i);
        chart
            .draw_series(LineSeries::new(
                cdf.iter().map(|p| (p.0.max(lo), p.1)),
                c.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label(format!("{} x{clients}", label(db, &workload)))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::report::sample;

    #[test]
    fn the_svg_has_both_panels_and_a_line_per_db() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("bench.svg");
        let results = vec![
            sample(DbKind::Ferrokv, "put", 1, 300.0, 4.0),
            sample(DbKind::Ferrokv, "put", 64, 3000.0, 30.0),
            sample(DbKind::Etcd, "put", 1, 200.0, 8.0),
            sample(DbKind::Etcd, "put", 64, 6000.0, 15.0),
        ];
        write_svg(&path, &results).expect("svg");
        let svg = std::fs::read_to_string(&path).expect("read svg");
        assert!(svg.contains("throughput vs clients") && svg.contains("latency CDF"));
        assert!(svg.contains("ferrokv put x64") && svg.contains("etcd put x64"));
    }
}
