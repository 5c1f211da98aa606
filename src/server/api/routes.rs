//! The API's routes, once: the router finds a request's route in [`ROUTES`] (its scope, its
//! path's parameters; 404 and 405 from the same table), and the OpenAPI document
//! (`GET /api/v1/openapi.json`) is written from it and from the shapes' types ([`super::shapes`]).
//! A route added here is routed and documented; one left out is neither.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::shapes::{
    ApiError, Cancelled, Entries, FreezeRequest, Freezing, JobView, JobsPage, Queued, Releases,
    RollbackRequest, RunRequest,
};
use crate::settings::Scope;

/// What a route does (the router's dispatch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    OpenApi,
    Entries,
    Jobs,
    Job,
    Log,
    Releases,
    Cancel,
    Run,
    Rollback,
    Freeze,
    Unfreeze,
}

/// The schema of a shape.
type Shape = fn(&mut SchemaGenerator) -> Schema;

fn shape<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// What a route answers with.
pub(super) enum Answers {
    /// JSON of a shape, with these success statuses (and what each means).
    Json(Shape, &'static [(u16, &'static str)]),
    /// A job's log: text, or events.
    Log,
    /// The OpenAPI document.
    Document,
}

pub(super) struct Route {
    pub op: Op,
    pub method: &'static str,
    /// Under `/api/v1`; `{name}` is a path parameter.
    pub path: &'static str,
    pub scope: Scope,
    pub summary: &'static str,
    /// Query parameters: name, what it is.
    pub query: &'static [(&'static str, &'static str)],
    pub body: Option<Shape>,
    pub answers: Answers,
    /// Refusals besides 401 and 403 (every route has those).
    pub refusals: &'static [u16],
}

const WAITED: &[(u16, &str)] = &[(200, "the answer"), (202, "with ?wait=: the wait ran out; the state then")];

