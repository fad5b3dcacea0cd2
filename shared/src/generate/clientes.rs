//! `clientes` records: people and businesses, identification numbers, e-mail addresses.

use rand::Rng;

use super::format::*;
use super::vocab::*;
use super::{Col, Defect, Gen};

pub(super) const CLIENTES_HEADER: &[&str] = &[
    "id_cliente",
    "nombre_cliente",
    "segmento",
    "tipo_identificacion",
    "numero_identificacion",
    "email",
    "ciudad",
    "fecha_registro",
];

pub(super) const CLIENTES_DEFECTS: &[(Defect, &str)] = &[
    (
        Defect::Missing(Col::IdCliente),
        "missing_required:id_cliente",
    ),
    (
        Defect::Missing(Col::NombreCliente),
        "missing_required:nombre_cliente",
    ),
    (Defect::Missing(Col::Segmento), "missing_required:segmento"),
    (Defect::InvalidEnum(Col::Segmento), "invalid_enum:segmento"),
    (
        Defect::InvalidEnum(Col::TipoIdentificacion),
        "invalid_enum:tipo_identificacion",
    ),
    (
        Defect::InvalidDate(Col::FechaRegistro),
        "invalid_date:fecha_registro",
    ),
    (Defect::InvalidEmail, "invalid_email"),
    (Defect::Ragged, "ragged_row"),
    (Defect::DuplicateKey, "duplicate_key"),
    (Defect::InvalidEncoding, "invalid_encoding"),
];

impl Gen {
    pub(super) fn cliente(&mut self, index: u64, defect: Option<Defect>) -> Option<usize> {
        let first = index == 0;
        let special = self.special(defect);
        self.numbered_key("CL-", index, 7, defect);
        if defect == Some(Defect::Missing(Col::IdCliente)) {
            push_blank(&mut self.rng, &mut self.line);
        } else {
            self.line.push_str(&self.key);
        }
        self.sep();

        let segment = match self.rng.random_range(0..100u32) {
            0..=59 => 0,
            60..=87 => 1,
            _ => 2,
        };
        let person = segment == 0;
        if person {
            self.person_name(first);
        } else {
            self.business_name(first);
        }
        let bad_at = self.name_field(defect, Col::NombreCliente, special);
        self.sep();

        match defect {
            Some(Defect::Missing(Col::Segmento)) => {}
            Some(Defect::InvalidEnum(Col::Segmento)) => {
                let v = pick(&mut self.rng, BAD_SEGMENT);
                self.line.push_str(v);
            }
            _ => {
                let v = pick(&mut self.rng, SEGMENTS[segment]);
                self.line.push_str(v);
            }
        }
        self.sep();

        // tipo_identificacion and numero_identificacion
        let id_type = if person {
            match self.rng.random_range(0..100u32) {
                0..=84 => "CC",
                85..=92 => "CE",
                93..=96 => "PA",
                _ => "TI",
            }
        } else {
            "NIT"
        };
        match defect {
            Some(Defect::InvalidEnum(Col::TipoIdentificacion)) => {
                let v = pick(&mut self.rng, BAD_ID_TYPE);
                self.line.push_str(v);
            }
            _ => match self.rng.random_range(0..100u32) {
                0..=4 => {}
                5..=12 => self.line.push_str(&id_type.to_ascii_lowercase()),
                _ => self.line.push_str(id_type),
            },
        }
        self.sep();
        self.id_number(id_type);
        self.sep();

        // email: derived from the name, so it looks like the person's or the company's
        match defect {
            Some(Defect::InvalidEmail) => self.email(person, true),
            _ => {
                if self.rng.random_range(0..100u32) >= 8 {
                    self.email(person, false);
                }
            }
        }
        self.sep();
        self.city_field(first, 3);
        let last_sep = self.line.len();
        self.sep();
        match defect {
            Some(Defect::InvalidDate(Col::FechaRegistro)) => {
                push_bad_date(&mut self.rng, &mut self.line, false)
            }
            _ => {
                if self.rng.random_range(0..100u32) >= 4 {
                    push_date(&mut self.rng, &mut self.line, false);
                }
            }
        }
        self.ragged(defect, last_sep, CLIENTES_HEADER.len());
        bad_at
    }

    pub(super) fn person_name(&mut self, force_accent: bool) {
        self.name.clear();
        let names = if self.rng.random_bool(0.5) {
            FEMALE_NAMES
        } else {
            MALE_NAMES
        };
        let first = if force_accent {
            pick_non_ascii(&mut self.rng, names)
        } else {
            pick(&mut self.rng, names)
        };
        self.name.push_str(first);
        if !first.contains(' ') && self.rng.random_range(0..100u32) < 25 {
            let second = pick(&mut self.rng, names);
            if second != first && !second.contains(' ') {
                self.name.push(' ');
                self.name.push_str(second);
            }
        }
        self.name.push(' ');
        let s1 = pick(&mut self.rng, SURNAMES);
        self.name.push_str(s1);
        if self.rng.random_range(0..100u32) < 80 {
            self.name.push(' ');
            let s2 = pick(&mut self.rng, SURNAMES);
            self.name.push_str(s2);
        }
    }

