//! The OpenAPI 3.1 document of this API, `GET /v1/openapi.json`. Each route
//! is registered together with its `#[utoipa::path]` (see `super::routes`),
//! and answers are typed structs deriving `ToSchema`, so the document is
//! made from the code it describes. What no handler says is added here: the
//! bearer scheme, and what is answered before a handler runs (by the HTTP
//! front, see `front`, and by the path extractor, see `extract`).

use super::error::ErrorBody;
use axum::http::header;
use axum::response::IntoResponse;
use std::collections::BTreeMap;
use std::sync::OnceLock;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{
    AllOfBuilder, AnyOfBuilder, ArrayBuilder, KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat,
    SchemaType, Type,
};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder};
use utoipa::{Modify, PartialSchema, ToSchema};

/// The document's frame: what it is about, and its security scheme.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Nimbus",
        description = "Serverless ML inference on WebAssembly. Errors are `{\"error\": {\"code\", \"message\"}}` \
                       with a stable `code`, except under `/v2` (the Open Inference Protocol), where they are \
                       `{\"error\": \"...\"}`. Every answer carries `x-nimbus-request-id`. See docs/api.md.",
        license(name = "Apache-2.0", identifier = "Apache-2.0"),
    ),
    tags(
        (name = "functions", description = "Deploying, listing, describing, deleting"),
        (name = "blobs", description = "Content-addressed uploads a deploy names"),
        (name = "versions", description = "Versions, aliases, traffic, rollback"),
        (name = "invocations", description = "Calling a function"),
        (name = "observability", description = "Logs, events, charts"),
        (name = "operations", description = "Health, metrics, hosts, this document"),
        (name = "oip", description = "The Open Inference Protocol (KServe v2) for model-only deploys"),
        (name = "console", description = "The web console"),
    ),
    modifiers(&Bearer),
)]
pub(super) struct Frame;

/// `Authorization: Bearer <token>`.
struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut OpenApi) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "The admin token for everything under /v1 but invocations; invocations (and /v2/models) need \
                 the invoke token or the admin one only when the server has an invoke token; /metrics needs \
                 the metrics or admin token unless the server runs with --metrics-open",
            ))
            .build();
        doc.components.get_or_insert_with(Default::default).add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// What is answered before a handler runs. The HTTP front's 503 past its
/// connection limit on any route, and its 408 when a request body does not
/// arrive in time (in this API's error shape, also under `/v2`); and the
/// path extractor's 400 (see `extract`) where a handler says no 400 itself.
fn before_handlers(doc: &mut OpenApi) {
    let error = || Ref::from_schema_name(ErrorBody::name());
    for item in doc.paths.paths.values_mut() {
        let operations = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
        let operations = operations.into_iter().map(|op| (op, false)).chain([(&mut item.head, true)]);
        for (op, head) in operations {
            let Some(op) = op else { continue };
            // A HEAD answer has no body.
            add_error_answer(op, "503", "`too_many_connections`: the server is at its connection limit", error, head);
            if op.request_body.is_some() {
                add_error_answer(op, "408", "`request_timeout`: the request body did not arrive in time", error, false);
            }
            let in_path = op.parameters.iter().flatten().any(|p| p.parameter_in == ParameterIn::Path);
            if in_path && !op.responses.responses.contains_key("400") {
                let what = "`bad_request`: a path parameter that is not UTF-8 once percent-decoded";
                add_error_answer(op, "400", what, error, head);
            }
        }
    }
}

