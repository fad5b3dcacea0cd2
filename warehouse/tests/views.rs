//! The KPI views, executed: the DuckDB rendering of every view over a small fixture written by
//! hand, each figure worked out by hand, and every view on empty tables.

use anyhow::Result;

use lago::load::KPI_VIEWS;
use lago_warehouse::Warehouse;

/// A fresh warehouse with its tables and views, and one holding the fixture.
struct Fixture {
    _dir: tempfile::TempDir,
    wh: Warehouse,
}

fn empty() -> Result<Fixture> {
    let dir = tempfile::tempdir()?;
    let mut wh = Warehouse::open(&dir.path().join("views.duckdb"))?;
    wh.ensure_tables()?;
    Ok(Fixture { _dir: dir, wh })
}

const TRADES_COLUMNS: &str = "trade_id, user_id, side, usd_amount, rate, executed_at, channel, status, reason, sequence_number, arrived_at, cop_notional, local_date, local_hour, trm, spread_cop, _source_key, _source_line, _load_date";

/// Nine trades over two Bogotá days: 2026-11-28 has a TRM of 4000.00, 2026-11-29 none.
/// t4, t8, t9 are rejected (two reasons), t5 is a duplicate whose decision is not loaded.
const TRADES: [&str; 9] = [
    "('t1', 'u1', 'BUY', 100.00, 4010.0000, TIMESTAMPTZ '2026-11-28 15:00:00+00', 'app', 'applied', '', '1', NULL, 401000.00, DATE '2026-11-28', 10, 4000.00, 10.0000, 'raw/trades/a', 1, DATE '2026-11-28')",
    "('t2', 'u2', 'SELL', 50.00, 3990.5000, TIMESTAMPTZ '2026-11-28 16:00:00+00', 'app', 'applied', '', '2', NULL, 199525.00, DATE '2026-11-28', 11, 4000.00, -9.5000, 'raw/trades/a', 2, DATE '2026-11-28')",
    "('t3', 'u1', 'SELL', 30.00, 4005.0000, TIMESTAMPTZ '2026-11-28 17:00:00+00', 'web', 'applied', '', '3', NULL, 120150.00, DATE '2026-11-28', 12, 4000.00, 5.0000, 'raw/trades/a', 3, DATE '2026-11-28')",
    "('t4', 'u3', 'SELL', 1000.00, 4000.0000, TIMESTAMPTZ '2026-11-28 18:00:00+00', NULL, 'rejected', 'insufficient_balance', '4', NULL, 4000000.00, DATE '2026-11-28', 13, 4000.00, 0.0000, 'raw/trades/a', 4, DATE '2026-11-28')",
    "('t5', 'u2', 'BUY', 10.00, 4001.0000, TIMESTAMPTZ '2026-11-28 19:00:00+00', NULL, 'duplicate', '', '5', NULL, 40010.00, DATE '2026-11-28', 14, 4000.00, 1.0000, 'raw/trades/a', 5, DATE '2026-11-28')",
    // 04:00 UTC on the 30th is 23:00 of the 29th in Bogotá: local_date is what counts.
    "('t6', 'u3', 'BUY', 200.00, 4020.0000, TIMESTAMPTZ '2026-11-30 04:00:00+00', 'app', 'applied', '', '6', NULL, 804000.00, DATE '2026-11-29', 23, NULL, NULL, 'raw/trades/b', 1, DATE '2026-11-30')",
    "('t7', 'u3', 'BUY', 20.00, 4030.0000, TIMESTAMPTZ '2026-11-29 15:00:00+00', 'app', 'applied', '', '7', NULL, 80600.00, DATE '2026-11-29', 10, NULL, NULL, 'raw/trades/b', 2, DATE '2026-11-30')",
    "('t8', 'u2', 'SELL', 5.00, 4025.0000, TIMESTAMPTZ '2026-11-29 16:00:00+00', 'app', 'rejected', 'insufficient_balance', '8', NULL, 20125.00, DATE '2026-11-29', 11, NULL, NULL, 'raw/trades/b', 3, DATE '2026-11-30')",
    "('t9', 'u1', 'BUY', 99999.00, 4025.0000, TIMESTAMPTZ '2026-11-29 17:00:00+00', 'app', 'rejected', 'amount_out_of_range', '9', NULL, 402495975.00, DATE '2026-11-29', 12, NULL, NULL, 'raw/trades/b', 4, DATE '2026-11-30')",
];