pub(super) static ROUTES: &[Route] = &[
    Route {
        op: Op::OpenApi,
        method: "GET",
        path: "/openapi.json",
        scope: Scope::Read,
        summary: "This document",
        query: &[],
        body: None,
        answers: Answers::Document,
        refusals: &[],
    },
    Route {
        op: Op::Entries,
        method: "GET",
        path: "/entries",
        scope: Scope::Read,
        summary: "Each entry: its current release, last job, running, waiting and held jobs, frozen or not",
        query: &[],
        body: None,
        answers: Answers::Json(shape::<Entries>, &[(200, "the entries")]),
        refusals: &[],
    },
    Route {
        op: Op::Jobs,
        method: "GET",
        path: "/jobs",
        scope: Scope::Read,
        summary: "Jobs, newest first, a page at a time (stable while jobs are added)",
        query: &[
            ("entry", "an entry's name"),
            ("state", "queued, running, held, succeeded, failed, timed_out, cancelled, superseded"),
            ("trigger", "webhook, manual, rollback, poll"),
            ("commit", "4 to 64 hex digits: the jobs of that commit"),
            ("limit", "at most this many (1 to 200; default 50)"),
            ("before", "jobs older than this id: the next_before of the page before"),
            ("wait", "with entry and commit: answer when that commit's newest job has ended (30s, 10m; at most 1h)"),
        ],
        body: None,
        answers: Answers::Json(shape::<JobsPage>, WAITED),
        refusals: &[400],
    },
    Route {
        op: Op::Job,
        method: "GET",
        path: "/jobs/{id}",
        scope: Scope::Read,
        summary: "A job",
        query: &[("wait", "answer when the job has ended (30s, 10m; at most 1h)")],
        body: None,
        answers: Answers::Json(shape::<JobView>, WAITED),
        refusals: &[400, 404, 503],
    },
    Route {
        op: Op::Log,
        method: "GET",
        path: "/jobs/{id}/log",
        scope: Scope::Read,
        summary: "A job's log: text from byte `from`; with Accept: text/event-stream, events as it is written \
                  (`log`: id the byte offset after the line, data the line as a JSON string; then `end` with \
                  the final state), resumed after Last-Event-ID",
        query: &[("from", "the byte to start at")],
        body: None,
        answers: Answers::Log,
        refusals: &[404, 503],
    },
    Route {
        op: Op::Releases,
        method: "GET",
        path: "/entries/{name}/releases",
        scope: Scope::Read,
        summary: "An entry's releases (the jobs that succeeded for a commit), newest first",
        query: &[],
        body: None,
        answers: Answers::Json(shape::<Releases>, &[(200, "the releases")]),
        refusals: &[404],
    },
    Route {
        op: Op::Cancel,
        method: "POST",
        path: "/jobs/{id}/cancel",
        scope: Scope::Run,
        summary: "Cancels a job: a waiting one at once, a running one by killing its processes",
        query: &[],
        body: None,
        answers: Answers::Json(
            shape::<Cancelled>,
            &[(200, "cancelled (it was waiting)"), (202, "cancelling (it runs: its end follows)")],
        ),
        refusals: &[404, 409],
    },
    Route {
        op: Op::Run,
        method: "POST",
        path: "/entries/{name}/run",
        scope: Scope::Run,
        summary: "Queues a run of the entry (a frozen one only with force, by an admin token)",
        query: &[],
        body: Some(shape::<RunRequest>),
        answers: Answers::Json(shape::<Queued>, &[(202, "queued")]),
        refusals: &[400, 404, 409, 413, 503],
    },
    Route {
        op: Op::Rollback,
        method: "POST",
        path: "/entries/{name}/rollback",
        scope: Scope::Run,
        summary: "Queues a rollback to a release (default: the one before the current one)",
        query: &[],
        body: Some(shape::<RollbackRequest>),
        answers: Answers::Json(shape::<Queued>, &[(202, "queued")]),
        refusals: &[400, 404, 409, 413, 503],
    },
    Route {
        op: Op::Freeze,
        method: "POST",
        path: "/entries/{name}/freeze",
        scope: Scope::Admin,
        summary: "Freezes the entry: its deliveries are held until it is unfrozen",
        query: &[],
        body: Some(shape::<FreezeRequest>),
        answers: Answers::Json(shape::<Freezing>, &[(200, "frozen")]),
        refusals: &[400, 404, 413],
    },
    Route {
        op: Op::Unfreeze,
        method: "POST",
        path: "/entries/{name}/unfreeze",
        scope: Scope::Admin,
        summary: "Unfreezes the entry: the newest held job runs, the others are superseded",
        query: &[],
        body: None,
        answers: Answers::Json(shape::<Freezing>, &[(200, "unfrozen")]),
        refusals: &[404, 413],
    },
];

