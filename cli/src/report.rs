//! The KPI dashboard: the demo's run tables, the charts and tiles read from the warehouse's KPI
//! views (`lago::load::kpi_views`), and `lago report --warehouse <file>` to render it again from
//! an existing warehouse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Parser;

use lago::contract::Dataset;
use lago::load::SqlDialect;
use lago::transform::Manifest;
use lago_warehouse::{Cell, QueryResult, Warehouse};

use crate::dashboard::{self, Chart, ChartKind, Dashboard, Kpi, Series};
use crate::demo::StageTiming;

#[derive(Parser)]
pub struct ReportArgs {
    /// The DuckDB warehouse written by `lago demo` or `lago load`.
    #[arg(long)]
    warehouse: PathBuf,
    /// Where to write the dashboard (default: `report/index.html` beside the warehouse).
    #[arg(long)]
    out: Option<PathBuf>,
}

pub fn run(args: ReportArgs) -> Result<()> {
    let out = args.out.unwrap_or_else(|| {
        args.warehouse
            .parent()
            .unwrap_or_else(|| Path::new("."))
            .join("report")
            .join("index.html")
    });
    // A warehouse written before the KPI views existed gets them (and any missing table) first.
    Warehouse::open_read_only(&args.warehouse)?;
    Warehouse::open(&args.warehouse)?.ensure_tables()?;
    let d = build(&args.warehouse)?;
    write(&d, &out)?;
    println!("{}", out.display());
    Ok(())
}

/// Rows per dataset table (0 for a table that does not exist yet).
pub fn dataset_counts(warehouse: &Path) -> Result<BTreeMap<String, u64>> {
    let wh = Warehouse::open_read_only(warehouse)?;
    let mut out = BTreeMap::new();
    for d in Dataset::ALL {
        out.insert(d.name().to_string(), wh.table_rows(d).unwrap_or(0));
    }
    let history = lago::load::Table::TradesHistory;
    out.insert(
        history.name().to_string(),
        wh.table_rows(history).unwrap_or(0),
    );
    Ok(out)
}

fn lit(s: &str) -> Result<String> {
    Ok(SqlDialect::DuckDb.literal(s)?)
}

/// Rows of `INSERT INTO table VALUES …`, in statements of at most 500 rows.
fn inserts(table: &str, rows: &[String]) -> Vec<String> {
    rows.chunks(500)
        .map(|c| format!("INSERT INTO {table} VALUES {}", c.join(", ")))
        .collect()
}

/// Replaces the demo's own run record the dashboard shows beside the warehouse's KPI views:
/// rejects per reason and stage timings.
pub fn store_run_tables(
    warehouse: &Path,
    manifests: &[Manifest],
    stages: &[StageTiming],
) -> Result<()> {
    let mut sql = vec![
        "CREATE OR REPLACE TABLE lago.pipeline_rejects (dataset VARCHAR, reason VARCHAR, rows BIGINT)".to_string(),
        "CREATE OR REPLACE TABLE lago.pipeline_timings (stage VARCHAR, seconds DOUBLE, items BIGINT, unit VARCHAR)".to_string(),
        // Earlier demos kept the replay's portfolios and hourly volume here; the trade charts
        // now come from the trade history's views.
        "DROP TABLE IF EXISTS lago.trade_portfolios".to_string(),
        "DROP TABLE IF EXISTS lago.trade_hourly_volume".to_string(),
    ];
    let mut rejects: BTreeMap<(String, String), u64> = BTreeMap::new();
    for m in manifests {
        for (reason, n) in &m.rejects_by_reason {
            *rejects
                .entry((m.dataset.name().to_string(), reason.clone()))
                .or_default() += n;
        }
    }
    let rows: Vec<String> = rejects
        .iter()
        .map(|((d, r), n)| Ok(format!("({}, {}, {n})", lit(d)?, lit(r)?)))
        .collect::<Result<_>>()?;
    sql.extend(inserts("lago.pipeline_rejects", &rows));
    let rows: Vec<String> = stages
        .iter()
        .map(|s| {
            Ok(format!(
                "({}, {}, {}, {})",
                lit(&s.stage)?,
                s.seconds,
                s.items,
                lit(&s.unit)?
            ))
        })
        .collect::<Result<_>>()?;
    sql.extend(inserts("lago.pipeline_timings", &rows));
    let mut wh = Warehouse::open(warehouse)?;
    wh.run_statements("(demo run tables)", &sql)?;
    Ok(())
}

