//! Seeing what runs: a function's log (`/logs`, followed as server-sent
//! events), its event history (`/events`), its recent history in steps for
//! charts (`/stats`), and every function's figures over a window
//! (`/v1/stats`). In a cluster each answer covers every live host: this
//! host asks the others (see `peers`) and merges.

use super::App;
use super::auth::Admin;
use super::error::ApiError;
use super::peers::{self, SseEvent};
use crate::journal::{Entry, Event, Journal, LIMIT_MAX, Millis, Query as Window, Record};
use crate::pool::{Gauges, STEP_S, Step, step_of};
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
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
const MINUTES_MAX: u64 = crate::pool::KEPT.as_secs() / 60;
/// How long a peer has to send the backlog of a followed log.
const BACKLOG_PATIENCE: Duration = Duration::from_secs(3);

/// `?since=&limit=&request=&follow=&local=` of `/logs` and `/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct JournalQuery {
    since: Option<String>,
    limit: Option<usize>,
    request: Option<String>,
    #[serde(default)]
    follow: bool,
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
    answer(app.clone(), &app.registry.journals().logs, name, asked, keep, &path, "entries").await
}

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
    answer(app.clone(), &app.registry.journals().events, name, asked, |_: &Event| true, &path, "events").await
}

/// Reads (or follows) one journal of `name` here and, unless asked for
/// this host only, on every other host.
async fn answer<T: Record>(
    app: Arc<App>,
    journal: &Journal<T>,
    name: String,
    asked: Asked,
    keep: impl Fn(&T) -> bool + Clone + Send + Sync + 'static,
    path: &str,
    key: &str,
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
    let mut body = serde_json::json!({ key: records, "truncated": truncated });
    if !missing.is_empty() {
        body["missing_hosts"] = missing.into();
    }
    Ok(Json(body).into_response())
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    minutes: Option<u64>,
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
#[derive(Debug, Serialize)]
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

#[derive(Serialize, Deserialize)]
struct RemoteSteps {
    steps: Vec<Step>,
}

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
        return Ok(Json(RemoteSteps { steps: steps.into_values().collect() }).into_response());
    }
    let path = format!("/v1/functions/{name}/stats?minutes={}&local=true", q.minutes());
    let gathered = peers::gather::<RemoteSteps>(&app, &path).await;
    for s in gathered.answers.iter().flat_map(|r| &r.steps).filter(|s| s.t >= first) {
        steps.entry(s.t).or_insert_with(|| Step { t: s.t, ..Step::default() }).merge(s);
    }
    #[derive(Serialize)]
    struct Point {
        t: u64,
        #[serde(flatten)]
        figures: Figures,
    }
    let points: Vec<Point> = (0..q.minutes() * 60 / STEP_S)
        .map(|i| first + i * STEP_S)
        .map(|t| Point { t, figures: steps.get(&t).map_or_else(|| (&Step::default()).into(), Figures::from) })
        .collect();
    Ok(Json(serde_json::json!({
        "step_s": STEP_S,
        "hosts": 1 + gathered.answers.len(),
        "missing_hosts": gathered.missing,
        "points": points,
    }))
    .into_response())
}

/// One function's window on one host: sums over the window, instances now.
#[derive(Serialize, Deserialize, Default)]
struct Totals {
    total: Step,
    loaded: bool,
}

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
        return Ok(Json(serde_json::json!({ "functions": functions })).into_response());
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
    #[derive(Serialize)]
    struct Summary {
        state: &'static str,
        #[serde(flatten)]
        figures: Figures,
    }
    let summaries: BTreeMap<String, Summary> = functions
        .into_iter()
        .map(|(name, t)| {
            let now = Gauges { loaded: t.loaded, busy_instances: t.total.busy, ..Gauges::default() };
            let state = super::functions::state(now);
            (name, Summary { state, figures: (&t.total).into() })
        })
        .collect();
    Ok(Json(serde_json::json!({
        "minutes": q.minutes(),
        "hosts": 1 + gathered.answers.len(),
        "missing_hosts": gathered.missing,
        "functions": summaries,
    }))
    .into_response())
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
