//! Which keys of a key file this device would present, and in what order (ARCHITECTURE §6).
//!
//! Keys bound to this unit ID come first, in file order; then the one-time keys, starting at an
//! offset derived from the unit ID and stepping by a stride also derived from it (wrapping
//! around, every key once), so that devices sharing one stick spread over the keys instead of all
//! racing for the first; then the mass-deployment keys, in file order. Keys bound to another unit
//! ID are never presented.
//!
//! The offset is FNV-1a (64 bit) of the unit ID's normalised text, modulo the number of one-time
//! keys; the stride is the same hash's upper half, modulo the number of keys, made coprime with it
//! so the walk visits every key. Stable across builds, platforms and Rust versions (unlike `std`'s
//! hasher), and cheap. A stride rather than the next key is what keeps a fleet fast: with plain
//! wrap-around, a device whose first key is taken walks the whole run of taken keys after it
//! (linear probing's clusters), one refused request each; with a stride of its own it jumps out
//! of them (as double hashing does). Both decide only the order, never whether a key is used, so
//! changing them is harmless.
//!
//! A stick may carry thousands of keys, and a pass usually looks at a handful of them: the keys
//! are sorted by type once per key source ([`KeyKinds`], one pass over the file), and each device
//! walks its order lazily ([`KeyWalk`]), so that a look costs what it presents rather than the
//! size of the file. A fleet sharing one source (the simulator) sorts once for all its devices;
//! making a walk still looks at every device-bound key, to find this unit's.

use onboard_protocol::{KeyEntry, KeyKind, UnitId};

/// The indexes (0-based, into `keys`) of the keys `unit_id` would present, in the order it would
/// try them.
pub fn key_order(keys: &[KeyEntry], unit_id: &UnitId) -> Vec<usize> {
    let kinds = KeyKinds::of(keys);
    let mut walk = kinds.walk(keys, unit_id);
    std::iter::from_fn(|| walk.next(&kinds)).collect()
}

/// The keys of one key file by type, in file order: made once per file, and what every device's
/// [`KeyWalk`] over that file is drawn from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyKinds {
    /// How many keys the file has, to catch a walk over another one.
    keys: usize,
    /// Device-bound keys (to any unit).
    bound: Vec<usize>,
    one_time: Vec<usize>,
    mass: Vec<usize>,
}

impl KeyKinds {
    /// Sorts the indexes of `keys` by type.
    pub fn of(keys: &[KeyEntry]) -> KeyKinds {
        let mut kinds = KeyKinds {
            keys: keys.len(),
            ..KeyKinds::default()
        };
        for (index, entry) in keys.iter().enumerate() {
            match entry.kind() {
                KeyKind::DeviceBound => kinds.bound.push(index),
                KeyKind::OneTime => kinds.one_time.push(index),
                KeyKind::MassDeployment => kinds.mass.push(index),
            }
        }
        kinds
    }

    /// The walk of `unit_id` over `keys`, which these kinds were made of.
    pub(crate) fn walk(&self, keys: &[KeyEntry], unit_id: &UnitId) -> KeyWalk {
        debug_assert_eq!(keys.len(), self.keys, "a walk over another key file");
        let count = self.one_time.len();
        let offset = one_time_offset(unit_id, count);
        KeyWalk {
            bound: self
                .bound
                .iter()
                .copied()
                .filter(|index| keys[*index].unit_id() == Some(unit_id))
                .collect(),
            next_one_time: offset,
            stride: one_time_stride(unit_id, count),
            taken: 0,
        }
    }
}

/// One device's place in its order over a key file: its bound keys, then the one-time keys by
/// its offset and stride, then the mass-deployment keys. It borrows nothing, so it can be kept
/// beside the key file it walks; every call must pass the same [`KeyKinds`] it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyWalk {
    /// This unit's bound keys.
    bound: Vec<usize>,
    /// The position among the one-time keys the walk is at.
    next_one_time: usize,
    stride: usize,
    /// How many keys the walk has given.
    taken: usize,
}

