//! The device connector's messages (ARCHITECTURE §11). After enrollment a device keeps one
//! WebSocket to [`crate::routes::DEVICE_CONNECT`] over mutual TLS. Keep-alive is the WebSocket's
//! own ping and pong; the server pushes commands as text frames holding [`Push`] in JSON, and the
//! device answers nothing but pongs: what a command makes it do (a renewal, an inventory report)
//! travels over the usual device routes.

use std::fmt;
use std::str::FromStr;

/// The longest text frame either side accepts.
pub const MAX_FRAME_BYTES: usize = 4096;

/// What the server may ask a connected device to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Command {
    /// Renew the device certificate now (`simplereenroll`), whatever its expiry.
    RenewNow,
    /// Send the inventory report now.
    InventoryNow,
}

impl Command {
    /// Every command.
    pub const ALL: [Command; 2] = [Command::RenewNow, Command::InventoryNow];

    /// Its name on the wire and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::RenewNow => "renew-now",
            Command::InventoryNow => "inventory-now",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Command {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Command::ALL
            .into_iter()
            .find(|command| command.as_str() == text)
            .ok_or_else(|| format!("unknown command {text:?}: expected renew-now or inventory-now"))
    }
}

/// One text frame from the server.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Push {
    /// What to do.
    pub command: Command,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_read_back_from_their_names_and_frames() {
        for command in Command::ALL {
            assert_eq!(command.as_str().parse::<Command>(), Ok(command));
            let frame = serde_json::to_string(&Push { command }).unwrap();
            assert_eq!(frame, format!(r#"{{"command":"{command}"}}"#));
            assert_eq!(
                serde_json::from_str::<Push>(&frame).unwrap().command,
                command
            );
        }
        assert!("reboot".parse::<Command>().is_err());
        assert!(serde_json::from_str::<Push>(r#"{"command":"reboot"}"#).is_err());
    }
}
