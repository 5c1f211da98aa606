//! Notifications: a job's outcome, told to people through the targets of the top-level
//! `notify:` (Slack and the chats that take its webhooks, Discord, ntfy, Matrix, email through
//! sendmail(8), a signed JSON webhook, a command).
//!
//! Payload values (a commit message, a pusher's name) are text in a message, never markup:
//! escaped for Slack, mentions disabled for Discord, and only environment variables for a
//! command. An error never repeats a target's URL or token.

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::{header, Method, Request};
use http_body_util::Full;
use serde_json::json;
use sha2::Sha256;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::outbound::{Outbound, SendError};
use crate::settings::{Target, TargetKind};
use crate::telling::policy::Report;

/// What a message needs besides its report and target.
pub struct Context<'a> {
    /// The job's page, when the daemon has a public URL.
    pub link: Option<&'a str>,
    pub sendmail: &'a std::path::Path,
    /// The outbox item's id: a retry of the same message carries the same id (Matrix's
    /// transaction id, the webhook's delivery header).
    pub item: &'a str,
}

/// How long a command or sendmail may take.
const PROCESS_TIMEOUT: Duration = Duration::from_secs(60);
/// Discord's limit on a message.
const DISCORD_MAX: usize = 2000;

/// The first line of a message: entry and what happened.
pub fn headline(report: &Report) -> String {
    let what = match report.kind.as_str() {
        "failed" => "deploy failed",
        "timed_out" => "deploy timed out",
        "recovered" => "deploy works again",
        "succeeded" => "deployed",
        "started" => "deploying",
        "cancelled" => "deploy cancelled",
        "rollback" if report.state == crate::store::JobState::Succeeded => "rolled back",
        "rollback" => "rollback failed",
        "test" => "test message",
        other => other,
    };
    format!("{}: {what}", report.entry)
}