impl KeyWalk {
    /// The next key in the order, if any is left.
    pub(crate) fn next(&mut self, kinds: &KeyKinds) -> Option<usize> {
        let count = kinds.one_time.len();
        let position = self.taken;
        let index = if let Some(index) = self.bound.get(position) {
            *index
        } else if position - self.bound.len() < count {
            let index = kinds.one_time[self.next_one_time];
            // Below `count` both, so the sum cannot overflow.
            self.next_one_time = (self.next_one_time + self.stride) % count;
            index
        } else {
            *kinds.mass.get(position - self.bound.len() - count)?
        };
        self.taken += 1;
        Some(index)
    }

    /// How many keys the whole walk gives (those given already included).
    pub(crate) fn len(&self, kinds: &KeyKinds) -> usize {
        self.bound.len() + kinds.one_time.len() + kinds.mass.len()
    }
}

/// Where `unit_id` starts among `count` one-time keys: FNV-1a 64 of its text, modulo `count`
/// (0 when there are none).
pub fn one_time_offset(unit_id: &UnitId, count: usize) -> usize {
    if count == 0 {
        return 0;
    }
    let hash = fnv1a_64(unit_id.as_str().as_bytes());
    // The remainder is below `count`, so it fits back into usize.
    (hash % count as u64) as usize
}

/// How far `unit_id` steps among `count` one-time keys: from the upper half of its FNV-1a 64
/// hash, in `1..count`, and coprime with `count` so that the walk visits every key once (1 when
/// there are fewer than 3).
pub fn one_time_stride(unit_id: &UnitId, count: usize) -> usize {
    if count < 3 {
        return 1;
    }
    let hash = fnv1a_64(unit_id.as_str().as_bytes()) >> 32;
    // In 1..count: never 0, which would stand still.
    let mut stride = 1 + (hash % (count as u64 - 1)) as usize;
    while gcd(stride, count) != 1 {
        stride = stride % (count - 1) + 1;
    }
    stride
}

fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// FNV-1a, 64 bit: the published offset basis and prime.
fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use onboard_protocol::FirstAuthKey;

    use super::*;

    const ME: &str = "00E0C5540B8B";
    const OTHER: &str = "00E0C5540B8C";

    /// Builds keys from a compact spelling: `b:UNIT` device-bound, `o` one-time, `m` mass.
    fn keys(spec: &[&str]) -> Vec<KeyEntry> {
        spec.iter()
            .enumerate()
            .map(|(index, kind)| {
                let key = FirstAuthKey::new(format!("{:017}", index + 1)).unwrap();
                match *kind {
                    "o" => KeyEntry::one_time(key),
                    "m" => KeyEntry::mass(key),
                    bound => {
                        let unit = bound.strip_prefix("b:").unwrap().parse().unwrap();
                        KeyEntry::device_bound(key, unit)
                    }
                }
            })
            .collect()
    }

    fn unit(text: &str) -> UnitId {
        text.parse().unwrap()
    }

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a_64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn order_follows_bound_then_one_time_from_the_offset_then_mass() {
        let (offset, stride) = (one_time_offset(&unit(ME), 3), one_time_stride(&unit(ME), 3));
        let rotated: Vec<usize> = (0..3)
            .map(|step| [1, 3, 5][(offset + step * stride) % 3])
            .collect();
        let table: &[(&[&str], Vec<usize>)] = &[
            // Only keys for other devices: nothing to present.
            (&["b:00E0C5540B8C"], vec![]),
            (&[], vec![]),
            // Bound to me beats everything, in file order; bound elsewhere is skipped.
            (&["m", "b:00E0C5540B8C", "b:00E0C5540B8B"], vec![2, 0]),
            (&["b:00E0C5540B8B", "m", "b:00E0C5540B8B"], vec![0, 2, 1]),
            // One-time keys rotate by the offset; mass keys come last in file order.
            (
                &["m", "o", "b:00E0C5540B8B", "o", "m", "o"],
                [vec![2], rotated, vec![0, 4]].concat(),
            ),
            // A single one-time key always comes first among the one-time keys.
            (&["m", "o"], vec![1, 0]),
        ];
        for (spec, expected) in table {
            assert_eq!(&key_order(&keys(spec), &unit(ME)), expected, "{spec:?}");
        }
    }

    #[test]
    fn a_walk_gives_the_order_one_key_at_a_time_and_then_nothing() {
        let file = keys(&[
            "o",
            "b:00E0C5540B8C",
            "m",
            "o",
            "b:00E0C5540B8B",
            "o",
            "o",
            "m",
        ]);
        let kinds = KeyKinds::of(&file);
        let mut walk = kinds.walk(&file, &unit(ME));
        assert_eq!(walk.len(&kinds), 7, "all but the key bound to another unit");
        let walked: Vec<usize> = std::iter::from_fn(|| walk.next(&kinds)).collect();
        assert_eq!(walked.len(), 7);
        assert_eq!(walked[0], 4, "my bound key first");
        assert_eq!(&walked[5..], &[2, 7], "mass keys last, in file order");
        let mut one_time = walked[1..5].to_vec();
        one_time.sort_unstable();
        assert_eq!(one_time, vec![0, 3, 5, 6]);
        assert_eq!(walk.next(&kinds), None);
        assert_eq!(walk.next(&kinds), None, "and stays done");
    }

    #[test]
    fn the_one_time_walk_is_the_offset_stepped_by_the_stride() {
        for count in [1usize, 2, 3, 10, 12, 97, 1000] {
            for n in 0..20u32 {
                let mac = unit(&format!("00E0C5{:06X}", 0x540B00 + n));
                let (offset, stride) = (one_time_offset(&mac, count), one_time_stride(&mac, count));
                // A mass key first and last, so the one-time keys sit at 1..=count.
                let spec: Vec<&str> = std::iter::once("m")
                    .chain(std::iter::repeat_n("o", count))
                    .chain(std::iter::once("m"))
                    .collect();
                let expected: Vec<usize> = (0..count)
                    .map(|step| 1 + (offset + step * stride) % count)
                    .chain([0, count + 1])
                    .collect();
                assert_eq!(key_order(&keys(&spec), &mac), expected, "{count}, {n}");
            }
        }
    }

    #[test]
    fn another_unit_never_gets_my_bound_key() {
        let file = keys(&["b:00E0C5540B8B", "o"]);
        assert_eq!(key_order(&file, &unit(OTHER)), vec![1]);
    }

    #[test]
    fn every_stride_visits_every_key_once() {
        for count in [1usize, 2, 3, 4, 10, 12, 97, 100, 200, 1000] {
            for n in 0..50u32 {
                let mac = unit(&format!("00E0C5{:06X}", 0x540B00 + n));
                let stride = one_time_stride(&mac, count);
                assert!((1..count.max(2)).contains(&stride), "{count}: {stride}");
                let keys: Vec<KeyEntry> = (0..count)
                    .map(|k| {
                        KeyEntry::one_time(FirstAuthKey::new(format!("{:017}", k + 1)).unwrap())
                    })
                    .collect();
                let mut order = key_order(&keys, &mac);
                assert_eq!(order[0], one_time_offset(&mac, count));
                order.sort_unstable();
                assert_eq!(
                    order,
                    (0..count).collect::<Vec<_>>(),
                    "{count}, stride {stride}"
                );
            }
        }
    }

    #[test]
    fn offsets_are_stable_and_spread_over_the_keys() {
        assert_eq!(one_time_offset(&unit(ME), 0), 0);
        assert_eq!(one_time_offset(&unit(ME), 1), 0);
        // Stable: the same unit always starts at the same key.
        assert_eq!(
            one_time_offset(&unit(ME), 1000),
            one_time_offset(&unit("00:e0:c5:54:0b:8b"), 1000)
        );
        // Spread: 200 consecutive MACs over 10 keys leave no key unused and none crowded.
        let mut hits = [0usize; 10];
        for n in 0..200u32 {
            let mac = unit(&format!("00E0C5{:06X}", 0x540B00 + n));
            hits[one_time_offset(&mac, 10)] += 1;
        }
        assert!(hits.iter().all(|&h| (5..=40).contains(&h)), "{hits:?}");
    }
}
