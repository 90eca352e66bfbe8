//! Seeing what runs: a function's log (`/logs`, followed as server-sent
//! events), its event history (`/events`), its recent history in steps for
//! charts (`/stats`), and every function's figures over a window
//! (`/v1/stats`). In a cluster each answer covers every live host: this
//! host asks the others (see `peers`) and merges.

use super::App;
use super::auth::Admin;
use super::error::{ApiError, ErrorBody};
use super::extract::Path;
use super::functions::PoolState;
use super::openapi::{FollowedEvents, FollowedLog, Since};
use super::peers::{self, SseEvent};
use crate::journal::{Entry, Event, Journal, LIMIT_MAX, Millis, Query as Window, Record};
use crate::pool::{Gauges, STEP_S, Step, step_of};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::sse::{Event as Sse, KeepAlive};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

/// Records per answer unless `limit` says otherwise.
const LIMIT_DEFAULT: usize = 100;
/// The longest window of `/stats`, in minutes (what timelines keep).
pub(super) const MINUTES_MAX: u64 = crate::pool::KEPT.as_secs() / 60;
/// How long a peer has to send the backlog of a followed log.
const BACKLOG_PATIENCE: Duration = Duration::from_secs(3);

/// `?since=&limit=&request=&follow=&local=` of `/logs` and `/events`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct JournalQuery {
    /// From this time on: RFC 3339, or a duration ago (`30s`, `10m`, `2h`, `7d`).
    #[param(inline, value_type = Option<Since>)]
    since: Option<String>,
    /// The newest this many records (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
    /// Only this request's entries (its `x-nimbus-request-id`); logs only.
    #[param(pattern = "^[A-Za-z0-9]{1,64}$")]
    request: Option<String>,
    /// Answer `text/event-stream`: the backlog, an event named `live`, then
    /// each new record as it is written, until the client leaves.
    #[serde(default)]
    follow: bool,
    /// This host's records only (how hosts of a cluster ask each other).
    #[serde(default)]
    local: bool,
}

/// A read as asked for, checked, with times made absolute here (so that
/// every host reads the same window).
struct Asked {
    window: Window,
    request: Option<String>,
    follow: bool,
    local: bool,
}

impl Asked {
    fn parse(query: Result<Query<JournalQuery>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(q) = query.map_err(|e| {
            ApiError::bad_request(format!("{}; use ?since=10m&limit=N&request=ID&follow=true", e.body_text()))
        })?;
        let since = q.since.map(|s| Millis::parse(&s, Millis::now())).transpose().map_err(ApiError::bad_request)?;
        let limit = q.limit.unwrap_or(LIMIT_DEFAULT);
        if !(1..=LIMIT_MAX).contains(&limit) {
            return Err(ApiError::bad_request(format!("limit must be between 1 and {LIMIT_MAX}; got {limit}")));
        }
        if let Some(r) = &q.request
            && (r.is_empty() || r.len() > 64 || !r.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(ApiError::bad_request("request must be a request id (x-nimbus-request-id)"));
        }
        Ok(Asked { window: Window { since, limit }, request: q.request, follow: q.follow, local: q.local })
    }

    /// The same read, for another host to answer for itself.
    fn forwarded(&self, path: &str) -> String {
        let mut query = format!("{path}?local=true&limit={}", self.window.limit);
        if let Some(since) = self.window.since {
            query += &format!("&since={}", since.rfc3339());
        }
        if let Some(r) = &self.request {
            query += &format!("&request={r}");
        }
        if self.follow {
            query += "&follow=true";
        }
        query
    }
}

/// What another host answers to a read.
#[derive(Deserialize)]
struct Remote<T> {
    #[serde(alias = "events")]
    entries: Vec<T>,
    truncated: bool,
}

/// Pages from several hosts as one: by time, the newest `limit`.
fn merge<T: Record>(pages: impl IntoIterator<Item = (Vec<T>, bool)>, limit: usize) -> (Vec<T>, bool) {
    let mut all = Vec::new();
    let mut truncated = false;
    for (records, cut) in pages {
        all.extend(records);
        truncated |= cut;
    }
    all.sort_by_key(|r| r.head().time);
    let over = all.len().saturating_sub(limit);
    (all.split_off(over), truncated || over > 0)
}