const LINEAGE: &str = "'raw/x', 1, DATE '2025-07-10'";

fn with_fixture() -> Result<Fixture> {
    let mut f = empty()?;
    let tx = "INSERT INTO lago.transacciones (id_transaccion, fecha_transaccion, tipo_transaccion, nombre_cliente_proveedor, cantidad_comprada, precio, tipo_energia, total, _source_key, _source_line, _load_date) VALUES";
    let statements = vec![
        format!("INSERT INTO lago.trades_history ({TRADES_COLUMNS}) VALUES {}", TRADES.join(", ")),
        format!("{tx} ('x1', TIMESTAMPTZ '2025-05-10 10:00:00+00', 'compra', 'Hidro Andes', 1000.000, 200.0000, 'hidroelectrica', 200000.00, {LINEAGE})"),
        format!("{tx} ('x2', TIMESTAMPTZ '2025-05-20 00:00:00+00', 'venta', 'Cliente A', 300.000, 350.0000, 'hidroelectrica', 105000.00, {LINEAGE})"),
        // 00:30 UTC on June 1st: a June transaction (UTC), though it was still May in Bogotá.
        format!("{tx} ('x3', TIMESTAMPTZ '2025-06-01 00:30:00+00', 'venta', 'Cliente B', 500.000, 340.0000, 'solar', 170000.00, {LINEAGE})"),
        // No date: counted by type and client, not by month.
        format!("{tx} ('x4', NULL, 'venta', 'Cliente A', 100.000, 360.0000, 'solar', 36000.00, {LINEAGE})"),
        format!("{tx} ('x5', TIMESTAMPTZ '2025-06-15 12:00:00+00', 'compra', 'Sol Caribe', 2000.000, 150.0000, 'solar', 300000.00, {LINEAGE})"),
        format!("INSERT INTO lago.proveedores (nombre_proveedor, tipo_energia, capacidad_mw, _source_key, _source_line, _load_date) VALUES ('Hidro Andes', 'hidroelectrica', 120.500, {LINEAGE}), ('Sol Caribe', 'solar', 35.000, {LINEAGE}), ('Sol Llanos', 'solar', NULL, {LINEAGE})"),
        format!("INSERT INTO lago.clientes (id_cliente, nombre_cliente, nombre_normalizado, segmento, _source_key, _source_line, _load_date) VALUES ('c1', 'Ana', 'ANA', 'residencial', {LINEAGE}), ('c2', 'Acería', 'ACERIA', 'industrial', {LINEAGE}), ('c3', 'Luis', 'LUIS', 'residencial', {LINEAGE})"),
        format!("INSERT INTO lago.trm (valor, unidad, vigenciadesde, vigenciahasta, _source_key, _source_line, _load_date) VALUES (3990.00, 'COP', DATE '2026-11-27', DATE '2026-11-27', {LINEAGE}), (4000.00, 'COP', DATE '2026-11-28', DATE '2026-11-28', {LINEAGE})"),
    ];
    f.wh.run_statements("(fixture)", &statements)?;
    Ok(f)
}

impl Fixture {
    /// The rows of `SELECT * FROM <view> ORDER BY <order>`, every cell as printed.
    fn rows(&self, view: &str, order: &str) -> Result<Vec<Vec<String>>> {
        let r = self
            .wh
            .query(&format!("SELECT * FROM {view} ORDER BY {order}"))?;
        Ok(r.rows
            .iter()
            .map(|row| row.iter().map(|c| c.to_string()).collect())
            .collect())
    }

    fn columns(&self, view: &str) -> Result<Vec<String>> {
        Ok(self
            .wh
            .query(&format!("SELECT * FROM {view} LIMIT 0"))?
            .columns)
    }
}

fn rows(expected: &[&[&str]]) -> Vec<Vec<String>> {
    expected
        .iter()
        .map(|r| r.iter().map(|c| c.to_string()).collect())
        .collect()
}

