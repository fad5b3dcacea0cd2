//! The KPI views: each indicator the dashboard (or QuickSight, or any BI tool) shows is defined
//! once here, as a view over the warehouse tables, and rendered for Redshift and DuckDB.
//!
//! The queries use only SQL both engines accept — `CAST`, `CASE`, `DATE_TRUNC`, window
//! functions, `COUNT(DISTINCT …)`, subqueries in `FROM` — and no ordering or limit: a reader picks
//! its own top N (`WHERE notional_rank <= 10`). Every table is schema-qualified, which Redshift's
//! late-binding views (`WITH NO SCHEMA BINDING`) require; late binding lets a table be dropped and
//! created again under its views. Every literal goes through [`SqlDialect::literal`].

use crate::contract::Dataset;
use crate::trades::{ArchiveStatus, Side};

use super::ddl::{table_name, Table};
use super::sql::{Ident, SqlDialect, TableName};
use super::{check_size, LoadError};

/// The KPI views, in the order they are created.
pub const KPI_VIEWS: [&str; 13] = [
    "kpi_daily_cop_volume",
    "kpi_hourly_cop_volume",
    "kpi_daily_spread",
    "kpi_hourly_spread",
    "kpi_rejection_rate",
    "kpi_daily_active_users",
    "kpi_top_users",
    "kpi_energy_by_type",
    "kpi_energy_by_month",
    "kpi_top_clients",
    "kpi_supplier_mix",
    "kpi_client_segments",
    "kpi_trm_series",
];

/// The `reason` of the row of `kpi_rejection_rate` over every reason (no reason code has
/// parentheses).
pub const ALL_REASONS: &str = "(all)";

/// The values of the data the views filter on, and the label of the overall row of
/// `kpi_rejection_rate`. One place, so a renamed status or side is changed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KpiValues {
    pub applied: String,
    pub rejected: String,
    pub buy: String,
    pub sell: String,
    /// `tipo_transaccion` of a sale to a client.
    pub sale: String,
    /// [`ALL_REASONS`].
    pub all_reasons: String,
}

impl Default for KpiValues {
    fn default() -> KpiValues {
        KpiValues {
            applied: ArchiveStatus::Applied.as_str().into(),
            rejected: ArchiveStatus::Rejected.as_str().into(),
            buy: Side::Buy.as_str().into(),
            sell: Side::Sell.as_str().into(),
            sale: "venta".into(),
            all_reasons: ALL_REASONS.into(),
        }
    }
}

/// `CREATE OR REPLACE VIEW <schema>.<view>` for every view of [`KPI_VIEWS`], in that order.
/// The tables they read must exist first (DuckDB binds a view when it is created).
pub fn kpi_views(dialect: &SqlDialect, schema: &Ident) -> Result<Vec<String>, LoadError> {
    kpi_views_with(dialect, schema, &KpiValues::default())
}

pub(crate) fn kpi_views_with(
    dialect: &SqlDialect,
    schema: &Ident,
    values: &KpiValues,
) -> Result<Vec<String>, LoadError> {
    let q = Queries::new(dialect, schema, values)?;
    let bodies = [
        q.daily_cop_volume(),
        q.hourly_cop_volume(),
        q.daily_spread(),
        q.hourly_spread(),
        q.rejection_rate(),
        q.daily_active_users(),
        q.top_users(),
        q.energy_by_type(),
        q.energy_by_month()?,
        q.top_clients(),
        q.supplier_mix(),
        q.client_segments(),
        q.trm_series(),
    ];
    // Redshift: late binding, so re-creating a table (or loading before the views) never
    // fails on a view that depends on it.
    let binding = match dialect {
        SqlDialect::Redshift(_) => "\nWITH NO SCHEMA BINDING",
        SqlDialect::DuckDb => "",
    };
    KPI_VIEWS
        .iter()
        .zip(bodies)
        .map(|(name, body)| {
            let view = TableName {
                schema: schema.clone(),
                table: Ident::new(name)?,
            };
            let sql = format!("CREATE OR REPLACE VIEW {view} AS\n{body}{binding}");
            check_size(&sql)?;
            Ok(sql)
        })
        .collect()
}

