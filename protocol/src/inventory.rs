//! The inventory report: what an enrolled device tells the server about itself (host name, OS,
//! kernel, CPU, memory, NICs), sent as JSON to [`crate::routes::DEVICE_INVENTORY`] over mutual TLS.
//!
//! The server reads it as untrusted input: the body is bounded by [`MAX_INVENTORY_BYTES`] and
//! [`Inventory::validate`] bounds every field, so that what `ums-stub devices list` prints stays
//! one line per device. The agent cuts what it gathers to fit with [`Inventory::fitted`]. Unknown
//! members are ignored, so a newer agent may report more to an older server.

use std::fmt;

/// The largest inventory body the server reads. A report that passes [`Inventory::validate`]
/// always serialises to less (about 24 KiB at worst).
pub const MAX_INVENTORY_BYTES: usize = 32 * 1024;

/// The longest host name, OS name, OS version, kernel version or CPU model, in characters.
pub const MAX_TEXT_CHARS: usize = 256;

/// The longest NIC name, in characters (Linux allows 15).
pub const MAX_NIC_NAME_CHARS: usize = 64;

/// The most NICs a report lists.
pub const MAX_NICS: usize = 64;

/// The fewest and most octets of a NIC's hardware address (EUI-48 up to 20-byte InfiniBand).
const MAC_OCTETS: std::ops::RangeInclusive<usize> = 6..=20;

/// What a device reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Inventory {
    /// Its host name.
    pub host_name: String,
    /// The operating system's name (`IGEL OS`, `Ubuntu`).
    #[serde(default)]
    pub os_name: Option<String>,
    /// The operating system's version (`12.4.2`, `24.04`).
    #[serde(default)]
    pub os_version: Option<String>,
    /// The kernel version (`6.8.0-48-generic`).
    #[serde(default)]
    pub kernel: Option<String>,
    /// The model of its first CPU.
    #[serde(default)]
    pub cpu_model: Option<String>,
    /// Total memory in bytes; 0 when unknown.
    #[serde(default)]
    pub memory_bytes: u64,
    /// Its NICs with a hardware address, by name.
    #[serde(default)]
    pub nics: Vec<Nic>,
}

/// A network interface.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Nic {
    /// The interface name (`eth0`, `enp3s0`, `wlan0`).
    pub name: String,
    /// Its hardware address, hex octets separated by `:` (`00:e0:c5:54:0b:8b`).
    pub mac: String,
}

/// Why a report was refused: the field and what is wrong with it, never its value (a report is
/// untrusted input, and echoing it back would hand a client a way to fill logs).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inventory field {field}: {problem}")]
pub struct InventoryError {
    /// The field, as its JSON path (`host_name`, `nics[2].mac`, `nics`).
    pub field: String,
    /// What is wrong with it.
    pub problem: InventoryProblem,
}

/// What is wrong with a field of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InventoryProblem {
    /// It is empty but must not be.
    Empty,
    /// It is longer than the limit, in characters.
    TooLong(usize),
    /// It holds a control character (a line break, a tab, an escape).
    ControlCharacter,
    /// It is not hex octets separated by `:`.
    NotAMac,
    /// More NICs than the limit.
    TooMany(usize),
}

impl fmt::Display for InventoryProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InventoryProblem::Empty => f.write_str("must not be empty"),
            InventoryProblem::TooLong(max) => write!(f, "longer than {max} characters"),
            InventoryProblem::ControlCharacter => f.write_str("holds a control character"),
            InventoryProblem::NotAMac => write!(
                f,
                "not a hardware address ({} to {} hex octets separated by ':')",
                MAC_OCTETS.start(),
                MAC_OCTETS.end()
            ),
            InventoryProblem::TooMany(max) => write!(f, "more than {max} entries"),
        }
    }
}