#[test]
fn daily_cop_volume_sums_applied_trades_per_bogota_day_and_side() -> Result<()> {
    let f = with_fixture()?;
    assert_eq!(
        f.columns("kpi_daily_cop_volume")?,
        ["local_date", "side", "trades", "usd", "cop_notional"]
    );
    // The rejected t4, t8, t9 and the duplicate t5 are not volume.
    assert_eq!(
        f.rows("kpi_daily_cop_volume", "local_date, side")?,
        rows(&[
            &["2026-11-28", "BUY", "1", "100.00", "401000.00"],
            &["2026-11-28", "SELL", "2", "80.00", "319675.00"],
            &["2026-11-29", "BUY", "2", "220.00", "884600.00"],
        ])
    );
    Ok(())
}

#[test]
fn hourly_views_split_each_day_by_bogota_hour() -> Result<()> {
    let f = with_fixture()?;
    assert_eq!(
        f.rows("kpi_hourly_cop_volume", "local_date, local_hour, side")?,
        rows(&[
            &["2026-11-28", "10", "BUY", "1", "100.00", "401000.00"],
            &["2026-11-28", "11", "SELL", "1", "50.00", "199525.00"],
            &["2026-11-28", "12", "SELL", "1", "30.00", "120150.00"],
            &["2026-11-29", "10", "BUY", "1", "20.00", "80600.00"],
            &["2026-11-29", "23", "BUY", "1", "200.00", "804000.00"],
        ])
    );
    assert_eq!(
        f.rows("kpi_hourly_spread", "local_date, local_hour")?,
        rows(&[
            &[
                "2026-11-28",
                "10",
                "1",
                "1",
                "4010.0000",
                "4000.00",
                "10.0000"
            ],
            &[
                "2026-11-28",
                "11",
                "1",
                "1",
                "3990.5000",
                "4000.00",
                "-9.5000"
            ],
            &[
                "2026-11-28",
                "12",
                "1",
                "1",
                "4005.0000",
                "4000.00",
                "5.0000"
            ],
            &["2026-11-29", "10", "1", "0", "4030.0000", "NULL", "NULL"],
            &["2026-11-29", "23", "1", "0", "4020.0000", "NULL", "NULL"],
        ])
    );
    Ok(())
}

#[test]
fn daily_spread_compares_rates_with_the_trm_and_counts_days_without_one() -> Result<()> {
    let f = with_fixture()?;
    assert_eq!(
        f.columns("kpi_daily_spread")?,
        [
            "local_date",
            "trades",
            "trades_with_trm",
            "trades_without_trm",
            "avg_rate",
            "trm",
            "avg_spread_cop",
            "min_spread_cop",
            "max_spread_cop"
        ]
    );
    // 28th: rates 4010, 3990.5, 4005 → 12005.5 / 3 = 4001.83333…; spreads 10, −9.5, 5 → 5.5 / 3.
    // 29th: no TRM, so no spread, but the rates still average.
    assert_eq!(
        f.rows("kpi_daily_spread", "local_date")?,
        rows(&[
            &[
                "2026-11-28",
                "3",
                "3",
                "0",
                "4001.8333",
                "4000.00",
                "1.8333",
                "-9.5000",
                "10.0000"
            ],
            &[
                "2026-11-29",
                "2",
                "0",
                "2",
                "4025.0000",
                "NULL",
                "NULL",
                "NULL",
                "NULL"
            ],
        ])
    );
    Ok(())
}

#[test]
fn rejection_rate_is_a_share_of_decided_trades_per_reason_and_overall() -> Result<()> {
    let f = with_fixture()?;
    // Decided: 5 applied + 3 rejected = 8 (the duplicate decides nothing).
    assert_eq!(
        f.rows("kpi_rejection_rate", "reason")?,
        rows(&[
            &["(all)", "3", "8", "0.375000"],
            &["amount_out_of_range", "1", "8", "0.125000"],
            &["insufficient_balance", "2", "8", "0.250000"],
        ])
    );
    Ok(())
}