/// The tables and literals the view queries are written with.
struct Queries {
    trades: TableName,
    transacciones: TableName,
    clientes: TableName,
    proveedores: TableName,
    trm: TableName,
    applied: String,
    rejected: String,
    buy: String,
    sell: String,
    sale: String,
    all_reasons: String,
    dialect: SqlDialect,
}

/// An average to 4 places that both engines compute alike: the argument is widened to 6 places
/// first (Redshift's decimal `AVG` keeps the argument's scale; DuckDB's goes through a double),
/// then rounded by the cast.
fn avg4(column: &str) -> String {
    format!("CAST(AVG(CAST({column} AS DECIMAL(18,6))) AS DECIMAL(18,4))")
}

impl Queries {
    fn new(dialect: &SqlDialect, schema: &Ident, v: &KpiValues) -> Result<Queries, LoadError> {
        let lit = |s: &str| dialect.literal(s);
        Ok(Queries {
            trades: table_name(schema, Table::TradesHistory)?,
            transacciones: table_name(schema, Dataset::Transacciones)?,
            clientes: table_name(schema, Dataset::Clientes)?,
            proveedores: table_name(schema, Dataset::Proveedores)?,
            trm: table_name(schema, Dataset::Trm)?,
            applied: lit(&v.applied)?,
            rejected: lit(&v.rejected)?,
            buy: lit(&v.buy)?,
            sell: lit(&v.sell)?,
            sale: lit(&v.sale)?,
            all_reasons: lit(&v.all_reasons)?,
            dialect: dialect.clone(),
        })
    }

    /// Per Bogotá day and side: applied trades, USD and COP notional.
    fn daily_cop_volume(&self) -> String {
        format!(
            "SELECT local_date, side, COUNT(*) AS trades, SUM(usd_amount) AS usd, SUM(cop_notional) AS cop_notional\n\
             FROM {}\n\
             WHERE status = {}\n\
             GROUP BY local_date, side",
            self.trades, self.applied
        )
    }

    /// Per Bogotá day and hour and side: the same figures hour by hour.
    fn hourly_cop_volume(&self) -> String {
        format!(
            "SELECT local_date, local_hour, side, COUNT(*) AS trades, SUM(usd_amount) AS usd, SUM(cop_notional) AS cop_notional\n\
             FROM {}\n\
             WHERE status = {}\n\
             GROUP BY local_date, local_hour, side",
            self.trades, self.applied
        )
    }

    /// Per Bogotá day and hour: the applied trades' average rate against the official rate.
    fn hourly_spread(&self) -> String {
        format!(
            "SELECT local_date, local_hour, COUNT(*) AS trades, COUNT(trm) AS trades_with_trm, \
             {} AS avg_rate, MAX(trm) AS trm, {} AS avg_spread_cop\n\
             FROM {}\n\
             WHERE status = {}\n\
             GROUP BY local_date, local_hour",
            avg4("rate"),
            avg4("spread_cop"),
            self.trades,
            self.applied
        )
    }

    /// Per Bogotá day: the applied trades' rates against the official rate of that day (one
    /// TRM is in force on a day, so `MAX` is that rate), and how many trades had none.
    fn daily_spread(&self) -> String {
        format!(
            "SELECT local_date, COUNT(*) AS trades, COUNT(trm) AS trades_with_trm, COUNT(*) - COUNT(trm) AS trades_without_trm, \
             {} AS avg_rate, MAX(trm) AS trm, {} AS avg_spread_cop, MIN(spread_cop) AS min_spread_cop, MAX(spread_cop) AS max_spread_cop\n\
             FROM {}\n\
             WHERE status = {}\n\
             GROUP BY local_date",
            avg4("rate"),
            avg4("spread_cop"),
            self.trades,
            self.applied
        )
    }

