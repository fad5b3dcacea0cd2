//! `transacciones` records: energy purchases and sales with quantities, prices and
//! counterparties.

use rand::Rng;

use super::format::*;
use super::vocab::*;
use super::{Col, Defect, Gen, POW10};

pub(super) const TRANSACCIONES_HEADER: &[&str] = &[
    "id_transaccion",
    "fecha_transaccion",
    "tipo_transaccion",
    "nombre_cliente_proveedor",
    "cantidad_comprada",
    "precio",
    "tipo_energia",
];

pub(super) const TRANSACCIONES_DEFECTS: &[(Defect, &str)] = &[
    (
        Defect::Missing(Col::TipoTransaccion),
        "missing_required:tipo_transaccion",
    ),
    (
        Defect::Missing(Col::Contraparte),
        "missing_required:nombre_cliente_proveedor",
    ),
    (
        Defect::Missing(Col::Cantidad),
        "missing_required:cantidad_comprada",
    ),
    (Defect::Missing(Col::Precio), "missing_required:precio"),
    (
        Defect::Missing(Col::TipoEnergia),
        "missing_required:tipo_energia",
    ),
    (
        Defect::InvalidNumber(Col::Cantidad),
        "invalid_number:cantidad_comprada",
    ),
    (Defect::InvalidNumber(Col::Precio), "invalid_number:precio"),
    (
        Defect::OutOfRange(Col::Cantidad),
        "out_of_range:cantidad_comprada",
    ),
    (Defect::OutOfRange(Col::Precio), "out_of_range:precio"),
    (
        Defect::InvalidEnum(Col::TipoTransaccion),
        "invalid_enum:tipo_transaccion",
    ),
    (
        Defect::InvalidEnum(Col::TipoEnergia),
        "invalid_enum:tipo_energia",
    ),
    (
        Defect::InvalidDate(Col::FechaTransaccion),
        "invalid_date:fecha_transaccion",
    ),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
    (Defect::InvalidEncoding, "invalid_encoding"),
];

impl Gen {
    pub(super) fn transaccion(&mut self, index: u64, defect: Option<Defect>) -> Option<usize> {
        let first = index == 0;
        let special = self.special(defect);
        self.numbered_key("TX-", index, 8, defect);
        self.line.push_str(&self.key);
        self.sep();

        match defect {
            Some(Defect::InvalidDate(Col::FechaTransaccion)) => {
                push_bad_date(&mut self.rng, &mut self.line, true)
            }
            _ => {
                if self.rng.random_range(0..100u32) >= 2 {
                    push_date(&mut self.rng, &mut self.line, true);
                }
            }
        }
        self.sep();

        match defect {
            Some(Defect::Missing(Col::TipoTransaccion)) => {}
            Some(Defect::InvalidEnum(Col::TipoTransaccion)) => self.push_pick(BAD_TRADE_KIND),
            _ => self.push_pick(TRADE_KINDS),
        }
        self.sep();

        let tipo = self.energy_type(first);
        match self.rng.random_range(0..100u32) {
            _ if first => self.person_name(true),
            0..=44 => self.person_name(false),
            45..=74 => self.business_name(false),
            _ => {
                self.name.clear();
                let prefix = pick(&mut self.rng, PLANT_PREFIXES[tipo]);
                self.name.push_str(prefix);
                self.name.push(' ');
                let place = pick(&mut self.rng, PLACES);
                self.name.push_str(place);
                self.name.push(' ');
                let legal = pick(&mut self.rng, LEGAL_PROVIDER);
                self.name.push_str(legal);
            }
        }
        let bad_at = self.name_field(defect, Col::Contraparte, special);
        self.sep();

        match defect {
            Some(Defect::Missing(Col::Cantidad)) => {}
            Some(Defect::InvalidNumber(Col::Cantidad)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::Cantidad)) => {
                if self.rng.random_bool(0.5) {
                    let zeros = self.rng.random_range(0..4u32);
                    push_decimal(&mut self.line, self.fmt, false, 0, zeros, false);
                } else {
                    let (m, d) = self.quantity();
                    push_decimal(&mut self.line, self.fmt, true, m, d, false);
                }
            }
            _ => {
                let (m, d) = self.quantity();
                let group = self.rng.random_range(0..20u32) == 0;
                push_decimal(&mut self.line, self.fmt, false, m, d, group);
            }
        }
        self.sep();

        match defect {
            Some(Defect::Missing(Col::Precio)) => {}
            Some(Defect::InvalidNumber(Col::Precio)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::Precio)) => {
                let (m, d) = self.price();
                push_decimal(&mut self.line, self.fmt, true, m, d, false);
            }
            _ => {
                let (m, d) = self.price();
                let group = self.rng.random_range(0..20u32) == 0;
                push_decimal(&mut self.line, self.fmt, false, m, d, group);
            }
        }
        let last_sep = self.line.len();
        self.sep();
        self.energy_field(defect, tipo, first);
        self.ragged(defect, last_sep, TRANSACCIONES_HEADER.len());
        bad_at
    }

    /// kWh, 1..=500000 with up to 3 decimals, uniform within a random decade so small and
    /// huge trades are both common (integer-only: no platform-dependent floating point).
    pub(super) fn quantity(&mut self) -> (u64, u32) {
        let decade = self.rng.random_range(0..6u32);
        let lo = POW10[decade as usize];
        let hi = (lo * 10).min(500_000);
        let d = self.rng.random_range(0..4u32);
        let p = POW10[d as usize];
        (self.rng.random_range(lo * p..=hi * p), d)
    }

    /// COP per kWh, 150..=1200 with up to 4 decimals.
    pub(super) fn price(&mut self) -> (u64, u32) {
        let d = self.rng.random_range(0..5u32);
        let p = POW10[d as usize];
        (self.rng.random_range(150 * p..=1_200 * p), d)
    }
}
