//! The page's HTML: templates compiled with the binary (maud), every value escaped by them.
//! They show what the API answers (the same JSON), so the page and the API never disagree.
//! No inline script or style: the page's Content-Security-Policy allows only its own assets.

use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::session::User;
use crate::event::Trigger;
use crate::settings::Scope;
use crate::store::JobState;

fn text(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn short(commit: &Value) -> String {
    text(commit).chars().take(10).collect()
}

/// A page: head, the bar with who is signed in, then `body`.
pub(super) fn page(title: &str, user: Option<&User>, refresh: bool, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · wh-automata" }
                link rel="stylesheet" href="/ui/assets/ui.css";
                script src="/ui/assets/ui.js" defer {}
                @if refresh {
                    // Without JavaScript, a running job's page reloads itself.
                    noscript { meta http-equiv="refresh" content="3"; }
                }
            }
            body {
                header {
                    a.brand href="/ui/" { "wh-automata" }
                    @if let Some(user) = user {
                        nav {
                            a href="/ui/" { "Entries" }
                            a href="/ui/jobs" { "Jobs" }
                        }
                        form.signout method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(user.csrf);
                            span.who { (user.name) " (" (user.scope.as_str()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

pub(super) fn login(error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        false,
        html! {
            h1 { "Sign in" }
            @if let Some(error) = error { p.error role="alert" { (error) } }
            form.login method="post" action="/ui/login" {
                label for="token" { "Token (one of api.tokens)" }
                input #token type="password" name="token" autocomplete="current-password" required autofocus;
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// An error answer as a page.
pub(super) fn problem(user: Option<&User>, status: u16, message: &str) -> Markup {
    page(
        "Not done",
        user,
        false,
        html! {
            h1 { "Not done (" (status) ")" }
            p.error role="alert" { (message) }
            p { a href="/ui/" { "Back to the entries" } }
        },
    )
}

fn state(job: &Value) -> Markup {
    let state = text(&job["state"]);
    html! { span class={ "state state-" (state) } { (state) } }
}

fn job_link(job: &Value) -> Markup {
    html! { a href={ "/ui/jobs/" (text(&job["id"])) } { "#" (text(&job["id"])) } }
}

fn what(job: &Value) -> String {
    let e = &job["event"];
    let name = [&e["branch"], &e["tag"], &e["ref"]].into_iter().map(text).find(|s| !s.is_empty());
    name.unwrap_or_default()
}

/// A form that POSTs to `action` with the CSRF token, and `fields` before its button.
fn action(user: &User, action: &str, label: &str, fields: Markup) -> Markup {
    html! {
        form.act method="post" action=(action) {
            input type="hidden" name="csrf" value=(user.csrf);
            (fields)
            button type="submit" { (label) }
        }
    }
}

pub(super) fn entries(user: &User, listed: &Value) -> Markup {
    let empty = Vec::new();
    let list = listed["entries"].as_array().unwrap_or(&empty);
    page(
        "Entries",
        Some(user),
        false,
        html! {
            h1 { "Entries" }
            @if list.is_empty() { p { "No entries in the settings." } }
            div.cards {
                @for entry in list {
                    @let name = text(&entry["name"]);
                    section.card data-entry=(name) {
                        h2 { a href={ "/ui/jobs?entry=" (urlencode(&name)) } { (name) } }
                        @if !entry["frozen"].is_null() {
                            p.frozen { "Frozen: " (text(&entry["frozen"])) }
                        }
                        dl {
                            dt { "Release" }
                            dd {
                                @if entry["release"].is_null() { "none yet" } @else {
                                    code { (short(&entry["release"]["commit"])) }
                                    " (" a href={ "/ui/jobs/" (text(&entry["release"]["job"])) } { "job " (text(&entry["release"]["job"])) } ")"
                                }
                            }
                            dt { "Last job" }
                            dd {
                                @if entry["last_job"].is_null() { "none yet" } @else {
                                    (job_link(&entry["last_job"])) " " (state(&entry["last_job"])) " " (what(&entry["last_job"]))
                                }
                            }
                            dt { "Now" }
                            dd { (text(&entry["running"])) " running, " (text(&entry["waiting"])) " waiting, " (text(&entry["held"])) " held" }
                        }
                        @if user.scope >= Scope::Run {
                            div.actions {
                                (action(user, &format!("/ui/entries/{}/run", urlencode(&name)), "Run", html! {
                                    input type="text" name="branch" placeholder="branch (optional)" aria-label="branch";
                                    @if user.scope >= Scope::Admin && !entry["frozen"].is_null() {
                                        label { input type="checkbox" name="force" value="1"; " force" }
                                    }
                                }))
                                (action(user, &format!("/ui/entries/{}/rollback", urlencode(&name)), "Roll back", html! {
                                    input type="text" name="to" placeholder="to: commit or job (default: the one before)" aria-label="roll back to";
                                }))
                                @if user.scope >= Scope::Admin {
                                    @if entry["frozen"].is_null() {
                                        (action(user, &format!("/ui/entries/{}/freeze", urlencode(&name)), "Freeze", html! {
                                            input type="text" name="reason" placeholder="reason" aria-label="reason";
                                        }))
                                    } @else {
                                        (action(user, &format!("/ui/entries/{}/unfreeze", urlencode(&name)), "Unfreeze", html! {}))
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The job list, with the filters it was asked with (`filters`: key, value).
pub(super) fn jobs(user: &User, listed: &Value, filters: &[(String, String)], entries: &[String]) -> Markup {
    let empty = Vec::new();
    let list = listed["jobs"].as_array().unwrap_or(&empty);
    let given = |key: &str| filters.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str()).unwrap_or("");
    let mut next = filters.iter().filter(|(k, _)| k != "before").cloned().collect::<Vec<_>>();
    if let Some(before) = listed["next_before"].as_i64() {
        next.push(("before".into(), before.to_string()));
    }
    let next_query: String = form_urlencoded::Serializer::new(String::new()).extend_pairs(next).finish();
    page(
        "Jobs",
        Some(user),
        false,
        html! {
            h1 { "Jobs" }
            form.filters method="get" action="/ui/jobs" {
                select name="entry" aria-label="entry" {
                    option value="" { "every entry" }
                    @for e in entries { option value=(e) selected[given("entry") == e] { (e) } }
                }
                select name="state" aria-label="state" {
                    option value="" { "every state" }
                    @for s in JobState::ALL.map(JobState::as_str) { option value=(s) selected[given("state") == s] { (s) } }
                }
                select name="trigger" aria-label="trigger" {
                    option value="" { "every trigger" }
                    @for t in Trigger::ALL.map(Trigger::as_str) { option value=(t) selected[given("trigger") == t] { (t) } }
                }
                input type="text" name="commit" placeholder="commit" value=(given("commit")) aria-label="commit";
                button type="submit" { "Filter" }
            }
            table.jobs {
                thead { tr { th { "Job" } th { "Entry" } th { "State" } th { "Trigger" } th { "Ref" } th { "Commit" } th { "Created" } } }
                tbody {
                    @for job in list {
                        tr {
                            td { (job_link(job)) }
                            td { (text(&job["entry"])) }
                            td { (state(job)) }
                            td { (text(&job["trigger"])) }
                            td { (what(job)) }
                            td { code { (short(&job["event"]["commit"])) } }
                            td { (text(&job["created_at"])) }
                        }
                    }
                }
            }
            @if list.is_empty() { p { "No jobs." } }
            @if !listed["next_before"].is_null() {
                p { a.next href={ "/ui/jobs?" (next_query) } { "Older jobs" } }
            }
        },
    )
}

/// A job's page: what it is, and its log (`log`, up to byte `offset`; `cut`: bytes left out
/// before it). While the job runs, the script follows the log from `offset`.
pub(super) fn job(user: &User, job: &Value, log: &str, offset: u64, cut: u64) -> Markup {
    let id = text(&job["id"]);
    let running = !job["final"].as_bool().unwrap_or(true);
    let e = &job["event"];
    page(
        &format!("Job {id}"),
        Some(user),
        running,
        html! {
            h1 { "Job " (id) " " span #state { (state(job)) } }
            dl.job {
                dt { "Entry" } dd { a href={ "/ui/jobs?entry=" (urlencode(&text(&job["entry"]))) } { (text(&job["entry"])) } }
                dt { "Trigger" } dd { (text(&job["trigger"])) }
                dt { "Ref" } dd { (what(job)) }
                dt { "Commit" } dd { code { (text(&e["commit"])) } }
                @if !e["message"].is_null() { dt { "Message" } dd.message { (text(&e["message"])) } }
                @if !e["author"].is_null() { dt { "Author" } dd { (text(&e["author"])) } }
                dt { "Repository" } dd { (text(&e["repo"])) " (" (text(&e["provider"])) " " (text(&e["event"])) ")" }
                @if !e["rollback_from"].is_null() { dt { "Rolled back from" } dd { "job " (text(&e["rollback_from"])) } }
                dt { "Created" } dd { (text(&job["created_at"])) }
                dt { "Started" } dd { (text(&job["started_at"])) }
                dt { "Finished" } dd #finished { (text(&job["finished_at"])) }
                dt { "Exit code" } dd #exit { (text(&job["exit_code"])) }
                dt { "Reason" } dd #reason { (text(&job["reason"])) }
            }
            @if let Some(hosts) = job["hosts"].as_array() {
                h2 { "Hosts" }
                table.jobs.hosts {
                    thead { tr { th { "Host" } th { "State" } th { "Action" } th { "Exit code" } th { "Reason" } } }
                    tbody {
                        @for h in hosts {
                            tr {
                                td { (text(&h["host"])) }
                                td { span class={ "state state-" (text(&h["state"])) } { (text(&h["state"])) } }
                                td { (text(&h["action"])) }
                                td { (text(&h["exit_code"])) }
                                td { (text(&h["reason"])) }
                            }
                        }
                    }
                }
            }
            @if running && user.scope >= Scope::Run {
                div.actions { (action(user, &format!("/ui/jobs/{id}/cancel"), "Cancel", html! {})) }
            }
            h2 { "Log" }
            @if cut > 0 {
                p { "The first " (cut) " bytes are left out here: " a href={ "/ui/jobs/" (id) "/log" } { "the whole log" } "." }
            }
            pre #log data-job=(id) data-offset=(offset) data-running=(if running { "1" } else { "0" }) { (log) }
            @if running { p.live #live { "Running: the log follows as it is written." } }
            p { a href={ "/ui/jobs/" (id) "/log" } { "Plain text" } }
        },
    )
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