    /// Rejected trades per reason, and over every reason, as a share of the decided trades
    /// (applied or rejected; a duplicate decides nothing). No row at all before a decision.
    fn rejection_rate(&self) -> String {
        format!(
            "SELECT r.reason, r.rejected, d.decided, CAST(CAST(r.rejected AS DOUBLE PRECISION) / d.decided AS DECIMAL(9,6)) AS rejected_share\n\
             FROM (\n\
             SELECT reason, COUNT(*) AS rejected FROM {t} WHERE status = {rej} GROUP BY reason\n\
             UNION ALL\n\
             SELECT {all} AS reason, COUNT(*) AS rejected FROM {t} WHERE status = {rej}\n\
             ) AS r\n\
             CROSS JOIN (SELECT COUNT(*) AS decided FROM {t} WHERE status IN ({app}, {rej})) AS d\n\
             WHERE d.decided > 0",
            t = self.trades,
            rej = self.rejected,
            app = self.applied,
            all = self.all_reasons,
        )
    }

    /// Per Bogotá day: distinct users with an applied trade.
    fn daily_active_users(&self) -> String {
        format!(
            "SELECT local_date, COUNT(DISTINCT user_id) AS active_users, COUNT(*) AS trades\n\
             FROM {}\n\
             WHERE status = {}\n\
             GROUP BY local_date",
            self.trades, self.applied
        )
    }

    /// Per user: applied trades, notional, the buy/sell split, and the rank by notional (ties
    /// broken by user id, so a top N is always N users).
    fn top_users(&self) -> String {
        format!(
            "SELECT user_id, COUNT(*) AS trades, \
             COUNT(CASE WHEN side = {buy} THEN 1 END) AS buy_trades, \
             COUNT(CASE WHEN side = {sell} THEN 1 END) AS sell_trades, \
             SUM(usd_amount) AS usd, SUM(cop_notional) AS cop_notional, \
             SUM(CASE WHEN side = {buy} THEN cop_notional ELSE 0 END) AS buy_cop_notional, \
             SUM(CASE WHEN side = {sell} THEN cop_notional ELSE 0 END) AS sell_cop_notional, \
             ROW_NUMBER() OVER (ORDER BY SUM(cop_notional) DESC, user_id) AS notional_rank\n\
             FROM {t}\n\
             WHERE status = {app}\n\
             GROUP BY user_id",
            buy = self.buy,
            sell = self.sell,
            t = self.trades,
            app = self.applied,
        )
    }

    /// Per energy type and purchase/sale: transactions, kWh and COP.
    fn energy_by_type(&self) -> String {
        format!(
            "SELECT tipo_energia, tipo_transaccion, COUNT(*) AS transactions, SUM(cantidad_comprada) AS kwh, SUM(total) AS total_cop\n\
             FROM {}\n\
             GROUP BY tipo_energia, tipo_transaccion",
            self.transacciones
        )
    }

    /// Per month (first day, UTC) and purchase/sale: transactions, kWh and COP. The timestamp
    /// becomes a plain one first: in UTC in both (Redshift's session time zone is UTC unless
    /// set otherwise; DuckDB without its ICU extension has no other), and DuckDB truncates a
    /// `TIMESTAMPTZ` only with ICU.
    fn energy_by_month(&self) -> Result<String, LoadError> {
        Ok(format!(
            "SELECT month, tipo_transaccion, COUNT(*) AS transactions, SUM(cantidad_comprada) AS kwh, SUM(total) AS total_cop\n\
             FROM (SELECT CAST(DATE_TRUNC({}, CAST(fecha_transaccion AS TIMESTAMP)) AS DATE) AS month, tipo_transaccion, cantidad_comprada, total FROM {} WHERE fecha_transaccion IS NOT NULL) AS t\n\
             GROUP BY month, tipo_transaccion",
            self.dialect.literal("month")?,
            self.transacciones
        ))
    }

    /// Per client of a sale: sales, kWh, COP, and the rank by COP (ties by name).
    fn top_clients(&self) -> String {
        format!(
            "SELECT nombre_cliente_proveedor AS client, COUNT(*) AS sales, SUM(cantidad_comprada) AS kwh, SUM(total) AS total_cop, \
             ROW_NUMBER() OVER (ORDER BY SUM(total) DESC, nombre_cliente_proveedor) AS value_rank\n\
             FROM {}\n\
             WHERE tipo_transaccion = {}\n\
             GROUP BY nombre_cliente_proveedor",
            self.transacciones, self.sale
        )
    }

