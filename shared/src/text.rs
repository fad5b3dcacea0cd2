//! Text normalisation shared by header matching, enums, names and PII protection.

use sha2::{Digest, Sha256};

/// Removes the diacritics of Latin letters (as Unicode NFKD + dropping combining marks would for
/// the letters Spanish and Portuguese use), keeping every other character.
pub fn strip_accent(c: char) -> char {
    match c {
        'á' | 'à' | 'ä' | 'â' | 'ã' | 'å' => 'a',
        'Á' | 'À' | 'Ä' | 'Â' | 'Ã' | 'Å' => 'A',
        'é' | 'è' | 'ë' | 'ê' => 'e',
        'É' | 'È' | 'Ë' | 'Ê' => 'E',
        'í' | 'ì' | 'ï' | 'î' => 'i',
        'Í' | 'Ì' | 'Ï' | 'Î' => 'I',
        'ó' | 'ò' | 'ö' | 'ô' | 'õ' => 'o',
        'Ó' | 'Ò' | 'Ö' | 'Ô' | 'Õ' => 'O',
        'ú' | 'ù' | 'ü' | 'û' => 'u',
        'Ú' | 'Ù' | 'Ü' | 'Û' => 'U',
        'ñ' => 'n',
        'Ñ' => 'N',
        'ç' => 'c',
        'Ç' => 'C',
        'ý' | 'ÿ' => 'y',
        'Ý' => 'Y',
        other => other,
    }
}

/// Header / name folding: lower case, accents removed, runs of spaces, hyphens and underscores
/// become one underscore, trimmed. `" Tipo  Energía "` → `tipo_energia`.
pub fn fold_key(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_sep = false;
    for c in s.trim().trim_start_matches('\u{feff}').chars() {
        if c.is_whitespace() || c == '_' || c == '-' {
            pending_sep = !out.is_empty();
            continue;
        }
        if pending_sep {
            out.push('_');
            pending_sep = false;
        }
        for l in strip_accent(c).to_lowercase() {
            out.push(l);
        }
    }
    out
}

/// Folding used to compare enum values: like [`fold_key`].
pub fn fold_enum(s: &str) -> String {
    fold_key(s)
}

/// Byte classes for [`clean_text`]: 0 plain, 1 ASCII space, 2 other ASCII whitespace or control,
/// 3 a lead byte that may start a Unicode space (U+0085, U+00A0, U+1680, U+2000–U+205F, U+3000).
const CLEAN_CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = 2;
        i += 1;
    }
    t[b' ' as usize] = 1;
    t[0x7f] = 2;
    t[0xc2] = 3;
    t[0xe1] = 3;
    t[0xe2] = 3;
    t[0xe3] = 3;
    t
};

/// Trims and collapses inner runs of whitespace (including embedded line breaks) to one space.
/// Returns the input unchanged (no allocation) when it is already clean.
pub fn clean_text(s: &str) -> std::borrow::Cow<'_, str> {
    let mut t = s.trim_ascii();
    let b = t.as_bytes();
    if b.first().is_some_and(|c| *c >= 0x80) || b.last().is_some_and(|c| *c >= 0x80) {
        t = t.trim();
    }
    let mut prev_space = false;
    let mut needs = false;
    let mut unicode_checked = false;
    for &c in t.as_bytes() {
        match CLEAN_CLASS[usize::from(c)] {
            0 => prev_space = false,
            1 => {
                if prev_space {
                    needs = true;
                    break;
                }
                prev_space = true;
            }
            2 => {
                needs = true;
                break;
            }
            _ => {
                prev_space = false;
                if !unicode_checked {
                    unicode_checked = true;
                    if t.chars().any(|ch| ch.is_whitespace() && !ch.is_ascii()) {
                        needs = true;
                        break;
                    }
                }
            }
        }
    }
    if !needs {
        return std::borrow::Cow::Borrowed(t);
    }
    let mut out = String::with_capacity(t.len());
    for word in t.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    std::borrow::Cow::Owned(out)
}

/// Upper case with accents removed: `José Núñez` → `JOSE NUNEZ`.
pub fn normalized_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        for u in strip_accent(c).to_uppercase() {
            out.push(u);
        }
    }
    out
}

/// Hex SHA-256 of salt + value: the only form in which identity numbers leave the raw zone.
pub fn pii_hash(salt: &[u8], value: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(value.as_bytes());
    hex::encode(h.finalize())
}

/// A pragmatic e-mail check: one `@`, a non-empty local part without spaces, and a domain with
/// at least one dot, labels of letters, digits and hyphens.
pub fn is_valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    if local.is_empty() || local.len() > 64 || domain.len() > 255 || domain.contains('@') {
        return false;
    }
    if local.chars().any(|c| {
        c.is_whitespace()
            || c.is_control()
            || matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | ':' | '"')
    }) || local.starts_with('.')
        || local.ends_with('.')
        || local.contains("..")
    {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|l| {
            !l.is_empty()
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphabetic))
}

/// `juan.perez@dominio.com` → `j***@dominio.com` (the domain stays for analytics).
pub fn mask_email(s: &str) -> String {
    match s.split_once('@') {
        Some((local, domain)) => {
            // Lower case on both sides, so spellings of one address mask the same.
            let first: String = local.chars().take(1).flat_map(char::to_lowercase).collect();
            format!("{first}***@{}", domain.to_lowercase())
        }
        None => "***".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_key_ignores_case_accents_and_separators() {
        assert_eq!(fold_key(" Tipo  Energía "), "tipo_energia");
        assert_eq!(fold_key("CANTIDAD-KWH"), "cantidad_kwh");
        assert_eq!(fold_key("\u{feff}id_cliente"), "id_cliente");
        assert_eq!(fold_key("HIDROELÉCTRICA"), "hidroelectrica");
    }

    #[test]
    fn clean_text_trims_and_collapses_whitespace() {
        assert_eq!(
            clean_text("  Energía   del\r\n Valle "),
            "Energía del Valle"
        );
        assert!(matches!(
            clean_text("Cali"),
            std::borrow::Cow::Borrowed("Cali")
        ));
    }

    #[test]
    fn normalized_name_is_upper_without_accents() {
        assert_eq!(normalized_name("José Núñez Peña"), "JOSE NUNEZ PENA");
    }

    #[test]
    fn emails_are_validated_and_masked() {
        assert!(is_valid_email("juan.perez@dominio.com"));
        assert!(is_valid_email("maria_1@empresa.com.co"));
        assert!(!is_valid_email("juan.perez@"));
        assert!(!is_valid_email("sin-arroba.com"));
        assert!(!is_valid_email("a b@x.com"));
        assert!(!is_valid_email("a@x"));
        assert_eq!(mask_email("juan.perez@Dominio.com"), "j***@dominio.com");
        assert_eq!(mask_email("Juan.Perez@DOMINIO.com"), "j***@dominio.com");
    }

    #[test]
    fn pii_hash_depends_on_salt() {
        let a = pii_hash(b"s1", "1020304050");
        assert_eq!(a.len(), 64);
        assert_ne!(a, pii_hash(b"s2", "1020304050"));
        assert_eq!(a, pii_hash(b"s1", "1020304050"));
    }
}