impl Inventory {
    /// Checks every field against the limits: a non-empty host name, texts of at most
    /// [`MAX_TEXT_CHARS`] (NIC names [`MAX_NIC_NAME_CHARS`]) with no control characters, at most
    /// [`MAX_NICS`] NICs, each with a well-formed hardware address.
    pub fn validate(&self) -> Result<(), InventoryError> {
        let refuse = |field: &str, problem| InventoryError {
            field: field.to_owned(),
            problem,
        };
        if self.host_name.is_empty() {
            return Err(refuse("host_name", InventoryProblem::Empty));
        }
        check_text(&self.host_name, MAX_TEXT_CHARS).map_err(|p| refuse("host_name", p))?;
        for (field, value) in [
            ("os_name", &self.os_name),
            ("os_version", &self.os_version),
            ("kernel", &self.kernel),
            ("cpu_model", &self.cpu_model),
        ] {
            if let Some(text) = value {
                check_text(text, MAX_TEXT_CHARS).map_err(|p| refuse(field, p))?;
            }
        }
        if self.nics.len() > MAX_NICS {
            return Err(refuse("nics", InventoryProblem::TooMany(MAX_NICS)));
        }
        for (index, nic) in self.nics.iter().enumerate() {
            if nic.name.is_empty() {
                return Err(refuse(
                    &format!("nics[{index}].name"),
                    InventoryProblem::Empty,
                ));
            }
            check_text(&nic.name, MAX_NIC_NAME_CHARS)
                .map_err(|p| refuse(&format!("nics[{index}].name"), p))?;
            if !is_mac(&nic.mac) {
                return Err(refuse(
                    &format!("nics[{index}].mac"),
                    InventoryProblem::NotAMac,
                ));
            }
        }
        Ok(())
    }

    /// The same facts cut to pass [`validate`](Self::validate), for a reporter that gathered them
    /// from a system it does not control: control characters become spaces, texts are trimmed and
    /// cut to their limit, empty optional texts become `None`, NICs with no name or a malformed
    /// address are dropped and the rest cut to [`MAX_NICS`]. An empty host name stays empty (the
    /// reporter decides what to call itself).
    pub fn fitted(self) -> Self {
        let optional = |text: Option<String>| {
            text.map(|text| fit_text(&text, MAX_TEXT_CHARS))
                .filter(|text| !text.is_empty())
        };
        let nics = self
            .nics
            .into_iter()
            .map(|nic| Nic {
                name: fit_text(&nic.name, MAX_NIC_NAME_CHARS),
                mac: nic.mac,
            })
            .filter(|nic| !nic.name.is_empty() && is_mac(&nic.mac))
            .take(MAX_NICS)
            .collect();
        Self {
            host_name: fit_text(&self.host_name, MAX_TEXT_CHARS),
            os_name: optional(self.os_name),
            os_version: optional(self.os_version),
            kernel: optional(self.kernel),
            cpu_model: optional(self.cpu_model),
            memory_bytes: self.memory_bytes,
            nics,
        }
    }
}

fn check_text(text: &str, max_chars: usize) -> Result<(), InventoryProblem> {
    if text.chars().any(char::is_control) {
        return Err(InventoryProblem::ControlCharacter);
    }
    if text.chars().count() > max_chars {
        return Err(InventoryProblem::TooLong(max_chars));
    }
    Ok(())
}

/// `text` with control characters as spaces, trimmed, and cut to `max_chars` characters.
fn fit_text(text: &str, max_chars: usize) -> String {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let cut: String = clean.trim().chars().take(max_chars).collect();
    cut.trim_end().to_owned()
}