    /// Per energy type: suppliers and their capacity.
    fn supplier_mix(&self) -> String {
        format!(
            "SELECT tipo_energia, COUNT(*) AS suppliers, SUM(capacidad_mw) AS capacity_mw\n\
             FROM {}\n\
             GROUP BY tipo_energia",
            self.proveedores
        )
    }

    /// Per segment: clients.
    fn client_segments(&self) -> String {
        format!(
            "SELECT segmento, COUNT(*) AS clients\nFROM {}\nGROUP BY segmento",
            self.clientes
        )
    }

    /// The official rate, one row per published rate and the days it is in force.
    fn trm_series(&self) -> String {
        format!(
            "SELECT vigenciadesde, vigenciahasta, valor AS trm\nFROM {}",
            self.trm
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::MAX_STATEMENT_BYTES;

    use crate::load::test_redshift as redshift;

    fn view<'a>(views: &'a [String], name: &str) -> &'a str {
        let i = KPI_VIEWS
            .iter()
            .position(|v| *v == name)
            .unwrap_or(usize::MAX);
        views.get(i).map_or("", String::as_str)
    }

    const DAILY_COP_VOLUME: &str = "CREATE OR REPLACE VIEW lago.kpi_daily_cop_volume AS
SELECT local_date, side, COUNT(*) AS trades, SUM(usd_amount) AS usd, SUM(cop_notional) AS cop_notional
FROM lago.trades_history
WHERE status = 'applied'
GROUP BY local_date, side";

    #[test]
    fn daily_cop_volume_is_the_same_query_in_both_dialects_late_bound_in_redshift(
    ) -> Result<(), LoadError> {
        let schema = Ident::new("lago")?;
        let duck = kpi_views(&SqlDialect::DuckDb, &schema)?;
        let red = kpi_views(&redshift()?, &schema)?;
        assert_eq!(view(&duck, "kpi_daily_cop_volume"), DAILY_COP_VOLUME);
        assert_eq!(
            view(&red, "kpi_daily_cop_volume"),
            format!("{DAILY_COP_VOLUME}\nWITH NO SCHEMA BINDING")
        );
        Ok(())
    }

    #[test]
    fn rejection_rate_escapes_its_literals_per_dialect() -> Result<(), LoadError> {
        // GIVEN a label for the overall row with a quote, a backslash and a second statement
        let hostile = "(all) \\'; DROP VIEW lago.kpi_top_users; --";
        let values = KpiValues {
            all_reasons: hostile.into(),
            ..KpiValues::default()
        };
        let schema = Ident::new("lago")?;
        let body = |all: &str| {
            format!(
                "CREATE OR REPLACE VIEW lago.kpi_rejection_rate AS
SELECT r.reason, r.rejected, d.decided, CAST(CAST(r.rejected AS DOUBLE PRECISION) / d.decided AS DECIMAL(9,6)) AS rejected_share
FROM (
SELECT reason, COUNT(*) AS rejected FROM lago.trades_history WHERE status = 'rejected' GROUP BY reason
UNION ALL
SELECT {all} AS reason, COUNT(*) AS rejected FROM lago.trades_history WHERE status = 'rejected'
) AS r
CROSS JOIN (SELECT COUNT(*) AS decided FROM lago.trades_history WHERE status IN ('applied', 'rejected')) AS d
WHERE d.decided > 0"
            )
        };
        // WHEN the views are rendered for each dialect
        let duck = kpi_views_with(&SqlDialect::DuckDb, &schema, &values)?;
        let red = kpi_views_with(&redshift()?, &schema, &values)?;
        // THEN quotes are doubled in both, backslashes doubled only for Redshift
        let duck_sql = view(&duck, "kpi_rejection_rate");
        let red_sql = view(&red, "kpi_rejection_rate");
        assert_eq!(
            duck_sql,
            body("'(all) \\''; DROP VIEW lago.kpi_top_users; --'")
        );
        assert_eq!(
            red_sql,
            format!(
                "{}\nWITH NO SCHEMA BINDING",
                body("'(all) \\\\''; DROP VIEW lago.kpi_top_users; --'")
            )
        );
        // AND each is one statement whose literals decode back to the values
        let expected: Vec<String> = ["rejected", hostile, "rejected", "applied", "rejected"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            SqlDialect::DuckDb.single_statement_literals(duck_sql),
            Some(expected.clone())
        );
        assert_eq!(
            redshift()?.single_statement_literals(red_sql),
            Some(expected)
        );
        Ok(())
    }