fn known(app: &App, name: &str) -> Result<(), ApiError> {
    app.registry.get(name).map(drop).ok_or_else(|| ApiError::not_found(name))
}

/// A page of a function's log, in a cluster from every live host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct LogPage {
    /// Oldest first.
    entries: Vec<Entry>,
    /// Whether older entries were left out.
    truncated: bool,
    /// Hosts that did not answer in time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing_hosts: Vec<String>,
}

/// A page of a function's events, in a cluster from every live host.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(super) struct EventPage {
    /// Oldest first.
    events: Vec<Event>,
    /// Whether older events were left out.
    truncated: bool,
    /// Hosts that did not answer in time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    missing_hosts: Vec<String>,
}

/// The function's log: each request's outcome and the lines its handler wrote.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/logs",
    operation_id = "logs",
    tag = "observability",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function"), JournalQuery),
    responses(
        (status = 200, description = "The newest `limit` entries at or after `since`, oldest first; with \
            `follow=true` server-sent events: each entry as JSON in `data`, an event named `live` once the \
            backlog is sent, one named `missing_hosts` (a JSON list) if hosts did not answer, then each new \
            entry as it is written, with `: keep-alive` comments every 15 s",
            content((LogPage = "application/json"), (FollowedLog = "text/event-stream"))),
        (status = 400, description = "`bad_request`: a malformed query, `since` or `request`, or `limit` out of \
            range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the journal could not be read", body = ErrorBody),
    ),
)]
pub(super) async fn logs(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    query: Result<Query<JournalQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let asked = Asked::parse(query)?;
    known(&app, &name)?;
    let request = asked.request.clone();
    let keep = move |e: &Entry| request.as_deref().is_none_or(|r| e.request_id == r);
    let path = format!("/v1/functions/{name}/logs");
    let page = |entries, truncated, missing_hosts| LogPage { entries, truncated, missing_hosts };
    answer(app.clone(), &app.registry.journals().logs, name, asked, keep, &path, page).await
}

/// The function's events: deploys, alias and traffic changes, cold starts,
/// throttles and the like.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/events",
    operation_id = "events",
    tag = "observability",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function"), JournalQuery),
    responses(
        (status = 200, description = "The newest `limit` events at or after `since`, oldest first; with \
            `follow=true` server-sent events as for logs",
            content((EventPage = "application/json"), (FollowedEvents = "text/event-stream"))),
        (status = 400, description = "`bad_request`: a malformed query or `since`, `limit` out of range, or \
            `request` (events belong to no request)", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
        (status = 500, description = "`internal`: the journal could not be read", body = ErrorBody),
    ),
)]
pub(super) async fn events(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    query: Result<Query<JournalQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let asked = Asked::parse(query)?;
    if asked.request.is_some() {
        return Err(ApiError::bad_request("events belong to no request: drop ?request="));
    }
    known(&app, &name)?;
    let path = format!("/v1/functions/{name}/events");
    let page = |events, truncated, missing_hosts| EventPage { events, truncated, missing_hosts };
    answer(app.clone(), &app.registry.journals().events, name, asked, |_: &Event| true, &path, page).await
}

/// Reads (or follows) one journal of `name` here and, unless asked for
/// this host only, on every other host.
async fn answer<T: Record, P: Serialize>(
    app: Arc<App>,
    journal: &Journal<T>,
    name: String,
    asked: Asked,
    keep: impl Fn(&T) -> bool + Clone + Send + Sync + 'static,
    path: &str,
    framed: impl FnOnce(Vec<T>, bool, Vec<String>) -> P,
) -> Result<Response, ApiError> {
    let forwarded = asked.forwarded(path);
    if asked.follow {
        return Ok(follow(&app, journal, name, asked, keep, &forwarded).await?.into_response());
    }
    let limit = asked.window.limit;
    let page = journal.read(&name, asked.window, keep).await.map_err(ApiError::from_io)?;
    let mut pages = vec![(page.records, page.truncated)];
    let mut missing = Vec::new();
    if !asked.local {
        let gathered = peers::gather::<Remote<T>>(&app, &forwarded).await;
        pages.extend(gathered.answers.into_iter().map(|r| (r.entries, r.truncated)));
        missing = gathered.missing;
    }
    let (records, truncated) = merge(pages, limit);
    Ok(Json(framed(records, truncated, missing)).into_response())
}