/// The whole message, as plain text.
pub fn text(report: &Report, link: Option<&str>) -> String {
    let mut out = headline(report);
    out.push('\n');
    let mut place = Vec::new();
    if !report.repo.is_empty() {
        place.push(report.repo.clone());
    }
    if let Some(b) = report.branch.as_ref().or(report.tag.as_ref()) {
        place.push(b.clone());
    }
    if !report.commit.is_empty() {
        place.push(report.short_commit().to_string());
    }
    if !place.is_empty() {
        out.push_str(&place.join(" "));
        let message = report.commit_message.lines().next().unwrap_or_default();
        if !message.is_empty() {
            let message: String = message.chars().take(200).collect();
            out.push_str(&format!(" \"{message}\""));
        }
        if !report.pusher.is_empty() {
            out.push_str(&format!(" by {}", report.pusher));
        }
        out.push('\n');
    }
    let mut facts = vec![format!("job {} {}", report.job, report.state.as_str().replace('_', " "))];
    if let Some(d) = report.duration() {
        facts.push(format!("after {d}"));
    }
    if let Some(r) = &report.reason {
        facts.push(r.clone());
    }
    out.push_str(&facts.join(", "));
    out.push('\n');
    if !report.log_tail.is_empty() {
        out.push_str("Last lines of its log:\n");
        for line in &report.log_tail {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    if let Some(link) = link {
        out.push_str(link);
        out.push('\n');
    }
    out
}

/// Slack's escaping of message text: `&`, `<` and `>` only.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

fn json_post(url: &str, body: &serde_json::Value) -> Result<Request<Full<Bytes>>, SendError> {
    let bytes = serde_json::to_vec(body).map_err(|e| SendError::Invalid(e.to_string()))?;
    request(Method::POST, url, "application/json", bytes)
}

fn request(method: Method, url: &str, kind: &str, body: Vec<u8>) -> Result<Request<Full<Bytes>>, SendError> {
    Request::builder()
        .method(method)
        .uri(url)
        .header(header::USER_AGENT, concat!("wh-automata/", env!("CARGO_PKG_VERSION")))
        .header(header::CONTENT_TYPE, kind)
        .body(Full::new(Bytes::from(body)))
        .map_err(|_| SendError::Invalid("the target's URL is not valid".into()))
}

/// Sends `report` to `target`.
pub async fn send(
    client: &Outbound,
    report: &Report,
    target: &Target,
    cx: &Context<'_>,
) -> Result<(), SendError> {
    let message = text(report, cx.link);
    match &target.kind {
        TargetKind::Slack { url } => {
            client.send(json_post(url.expose_str(), &json!({ "text": slack_escape(&message) }))?).await?;
        }
        TargetKind::Discord { url } => {
            let content: String = message.chars().take(DISCORD_MAX).collect();
            let body = json!({ "content": content, "allowed_mentions": { "parse": [] } });
            client.send(json_post(url.expose_str(), &body)?).await?;
        }
        TargetKind::Ntfy { url, token } => {
            let mut req =
                request(Method::POST, url.expose_str(), "text/plain; charset=utf-8", message.into_bytes())?;
            let headers = req.headers_mut();
            let title = header::HeaderValue::from_str(&headline(report))
                .unwrap_or_else(|_| header::HeaderValue::from_static("wh-automata"));
            headers.insert("title", title);
            let (priority, tag) = match report.kind.as_str() {
                "failed" | "timed_out" => ("high", "x"),
                "recovered" | "succeeded" => ("default", "white_check_mark"),
                _ => ("default", "information_source"),
            };
            headers.insert("priority", header::HeaderValue::from_static(priority));
            headers.insert("tags", header::HeaderValue::from_static(tag));
            if let Some(link) = cx.link.and_then(|l| header::HeaderValue::from_str(l).ok()) {
                headers.insert("click", link);
            }
            if let Some(token) = token {
                let value = header::HeaderValue::from_str(&format!("Bearer {}", token.expose_str()))
                    .map_err(|_| SendError::Invalid("the ntfy token is not a valid header value".into()))?;
                headers.insert(header::AUTHORIZATION, value);
            }
            client.send(req).await?;
        }
        TargetKind::Matrix { homeserver, room, token } => {
            let room: String = form_urlencoded::byte_serialize(room.as_bytes()).collect();
            let url = format!(
                "{homeserver}/_matrix/client/v3/rooms/{room}/send/m.room.message/wh-automata-{}",
                cx.item
            );
            let bytes = serde_json::to_vec(&json!({ "msgtype": "m.text", "body": message }))
                .map_err(|e| SendError::Invalid(e.to_string()))?;
            let mut req = request(Method::PUT, &url, "application/json", bytes)?;
            let value = header::HeaderValue::from_str(&format!("Bearer {}", token.expose_str()))
                .map_err(|_| SendError::Invalid("the Matrix token is not a valid header value".into()))?;
            req.headers_mut().insert(header::AUTHORIZATION, value);
            client.send(req).await?;
        }
        TargetKind::Webhook { url, secret } => {
            let body = json!({ "event": report.kind, "text": message, "job": report });
            let bytes = serde_json::to_vec(&body).map_err(|e| SendError::Invalid(e.to_string()))?;
            let signature = secret.as_ref().map(|s| {
                let mut mac = Hmac::<Sha256>::new_from_slice(s.expose()).expect("HMAC takes any key");
                mac.update(&bytes);
                format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
            });
            let mut req = request(Method::POST, url.expose_str(), "application/json", bytes)?;
            let headers = req.headers_mut();
            headers.insert(
                "x-wh-automata-event",
                header::HeaderValue::from_str(&report.kind)
                    .map_err(|_| SendError::Invalid("bad event name".into()))?,
            );
            headers.insert(
                "x-wh-automata-delivery",
                header::HeaderValue::from_str(cx.item)
                    .map_err(|_| SendError::Invalid("bad delivery id".into()))?,
            );
            if let Some(sig) = signature.and_then(|s| header::HeaderValue::from_str(&s).ok()) {
                headers.insert("x-hub-signature-256", sig);
            }
            client.send(req).await?;
        }
        TargetKind::Email { to } => mail(cx.sendmail, to, report, &message).await?,
        TargetKind::Command { run } => command(run, report, cx.link, &message).await?,
    }
    Ok(())
}

/// Mails `message` through sendmail(8): the recipients in the headers (`-t`), a lone dot is
/// not the end (`-oi`). Only the entry's name and the kind are in the headers.
async fn mail(
    sendmail: &std::path::Path,
    to: &[String],
    report: &Report,
    message: &str,
) -> Result<(), SendError> {
    let mail = format!(
        "To: {}\nSubject: [wh-automata] {}\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\
         Content-Transfer-Encoding: 8bit\nAuto-Submitted: auto-generated\n\n{message}",
        to.join(", "),
        headline(report)
    );
    let mut cmd = tokio::process::Command::new(sendmail);
    cmd.arg("-t").arg("-oi");
    run_process(cmd, Some(mail.into_bytes()), "sendmail").await
}

/// Runs a command target with `sh -c`, the outcome in its environment only.
async fn command(run: &str, report: &Report, link: Option<&str>, message: &str) -> Result<(), SendError> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(run).env_clear();
    for name in crate::jobs::runner::BASE_ENV {
        if let Ok(value) = std::env::var(name) {
            cmd.env(name, value);
        }
    }
    let vars = [
        ("WH_ENTRY", report.entry.clone()),
        ("WH_JOB_ID", report.job.to_string()),
        ("WH_TRIGGER", report.trigger.as_str().to_string()),
        ("WH_STATE", report.state.as_str().to_string()),
        ("WH_NOTIFY", report.kind.clone()),
        ("WH_PROVIDER", report.provider_name().to_string()),
        ("WH_EVENT", report.provider_event.clone()),
        ("WH_REPO", report.repo.clone()),
        ("WH_REPO_URL", report.repo_url.clone()),
        ("WH_REF", report.git_ref.clone()),
        ("WH_BRANCH", report.branch.clone().unwrap_or_default()),
        ("WH_TAG", report.tag.clone().unwrap_or_default()),
        ("WH_AFTER", report.commit.clone()),
        ("WH_COMMIT_MESSAGE", report.commit_message.clone()),
        ("WH_PUSHER", report.pusher.clone()),
        ("WH_DURATION_MS", report.duration_ms.map(|d| d.to_string()).unwrap_or_default()),
        ("WH_EXIT_CODE", report.exit_code.map(|c| c.to_string()).unwrap_or_default()),
        ("WH_REASON", report.reason.clone().unwrap_or_default()),
        ("WH_LOG_TAIL", report.log_tail.join("\n")),
        ("WH_JOB_URL", link.unwrap_or_default().to_string()),
        ("WH_MESSAGE", message.to_string()),
    ];
    cmd.envs(vars);
    run_process(cmd, None, "the command").await
}

/// Runs `cmd` (in its own process group, killed at the time limit) with `input` on stdin; an
/// exit status other than 0 is an error with the start of what it wrote on stderr.
async fn run_process(
    mut cmd: tokio::process::Command,
    input: Option<Vec<u8>>,
    what: &str,
) -> Result<(), SendError> {
    cmd.stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| SendError::Transport(format!("{what} cannot start: {e}")))?;
    let pid = child.id();
    let work = async {
        if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
            stdin.write_all(&input).await.map_err(|e| SendError::Transport(format!("{what}: {e}")))?;
        }
        let mut err = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            let _ = stderr.take(4096).read_to_end(&mut err).await;
        }
        let status = child.wait().await.map_err(|e| SendError::Transport(format!("{what}: {e}")))?;
        if status.success() {
            Ok(())
        } else {
            let said: String =
                String::from_utf8_lossy(&err).chars().filter(|c| !c.is_control()).take(200).collect();
            Err(SendError::Transport(format!("{what} ended with {status}: {said}")))
        }
    };
    match tokio::time::timeout(PROCESS_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => {
            if let Some(pid) = pid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Err(SendError::Timeout(PROCESS_TIMEOUT))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slack_markup_in_payload_values_is_text() {
        assert_eq!(slack_escape("<!channel> & <http://x|y>"), "&lt;!channel&gt; &amp; &lt;http://x|y&gt;");
    }
}
