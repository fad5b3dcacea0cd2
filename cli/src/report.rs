//! The KPI dashboard: the demo's run tables, the KPI queries over the warehouse, and
//! `lago report --warehouse <file>` to render it again from an existing warehouse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use chrono::{NaiveDateTime, Timelike};
use clap::Parser;
use rust_decimal::Decimal;

use lago::contract::Dataset;
use lago::load::SqlDialect;
use lago::trades::replay::ReplaySummary;
use lago::trades::Trade;
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

/// Replaces the run tables the dashboard reads besides the datasets: rejects per reason, stage
/// timings, the trade portfolios and the hourly trade volume.
pub fn store_run_tables(
    warehouse: &Path,
    manifests: &[Manifest],
    replay: &ReplaySummary,
    trades_file: &Path,
    stages: &[StageTiming],
) -> Result<()> {
    let mut sql = vec![
        "CREATE OR REPLACE TABLE lago.pipeline_rejects (dataset VARCHAR, reason VARCHAR, rows BIGINT)".to_string(),
        "CREATE OR REPLACE TABLE lago.pipeline_timings (stage VARCHAR, seconds DOUBLE, items BIGINT, unit VARCHAR)".to_string(),
        "CREATE OR REPLACE TABLE lago.trade_portfolios (user_id VARCHAR, usd_balance DECIMAL(18,2), cost_basis_cop DECIMAL(24,2), realized_pnl_cop DECIMAL(24,2), trades_applied BIGINT, recommendation VARCHAR)".to_string(),
        "CREATE OR REPLACE TABLE lago.trade_hourly_volume (hour TIMESTAMP, side VARCHAR, trades BIGINT, usd DECIMAL(24,2))".to_string(),
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
    let rows: Vec<String> = replay
        .portfolios
        .iter()
        .map(|p| {
            let rec = match &p.recommendation {
                Some(r) => lit(serde_json::to_value(r.action)?.as_str().unwrap_or("HOLD"))?,
                None => "NULL".to_string(),
            };
            Ok(format!(
                "({}, {}, {}, {}, {}, {rec})",
                lit(&p.user_id)?,
                p.usd_balance,
                p.cost_basis_cop,
                p.realized_pnl_cop,
                p.trades_applied
            ))
        })
        .collect::<Result<_>>()?;
    sql.extend(inserts("lago.trade_portfolios", &rows));
    let rows: Vec<String> = hourly_volume(trades_file)?
        .into_iter()
        .map(|((hour, side), (n, usd))| {
            Ok(format!(
                "(TIMESTAMP {}, {}, {n}, {usd})",
                lit(&hour.format("%Y-%m-%d %H:00:00").to_string())?,
                lit(side)?
            ))
        })
        .collect::<Result<_>>()?;
    sql.extend(inserts("lago.trade_hourly_volume", &rows));
    let mut wh = Warehouse::open(warehouse)?;
    wh.run_statements("(demo run tables)", &sql)?;
    Ok(())
}

/// Trades and USD per (hour, side).
type HourlyVolume = BTreeMap<(NaiveDateTime, &'static str), (u64, Decimal)>;

/// USD volume and trade count per hour (UTC) and side, over the valid trades of the stream, each
/// `trade_id` counted once.
fn hourly_volume(trades_file: &Path) -> Result<HourlyVolume> {
    use std::io::BufRead;
    let file = std::fs::File::open(trades_file)
        .with_context(|| format!("reading {}", trades_file.display()))?;
    let mut seen = std::collections::HashSet::new();
    let mut out = HourlyVolume::new();
    for line in std::io::BufReader::new(file).split(b'\n') {
        let line = line?;
        let Ok(t) = Trade::parse(&line) else { continue };
        if !seen.insert(t.trade_id.clone()) {
            continue;
        }
        let e = out
            .entry((
                t.executed_at
                    .naive_utc()
                    .with_minute(0)
                    .and_then(|h| h.with_second(0))
                    .and_then(|h| h.with_nanosecond(0))
                    .unwrap_or_else(|| t.executed_at.naive_utc()),
                t.side.as_str(),
            ))
            .or_default();
        e.0 += 1;
        e.1 += t.usd_amount;
    }
    Ok(out)
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
    "trade_volume",
    "portfolio_sizes",
    "realized_pnl",
    "recommendations",
    "pipeline_timings",
];

/// Runs the KPI queries.
pub fn build(warehouse: &Path) -> Result<Dashboard> {
    let wh = Warehouse::open_read_only(warehouse)?;
    let charts = vec![
    pivot_chart(
        &q(&wh, "SELECT tipo_energia, tipo_transaccion, sum(cantidad_comprada) FROM transacciones GROUP BY ALL ORDER BY 1, 2")?,
        "energy_by_type",
        "Energy bought vs sold by type",
        "kWh per tipo_energia, compra vs venta",
        ChartKind::Bars,
        "kWh",
    ),
    pivot_chart(
        &q(&wh, "SELECT strftime(fecha_transaccion, '%Y-%m') AS month, tipo_transaccion, sum(cantidad_comprada) FROM transacciones WHERE fecha_transaccion IS NOT NULL GROUP BY ALL ORDER BY 1, 2")?,
        "energy_by_month",
        "Energy bought vs sold by month",
        "kWh per month of fecha_transaccion",
        ChartKind::Bars,
        "kWh",
    ),
    columns_chart(
        &q(&wh, "SELECT nombre_cliente_proveedor, sum(total) AS value FROM transacciones WHERE tipo_transaccion = 'venta' GROUP BY 1 ORDER BY 2 DESC LIMIT 10")?,
        "top_clients",
        "Top clients by value",
        "COP of sales (venta), top 10 counterparties",
        ChartKind::HBars,
        "COP",
    ),
    columns_chart(
        &q(&wh, "SELECT tipo_energia, count(*) AS suppliers FROM proveedores GROUP BY 1 ORDER BY 2 DESC")?,
        "supplier_mix",
        "Supplier mix",
        "suppliers per energy type",
        ChartKind::Donut,
        "suppliers",
    ),
    columns_chart(
        &q(
            &wh,
            "SELECT segmento, count(*) AS clients FROM clientes GROUP BY 1 ORDER BY 2 DESC",
        )?,
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
        "rows kept in rejected/ with their reason",
        ChartKind::HBars,
        "rows",
    ),
    columns_chart(
        &q(&wh, "SELECT CAST(vigenciadesde AS VARCHAR) AS day, valor FROM trm ORDER BY vigenciadesde")?,
        "trm",
        "TRM: the official dollar rate",
        "COP per USD, by the first day each rate is in force",
        ChartKind::Lines,
        "COP",
    ),
    pivot_chart(
        &q(&wh, "SELECT strftime(hour, '%m-%d %Hh') AS hour, side, usd FROM trade_hourly_volume ORDER BY 1, side")?,
        "trade_volume",
        "Trade volume by side over time",
        "USD per hour (UTC), BUY vs SELL",
        ChartKind::Lines,
        "USD",
    ),
    columns_chart(
        &q(&wh, "SELECT bucket, count(*) AS portfolios FROM (SELECT CASE WHEN usd_balance = 0 THEN '0' WHEN usd_balance < 500 THEN '< 500' WHEN usd_balance < 2000 THEN '500–2k' WHEN usd_balance < 10000 THEN '2k–10k' WHEN usd_balance < 50000 THEN '10k–50k' ELSE '≥ 50k' END AS bucket, CASE WHEN usd_balance = 0 THEN 0 WHEN usd_balance < 500 THEN 1 WHEN usd_balance < 2000 THEN 2 WHEN usd_balance < 10000 THEN 3 WHEN usd_balance < 50000 THEN 4 ELSE 5 END AS o FROM trade_portfolios) GROUP BY bucket, o ORDER BY o")?,
        "portfolio_sizes",
        "Distribution of portfolio sizes",
        "portfolios by USD balance",
        ChartKind::Bars,
        "portfolios",
    ),
    columns_chart(
        &q(&wh, "SELECT user_id, realized_pnl_cop FROM trade_portfolios ORDER BY realized_pnl_cop DESC LIMIT 10")?,
        "realized_pnl",
        "Realized P&L",
        "COP realized by the top 10 users (average-cost method)",
        ChartKind::HBars,
        "COP",
    ),
    columns_chart(
        &q(&wh, "SELECT coalesce(recommendation, 'none') AS action, count(*) AS users FROM trade_portfolios GROUP BY 1 ORDER BY 2 DESC")?,
        "recommendations",
        "Recommendation mix",
        "latest recommendation per user",
        ChartKind::Donut,
        "users",
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

    let rows = |d: &str| scalar(&wh, &format!("SELECT count(*) FROM {d}"));
    let kpis = vec![
        Kpi {
            label: "clientes · proveedores · transacciones".into(),
            value: format!("{} · {} · {}", rows("clientes")?, rows("proveedores")?, rows("transacciones")?),
            note: "rows in the warehouse".into(),
        },
        Kpi {
            label: "rows rejected".into(),
            value: scalar(&wh, "SELECT coalesce(sum(rows), 0) FROM pipeline_rejects")?,
            note: "kept in rejected/ with a reason".into(),
        },
        Kpi {
            label: "energy traded".into(),
            value: format!("{} kWh", dashboard::compact(scalar(&wh, "SELECT coalesce(sum(cantidad_comprada), 0) FROM transacciones")?.parse().unwrap_or(0.0))),
            note: "compra + venta".into(),
        },
        Kpi {
            label: "sales value".into(),
            value: format!("{} COP", dashboard::compact(scalar(&wh, "SELECT coalesce(sum(total), 0) FROM transacciones WHERE tipo_transaccion = 'venta'")?.parse().unwrap_or(0.0))),
            note: "sum of total, exact DECIMAL(18,2)".into(),
        },
        trm_kpi(&wh)?,
        Kpi {
            label: "portfolios".into(),
            value: scalar(&wh, "SELECT count(*) FROM trade_portfolios")?,
            note: format!("{} trades applied", scalar(&wh, "SELECT coalesce(sum(trades_applied), 0) FROM trade_portfolios")?),
        },
        Kpi {
            label: "realized P&L".into(),
            value: format!("{} COP", scalar(&wh, "SELECT coalesce(sum(realized_pnl_cop), 0) FROM trade_portfolios")?),
            note: "all users, exact".into(),
        },
    ];
    Ok(Dashboard {
        title: "lago — energy lake & dollar trades".into(),
        subtitle: format!("warehouse {}", warehouse.display()),
        kpis,
        charts,
    })
}

/// The rate in force last, with its interval and how many rates the warehouse holds.
fn trm_kpi(wh: &Warehouse) -> Result<Kpi> {
    let r = q(
        wh,
        "SELECT valor, CAST(vigenciadesde AS VARCHAR), CAST(vigenciahasta AS VARCHAR), count(*) OVER () FROM trm ORDER BY vigenciadesde DESC LIMIT 1",
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
