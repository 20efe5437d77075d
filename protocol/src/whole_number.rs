//! Integer members of JSON requests that also take whole-number floats (`3.0`, `1e3`).
//!
//! JSON Schema, and with it OpenAPI 3.1, counts `3.0` as an integer: it is the same number as `3`.
//! serde reads integer fields from integer literals only, so a client whose JSON library writes
//! every number as a float (JavaScript's does not, Python's may) would be refused for a request
//! its schema allows. The integer members of the admin API's requests read through these
//! helpers (`#[serde(deserialize_with = "...")]`): a float is taken when it has no fraction and
//! fits the member's type; anything else is refused as before. Strings are never numbers here.

use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

/// 2^64 and -2^63, both exact as `f64`: the bounds of what a whole float may hold for `u64` and
/// `i64`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;
const MINUS_TWO_POW_63: f64 = -9_223_372_036_854_775_808.0;

/// One integer, from an integer literal or a whole-number float.
struct Whole<T>(T);

struct WholeVisitor<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "a whole number that fits {}", std::any::type_name::<T>())
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::invalid_value(Unexpected::Unsigned(value), &self))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<T, E> {
        T::try_from(value).map_err(|_| E::invalid_value(Unexpected::Signed(value), &self))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<T, E> {
        // NaN and the infinities have no zero fraction, so they fall through to the refusal.
        if value.fract() == 0.0 {
            // Both casts are exact: the value is whole and within the target's range.
            if (0.0..TWO_POW_64).contains(&value) {
                return self.visit_u64(value as u64);
            }
            if (MINUS_TWO_POW_63..0.0).contains(&value) {
                return self.visit_i64(value as i64);
            }
        }
        Err(E::invalid_value(Unexpected::Float(value), &self))
    }
}

impl<'de, T: TryFrom<u64> + TryFrom<i64>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(WholeVisitor(PhantomData))
            .map(Whole)
    }
}

/// An integer member.
pub fn one<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    Whole::deserialize(deserializer).map(|whole| whole.0)
}

/// An integer member that may be null (with `#[serde(default)]`, also left out).
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    Option::<Whole<T>>::deserialize(deserializer).map(|value| value.map(|whole| whole.0))
}

/// A list of integers.
pub fn list<'de, D, T>(deserializer: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64> + TryFrom<i64>,
{
    Vec::<Whole<T>>::deserialize(deserializer)
        .map(|values| values.into_iter().map(|whole| whole.0).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Request {
        #[serde(deserialize_with = "one")]
        port: u16,
        #[serde(default, deserialize_with = "option")]
        days: Option<u32>,
        #[serde(default, deserialize_with = "list")]
        ids: Vec<i64>,
    }

    fn read(json: &str) -> Result<Request, String> {
        serde_json::from_str(json).map_err(|error| error.to_string())
    }

    #[test]
    fn whole_floats_read_as_integers_and_the_rest_is_refused() {
        let request = |port, days, ids: &[i64]| Request {
            port,
            days,
            ids: ids.to_vec(),
        };
        let accepted: &[(&str, Request)] = &[
            (r#"{"port":8443}"#, request(8443, None, &[])),
            (r#"{"port":8443.0}"#, request(8443, None, &[])),
            (r#"{"port":1e3,"days":null}"#, request(1000, None, &[])),
            (r#"{"port":1,"days":30.0}"#, request(1, Some(30), &[])),
            (
                r#"{"port":1,"ids":[-4033026808228.0,195,0.0,-0.0,9223372036854775807]}"#,
                request(1, None, &[-4_033_026_808_228, 195, 0, 0, i64::MAX]),
            ),
            (
                r#"{"port":1,"ids":[-9223372036854775808.0]}"#,
                request(1, None, &[i64::MIN]),
            ),
            // Read exactly (serde_json's `float_roundtrip`), not one ULP off into a fraction.
            (
                r#"{"port":1,"ids":[2251799813685247.0]}"#,
                request(1, None, &[2_251_799_813_685_247]),
            ),
        ];
        for (json, expected) in accepted {
            assert_eq!(read(json).as_ref(), Ok(expected), "{json}");
        }
        let refused = [
            r#"{"port":8443.5}"#,
            r#"{"port":65536.0}"#,
            r#"{"port":-1.0}"#,
            r#"{"port":"8443"}"#,
            r#"{"port":1e400}"#,
            r#"{"port":1,"days":-1}"#,
            r#"{"port":1,"ids":[9223372036854775808.0]}"#,
            r#"{"port":1,"ids":[1.25]}"#,
            r#"{"port":1,"ids":["1"]}"#,
        ];
        for json in refused {
            assert!(read(json).is_err(), "{json} was read");
        }
    }
}