fn num(c: &Cell) -> f64 {
    match c {
        Cell::Int(i) => *i as f64,
        Cell::UInt(u) => *u as f64,
        Cell::Float(f) => *f,
        Cell::Decimal(s) | Cell::Text(s) => s.parse().unwrap_or(0.0),
        Cell::Bool(b) => f64::from(u8::from(*b)),
        Cell::Null => 0.0,
    }
}

fn text(c: &Cell) -> String {
    c.to_string()
}

fn q(wh: &Warehouse, sql: &str) -> Result<QueryResult> {
    wh.query(sql)
        .with_context(|| format!("running KPI query: {sql}"))
}

/// A chart of one label column and one or more value columns.
fn columns_chart(
    r: &QueryResult,
    id: &'static str,
    title: &str,
    subtitle: &str,
    kind: ChartKind,
    unit: &str,
) -> Chart {
    let categories = r
        .rows
        .iter()
        .map(|row| row.first().map(text).unwrap_or_default())
        .collect();
    let series = (1..r.columns.len())
        .map(|i| Series {
            name: r.columns[i].clone(),
            values: r
                .rows
                .iter()
                .map(|row| row.get(i).map(num).unwrap_or(0.0))
                .collect(),
        })
        .collect();
    Chart {
        id,
        title: title.into(),
        subtitle: subtitle.into(),
        kind,
        categories,
        series,
        unit: unit.into(),
    }
}

/// A chart whose series come from a (category, series, value) query.
fn pivot_chart(
    r: &QueryResult,
    id: &'static str,
    title: &str,
    subtitle: &str,
    kind: ChartKind,
    unit: &str,
) -> Chart {
    let mut cats: Vec<String> = Vec::new();
    let mut names: Vec<String> = Vec::new();
    let mut cells: BTreeMap<(String, String), f64> = BTreeMap::new();
    for row in &r.rows {
        let (c, s, v) = match row.as_slice() {
            [c, s, v, ..] => (text(c), text(s), num(v)),
            _ => continue,
        };
        if !cats.contains(&c) {
            cats.push(c.clone());
        }
        if !names.contains(&s) {
            names.push(s.clone());
        }
        cells.insert((c, s), v);
    }
    let series = names
        .iter()
        .map(|n| Series {
            name: n.clone(),
            values: cats
                .iter()
                .map(|c| cells.get(&(c.clone(), n.clone())).copied().unwrap_or(0.0))
                .collect(),
        })
        .collect();
    Chart {
        id,
        title: title.into(),
        subtitle: subtitle.into(),
        kind,
        categories: cats,
        series,
        unit: unit.into(),
    }
}

fn scalar(wh: &Warehouse, sql: &str) -> Result<String> {
    let r = q(wh, sql)?;
    Ok(r.rows
        .first()
        .and_then(|row| row.first())
        .map(text)
        .unwrap_or_else(|| "0".into()))
}

/// Every chart the dashboard shows, by id.
pub const CHART_IDS: [&str; 12] = [
    "energy_by_type",
    "energy_by_month",
    "top_clients",
    "supplier_mix",
    "client_segments",
    "rejects",
    "trm",
    "spread_vs_trm",
    "daily_cop_volume",
    "active_users",
    "top_users",
    "pipeline_timings",
];

