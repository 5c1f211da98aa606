//! `--notify-test ENTRY`: a test message to each target, the latest status again.

use std::path::Path;

use super::{open_store, Fail, Loaded, EXIT_USAGE};

/// `--notify-test ENTRY`: the tokens and URLs must be the real ones, so the variables they
/// name must be set here.
pub(super) fn notify_test(loaded: &Loaded, name: &str, path: &Path) -> Result<u8, Fail> {
    let settings = &loaded.settings;
    let entry = loaded.entry(name, path)?;
    let mut secrets: Vec<&str> = Vec::new();
    if let Some(status) = &entry.status {
        secrets.push(status.token.expose_str());
    }
    for target in entry.notify.iter().flat_map(|n| &n.to).filter_map(|t| settings.targets.get(t)) {
        use crate::settings::TargetKind::*;
        match &target.kind {
            Slack { url } | Discord { url } => secrets.push(url.expose_str()),
            Ntfy { url, token } => secrets.extend(std::iter::once(url).chain(token).map(|s| s.expose_str())),
            Webhook { url, secret } => {
                secrets.extend(std::iter::once(url).chain(secret).map(|s| s.expose_str()))
            }
            Matrix { token, .. } => secrets.push(token.expose_str()),
            Email { .. } | Command { .. } => {}
        }
    }
    let unset = loaded.unset_in(&secrets);
    if !unset.is_empty() {
        return Err(Fail(
            EXIT_USAGE,
            format!(
                "--notify-test needs the variables the entry's targets and status name: {} (set them)",
                unset.join(", ")
            ),
        ));
    }
    let store = open_store(settings)?;
    let mut out = std::io::stdout();
    match crate::telling::notify_test::run(settings, &entry, store.as_ref(), &mut out) {
        Ok(true) => Ok(0),
        Ok(false) => Ok(1),
        Err(e) => Err(Fail(EXIT_USAGE, e)),
    }
}