/// The backlog (merged over hosts, the newest `limit`), an event named
/// `live`, then every new record from any host as it is written.
async fn follow<T: Record, K: Fn(&T) -> bool + Clone + Send + Sync + 'static>(
    app: &App,
    journal: &Journal<T>,
    name: String,
    asked: Asked,
    keep: K,
    forwarded: &str,
) -> Result<axum::response::Sse<impl Stream<Item = Result<Sse, Infallible>> + use<T, K>>, ApiError> {
    let limit = asked.window.limit;
    let (page, live) = journal.follow(&name, asked.window, keep.clone()).await.map_err(ApiError::from_io)?;
    let (remotes, mut missing) =
        if asked.local { (Vec::new(), Vec::new()) } else { peers::follow(app, forwarded).await };
    let mut backlogs = vec![(page.records, page.truncated)];
    let mut tails = Vec::new();
    for mut remote in remotes {
        let mut records = Vec::new();
        let backlog = async {
            while let Some(event) = remote.next().await {
                if event.name == "live" {
                    return true;
                }
                records.extend(serde_json::from_str::<T>(&event.data).ok());
            }
            false
        };
        match tokio::time::timeout(BACKLOG_PATIENCE, backlog).await {
            Ok(true) => {
                tails.push(remote.filter_map(|e: SseEvent| async move { e.name.is_empty().then_some(e.data) }).boxed())
            }
            _ => missing.push("a host that did not send its backlog".to_owned()),
        }
        backlogs.push((records, false));
    }
    let (records, _) = merge(backlogs, limit);
    let data = |r: &T| serde_json::to_string(r).unwrap_or_default();
    let mut head: Vec<Sse> = records.iter().map(|r| Sse::default().data(data(r))).collect();
    head.push(Sse::default().event("live").data(""));
    if !missing.is_empty() {
        head.push(Sse::default().event("missing_hosts").data(serde_json::to_string(&missing).unwrap_or_default()));
    }
    let here = futures_util::stream::unfold((live, journal_view(journal)), move |(mut live, view)| {
        let (name, keep) = (name.clone(), keep.clone());
        async move {
            loop {
                match live.recv().await {
                    Ok(r) if r.head().function == name && keep(&r) => {
                        let line = serde_json::to_string(&view(r)).unwrap_or_default();
                        return Some((line, (live, view)));
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!("a log follower fell behind; {n} records not sent");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        }
    });
    tails.push(here.boxed());
    let tail = futures_util::stream::select_all(tails).map(|line| Sse::default().data(line));
    let stream = futures_util::stream::iter(head).chain(tail).map(Ok);
    Ok(axum::response::Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)).text("keep-alive")))
}

/// How this host's journal shows a record it wrote (with the host named).
fn journal_view<T: Record>(journal: &Journal<T>) -> impl Fn(T) -> T + Send + Sync + 'static {
    let host = journal.host().to_owned();
    move |mut r: T| {
        r.head_mut().host.clone_from(&host);
        r
    }
}

/// `?minutes=M&local=` of `/stats`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    /// The window: the last this many minutes (default 15).
    #[param(minimum = 1, maximum = 30)]
    minutes: Option<u64>,
    /// This host's figures only, unmerged (how hosts of a cluster ask each other).
    #[serde(default)]
    local: bool,
}

impl StatsQuery {
    fn parse(query: Result<Query<StatsQuery>, QueryRejection>) -> Result<Self, ApiError> {
        let Query(q) = query.map_err(|e| ApiError::bad_request(format!("{}; use ?minutes=M", e.body_text())))?;
        let m = q.minutes.unwrap_or(15);
        if !(1..=MINUTES_MAX).contains(&m) {
            return Err(ApiError::bad_request(format!("minutes must be between 1 and {MINUTES_MAX}; got {m}")));
        }
        Ok(q)
    }

    fn minutes(&self) -> u64 {
        self.minutes.unwrap_or(15)
    }

    /// The first step of the window (which ends with the current step).
    fn first_step(&self) -> u64 {
        step_of(Millis::now().0 as u64 / 1000) + STEP_S - self.minutes() * 60
    }
}

