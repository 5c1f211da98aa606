//! The two things systemd wants from a `Type=notify` service: readiness and stopping notices
//! on the datagram socket named by `NOTIFY_SOCKET`, and log lines it can read priorities from.
//!
//! Without `NOTIFY_SOCKET` (not under systemd) the notices are nothing.

use std::os::unix::net::UnixDatagram;

/// Sends `state` (`READY=1`, `STOPPING=1`, `STATUS=...`, newline-separated) to the service
/// manager, if there is one. Failures are logged, never fatal: the daemon works without it.
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let result = (|| -> std::io::Result<()> {
        let socket = UnixDatagram::unbound()?;
        match target.as_encoded_bytes().strip_prefix(b"@") {
            Some(name) => send_abstract(&socket, name, state),
            None => socket.send_to(state.as_bytes(), &target).map(drop),
        }
    })();
    if let Err(e) = result {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// An abstract socket (Linux): the name without the leading `@`.
#[cfg(target_os = "linux")]
fn send_abstract(socket: &UnixDatagram, name: &[u8], state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    socket.send_to_addr(state.as_bytes(), &addr).map(drop)
}

#[cfg(not(target_os = "linux"))]
fn send_abstract(_socket: &UnixDatagram, _name: &[u8], _state: &str) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "abstract sockets exist only on Linux"))
}

/// Whether stderr goes to the journal (systemd sets `JOURNAL_STREAM` for services whose output
/// it collects): then lines carry a `<N>` priority prefix and no timestamp of their own.
pub fn logs_to_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// Log lines for the journal: a `<N>` syslog priority prefix (journald turns it into the line's
/// priority, so `journalctl -p warning` works), then the usual text without a timestamp.
pub struct JournalFormat {
    inner: tracing_subscriber::fmt::format::Format<tracing_subscriber::fmt::format::Full, ()>,
}

impl Default for JournalFormat {
    fn default() -> Self {
        let inner = tracing_subscriber::fmt::format().without_time().with_ansi(false).with_level(false);
        JournalFormat { inner }
    }
}

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.inner.format_event(ctx, writer, event)
    }
}
