//! Watch streams: chunked JSON lines, resume from a version, selector
//! transitions, bookmarks, initial events, 410 on too-old versions.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use super::Shared;
use super::eventsv1::View;
use super::handler::{Body, Target};
use super::resources::{NameRule, RESOURCES, ResourceDef};
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::{Event, EventType, watch_line};

/// Watch length when the client gives no timeoutSeconds; upstream picks a
/// random value between 30 and 60 minutes.
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Names ListOptions in Invalid errors about watch parameters.
pub(crate) static LIST_OPTIONS: ResourceDef = ResourceDef {
    group: "meta.k8s.io",
    version: "v1",
    plural: "listoptions",
    singular: "",
    kind: "ListOptions",
    namespaced: false,
    status: false,
    custom: false,
    create_on_update: false,
    short_names: &[],
    name_rule: NameRule::Subdomain,
    extra_fields: &[],
};

/// Which objects a watcher sees.
struct Filter {
    namespace: Option<String>,
    /// Stored form → served form, for views (events.k8s.io Events).
    convert: Option<fn(&Value) -> Value>,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn trivial(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }

    fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The line this watcher gets for `ev`, if any. An update that moves an
    /// object into the selection is ADDED, out of it DELETED.
    fn line(&self, ev: &Event) -> Option<Bytes> {
        if let Some(ns) = &self.namespace
            && &ev.namespace != ns
        {
            return None;
        }
        if let Some(convert) = self.convert {
            let now = self.matches(&ev.obj);
            let before = ev.prev.as_deref().is_some_and(|p| self.matches(p));
            let kind = match ev.kind {
                EventType::Added if now => "ADDED",
                EventType::Modified if now && before => "MODIFIED",
                EventType::Modified if now => "ADDED",
                EventType::Modified if before => "DELETED",
                EventType::Deleted if before || now => "DELETED",
                _ => return None,
            };
            return Some(watch_line(kind, &convert(&ev.obj)));
        }
        if self.trivial() {
            return Some(ev.line());
        }
        let now = self.matches(&ev.obj);
        let before = ev.prev.as_deref().is_some_and(|p| self.matches(p));
        match ev.kind {
            EventType::Added if now => Some(ev.line()),
            EventType::Modified if now && before => Some(ev.line()),
            EventType::Modified if now => Some(watch_line("ADDED", &ev.obj)),
            EventType::Modified if before => Some(watch_line("DELETED", &ev.obj)),
            EventType::Deleted if before || now => Some(ev.line()),
            _ => None,
        }
    }
}

fn bookmark(def: &ResourceDef, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    if initial_end {
        meta.insert(
            "annotations".into(),
            json!({"k8s.io/initial-events-end": "true"}),
        );
    }
    watch_line(
        "BOOKMARK",
        &json!({"kind": def.kind, "apiVersion": def.api_version(), "metadata": Value::Object(meta)}),
    )
}

fn error_line(e: &ApiError) -> Bytes {
    watch_line("ERROR", &e.to_status())
}

struct State {
    pending: VecDeque<Bytes>,
    rx: Option<broadcast::Receiver<Arc<Event>>>,
    filter: Filter,
    def: &'static ResourceDef,
    last_rv: u64,
    deadline: Instant,
    close: watch::Receiver<u64>,
    expire: watch::Receiver<u64>,
    /// Set once the stream has sent its last line.
    ended: bool,
    shutdown: watch::Receiver<bool>,
    bookmarks: Option<tokio::time::Interval>,
    published: Arc<AtomicU64>,
    shared: Arc<Shared>,
}

async fn tick(i: &mut Option<tokio::time::Interval>) {
    match i {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending::<()>().await,
    }
}

impl State {
    /// The ERROR line of a 410 Expired for a watch from `requested`,
    /// counted for the resource.
    fn expired(&self, requested: u64, oldest: u64) -> Bytes {
        self.shared.counters.expired(self.def.plural);
        error_line(&ApiError::expired(requested, oldest))
    }

    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(b) = self.pending.pop_front() {
                return Some(b);
            }
            if self.ended {
                return None;
            }
            let rx = self.rx.as_mut()?;
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(ev) => {
                        self.last_rv = ev.rv;
                        if let Some(line) = self.filter.line(&ev) {
                            return Some(line);
                        }
                    }
                    // A watcher that lagged too far is closed; the client
                    // resumes from its last version.
                    Err(_) => return None,
                },
                _ = tokio::time::sleep_until(self.deadline) => return None,
                _ = self.close.changed() => return None,
                _ = self.expire.changed() => {
                    self.ended = true;
                    return Some(self.expired(self.last_rv, self.last_rv));
                }
                _ = self.shutdown.changed() => return None,
                _ = tick(&mut self.bookmarks) => {
                    // Everything up to the published version is in our
                    // queue; if the queue is empty we have seen it all.
                    let published = self.published.load(Ordering::Acquire);
                    if rx.is_empty() && published > self.last_rv {
                        self.last_rv = published;
                    }
                    return Some(bookmark(self.def, self.last_rv, false));
                }
            }
        }
    }
}