/// What a window of steps shows: sums, percentiles, instances.
#[derive(Debug, Serialize, utoipa::ToSchema)]
struct Figures {
    invocations: u64,
    errors_4xx: u64,
    errors_5xx: u64,
    throttles: u64,
    cold_starts: u64,
    model_p50_us: Option<u64>,
    model_p99_us: Option<u64>,
    overhead_p50_us: Option<u64>,
    overhead_p99_us: Option<u64>,
    warm: u32,
    busy: u32,
}

impl From<&Step> for Figures {
    fn from(s: &Step) -> Self {
        Figures {
            invocations: s.invocations,
            errors_4xx: s.errors_4xx,
            errors_5xx: s.errors_5xx,
            throttles: s.throttles,
            cold_starts: s.cold_starts,
            model_p50_us: s.model.quantile(0.5),
            model_p99_us: s.model.quantile(0.99),
            overhead_p50_us: s.overhead.quantile(0.5),
            overhead_p99_us: s.overhead.quantile(0.99),
            warm: s.warm,
            busy: s.busy,
        }
    }
}

/// One function's steps here from `first` on, its versions merged.
fn steps_here(d: &crate::registry::Deployed, first: u64) -> BTreeMap<u64, Step> {
    let mut steps: BTreeMap<u64, Step> = BTreeMap::new();
    for (_, pool) in d.pools() {
        for s in pool.metrics.timeline.since(first) {
            steps.entry(s.t).or_insert_with(|| Step { t: s.t, ..Step::default() }).merge(&s);
        }
    }
    steps
}

/// What `/stats?local=true` answers: this host's steps, as they are.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
struct RemoteSteps {
    steps: Vec<Step>,
}

/// A function's recent history in steps, zeros filled.
#[derive(Serialize, utoipa::ToSchema)]
struct Timeline {
    /// Seconds per step.
    step_s: u64,
    /// Hosts whose figures are in.
    hosts: usize,
    /// Hosts that did not answer in time.
    missing_hosts: Vec<String>,
    /// Oldest first; latencies are null in a step with no served request.
    points: Vec<Point>,
}

/// One step of a [`Timeline`].
#[derive(Serialize, utoipa::ToSchema)]
struct Point {
    /// Unix seconds at the step's start.
    t: u64,
    #[serde(flatten)]
    figures: Figures,
}

/// What `/stats` answers.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum StatsAnswer {
    Timeline(Timeline),
    Local(RemoteSteps),
}

/// The function's recent history in 5 s steps, over every live host.
#[utoipa::path(
    get,
    path = "/v1/functions/{name}/stats",
    operation_id = "stats",
    tag = "observability",
    security(("bearer" = [])),
    params(("name" = String, Path, description = "The function"), StatsQuery),
    responses(
        (status = 200, description = "The window's steps (with `local=true`: this host's steps only, as kept)",
            body = StatsAnswer),
        (status = 400, description = "`bad_request`: a malformed query or `minutes` out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
        (status = 404, description = "`not_found`", body = ErrorBody),
    ),
)]
pub(super) async fn stats(
    _: Admin,
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = StatsQuery::parse(query)?;
    let d = app.registry.get(&name).ok_or_else(|| ApiError::not_found(&name))?;
    let first = q.first_step();
    let mut steps = steps_here(&d, first);
    if q.local {
        return Ok(Json(StatsAnswer::Local(RemoteSteps { steps: steps.into_values().collect() })).into_response());
    }
    let path = format!("/v1/functions/{name}/stats?minutes={}&local=true", q.minutes());
    let gathered = peers::gather::<RemoteSteps>(&app, &path).await;
    for s in gathered.answers.iter().flat_map(|r| &r.steps).filter(|s| s.t >= first) {
        steps.entry(s.t).or_insert_with(|| Step { t: s.t, ..Step::default() }).merge(s);
    }
    let points: Vec<Point> = (0..q.minutes() * 60 / STEP_S)
        .map(|i| first + i * STEP_S)
        .map(|t| Point { t, figures: steps.get(&t).map_or_else(|| (&Step::default()).into(), Figures::from) })
        .collect();
    let timeline =
        Timeline { step_s: STEP_S, hosts: 1 + gathered.answers.len(), missing_hosts: gathered.missing, points };
    Ok(Json(StatsAnswer::Timeline(timeline)).into_response())
}

/// One function's window on one host: sums over the window, instances now.
#[derive(Serialize, Deserialize, Default, utoipa::ToSchema)]
struct Totals {
    total: Step,
    loaded: bool,
}