fn is_mac(text: &str) -> bool {
    let octets: Vec<&str> = text.split(':').collect();
    MAC_OCTETS.contains(&octets.len())
        && octets
            .iter()
            .all(|octet| octet.len() == 2 && octet.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Inventory {
        Inventory {
            host_name: "tc-0042".to_owned(),
            os_name: Some("IGEL OS".to_owned()),
            os_version: Some("12.4.2".to_owned()),
            kernel: Some("6.8.0-48-generic".to_owned()),
            cpu_model: Some("Intel(R) Celeron(R) J4125 CPU @ 2.00GHz".to_owned()),
            memory_bytes: 8 << 30,
            nics: vec![
                Nic {
                    name: "eth0".to_owned(),
                    mac: "00:e0:c5:54:0b:8b".to_owned(),
                },
                Nic {
                    name: "wlan0".to_owned(),
                    mac: "00:E0:C5:54:0B:8C".to_owned(),
                },
            ],
        }
    }

    #[test]
    fn a_plain_report_validates_and_round_trips() {
        let report = sample();
        report.validate().unwrap();
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(serde_json::from_str::<Inventory>(&json).unwrap(), report);
    }

    #[test]
    fn missing_optional_members_and_unknown_ones_are_accepted() {
        let report: Inventory =
            serde_json::from_str(r#"{"host_name":"tc","battery":"87%"}"#).unwrap();
        assert_eq!(report.os_name, None);
        assert_eq!(report.memory_bytes, 0);
        assert!(report.nics.is_empty());
        report.validate().unwrap();
    }

    #[test]
    fn refusals_name_the_field_and_never_the_value() {
        let secretish = "x".repeat(MAX_TEXT_CHARS + 1);
        type Change<'a> = Box<dyn Fn(&mut Inventory) + 'a>;
        let cases: Vec<(Change<'_>, &str, InventoryProblem)> = vec![
            (
                Box::new(|r| r.host_name.clear()),
                "host_name",
                InventoryProblem::Empty,
            ),
            (
                Box::new(|r| r.host_name = secretish.clone()),
                "host_name",
                InventoryProblem::TooLong(MAX_TEXT_CHARS),
            ),
            (
                Box::new(|r| r.kernel = Some("6.8\n\u{1b}[2J".to_owned())),
                "kernel",
                InventoryProblem::ControlCharacter,
            ),
            (
                Box::new(|r| r.cpu_model = Some(secretish.clone())),
                "cpu_model",
                InventoryProblem::TooLong(MAX_TEXT_CHARS),
            ),
            (
                Box::new(|r| r.nics[1].mac = "00:e0:c5:54:0b".to_owned()),
                "nics[1].mac",
                InventoryProblem::NotAMac,
            ),
            (
                Box::new(|r| r.nics[0].mac = "00-e0-c5-54-0b-8b".to_owned()),
                "nics[0].mac",
                InventoryProblem::NotAMac,
            ),
            (
                Box::new(|r| r.nics[0].name = "e".repeat(MAX_NIC_NAME_CHARS + 1)),
                "nics[0].name",
                InventoryProblem::TooLong(MAX_NIC_NAME_CHARS),
            ),
            (
                Box::new(|r| r.nics[1].name.clear()),
                "nics[1].name",
                InventoryProblem::Empty,
            ),
            (
                Box::new(|r| r.nics = vec![r.nics[0].clone(); MAX_NICS + 1]),
                "nics",
                InventoryProblem::TooMany(MAX_NICS),
            ),
        ];
        for (change, field, problem) in cases {
            let mut report = sample();
            change(&mut report);
            let error = report.validate().unwrap_err();
            assert_eq!((error.field.as_str(), error.problem), (field, problem));
            let shown = error.to_string();
            assert!(shown.contains(field), "{shown}");
            assert!(!shown.contains("xxxx") && !shown.contains("6.8"), "{shown}");
        }
    }

    #[test]
    fn the_largest_valid_report_fits_the_body_limit() {
        // Four-byte characters everywhere: the most bytes per character JSON can take once
        // control characters are refused.
        let wide = |n: usize| "\u{1F5A5}".repeat(n);
        let report = Inventory {
            host_name: wide(MAX_TEXT_CHARS),
            os_name: Some(wide(MAX_TEXT_CHARS)),
            os_version: Some(wide(MAX_TEXT_CHARS)),
            kernel: Some(wide(MAX_TEXT_CHARS)),
            cpu_model: Some(wide(MAX_TEXT_CHARS)),
            memory_bytes: u64::MAX,
            nics: vec![
                Nic {
                    name: wide(MAX_NIC_NAME_CHARS),
                    mac: ["ff"; 20].join(":"),
                };
                MAX_NICS
            ],
        };
        report.validate().unwrap();
        let size = serde_json::to_vec(&report).unwrap().len();
        assert!(size < MAX_INVENTORY_BYTES, "{size} bytes");
    }

    #[test]
    fn fitted_cuts_what_a_system_reports_until_it_validates() {
        let mut report = sample();
        report.host_name = format!("  tc\t{}", "é".repeat(2 * MAX_TEXT_CHARS));
        report.os_name = Some(" \n ".to_owned());
        report.kernel = Some("6.8.0\u{0}".to_owned());
        report.nics.push(Nic {
            name: "ib0".to_owned(),
            mac: "not a mac".to_owned(),
        });
        report.nics.extend((0..2 * MAX_NICS).map(|n| Nic {
            name: format!("veth{n}"),
            mac: "02:00:00:00:00:01".to_owned(),
        }));
        let fitted = report.fitted();
        fitted.validate().unwrap();
        assert_eq!(fitted.host_name.chars().count(), MAX_TEXT_CHARS);
        assert!(fitted.host_name.starts_with("tc é"));
        assert_eq!(fitted.os_name, None);
        assert_eq!(fitted.kernel.as_deref(), Some("6.8.0"));
        assert_eq!(fitted.nics.len(), MAX_NICS);
        assert_eq!(fitted.nics[..2], sample().nics[..]);
        assert!(fitted.nics.iter().all(|nic| nic.name != "ib0"));
    }
}