    pub(super) fn business_name(&mut self, force_accent: bool) {
        self.name.clear();
        let kind = if force_accent {
            pick_non_ascii(&mut self.rng, BUSINESS_KINDS)
        } else {
            pick(&mut self.rng, BUSINESS_KINDS)
        };
        self.name.push_str(kind);
        self.name.push(' ');
        let distinct = if self.rng.random_range(0..100u32) < 40 {
            pick(&mut self.rng, SURNAMES)
        } else {
            pick(&mut self.rng, BUSINESS_NAMES)
        };
        self.name.push_str(distinct);
        let legal = pick(&mut self.rng, LEGAL_BUSINESS);
        if !legal.is_empty() {
            self.name.push(' ');
            self.name.push_str(legal);
        }
    }

    pub(super) fn id_number(&mut self, id_type: &str) {
        match id_type {
            "NIT" => {
                let nit = self.nit_base();
                push_nit(&mut self.line, nit, self.rng.random_bool(0.2));
            }
            "CE" => {
                let n = self.rng.random_range(100_000..10_000_000u64);
                push_u64(&mut self.line, n);
            }
            "PA" => {
                for _ in 0..2 {
                    let c = (b'A' + self.rng.random_range(0..26u8)) as char;
                    self.line.push(c);
                }
                let n = self.rng.random_range(100_000..10_000_000u64);
                push_padded(&mut self.line, n, 7);
            }
            "TI" => {
                let n = self.rng.random_range(1_000_000_000..1_200_000_000u64);
                push_u64(&mut self.line, n);
            }
            _ => {
                let n = if self.rng.random_bool(0.5) {
                    self.rng.random_range(1_000_000_000..1_130_000_000u64)
                } else {
                    self.rng.random_range(3_000_000..99_999_999u64)
                };
                // Cédulas are often written with thousands dots; it is a text column.
                if self.rng.random_range(0..100u32) < 15 {
                    push_grouped(&mut self.line, n, '.');
                } else {
                    push_u64(&mut self.line, n);
                }
            }
        }
    }

    pub(super) fn nit_base(&mut self) -> u64 {
        const PREFIXES: [u64; 6] = [800, 830, 860, 890, 900, 901];
        let p = PREFIXES[self.rng.random_range(0..PREFIXES.len() as u32) as usize];
        p * 1_000_000 + self.rng.random_range(0..1_000_000u64)
    }

    pub(super) fn email(&mut self, person: bool, invalid: bool) {
        // Derive from the plain name, without a quoting suffix added by `add_special`.
        let delim = self.fmt.delim;
        let base = self.name.split(['\n', '"', delim]).next().unwrap_or("");
        self.slug.clear();
        if person {
            let mut words = base.trim_end().split(' ');
            let given = words.next().unwrap_or("cliente");
            let surname = words.next_back().unwrap_or("energia");
            push_slug(&mut self.slug, given, 16);
            self.slug
                .push(if self.rng.random_bool(0.7) { '.' } else { '_' });
            push_slug(&mut self.slug, surname, 16);
            if self.rng.random_bool(0.4) {
                push_u64(&mut self.slug, self.rng.random_range(1..100u64));
            }
        } else {
            self.slug.push_str(pick(&mut self.rng, EMAIL_ROLES));
        }
        let local_len = self.slug.len();
        // domain
        if person {
            self.slug.push_str(pick(&mut self.rng, EMAIL_DOMAINS));
        } else {
            let start = self.slug.len();
            // The trade name only: stop at the legal form (`S.A.S.`, `Ltda.`, `& Cía.`).
            for word in base.split(' ') {
                if word.contains(['.', '&']) {
                    break;
                }
                let budget = 30usize.saturating_sub(self.slug.len() - start);
                push_slug(&mut self.slug, word, budget);
            }
            if self.slug.len() == start {
                self.slug.push_str("empresa");
            }
            self.slug.push_str(if self.rng.random_bool(0.6) {
                ".com.co"
            } else {
                ".com"
            });
        }
        let (local, domain) = self.slug.split_at(local_len);
        if !invalid {
            self.line.push_str(local);
            self.line.push('@');
            self.line.push_str(domain);
            return;
        }
        match self.rng.random_range(0..3u32) {
            0 => {
                self.line.push_str(local);
                self.line.push('@');
            }
            1 => {
                self.line.push_str(local);
                self.line.push('.');
                self.line.push_str(domain);
            }
            _ => {
                self.line.push('@');
                self.line.push_str(domain);
            }
        }
    }
}