#[test]
fn daily_active_users_counts_each_user_once_a_day() -> Result<()> {
    let f = with_fixture()?;
    // 28th: u1 (twice) and u2; 29th: u3 twice (u2's and u1's trades were rejected).
    assert_eq!(
        f.rows("kpi_daily_active_users", "local_date")?,
        rows(&[&["2026-11-28", "2", "3"], &["2026-11-29", "1", "2"]])
    );
    Ok(())
}

#[test]
fn top_users_split_buys_and_sells_and_rank_by_notional() -> Result<()> {
    let f = with_fixture()?;
    assert_eq!(
        f.columns("kpi_top_users")?,
        [
            "user_id",
            "trades",
            "buy_trades",
            "sell_trades",
            "usd",
            "cop_notional",
            "buy_cop_notional",
            "sell_cop_notional",
            "notional_rank"
        ]
    );
    assert_eq!(
        f.rows("kpi_top_users", "notional_rank")?,
        rows(&[
            &[
                "u3",
                "2",
                "2",
                "0",
                "220.00",
                "884600.00",
                "884600.00",
                "0.00",
                "1"
            ],
            &[
                "u1",
                "2",
                "1",
                "1",
                "130.00",
                "521150.00",
                "401000.00",
                "120150.00",
                "2"
            ],
            &[
                "u2",
                "1",
                "0",
                "1",
                "50.00",
                "199525.00",
                "0.00",
                "199525.00",
                "3"
            ],
        ])
    );
    Ok(())
}

#[test]
fn energy_views_aggregate_transactions_by_type_month_and_client() -> Result<()> {
    let f = with_fixture()?;
    assert_eq!(
        f.rows("kpi_energy_by_type", "tipo_energia, tipo_transaccion")?,
        rows(&[
            &["hidroelectrica", "compra", "1", "1000.000", "200000.00"],
            &["hidroelectrica", "venta", "1", "300.000", "105000.00"],
            &["solar", "compra", "1", "2000.000", "300000.00"],
            &["solar", "venta", "2", "600.000", "206000.00"],
        ])
    );
    // Months of the UTC timestamp; the transaction without a date is left out.
    assert_eq!(
        f.rows("kpi_energy_by_month", "month, tipo_transaccion")?,
        rows(&[
            &["2025-05-01", "compra", "1", "1000.000", "200000.00"],
            &["2025-05-01", "venta", "1", "300.000", "105000.00"],
            &["2025-06-01", "compra", "1", "2000.000", "300000.00"],
            &["2025-06-01", "venta", "1", "500.000", "170000.00"],
        ])
    );
    // Sales only (compras are from suppliers); Cliente A's undated sale counts.
    assert_eq!(
        f.rows("kpi_top_clients", "value_rank")?,
        rows(&[
            &["Cliente B", "1", "500.000", "170000.00", "1"],
            &["Cliente A", "2", "400.000", "141000.00", "2"],
        ])
    );
    Ok(())
}

#[test]
fn supplier_client_and_trm_views_describe_the_dimensions() -> Result<()> {
    let f = with_fixture()?;
    assert_eq!(
        f.rows("kpi_supplier_mix", "tipo_energia")?,
        rows(&[
            &["hidroelectrica", "1", "120.500"],
            &["solar", "2", "35.000"],
        ])
    );
    assert_eq!(
        f.rows("kpi_client_segments", "segmento")?,
        rows(&[&["industrial", "1"], &["residencial", "2"]])
    );
    assert_eq!(
        f.rows("kpi_trm_series", "vigenciadesde")?,
        rows(&[
            &["2026-11-27", "2026-11-27", "3990.00"],
            &["2026-11-28", "2026-11-28", "4000.00"],
        ])
    );
    Ok(())
}

#[test]
fn every_view_on_empty_tables_returns_no_rows() -> Result<()> {
    let f = empty()?;
    for view in KPI_VIEWS {
        assert_eq!(f.rows(view, "1")?, Vec::<Vec<String>>::new(), "{view}");
    }
    Ok(())
}

#[test]
fn ensuring_the_tables_again_keeps_the_data_and_the_views() -> Result<()> {
    let mut f = with_fixture()?;
    f.wh.ensure_tables()?;
    assert_eq!(f.rows("kpi_daily_active_users", "local_date")?.len(), 2);
    Ok(())
}