fn stream_response(state: State) -> Response<Body> {
    let stream = futures::stream::unfold(state, |mut st| async move {
        let line = st.next().await?;
        Some((Ok::<_, Infallible>(Frame::data(line)), st))
    });
    let mut r = Response::new(StreamBody::new(stream).boxed_unsync());
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache, private"),
    );
    r
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

/// Starts a watch for `GET …?watch=true`.
pub(crate) fn start(
    sh: &Arc<Shared>,
    t: &Target,
    q: &HashMap<String, String>,
    view: Option<&'static View>,
) -> Result<Response<Body>, ApiError> {
    let stored = &RESOURCES[t.res];
    let def = view.map(|v| v.def).unwrap_or(stored);
    let filter = Filter {
        namespace: t.namespace.clone(),
        convert: view.map(|v| v.to_view),
        labels: LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?,
        fields: FieldSelector::parse(
            q.get("fieldSelector").map(String::as_str).unwrap_or(""),
            stored,
        )?,
    };
    let bookmarks_on = is_true(q.get("allowWatchBookmarks"));
    let send_initial = q.get("sendInitialEvents").map(|v| v == "true" || v == "1");
    let rv_match = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    if send_initial.is_some() && rv_match != "NotOlderThan" {
        return Err(ApiError::invalid(
            &LIST_OPTIONS,
            "",
            vec![super::status::Cause {
                reason: "FieldValueForbidden".into(),
                message: "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
                field: "resourceVersionMatch".into(),
            }],
        ));
    }
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|s| s.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_WATCH_TIMEOUT);
    let requested = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))?,
        ),
    };
    let bookmark_every = sh.bookmark_interval();
    let mut state = State {
        pending: VecDeque::new(),
        rx: None,
        filter,
        def,
        last_rv: 0,
        deadline: Instant::now() + timeout,
        close: sh.faults.close_signal(),
        expire: sh.faults.expire_signal(),
        ended: false,
        shutdown: sh.shutdown_signal(),
        bookmarks: bookmarks_on.then(|| {
            let mut i = tokio::time::interval_at(Instant::now() + bookmark_every, bookmark_every);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        }),
        published: sh.published.clone(),
        shared: sh.clone(),
    };
    if sh.faults.take_gone() {
        let rv = requested.unwrap_or(0);
        let line = state.expired(rv, rv + 1);
        state.pending.push_back(line);
        return Ok(stream_response(state));
    }
    // Initial state is sent when asked for, or by default for "" and "0".
    let initial = match (send_initial, requested) {
        (Some(b), _) => b,
        (None, None | Some(0)) => true,
        (None, Some(_)) => false,
    };
    let sub = {
        let store = sh.lock();
        let from = if initial {
            None
        } else {
            Some(requested.filter(|v| *v > 0).unwrap_or(store.rv()))
        };
        store.subscribe(t.res, from, t.namespace.as_deref())
    };
    let sub = match sub {
        Ok(s) => s,
        Err(e) => {
            // Like upstream, a too-old version is reported inside the
            // stream, not as the HTTP status.
            if e.code == 410 {
                state.shared.counters.expired(def.plural);
            }
            state.pending.push_back(error_line(&e));
            return Ok(stream_response(state));
        }
    };
    for obj in &sub.initial {
        if state.filter.matches(obj) {
            let line = match state.filter.convert {
                Some(convert) => watch_line("ADDED", &convert(obj)),
                None => watch_line("ADDED", obj),
            };
            state.pending.push_back(line);
        }
    }
    if send_initial == Some(true) {
        state.pending.push_back(bookmark(def, sub.rv, true));
    }
    for ev in &sub.backlog {
        if let Some(line) = state.filter.line(ev) {
            state.pending.push_back(line);
        }
    }
    state.last_rv = sub.rv;
    state.rx = Some(sub.rx);
    Ok(stream_response(state))
}