/// Every function's figures over a window, over every live host.
#[derive(Serialize, utoipa::ToSchema)]
struct Summary {
    /// Minutes in the window.
    minutes: u64,
    /// Hosts whose figures are in.
    hosts: usize,
    /// Hosts that did not answer in time.
    missing_hosts: Vec<String>,
    /// By function name.
    functions: BTreeMap<String, FunctionSummary>,
}

/// One function's figures over the window (`warm` and `busy`: now).
#[derive(Serialize, utoipa::ToSchema)]
struct FunctionSummary {
    state: PoolState,
    #[serde(flatten)]
    figures: Figures,
}

/// What `/v1/stats?local=true` answers: this host's sums, unmerged.
#[derive(Serialize, utoipa::ToSchema)]
#[schema(max_properties = 1)]
struct LocalSummary {
    functions: BTreeMap<String, Totals>,
}

/// What `/v1/stats` answers.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(untagged)]
enum SummaryAnswer {
    Summary(Summary),
    Local(LocalSummary),
}

/// Every function's figures over the window, over every live host.
#[utoipa::path(
    get,
    path = "/v1/stats",
    operation_id = "summary",
    tag = "observability",
    security(("bearer" = [])),
    params(StatsQuery),
    responses(
        (status = 200, description = "Every function's figures (with `local=true`: this host's sums only)",
            body = SummaryAnswer),
        (status = 400, description = "`bad_request`: a malformed query or `minutes` out of range", body = ErrorBody),
        (status = 401, description = "`unauthorized`", body = ErrorBody),
    ),
)]
pub(super) async fn summary(
    _: Admin,
    State(app): State<Arc<App>>,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = StatsQuery::parse(query)?;
    let first = q.first_step();
    let mut functions: BTreeMap<String, Totals> = BTreeMap::new();
    for d in app.registry.list() {
        let mut totals = Totals::default();
        for s in steps_here(&d, first).values() {
            totals.total.merge(&Step { warm: 0, busy: 0, ..s.clone() });
        }
        for (_, pool) in d.pools() {
            let g = pool.gauges();
            totals.loaded |= g.loaded;
            totals.total.warm += g.warm_instances;
            totals.total.busy += g.busy_instances;
        }
        functions.insert(d.record.name.clone(), totals);
    }
    if q.local {
        return Ok(Json(SummaryAnswer::Local(LocalSummary { functions })).into_response());
    }
    #[derive(Deserialize)]
    struct RemoteTotals {
        functions: BTreeMap<String, Totals>,
    }
    let path = format!("/v1/stats?minutes={}&local=true", q.minutes());
    let gathered = peers::gather::<RemoteTotals>(&app, &path).await;
    for remote in &gathered.answers {
        for (name, t) in &remote.functions {
            let mine = functions.entry(name.clone()).or_default();
            mine.total.merge(&t.total);
            mine.loaded |= t.loaded;
        }
    }
    let summaries: BTreeMap<String, FunctionSummary> = functions
        .into_iter()
        .map(|(name, t)| {
            let now = Gauges { loaded: t.loaded, busy_instances: t.total.busy, ..Gauges::default() };
            let state = super::functions::state(now);
            (name, FunctionSummary { state, figures: (&t.total).into() })
        })
        .collect();
    let summary = Summary {
        minutes: q.minutes(),
        hosts: 1 + gathered.answers.len(),
        missing_hosts: gathered.missing,
        functions: summaries,
    };
    Ok(Json(SummaryAnswer::Summary(summary)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{EventKind, Head};

    fn event(t: i64, host: &str) -> Event {
        let head = Head { time: Millis(t), host: host.into(), function: "f".into(), version: None };
        Event { head, kind: EventKind::Loaded, message: String::new() }
    }

    #[test]
    fn pages_of_hosts_merge_by_time_keeping_the_newest() {
        let a = vec![event(1, "a"), event(4, "a")];
        let b = vec![event(2, "b"), event(3, "b")];
        let (merged, truncated) = merge([(a, false), (b, false)], 3);
        let times: Vec<i64> = merged.iter().map(|e| e.head.time.0).collect();
        assert_eq!(times, [2, 3, 4]);
        assert!(truncated);
    }
}