/// Runs the KPI queries: every chart and tile about warehouse data reads the KPI views (the
/// same views QuickSight reads in Redshift); the rejects and the timings are the demo's own run.
pub fn build(warehouse: &Path) -> Result<Dashboard> {
    let wh = Warehouse::open_read_only(warehouse)?;
    let venta = lit("venta")?;
    let charts = vec![
    pivot_chart(
        &q(&wh, "SELECT tipo_energia, tipo_transaccion, kwh FROM kpi_energy_by_type ORDER BY tipo_energia, tipo_transaccion")?,
        "energy_by_type",
        "Energy bought vs sold by type",
        "kWh per tipo_energia, compra vs venta",
        ChartKind::Bars,
        "kWh",
    ),
    pivot_chart(
        &q(&wh, "SELECT substr(CAST(month AS VARCHAR), 1, 7) AS month, tipo_transaccion, kwh FROM kpi_energy_by_month ORDER BY 1, 2")?,
        "energy_by_month",
        "Energy bought vs sold by month",
        "kWh per month of fecha_transaccion",
        ChartKind::Bars,
        "kWh",
    ),
    columns_chart(
        &q(&wh, "SELECT client, total_cop AS value FROM kpi_top_clients WHERE value_rank <= 10 ORDER BY value_rank")?,
        "top_clients",
        "Top clients by value",
        "COP of sales (venta), top 10 counterparties",
        ChartKind::HBars,
        "COP",
    ),
    columns_chart(
        &q(&wh, "SELECT tipo_energia, suppliers FROM kpi_supplier_mix ORDER BY suppliers DESC, tipo_energia")?,
        "supplier_mix",
        "Supplier mix",
        "suppliers per energy type",
        ChartKind::Donut,
        "suppliers",
    ),
    columns_chart(
        &q(&wh, "SELECT segmento, clients FROM kpi_client_segments ORDER BY clients DESC, segmento")?,
        "client_segments",
        "Client segments",
        "clients per segmento",
        ChartKind::Donut,
        "clients",
    ),
    columns_chart(
        &q(&wh, "SELECT dataset || ' · ' || reason AS reason, rows FROM pipeline_rejects ORDER BY rows DESC, 1 LIMIT 14")?,
        "rejects",
        "Rejected rows by reason and dataset",
        "rows kept in rejected/ with their reason (this run)",
        ChartKind::HBars,
        "rows",
    ),
    columns_chart(
        &q(&wh, "SELECT CAST(vigenciadesde AS VARCHAR) AS day, trm FROM kpi_trm_series ORDER BY vigenciadesde")?,
        "trm",
        "TRM: the official dollar rate",
        "COP per USD, by the first day each rate is in force",
        ChartKind::Lines,
        "COP",
    ),
    columns_chart(
        &q(&wh, "SELECT CAST(local_date AS VARCHAR) AS day, avg_rate AS \"average rate\", trm AS \"TRM\" FROM kpi_daily_spread WHERE trades_with_trm > 0 ORDER BY local_date")?,
        "spread_vs_trm",
        "Dollar rate vs TRM",
        "COP per USD: applied trades' average rate and the official rate, per Bogotá day",
        ChartKind::Lines,
        "COP",
    ),
    pivot_chart(
        &q(&wh, "SELECT CAST(local_date AS VARCHAR) AS day, side, cop_notional FROM kpi_daily_cop_volume ORDER BY local_date, side")?,
        "daily_cop_volume",
        "Daily COP volume by side",
        "COP notional of applied trades per Bogotá day, BUY vs SELL",
        ChartKind::Bars,
        "COP",
    ),
    columns_chart(
        &q(&wh, "SELECT CAST(local_date AS VARCHAR) AS day, active_users AS \"active users\" FROM kpi_daily_active_users ORDER BY local_date")?,
        "active_users",
        "Active users per day",
        "Users with an applied trade, per Bogotá day",
        ChartKind::Lines,
        "users",
    ),
    columns_chart(
        &q(&wh, "SELECT user_id, cop_notional FROM kpi_top_users WHERE notional_rank <= 10 ORDER BY notional_rank")?,
        "top_users",
        "Top users by COP notional",
        "applied trades, top 10 users",
        ChartKind::HBars,
        "COP",
    ),
    columns_chart(
        &q(&wh, "SELECT stage, seconds FROM pipeline_timings")?,
        "pipeline_timings",
        "Pipeline timings",
        "seconds per stage of the last run",
        ChartKind::HBars,
        "s",
    ),
    ];
    // A chart left out or added without its id here is a bug, not a smaller dashboard.
    let ids: Vec<&str> = charts.iter().map(|c| c.id).collect();
    anyhow::ensure!(
        ids == CHART_IDS,
        "dashboard charts {ids:?} differ from {CHART_IDS:?}"
    );

    let number = |sql: &str| -> Result<f64> { Ok(scalar(&wh, sql)?.parse().unwrap_or(0.0)) };
    let kpis = vec![
        Kpi {
            label: "clientes · proveedores · transacciones".into(),
            value: format!(
                "{} · {} · {}",
                scalar(&wh, "SELECT coalesce(sum(clients), 0) FROM kpi_client_segments")?,
                scalar(&wh, "SELECT coalesce(sum(suppliers), 0) FROM kpi_supplier_mix")?,
                scalar(&wh, "SELECT coalesce(sum(transactions), 0) FROM kpi_energy_by_type")?
            ),
            note: "rows in the warehouse".into(),
        },
        Kpi {
            label: "rows rejected".into(),
            value: scalar(&wh, "SELECT coalesce(sum(rows), 0) FROM pipeline_rejects")?,
            note: "kept in rejected/ with a reason".into(),
        },
        Kpi {
            label: "energy traded".into(),
            value: format!("{} kWh", dashboard::compact(number("SELECT coalesce(sum(kwh), 0) FROM kpi_energy_by_type")?)),
            note: format!(
                "compra + venta; sales {} COP (exact DECIMAL sums)",
                dashboard::compact(number(&format!("SELECT coalesce(sum(total_cop), 0) FROM kpi_energy_by_type WHERE tipo_transaccion = {venta}"))?)
            ),
        },
        trm_kpi(&wh)?,
        decided_kpi(&wh)?,
        Kpi {
            label: "COP volume".into(),
            value: format!("{} COP", dashboard::compact(number("SELECT coalesce(sum(cop_notional), 0) FROM kpi_daily_cop_volume")?)),
            note: format!(
                "{} USD applied; up to {} active users a day",
                dashboard::compact(number("SELECT coalesce(sum(usd), 0) FROM kpi_daily_cop_volume")?),
                scalar(&wh, "SELECT coalesce(max(active_users), 0) FROM kpi_daily_active_users")?
            ),
        },
        spread_kpi(&wh)?,
    ];
    Ok(Dashboard {
        title: "lago — energy lake & dollar trades".into(),
        subtitle: format!("warehouse {}", warehouse.display()),
        kpis,
        charts,
    })
}

