//! `proveedores` records: power plants and their suppliers, capacities in MW.

use rand::Rng;

use super::format::*;
use super::vocab::*;
use super::{Col, Defect, Gen, POW10};

pub(super) const PROVEEDORES_HEADER: &[&str] = &[
    "nombre_proveedor",
    "tipo_energia",
    "id_proveedor",
    "capacidad_mw",
    "ciudad",
];

pub(super) const PROVEEDORES_DEFECTS: &[(Defect, &str)] = &[
    (
        Defect::Missing(Col::NombreProveedor),
        "missing_required:nombre_proveedor",
    ),
    (
        Defect::Missing(Col::TipoEnergia),
        "missing_required:tipo_energia",
    ),
    (
        Defect::InvalidNumber(Col::CapacidadMw),
        "invalid_number:capacidad_mw",
    ),
    (
        Defect::OutOfRange(Col::CapacidadMw),
        "out_of_range:capacidad_mw",
    ),
    (
        Defect::InvalidEnum(Col::TipoEnergia),
        "invalid_enum:tipo_energia",
    ),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
    (Defect::InvalidEncoding, "invalid_encoding"),
];

impl Gen {
    pub(super) fn proveedor(&mut self, index: u64, defect: Option<Defect>) -> Option<usize> {
        let first = index == 0;
        let special = self.special(defect);
        let tipo = self.energy_type(first);

        self.key.clear();
        if defect == Some(Defect::DuplicateKey) && self.recall_key() {
            self.name.clear();
            self.name.push_str(&self.key);
        } else {
            self.name.clear();
            let prefix = pick(&mut self.rng, PLANT_PREFIXES[tipo]);
            self.name.push_str(prefix);
            self.name.push(' ');
            let place = if first {
                pick_non_ascii(&mut self.rng, PLACES)
            } else {
                pick(&mut self.rng, PLACES)
            };
            self.name.push_str(place);
            self.name.push(' ');
            let legal = pick(&mut self.rng, LEGAL_PROVIDER);
            self.name.push_str(legal);
            self.name.push(' ');
            // The number makes clean keys unique even after case/accent folding.
            push_padded(&mut self.name, index + 1, 6);
            if special {
                add_special(&mut self.rng, &mut self.name, self.fmt.delim);
            }
            self.key.push_str(&self.name);
        }
        let bad_at = self.name_field(defect, Col::NombreProveedor, false);
        self.sep();
        self.energy_field(defect, tipo, first);
        self.sep();
        match self.rng.random_range(0..100u32) {
            0..=69 => {
                let nit = self.nit_base();
                push_nit(&mut self.line, nit, self.rng.random_bool(0.3));
            }
            70..=94 => {
                self.line.push_str("PRV-");
                push_padded(&mut self.line, index + 1, 6);
            }
            _ => {}
        }
        self.sep();
        match defect {
            Some(Defect::InvalidNumber(Col::CapacidadMw)) => {
                push_bad_number(&mut self.rng, &mut self.line, self.fmt)
            }
            Some(Defect::OutOfRange(Col::CapacidadMw)) => {
                let (m, d) = self.capacity();
                push_decimal(&mut self.line, self.fmt, true, m.max(1), d, false);
            }
            _ => {
                if self.rng.random_range(0..100u32) >= 5 {
                    let (m, d) = self.capacity();
                    let group = self.rng.random_range(0..20u32) == 0;
                    push_decimal(&mut self.line, self.fmt, false, m, d, group);
                }
            }
        }
        let last_sep = self.line.len();
        self.sep();
        self.city_field(first, 3);
        self.ragged(defect, last_sep, PROVEEDORES_HEADER.len());
        bad_at
    }

    /// MW, 0.5..=1500 with up to 2 decimals: mostly small plants, a few large dams.
    pub(super) fn capacity(&mut self) -> (u64, u32) {
        // Bands in hundredths of MW; integer-only so the bytes never depend on the platform's libm.
        const BANDS: [(u64, u64); 4] = [
            (50, 2_000),
            (2_000, 10_000),
            (10_000, 50_000),
            (50_000, 150_000),
        ];
        let (lo, hi) = BANDS[self.rng.random_range(0..BANDS.len() as u32) as usize];
        let hundredths = self.rng.random_range(lo..=hi);
        let d = self.rng.random_range(0..3u32);
        (hundredths / POW10[2 - d as usize], d)
    }
}