/// Adds (or widens) the answer `status` of `op` with `what`, an error.
fn add_error_answer(op: &mut Operation, status: &str, what: &str, error: impl Fn() -> Ref, no_body: bool) {
    let responses = &mut op.responses.responses;
    match responses.get_mut(status) {
        Some(RefOr::T(response)) => {
            response.description = format!("{}; {what}", response.description);
            if let Some(content) = response.content.get_mut("application/json") {
                let is_error = matches!(&content.schema, Some(RefOr::Ref(r)) if r.ref_location == error().ref_location);
                if !is_error && let Some(schema) = content.schema.take() {
                    content.schema = Some(AnyOfBuilder::new().item(schema).item(error()).into());
                }
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut response = ResponseBuilder::new().description(what);
            if !no_body {
                response = response.content("application/json", ContentBuilder::new().schema(Some(error())).build());
            }
            responses.insert(status.to_owned(), RefOr::T(response.build()));
        }
    }
}

/// Error answers with a JSON body of schema `B`, as `(status, when)`: what
/// a family of routes answers alike, documented once in an
/// `IntoResponses` beside them and named in each route's `responses(...)`.
pub(super) fn error_answers<B: ToSchema>(answers: &[(&str, &str)]) -> BTreeMap<String, RefOr<Response>> {
    let error = || ContentBuilder::new().schema(Some(Ref::from_schema_name(B::name()))).build();
    let answer =
        |when: &str| RefOr::T(ResponseBuilder::new().description(when).content("application/json", error()).build());
    answers.iter().map(|&(status, when)| (status.to_owned(), answer(when))).collect()
}

/// A followed journal (`?follow=true`) as server-sent events. Before
/// OpenAPI 3.2 a `text/event-stream` schema describes one event: here a
/// plain event (`message`) with one record as JSON in `data`, the event
/// `live` once the backlog is sent, or `missing_hosts` (a JSON list of the
/// hosts that did not answer).
fn followed(record: &str) -> RefOr<Schema> {
    let string = || ObjectBuilder::new().schema_type(Type::String);
    let json = |schema: RefOr<Schema>| {
        let content = [("contentSchema", serde_json::to_value(schema).expect("a schema serializes"))];
        string().content_media_type("application/json").extensions(Some(Extensions::from_iter(content)))
    };
    let event = |name: Option<&str>, data: ObjectBuilder| {
        let mut event = ObjectBuilder::new().schema_type(SchemaType::AnyValue);
        if let Some(name) = name {
            event = event.required("event").property("event", string().enum_values(Some([name])));
        }
        event.property("data", data)
    };
    let hosts = ArrayBuilder::new().items(string()).build();
    let one_of = OneOfBuilder::new()
        .item(
            event(None, json(Ref::from_schema_name(record).into()))
                .property("event", string().enum_values(Some(["message"]))),
        )
        .item(event(Some("live"), string().enum_values(Some([""]))))
        .item(event(Some("missing_hosts"), json(hosts.into())));
    let fields = ObjectBuilder::new()
        .required("data")
        .property("event", string())
        .property("data", string())
        .property("id", string());
    AllOfBuilder::new().item(fields).item(one_of).into()
}

/// A followed log: see [`followed`].
pub(super) struct FollowedLog;

impl PartialSchema for FollowedLog {
    fn schema() -> RefOr<Schema> {
        followed("Entry")
    }
}

impl ToSchema for FollowedLog {}

/// Followed events: see [`followed`].
pub(super) struct FollowedEvents;

impl PartialSchema for FollowedEvents {
    fn schema() -> RefOr<Schema> {
        followed("Event")
    }
}

impl ToSchema for FollowedEvents {}

/// A time as a caller writes it: RFC 3339, or a duration ago (`Millis::parse`).
pub(super) struct Since;

impl PartialSchema for Since {
    fn schema() -> RefOr<Schema> {
        let time = ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)));
        let ago = ObjectBuilder::new().schema_type(Type::String).pattern(Some("^[0-9]{1,9}(s|m|h|d)$"));
        AnyOfBuilder::new().item(time).item(ago).into()
    }
}

impl ToSchema for Since {}

/// Any bytes.
pub(super) struct Binary;

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// The whole document.
pub fn document() -> OpenApi {
    let mut doc = super::routes().into_openapi();
    before_handlers(&mut doc);
    doc
}

/// This document, as JSON.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    operation_id = "openapi",
    tag = "operations",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = serde_json::Value)),
)]
pub(super) async fn openapi() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| document().to_json().expect("the document serializes"));
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    /// The largest `param` of `GET path` the document allows.
    fn maximum(doc: &Value, path: &str, param: &str) -> Option<u64> {
        let params = doc["paths"][path]["get"]["parameters"].as_array()?;
        params.iter().find(|p| p["name"] == param)?["schema"]["maximum"].as_u64()
    }

    #[test]
    fn ranges_written_in_attributes_are_the_code_s() {
        let doc = serde_json::to_value(super::document()).unwrap();
        assert_eq!(maximum(&doc, "/v1/functions", "limit"), Some(super::super::PAGE_MAX.into()));
        assert_eq!(maximum(&doc, "/v1/functions/{name}/logs", "limit"), Some(crate::journal::LIMIT_MAX as u64));
        assert_eq!(maximum(&doc, "/v1/functions/{name}/events", "limit"), Some(crate::journal::LIMIT_MAX as u64));
        assert_eq!(maximum(&doc, "/v1/stats", "minutes"), Some(super::super::observe::MINUTES_MAX));
        assert_eq!(maximum(&doc, "/v1/functions/{name}/stats", "minutes"), Some(super::super::observe::MINUTES_MAX));
    }

    #[test]
    fn every_operation_has_an_id_of_its_own_and_documents_its_errors() {
        let doc = serde_json::to_value(super::document()).unwrap();
        let mut ids = std::collections::BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let id = op["operationId"].as_str().unwrap_or_else(|| panic!("{method} {path} has no id"));
                assert!(ids.insert(id.to_owned()), "{method} {path}: `{id}` twice");
                assert!(op["responses"]["503"].is_object(), "{method} {path} lacks the front's 503");
            }
        }
    }
}