/// Trades decided (applied or rejected) and the share rejected, from the overall row.
fn decided_kpi(wh: &Warehouse) -> Result<Kpi> {
    let r = q(
        wh,
        &format!(
            "SELECT decided, rejected, rejected_share * 100 FROM kpi_rejection_rate WHERE reason = {}",
            lit(lago::load::ALL_REASONS)?
        ),
    )?;
    Ok(match r.rows.first().map(Vec::as_slice) {
        Some([decided, rejected, pct, ..]) => Kpi {
            label: "trades decided".into(),
            value: text(decided),
            note: format!("{} rejected ({:.2} %)", text(rejected), num(pct)),
        },
        _ => Kpi {
            label: "trades decided".into(),
            value: "0".into(),
            note: "no trade history loaded".into(),
        },
    })
}

/// The average spread over every applied trade with a TRM (each day's average weighted by its
/// trades), and the extremes.
fn spread_kpi(wh: &Warehouse) -> Result<Kpi> {
    let r = q(
        wh,
        "SELECT sum(avg_spread_cop * trades_with_trm) / sum(trades_with_trm), min(min_spread_cop), max(max_spread_cop), sum(trades_without_trm) FROM kpi_daily_spread WHERE trades_with_trm > 0",
    )?;
    Ok(match r.rows.first().map(Vec::as_slice) {
        Some([avg, lo, hi, ..]) if !matches!(avg, Cell::Null) => Kpi {
            label: "average spread".into(),
            value: format!("{:.2} COP/USD", num(avg)),
            note: format!("rate − TRM, from {:.2} to {:.2}", num(lo), num(hi)),
        },
        _ => Kpi {
            label: "average spread".into(),
            value: "n/a".into(),
            note: "no applied trade with a TRM".into(),
        },
    })
}

/// The rate in force last, with its interval and how many rates the warehouse holds.
fn trm_kpi(wh: &Warehouse) -> Result<Kpi> {
    let r = q(
        wh,
        "SELECT trm, CAST(vigenciadesde AS VARCHAR), CAST(vigenciahasta AS VARCHAR), count(*) OVER () FROM kpi_trm_series ORDER BY vigenciadesde DESC LIMIT 1",
    )?;
    Ok(match r.rows.first().map(Vec::as_slice) {
        Some([valor, desde, hasta, n, ..]) => Kpi {
            label: "TRM".into(),
            value: format!("{} COP/USD", text(valor)),
            note: format!(
                "in force {} to {}; {} rates",
                text(desde),
                text(hasta),
                text(n)
            ),
        },
        _ => Kpi {
            label: "TRM".into(),
            value: "none loaded".into(),
            note: "no rate under raw/trm/ yet".into(),
        },
    })
}

pub fn write(d: &Dashboard, out: &Path) -> Result<()> {
    if let Some(dir) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, dashboard::render(d)).with_context(|| format!("writing {}", out.display()))
}