/// What the table says of a request.
pub(super) enum Lookup {
    /// Its route, and its path's parameters in order.
    Route(&'static Route, Vec<String>),
    /// The path is a route's, the method is not.
    Method,
    Nowhere,
}

/// The route of `method` on `path` (under `/api/v1`, starting with `/`).
pub(super) fn find(method: &str, path: &str) -> Lookup {
    let given: Vec<&str> = path.split('/').collect();
    let mut path_known = false;
    for route in ROUTES {
        let pattern: Vec<&str> = route.path.split('/').collect();
        if pattern.len() != given.len() {
            continue;
        }
        let mut params = Vec::new();
        let fits = pattern.iter().zip(&given).all(|(p, g)| {
            if p.starts_with('{') {
                params.push(g.to_string());
                !g.is_empty()
            } else {
                p == g
            }
        });
        if !fits {
            continue;
        }
        if route.method == method || (route.method == "GET" && method == "HEAD") {
            return Lookup::Route(route, params);
        }
        path_known = true;
    }
    if path_known {
        Lookup::Method
    } else {
        Lookup::Nowhere
    }
}

const STATUS_WORDS: &[(u16, &str)] = &[
    (400, "the request is not understood (the error says why)"),
    (401, "no token, or not one of api.tokens"),
    (403, "the token's scope does not allow it, or the address is not in api.allow_from"),
    (404, "no such job or entry"),
    (409, "the job has ended, or the entry is frozen, or no such release"),
    (413, "the body is larger than 64 KiB"),
    (429, "too many wrong tokens from this address: wait a minute"),
    (503, "too many waiting requests (api.max_waiting), or the queue is full: try again"),
];

/// The OpenAPI 3.1 document of [`ROUTES`].
pub(super) fn openapi() -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let error = shape::<ApiError>(&mut generator);
    let mut paths = Map::new();
    for route in ROUTES {
        let mut parameters: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| {
                let schema =
                    if name == "id" { json!({ "type": "integer" }) } else { json!({ "type": "string" }) };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        parameters.extend(route.query.iter().map(|(name, what)| {
            json!({ "name": name, "in": "query", "required": false, "description": what, "schema": { "type": "string" } })
        }));
        let mut responses = Map::new();
        match &route.answers {
            Answers::Json(shape, statuses) => {
                let schema = shape(&mut generator);
                for (status, what) in *statuses {
                    responses.insert(
                        status.to_string(),
                        json!({ "description": what, "content": { "application/json": { "schema": schema } } }),
                    );
                }
            }
            Answers::Log => {
                responses.insert(
                    "200".into(),
                    json!({ "description": "the log", "content": {
                        "text/plain": { "schema": { "type": "string" } },
                        "text/event-stream": { "schema": { "type": "string" } },
                    } }),
                );
            }
            Answers::Document => {
                responses.insert(
                    "200".into(),
                    json!({ "description": "the OpenAPI document", "content": { "application/json": { "schema": { "type": "object" } } } }),
                );
            }
        }
        for status in [401, 403, 429].iter().chain(route.refusals) {
            let what = STATUS_WORDS.iter().find(|(s, _)| s == status).map_or("refused", |(_, w)| w);
            responses.insert(
                status.to_string(),
                json!({ "description": what, "content": { "application/json": { "schema": error } } }),
            );
        }
        let mut operation = json!({
            "operationId": format!("{:?}", route.op).to_lowercase(),
            "summary": route.summary,
            "description": format!("Needs a token of scope `{}` or above.", route.scope.as_str()),
            "parameters": parameters,
            "responses": responses,
        });
        if let Some(body) = route.body {
            operation["requestBody"] = json!({ "required": false, "content": { "application/json": { "schema": body(&mut generator) } } });
        }
        let path = paths.entry(format!("/api/v1{}", route.path)).or_insert_with(|| json!({}));
        path[route.method.to_lowercase()] = operation;
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "wh-automata job API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Jobs, logs and entries of a wh-automata daemon. Tokens are the settings' api.tokens \
                            (read < run < admin), sent as Authorization: Bearer <token>.",
        },
        "paths": paths,
        "components": {
            "schemas": generator.take_definitions(true),
            "securitySchemes": { "token": { "type": "http", "scheme": "bearer" } },
        },
        "security": [{ "token": [] }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_routes_and_documents_the_same_paths() {
        assert!(matches!(find("GET", "/jobs/12/log"), Lookup::Route(r, p) if r.op == Op::Log && p == ["12"]));
        assert!(
            matches!(find("POST", "/entries/site/run"), Lookup::Route(r, p) if r.op == Op::Run && p == ["site"])
        );
        assert!(matches!(find("DELETE", "/jobs/12"), Lookup::Method));
        assert!(matches!(find("GET", "/jobs/12/nothing"), Lookup::Nowhere));
        assert!(matches!(find("GET", "/jobs/"), Lookup::Nowhere));
        let doc = openapi();
        for route in ROUTES {
            let op = &doc["paths"][format!("/api/v1{}", route.path)][route.method.to_lowercase()];
            assert!(op.is_object(), "{} {} documented", route.method, route.path);
        }
        // Every shape referred to is defined.
        let text = doc.to_string();
        for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = reference.split('"').next().unwrap();
            assert!(doc["components"]["schemas"][name].is_object(), "{name} defined");
        }
        assert!(doc["components"]["schemas"]["JobView"]["properties"]["final"].is_object());
    }
}
