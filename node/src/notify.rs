//! The systemd notification protocol (`sd_notify`), without libsystemd: when `NOTIFY_SOCKET`
//! names a unix datagram socket (a path, or an abstract name written with a leading `@`), the
//! daemon sends `READY=1` once it serves, `WATCHDOG=1` every half of `WATCHDOG_USEC` (when set
//! for this process), and `STOPPING=1` when shutdown begins. Without the variable nothing is
//! sent. Send errors are logged, never fatal.

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Where notifications go.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    target: Target,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    Path(std::path::PathBuf),
    /// An abstract socket name (Linux), without the leading `@`.
    Abstract(Vec<u8>),
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, or `None` when it is unset or empty.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let name = name.to_string_lossy();
        if name.is_empty() {
            return None;
        }
        match Notifier::new(&name) {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::warn!(socket = %name, error = %e, "NOTIFY_SOCKET unusable; no notifications");
                None
            }
        }
    }

    /// A notifier for socket `name`: a path, or `@name` for an abstract socket.
    pub fn new(name: &str) -> io::Result<Notifier> {
        let target = match name.strip_prefix('@') {
            Some(rest) => Target::Abstract(rest.as_bytes().to_vec()),
            None => Target::Path(name.into()),
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            target,
        })
    }

    /// Sends one notification, e.g. `READY=1`.
    pub fn send(&self, state: &str) -> io::Result<()> {
        let sent = match &self.target {
            Target::Path(p) => self.socket.send_to(state.as_bytes(), p)?,
            #[cfg(target_os = "linux")]
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                self.socket.send_to_addr(state.as_bytes(), &addr)?
            }
            #[cfg(not(target_os = "linux"))]
            Target::Abstract(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "abstract socket names exist only on Linux",
                ))
            }
        };
        if sent != state.len() {
            return Err(io::Error::other("the notification was cut short"));
        }
        Ok(())
    }

    /// Sends `state`, logging a failure.
    pub fn notify(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(%state, error = %e, "systemd notification not sent");
        }
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set and
/// `WATCHDOG_PID` (if set) is this process.
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim().parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Notifier::new(path.to_str().unwrap())
            .unwrap()
            .send("READY=1")
            .unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("flotilla-notify-test-{}", std::process::id());
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            let rx = UnixDatagram::bind_addr(&addr).unwrap();
            rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            Notifier::new(&format!("@{name}"))
                .unwrap()
                .send("STOPPING=1")
                .unwrap();
            let n = rx.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }
    }
}