    #[test]
    fn every_view_is_one_schema_qualified_statement_within_the_size_limit() -> Result<(), LoadError>
    {
        let schema = Ident::new("energy")?;
        for dialect in [SqlDialect::DuckDb, redshift()?] {
            let views = kpi_views(&dialect, &schema)?;
            assert_eq!(views.len(), KPI_VIEWS.len());
            for (sql, name) in views.iter().zip(KPI_VIEWS) {
                assert!(
                    sql.starts_with(&format!("CREATE OR REPLACE VIEW energy.{name} AS\nSELECT ")),
                    "{sql}"
                );
                assert!(sql.len() <= MAX_STATEMENT_BYTES);
                assert!(dialect.single_statement_literals(sql).is_some(), "{sql}");
                // Every FROM and JOIN names a table of the schema or a subquery.
                for (i, _) in sql.match_indices("FROM ").chain(sql.match_indices("JOIN ")) {
                    let next = &sql[i..].split_whitespace().nth(1).unwrap_or_default();
                    assert!(
                        next.starts_with("energy.") || next.starts_with('('),
                        "{name}: {next}"
                    );
                }
            }
        }
        Ok(())
    }

    #[test]
    fn redshift_views_use_no_duckdb_only_sql_and_bind_late() -> Result<(), LoadError> {
        // Constructs DuckDB accepts and Redshift does not (or treats differently).
        const DUCKDB_ONLY: [&str; 20] = [
            "GROUP BY ALL",
            "ORDER BY ALL",
            "STRFTIME",
            "STRPTIME",
            "::",
            "READ_PARQUET",
            "QUALIFY",
            "FILTER (",
            "TRY_CAST",
            "STRING_AGG",
            "LIST(",
            "ARG_MAX",
            "ARG_MIN",
            "COUNT_IF",
            "EPOCH",
            "DATE_DIFF",
            "EXCLUDE",
            "COLUMNS(",
            "HUGEINT",
            "USING SAMPLE",
        ];
        let views = kpi_views(&redshift()?, &Ident::new("lago")?)?;
        for sql in &views {
            let upper = sql.to_uppercase();
            for bad in DUCKDB_ONLY {
                assert!(!upper.contains(bad), "{bad} in {sql}");
            }
            // A view has no order or limit of its own: only a window orders its rows.
            assert_eq!(
                upper.matches("ORDER BY").count(),
                upper.matches("OVER (ORDER BY").count(),
                "{sql}"
            );
            assert!(!upper.contains("LIMIT "), "{sql}");
            // DuckDB's DOUBLE is Redshift's DOUBLE PRECISION (FLOAT8).
            assert_eq!(
                upper.matches("DOUBLE").count(),
                upper.matches("DOUBLE PRECISION").count(),
                "{sql}"
            );
            assert!(sql.ends_with("\nWITH NO SCHEMA BINDING"), "{sql}");
        }
        Ok(())
    }

    #[test]
    fn a_nul_in_a_value_is_refused() -> Result<(), LoadError> {
        let values = KpiValues {
            sale: "venta\0".into(),
            ..KpiValues::default()
        };
        assert!(matches!(
            kpi_views_with(&SqlDialect::DuckDb, &Ident::new("lago")?, &values),
            Err(LoadError::InvalidLiteral(_))
        ));
        Ok(())
    }
}
