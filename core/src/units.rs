//! Serde adapters so configuration files speak human units ("10m", 0.0178 EUR, 8 GB)
//! while the core keeps integers (ms, micros, MiB).

/// A duration written as text ("90s", "10m", "30days", "1h 30m"), kept in ms.
pub mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(ms: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(D::Error::custom)
    }

    pub fn parse(text: &str) -> Result<u64, String> {
        humantime::parse_duration(text)
            .map(|d| d.as_millis() as u64)
            .map_err(|e| format!("invalid duration {text:?} ({e}); write e.g. \"90s\", \"10m\", \"30days\""))
    }

    pub fn format(ms: u64) -> String {
        humantime::format_duration(std::time::Duration::from_millis(ms)).to_string()
    }
}

/// An amount of money in EUR (a float in the file), kept in integer micro-EUR.
pub mod eur_micros {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(micros: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*micros as f64 / 1e6)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let eur = f64::deserialize(d)?;
        if !eur.is_finite() || eur < 0.0 {
            return Err(D::Error::custom(format!("{eur} is not a non-negative amount of EUR")));
        }
        Ok((eur * 1e6).round() as u64)
    }
}

/// A signed amount of money in EUR, kept in integer micro-EUR.
pub mod eur_micros_signed {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(micros: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(*micros as f64 / 1e6)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let eur = f64::deserialize(d)?;
        if !eur.is_finite() {
            return Err(D::Error::custom(format!("{eur} is not an amount of EUR")));
        }
        Ok((eur * 1e6).round() as i64)
    }
}

/// RAM written in whole GB (GiB), kept in MiB.
pub mod gb_mib {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(mib: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(mib / 1024)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let gb = u32::deserialize(d)?;
        gb.checked_mul(1024)
            .ok_or_else(|| D::Error::custom(format!("{gb} GB is too large")))
    }
}

/// A list of RAM sizes in GB, kept in MiB.
pub mod gb_list_mib {
    use serde::{Deserialize, Deserializer, Serializer, de::Error, ser::SerializeSeq};

    pub fn serialize<S: Serializer>(mibs: &[u32], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(mibs.len()))?;
        for mib in mibs {
            seq.serialize_element(&(mib / 1024))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
        let gbs = Vec::<u32>::deserialize(d)?;
        gbs.into_iter()
            .map(|gb| {
                gb.checked_mul(1024)
                    .ok_or_else(|| D::Error::custom(format!("{gb} GB is too large")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn durations_parse_in_human_units() {
        assert_eq!(super::duration_ms::parse("10m"), Ok(600_000));
        assert_eq!(super::duration_ms::parse("30days"), Ok(30 * 86_400_000));
        assert_eq!(super::duration_ms::parse("1h 30m"), Ok(5_400_000));
        assert!(
            super::duration_ms::parse("ten minutes")
                .unwrap_err()
                .contains("invalid duration")
        );
        assert_eq!(super::duration_ms::format(600_000), "10m");
    }
}
