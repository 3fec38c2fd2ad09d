//! Request routing and the REST verbs.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use serde::ser::{SerializeMap, SerializeSeq};
use serde_json::{Value, json};

use super::Shared;
use super::discovery;
use super::eventsv1;
use super::faults::normalize_verb;
use super::managed;
use super::object::{
    Part, check_namespace, check_type_meta, finalizers, generate_name, meta_mut, meta_str,
    now_rfc3339, prepare_create, prepare_update, same_object,
};
use super::patch;
use super::rbac;
use super::resources::{RESOURCES, ResourceDef, find, namespaces};
use super::selector::{FieldSelector, LabelSelector};
use super::status::{ApiError, Cause, invalid1};
use super::store::{Key, Retry, set_rv};
use super::watch;
use super::watch::LIST_OPTIONS;

/// Response body: either a full JSON document or a watch stream.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// The manager of the objects the server creates itself (the initial
/// namespaces), as kube-apiserver names itself.
const SERVER_MANAGER: &str = "kube-apiserver";

/// The User-Agent of in-process requests ([`local`]): a benchmark's own
/// writes, which a real cluster would see from a client of that name.
const LOCAL_USER_AGENT: &str = "embedded-apiserver-local";

/// Attempts at a write racing with other writers before giving up; each
/// retry recomputes from the newest state, as etcd's GuaranteedUpdate does.
const MAX_WRITE_ATTEMPTS: usize = 64;

/// Options of a write from its query parameters.
#[derive(Debug, Clone)]
struct Write {
    /// `dryRun=All`: validate and answer, store nothing.
    dry_run: bool,
    /// `fieldValidation=Strict`: unknown fields are an error, not pruned.
    strict: bool,
    /// Who writes (for `managedFields`).
    writer: managed::Writer,
}

/// Where a request goes.
#[derive(Debug)]
pub(crate) struct Target {
    pub res: usize,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
}

impl Target {
    fn def(&self) -> &'static ResourceDef {
        &RESOURCES[self.res]
    }
}

enum Route {
    Doc(Value),
    /// A document under `/openapi/`.
    OpenApi(String),
    Text(&'static str),
    Resource(Target),
}

/// Builds a JSON response.
pub(crate) fn json_response(code: u16, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    bytes_response(code, Bytes::from(bytes))
}

fn bytes_response(code: u16, bytes: Bytes) -> Response<Body> {
    let mut r = Response::new(Full::new(bytes).boxed_unsync());
    *r.status_mut() = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    r
}

/// A `Status` error response.
pub(crate) fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status())
}

fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string.
pub(crate) fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k, true), percent_decode(v, true)),
            None => (percent_decode(p, true), String::new()),
        })
        .collect()
}

fn route(path: &str, addr: std::net::SocketAddr) -> Option<Route> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| percent_decode(s, false))
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match s.as_slice() {
        [] => Some(Route::Doc(
            json!({"paths": ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/openapi/v2", "/openapi/v3", "/readyz", "/version"]}),
        )),
        ["version"] => Some(Route::Doc(discovery::version())),
        ["healthz" | "livez" | "readyz"] => Some(Route::Text("ok")),
        ["api"] => Some(Route::Doc(discovery::core_versions(addr))),
        ["api", v] => discovery::resource_list("", v).map(Route::Doc),
        ["apis"] => Some(Route::Doc(discovery::group_list())),
        ["apis", g] => discovery::group(g).map(Route::Doc),
        ["apis", g, v] => discovery::resource_list(g, v).map(Route::Doc),
        ["openapi", rest @ ..] => Some(Route::OpenApi(rest.join("/"))),
        ["api", v, rest @ ..] => resource_route("", v, rest).map(Route::Resource),
        ["apis", g, v, rest @ ..] => resource_route(g, v, rest).map(Route::Resource),
        _ => None,
    }
}

fn resource_route(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let cluster = |plural: &str, name: Option<&str>, sub: Option<&str>| {
        let res = find(group, version, plural)?;
        if name.is_some() && RESOURCES[res].namespaced {
            return None;
        }
        Some(Target {
            res,
            namespace: None,
            name: name.map(String::from),
            sub: sub.map(String::from),
        })
    };
    let namespaced = |ns: &str, plural: &str, name: Option<&str>, sub: Option<&str>| {
        let res = find(group, version, plural)?;
        if !RESOURCES[res].namespaced {
            return None;
        }
        Some(Target {
            res,
            namespace: Some(ns.to_string()),
            name: name.map(String::from),
            sub: sub.map(String::from),
        })
    };
    match rest {
        ["namespaces", ns, plural] if find(group, version, plural).is_some() => {
            namespaced(ns, plural, None, None)
        }
        ["namespaces", ns, plural, name] => namespaced(ns, plural, Some(name), None),
        ["namespaces", ns, plural, name, sub] => namespaced(ns, plural, Some(name), Some(sub)),
        [plural] => cluster(plural, None, None),
        [plural, name] => cluster(plural, Some(name), None),
        [plural, name, sub] => cluster(plural, Some(name), Some(sub)),
        _ => None,
    }
}

/// The request's verb for counters and faults.
fn verb_of(method: &Method, t: &Target, q: &HashMap<String, String>) -> &'static str {
    match *method {
        Method::GET if t.name.is_some() => "GET",
        Method::GET if is_true(q.get("watch")) => "WATCH",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        _ => "OTHER",
    }
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

/// Whether the request carries the restricted user's bearer token.
fn is_restricted(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t.trim() == rbac::RESTRICTED_TOKEN)
}

/// Entry point for every request.
pub(crate) async fn handle(
    sh: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = req.into_parts();
    let q = parse_query(parts.uri.query());
    let Some(route) = route(parts.uri.path(), sh.addr) else {
        sh.counters
            .hit(&normalize_verb(parts.method.as_str()), "unknown", "");
        return Ok(error_response(&ApiError::no_route()));
    };
    let t = match route {
        Route::Doc(d) => {
            sh.counters.hit("GET", "discovery", "");
            if parts.method != Method::GET {
                return Ok(error_response(&ApiError::method_not_allowed()));
            }
            return Ok(json_response(200, &d));
        }
        Route::OpenApi(path) => {
            sh.counters.hit("GET", "openapi", "");
            let accept = parts
                .headers
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            return Ok(match sh.openapi.get(&path, accept) {
                Some(doc) => {
                    let mut r = bytes_response(200, doc.body.clone());
                    r.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(doc.content_type),
                    );
                    r
                }
                None => error_response(&ApiError::no_route()),
            });
        }
        Route::Text(s) => {
            let mut r = Response::new(Full::new(Bytes::from_static(s.as_bytes())).boxed_unsync());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return Ok(r);
        }
        Route::Resource(t) => t,
    };
    let verb = verb_of(&parts.method, &t, &q);
    let plural = t.def().plural;
    let sub = t.sub.clone().unwrap_or_default();
    sh.counters.hit(verb, plural, &sub);
    if let Some(policy) = &sh.rbac
        && is_restricted(&parts.headers)
    {
        let attrs = rbac::Attributes {
            verb: rbac::rbac_verb(verb, t.name.is_some()),
            def: t.def(),
            sub: t.sub.as_deref(),
            namespace: t.namespace.as_deref(),
            name: t.name.as_deref(),
        };
        if !policy.allows(&attrs) {
            let e = rbac::forbidden(&attrs);
            sh.forbidden
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(message = %e.message, "embedded API server: forbidden");
            return Ok(error_response(&e));
        }
    }
    if let Some(d) = sh.faults.delay_for(verb, plural) {
        tokio::time::sleep(d).await;
    }
    if let Some(code) = sh.faults.take_failure(verb, plural, &sub) {
        return Ok(error_response(&ApiError::injected(code)));
    }
    if verb == "WATCH" {
        sh.faults.wait_watch_release(plural).await;
    } else {
        sh.cost.spend().await;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let mut body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return Ok(error_response(&ApiError::bad_request(e.to_string()))),
    };
    let (mut t, mut q, mut content_type) = (t, q, content_type);
    let view = eventsv1::view_for(t.res);
    if let Some((v, storage)) = view {
        match eventsv1::translate_request(
            v,
            verb,
            &content_type,
            &body,
            t.namespace.as_deref(),
            &mut q,
        ) {
            Ok(Some(b)) => {
                body = Bytes::from(b);
                if matches!(verb, "POST" | "PUT")
                    || content_type.starts_with("application/apply-patch")
                {
                    content_type = if verb == "PATCH" {
                        "application/merge-patch+json".into()
                    } else {
                        "application/json".into()
                    };
                }
            }
            Ok(None) => {}
            Err(e) => return Ok(error_response(&e)),
        }
        t.res = storage;
    }
    let view = view.map(|(v, _)| v);
    let user_agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let req = Req {
        method: &parts.method,
        verb,
        content_type: &content_type,
        user_agent,
    };
    let result = dispatch(&sh, &req, &t, &q, body, view);
    let mut response = result.unwrap_or_else(|e| error_response(&e));
    if let Some(v) = view
        && verb != "WATCH"
    {
        let (head, b) = response.into_parts();
        let bytes = b.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        let out = eventsv1::translate_body(v, &bytes)
            .map(Bytes::from)
            .unwrap_or(bytes);
        response = Response::from_parts(head, Full::new(out).boxed_unsync());
    }
    tracing::trace!(
        verb,
        resource = plural,
        subresource = %sub,
        namespace = t.namespace.as_deref().unwrap_or(""),
        name = t.name.as_deref().unwrap_or(""),
        code = response.status().as_u16(),
        "embedded API server request"
    );
    Ok(response)
}

/// The request line and headers that decide how a request is served.
struct Req<'a> {
    method: &'a Method,
    verb: &'a str,
    content_type: &'a str,
    user_agent: &'a str,
}

fn dispatch(
    sh: &Arc<Shared>,
    req: &Req<'_>,
    t: &Target,
    q: &HashMap<String, String>,
    body: Bytes,
    view: Option<&'static eventsv1::View>,
) -> Result<Response<Body>, ApiError> {
    let (method, verb, content_type) = (req.method, req.verb, req.content_type);
    match t.sub.as_deref() {
        None => {}
        Some("status")
            if t.def().status && matches!(*method, Method::GET | Method::PUT | Method::PATCH) => {}
        Some("status") if t.def().status => return Err(ApiError::method_not_allowed()),
        Some(_) => return Err(ApiError::no_route()),
    }
    let w = Write {
        dry_run: q.get("dryRun").is_some_and(|v| v == "All"),
        strict: q.get("fieldValidation").is_some_and(|v| v == "Strict"),
        writer: managed::Writer {
            manager: managed::manager_name(
                q.get("fieldManager").map(String::as_str),
                req.user_agent,
            ),
            apply: content_type.starts_with("application/apply-patch"),
            api_version: t.def().api_version(),
            subresource: t.sub.clone(),
            applied: None,
        },
    };
    let dry_run = w.dry_run;
    // The all-namespaces path of a namespaced resource only lists and watches.
    if t.def().namespaced && t.namespace.is_none() && !matches!(verb, "LIST" | "WATCH") {
        return Err(ApiError::method_not_allowed());
    }
    match verb {
        "GET" => get(sh, t),
        "LIST" => list(sh, t, q),
        "WATCH" => watch::start(sh, t, q, view),
        "POST" if t.name.is_none() => create(sh, t, parse_body(t.def(), content_type, &body)?, &w),
        "PUT" if t.name.is_some() => update(sh, t, parse_body(t.def(), content_type, &body)?, &w),
        "PATCH" if t.name.is_some() => patch(sh, t, q, content_type, &body, &w),
        "DELETE" if t.name.is_some() => delete(sh, t, q, &body, dry_run),
        "DELETE" => delete_collection(sh, t, q, &body, dry_run),
        _ => Err(ApiError::method_not_allowed()),
    }
}

/// Decodes a create/update body: JSON or YAML, as the real server accepts
/// (protobuf is not supported here and answered 415).
fn parse_body(def: &ResourceDef, content_type: &str, body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = match content_type {
        "" | "application/json" | "*/*" => serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })?,
        "application/vnd.kubernetes.protobuf" if super::protobuf::supported(def) => {
            super::protobuf::decode(def, body)?
        }
        "application/yaml" => serde_norway::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body of the request could not be decoded: {e}"))
        })?,
        _ => {
            let accepted = if def.custom {
                "application/json, application/yaml"
            } else {
                "application/json, application/yaml, application/vnd.kubernetes.protobuf"
            };
            return Err(ApiError {
                code: 415,
                reason: "UnsupportedMediaType",
                message: format!(
                    "the body of the request was in an unknown format - accepted media types include: {accepted}"
                ),
                details: None,
            });
        }
    };
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body of the request must be a JSON object",
        ));
    }
    Ok(v)
}

fn key_of(t: &Target, name: &str) -> Key {
    (t.namespace.clone().unwrap_or_default(), name.to_string())
}

fn get(sh: &Shared, t: &Target) -> Result<Response<Body>, ApiError> {
    let name = t.name.as_deref().unwrap_or("");
    let entry = sh.lock().get(t.res, &key_of(t, name));
    match entry {
        Some(e) => Ok(json_response(200, &e.obj)),
        None => Err(ApiError::not_found(t.def(), name)),
    }
}

/// Serializes an object without kind/apiVersion (items of built-in lists).
struct Untyped<'a>(&'a Value);

impl serde::Serialize for Untyped<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Object(m) => {
                let mut map = s.serialize_map(None)?;
                for (k, v) in m {
                    if k != "kind" && k != "apiVersion" {
                        map.serialize_entry(k, v)?;
                    }
                }
                map.end()
            }
            other => other.serialize(s),
        }
    }
}

struct Items<'a>(&'a [Arc<Value>], bool);

impl serde::Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for o in self.0 {
            if self.1 {
                seq.serialize_element(o.as_ref())?;
            } else {
                seq.serialize_element(&Untyped(o))?;
            }
        }
        seq.end()
    }
}

/// An opaque continue token: the list's version and the last key served.
fn encode_continue(rv: u64, key: &Key) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "ns": key.0, "name": key.1}).to_string();
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_continue(tok: &str) -> Option<(u64, Key)> {
    if !tok.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..tok.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(tok.get(i..i + 2)?, 16).ok())
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((
        v.get("rv")?.as_u64()?,
        (
            v.get("ns")?.as_str()?.to_string(),
            v.get("name")?.as_str()?.to_string(),
        ),
    ))
}

/// Cause of a refused `resourceVersionMatch`.
fn rv_match_cause(reason: &str, message: String) -> ApiError {
    ApiError::invalid(
        &LIST_OPTIONS,
        "",
        vec![Cause {
            reason: reason.into(),
            message,
            field: "resourceVersionMatch".into(),
        }],
    )
}

/// The checks upstream makes of a list's `resourceVersion` and
/// `resourceVersionMatch` (the list itself is always of the newest state).
fn check_list_versions(q: &HashMap<String, String>) -> Result<(), ApiError> {
    let rv = q.get("resourceVersion").map(String::as_str).unwrap_or("");
    if !rv.is_empty() && rv.parse::<u64>().is_err() {
        return Err(ApiError::bad_request(format!(
            "invalid resource version: resourceVersion: Invalid value: {rv:?}: strconv.ParseUint: parsing {rv:?}: invalid syntax"
        )));
    }
    let m = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or("");
    match m {
        "" => Ok(()),
        _ if rv.is_empty() => Err(rv_match_cause(
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided"
                .into(),
        )),
        "Exact" if rv == "0" => Err(rv_match_cause(
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch \"exact\" is forbidden for resourceVersion \"0\""
                .into(),
        )),
        "Exact" | "NotOlderThan" => Ok(()),
        other => Err(rv_match_cause(
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {other:?}: supported values: \"Exact\", \"NotOlderThan\", \"\""
            ),
        )),
    }
}

fn list(sh: &Shared, t: &Target, q: &HashMap<String, String>) -> Result<Response<Body>, ApiError> {
    let def = t.def();
    check_list_versions(q)?;
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        def,
    )?;
    let limit: usize = match q.get("limit").map(String::as_str) {
        None | Some("") => 0,
        Some(l) => l
            .parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid limit: {l}")))?
            .max(0) as usize,
    };
    let cont = match q.get("continue").map(String::as_str) {
        None | Some("") => None,
        Some(tok) => Some(decode_continue(tok).ok_or_else(|| {
            ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        })?),
    };
    let ns = t.namespace.clone();
    let mut items: Vec<Arc<Value>> = Vec::new();
    let mut next: Option<Key> = None;
    let mut remaining: u64 = 0;
    let list_rv;
    {
        let store = sh.lock();
        let table = &store.tables[t.res];
        list_rv = match &cont {
            Some((rv, _)) => {
                if *rv < table.compacted {
                    return Err(ApiError::continue_expired());
                }
                *rv
            }
            None => store.rv(),
        };
        let range = match (&cont, &ns) {
            (Some((_, k)), _) => table.objects.range::<Key, _>((
                std::ops::Bound::Excluded(k.clone()),
                std::ops::Bound::Unbounded,
            )),
            (None, Some(n)) => table.objects.range::<Key, _>((
                std::ops::Bound::Included((n.clone(), String::new())),
                std::ops::Bound::Unbounded,
            )),
            (None, None) => table.objects.range::<Key, _>(..),
        };
        for (k, e) in range {
            if let Some(n) = &ns
                && &k.0 != n
            {
                break;
            }
            if !labels.matches(&e.obj) || !fields.matches(&e.obj) {
                continue;
            }
            if limit > 0 && items.len() == limit {
                if next.is_none() {
                    next = items.last().map(|_| k.clone());
                }
                remaining += 1;
                continue;
            }
            items.push(e.obj.clone());
        }
    }
    let mut meta = serde_json::Map::new();
    meta.insert("resourceVersion".into(), json!(list_rv.to_string()));
    if next.is_some()
        && let Some(last) = items.last()
    {
        let key = (
            meta_str(last, "namespace").to_string(),
            meta_str(last, "name").to_string(),
        );
        meta.insert("continue".into(), json!(encode_continue(list_rv, &key)));
        if labels.is_empty() && fields.is_empty() {
            meta.insert("remainingItemCount".into(), json!(remaining));
        }
    } else if def.custom {
        // Lists of custom resources are unstructured: the last page carries
        // an empty continue token rather than none.
        meta.insert("continue".into(), json!(""));
    }
    let doc = json!({
        "kind": def.list_kind(),
        "apiVersion": def.api_version(),
        "metadata": Value::Object(meta),
    });
    let mut out = serde_json::to_vec(&doc).unwrap_or_default();
    // Append `"items":[…]` before the closing brace without cloning items.
    out.pop();
    out.extend_from_slice(b",\"items\":");
    let _ = serde_json::to_writer(&mut out, &Items(&items, def.custom));
    out.push(b'}');
    Ok(bytes_response(200, Bytes::from(out)))
}

fn check_namespace_exists(
    sh: &Shared,
    def: &ResourceDef,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    if !def.namespaced {
        return Ok(());
    }
    let entry = sh
        .lock()
        .get(namespaces(), &(String::new(), ns.to_string()));
    match entry {
        None => Err(ApiError::not_found(&RESOURCES[namespaces()], ns)),
        Some(e) if !meta_str(&e.obj, "deletionTimestamp").is_empty() => Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                def.qualified()
            ),
            details: Some(json!({
                "name": name,
                "kind": def.plural,
                "causes": [{"reason": "NamespaceTerminating", "message": format!("namespace {ns} is being terminated"), "field": "metadata.namespace"}]
            })),
        }),
        Some(_) => Ok(()),
    }
}

fn is_namespace(def: &ResourceDef) -> bool {
    def.group.is_empty() && def.plural == "namespaces"
}

/// Deletes everything in namespace `ns` (what the namespace controller
/// does); returns whether objects remain (held by finalizers).
fn empty_namespace(sh: &Shared, ns: &str) -> Result<bool, ApiError> {
    let opts = DeleteOptions {
        uid: None,
        rv: None,
    };
    let mut remaining = false;
    for (res, def) in RESOURCES.iter().enumerate().filter(|(_, d)| d.namespaced) {
        let keys: Vec<Key> = {
            let store = sh.lock();
            store.tables[res]
                .objects
                .range::<Key, _>((
                    std::ops::Bound::Included((ns.to_string(), String::new())),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.0 == ns)
                .map(|(k, _)| k.clone())
                .collect()
        };
        let t = Target {
            res,
            namespace: Some(ns.to_string()),
            name: None,
            sub: None,
        };
        for k in keys {
            match delete_one(sh, &t, def, &k, &opts, false) {
                Ok((_, gone)) => remaining |= !gone,
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(remaining)
}

/// Removes a terminating namespace once its last object is gone.
fn finish_namespace(sh: &Shared, ns: &str) {
    let key = (String::new(), ns.to_string());
    let mut store = sh.lock();
    let Some(entry) = store.get(namespaces(), &key) else {
        return;
    };
    if meta_str(&entry.obj, "deletionTimestamp").is_empty() || !finalizers(&entry.obj).is_empty() {
        return;
    }
    let empty = RESOURCES
        .iter()
        .enumerate()
        .filter(|(_, d)| d.namespaced)
        .all(|(res, _)| {
            store.tables[res]
                .objects
                .range::<Key, _>((
                    std::ops::Bound::Included((ns.to_string(), String::new())),
                    std::ops::Bound::Unbounded,
                ))
                .next()
                .is_none_or(|(k, _)| k.0 != ns)
        });
    if empty {
        // A concurrent change just retries on the next removal.
        let _ = store.remove(namespaces(), &key, (*entry.obj).clone(), entry.rv);
    }
}

/// Prunes and validates a custom resource against its CRD schema, if the
/// server was started with schemas.
fn schema_check(
    sh: &Shared,
    def: &ResourceDef,
    obj: &mut Value,
    old: Option<&Value>,
    strict: bool,
) -> Result<(), ApiError> {
    if !def.custom {
        return Ok(());
    }
    if let Some(v) = &sh.validator {
        let pruned = v.prune(def, obj);
        if strict && !pruned.is_empty() {
            let list: Vec<String> = pruned
                .iter()
                .map(|p| format!("unknown field {p:?}"))
                .collect();
            return Err(ApiError::bad_request(format!(
                "strict decoding error: {}",
                list.join(", ")
            )));
        }
        if let Err(causes) = v.validate(def, obj, old)
            && !causes.is_empty()
        {
            return Err(ApiError::invalid(def, meta_str(obj, "name"), causes));
        }
    }
    Ok(())
}

fn create(sh: &Shared, t: &Target, mut obj: Value, w: &Write) -> Result<Response<Body>, ApiError> {
    let def = t.def();
    check_type_meta(def, &mut obj)?;
    check_namespace(def, &mut obj, t.namespace.as_deref())?;
    let obj = create_object(sh, def, obj, w)?;
    Ok(json_response(201, &obj))
}

fn create_object(
    sh: &Shared,
    def: &ResourceDef,
    mut obj: Value,
    w: &Write,
) -> Result<Value, ApiError> {
    let generate = meta_str(&obj, "generateName").to_string();
    let explicit = meta_str(&obj, "name").to_string();
    if explicit.is_empty() && generate.is_empty() {
        return Err(invalid1(
            def,
            "",
            "metadata.name",
            "FieldValueRequired",
            "Required value: name or generateName is required".into(),
        ));
    }
    let ns = meta_str(&obj, "namespace").to_string();
    check_namespace_exists(sh, def, &ns, &explicit)?;
    let res = find(def.group, def.version, def.plural).unwrap_or_default();
    let uid = uuid::Uuid::new_v4().to_string();
    if explicit.is_empty() {
        meta_mut(&mut obj).insert("name".into(), json!(generate_name(&generate)));
    }
    prepare_create(def, &mut obj, uid)?;
    schema_check(sh, def, &mut obj, None, w.strict)?;
    managed::on_create(&w.writer, &mut obj);
    let name = meta_str(&obj, "name").to_string();
    let key = (ns, name.clone());
    let mut store = sh.lock();
    if store.get(res, &key).is_some() {
        return Err(ApiError::already_exists(def, &name));
    }
    if w.dry_run {
        return Ok(obj);
    }
    store
        .put(res, key, obj, None)
        .map(|o| (*o).clone())
        .map_err(|Retry| ApiError::already_exists(def, &name))
}

/// Parses a resourceVersion precondition.
fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn update(sh: &Shared, t: &Target, mut obj: Value, w: &Write) -> Result<Response<Body>, ApiError> {
    let def = t.def();
    let name = t.name.clone().unwrap_or_default();
    check_type_meta(def, &mut obj)?;
    let body_name = meta_str(&obj, "name").to_string();
    if body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    check_namespace(def, &mut obj, t.namespace.as_deref())?;
    let part = if t.sub.is_some() {
        Part::Status
    } else {
        Part::Main
    };
    let key = key_of(t, &name);
    let want_rv = meta_str(&obj, "resourceVersion").to_string();
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let current = sh.lock().get(t.res, &key);
        let Some(cur) = current else {
            if def.create_on_update && part == Part::Main {
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                let created = create_object(sh, def, obj, w)?;
                return Ok(json_response(201, &created));
            }
            return Err(ApiError::not_found(def, &name));
        };
        if want_rv.is_empty() {
            if def.custom {
                return Err(invalid1(
                    def,
                    &name,
                    "metadata.resourceVersion",
                    "FieldValueInvalid",
                    "Invalid value: 0x0: must be specified for an update".into(),
                ));
            }
        } else if parse_rv(&want_rv)? != cur.rv {
            return Err(ApiError::stale(def, &name));
        }
        let mut new = obj.clone();
        set_rv(&mut new, cur.rv);
        match commit_update(sh, t, def, part, &cur.obj, cur.rv, new, w)? {
            Some(resp) => return Ok(resp),
            None => continue,
        }
    }
    Err(ApiError::conflict(
        def,
        &name,
        "too many concurrent writes; please retry",
    ))
}

/// Finishes an update of `old` (at `base`) to `new`: strategy, schema,
/// no-op detection, finalizer-driven deletion. `None` = lost a race.
#[allow(clippy::too_many_arguments)]
fn commit_update(
    sh: &Shared,
    t: &Target,
    def: &ResourceDef,
    part: Part,
    old: &Value,
    base: u64,
    new: Value,
    w: &Write,
) -> Result<Option<Response<Body>>, ApiError> {
    let name = meta_str(old, "name").to_string();
    let mut new = prepare_update(def, part, old, new)?;
    schema_check(sh, def, &mut new, Some(old), w.strict)?;
    managed::on_update(&w.writer, old, &mut new);
    if same_object(old, &new) {
        return Ok(Some(json_response(200, old)));
    }
    let key = key_of(t, &name);
    let deleting = !meta_str(&new, "deletionTimestamp").is_empty() && finalizers(&new).is_empty();
    if w.dry_run {
        return Ok(Some(json_response(200, &new)));
    }
    let key_ns = key.0.clone();
    let mut store = sh.lock();
    let result = if deleting {
        store.remove(t.res, &key, new, base)
    } else {
        store.put(t.res, key, new, Some(base))
    };
    drop(store);
    if deleting && result.is_ok() && def.namespaced {
        finish_namespace(sh, &key_ns);
    }
    match result {
        Ok(obj) => Ok(Some(json_response(200, &obj))),
        Err(Retry) => Ok(None),
    }
}

fn patch(
    sh: &Shared,
    t: &Target,
    q: &HashMap<String, String>,
    content_type: &str,
    body: &[u8],
    w: &Write,
) -> Result<Response<Body>, ApiError> {
    let def = t.def();
    let name = t.name.clone().unwrap_or_default();
    let part = if t.sub.is_some() {
        Part::Status
    } else {
        Part::Main
    };
    enum Kind {
        Json(Vec<serde_json::Map<String, Value>>),
        Merge(Value),
        Strategic(Value),
        Apply(Value),
    }
    let kind = match content_type {
        "application/json-patch+json" => Kind::Json(patch::decode_json_patch(body)?),
        "application/merge-patch+json" => Kind::Merge(
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        "application/strategic-merge-patch+json" if !def.custom => Kind::Strategic(
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?,
        ),
        "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
            if q.get("fieldManager").is_none_or(String::is_empty) {
                return Err(ApiError {
                    code: 422,
                    reason: "Invalid",
                    message: "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                    details: Some(json!({"group": "meta.k8s.io", "kind": "PatchOptions", "causes": [{"reason": "FieldValueRequired", "message": "Required value: is required for apply patch", "field": "fieldManager"}]})),
                });
            }
            let v: Value =
                serde_norway::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
            Kind::Apply(v)
        }
        _ => return Err(ApiError::unsupported_patch(def.custom)),
    };
    let applying;
    let w = match &kind {
        Kind::Apply(config) => {
            let mut with = w.clone();
            with.writer.applied = Some(config.clone());
            applying = with;
            &applying
        }
        _ => w,
    };
    let key = key_of(t, &name);
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let current = sh.lock().get(t.res, &key);
        let Some(cur) = current else {
            if let (Kind::Apply(v), Part::Main) = (&kind, part) {
                let mut obj = v.clone();
                check_type_meta(def, &mut obj)?;
                meta_mut(&mut obj).insert("name".into(), json!(name));
                check_namespace(def, &mut obj, t.namespace.as_deref())?;
                let created = create_object(sh, def, obj, w)?;
                return Ok(json_response(201, &created));
            }
            return Err(ApiError::not_found(def, &name));
        };
        let mut doc = (*cur.obj).clone();
        match &kind {
            Kind::Json(ops) => patch::apply_json_patch(&mut doc, ops)?,
            Kind::Merge(p) => patch::merge_patch(&mut doc, p),
            Kind::Strategic(p) => patch::strategic_as_merge(&mut doc, p),
            Kind::Apply(p) => {
                let mut p = p.clone();
                check_type_meta(def, &mut p)?;
                patch::merge_patch(&mut doc, &p);
            }
        }
        if !doc.is_object() {
            return Err(ApiError::bad_request(
                "the patch produced something that is not an object",
            ));
        }
        check_type_meta(def, &mut doc)?;
        let patched_name = meta_str(&doc, "name").to_string();
        if patched_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({patched_name}) does not match the name on the URL ({name})"
            )));
        }
        check_namespace(def, &mut doc, t.namespace.as_deref())?;
        let patched_rv = meta_str(&doc, "resourceVersion").to_string();
        if !patched_rv.is_empty() && parse_rv(&patched_rv)? != cur.rv {
            return Err(ApiError::stale(def, &name));
        }
        set_rv(&mut doc, cur.rv);
        if let Some(resp) = commit_update(sh, t, def, part, &cur.obj, cur.rv, doc, w)? {
            return Ok(resp);
        }
    }
    Err(ApiError::conflict(
        def,
        &name,
        "too many concurrent writes; please retry",
    ))
}

/// DeleteOptions from the body and query.
struct DeleteOptions {
    uid: Option<String>,
    rv: Option<String>,
}

fn delete_options(q: &HashMap<String, String>, body: &[u8]) -> Result<DeleteOptions, ApiError> {
    let v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    if let Some(p) = v
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or(q.get("propagationPolicy").map(String::as_str))
        && !matches!(p, "Orphan" | "Background" | "Foreground")
    {
        return Err(ApiError::bad_request(format!(
            "DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""
        )));
    }
    let pre = v.get("preconditions");
    Ok(DeleteOptions {
        uid: pre
            .and_then(|p| p.get("uid"))
            .and_then(Value::as_str)
            .map(String::from),
        rv: pre
            .and_then(|p| p.get("resourceVersion"))
            .and_then(Value::as_str)
            .map(String::from),
    })
}

/// The answer to a completed delete: a success Status naming the object,
/// for custom and built-in resources alike.
fn deleted_response(def: &ResourceDef, obj: &Value) -> Response<Body> {
    let mut details = serde_json::Map::new();
    details.insert("name".into(), json!(meta_str(obj, "name")));
    if !def.group.is_empty() {
        details.insert("group".into(), json!(def.group));
    }
    details.insert("kind".into(), json!(def.plural));
    details.insert("uid".into(), json!(meta_str(obj, "uid")));
    json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
    )
}

/// Deletes one object: marks it if finalizers remain, removes it otherwise.
/// Returns the object and whether it is gone.
fn delete_one(
    sh: &Shared,
    t: &Target,
    def: &ResourceDef,
    key: &Key,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<(Value, bool), ApiError> {
    let name = key.1.clone();
    for _ in 0..MAX_WRITE_ATTEMPTS {
        let Some(cur) = sh.lock().get(t.res, key) else {
            return Err(ApiError::not_found(def, &name));
        };
        if let Some(uid) = &opts.uid
            && uid != meta_str(&cur.obj, "uid")
        {
            return Err(ApiError::conflict(
                def,
                &name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&cur.obj, "uid")
                ),
            ));
        }
        if let Some(rv) = &opts.rv
            && *rv != cur.rv.to_string()
        {
            return Err(ApiError::conflict(
                def,
                &name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    cur.rv
                ),
            ));
        }
        let mut has_finalizers = !finalizers(&cur.obj).is_empty();
        if has_finalizers && !meta_str(&cur.obj, "deletionTimestamp").is_empty() {
            return Ok(((*cur.obj).clone(), false));
        }
        if is_namespace(def) && !meta_str(&cur.obj, "deletionTimestamp").is_empty() {
            return Ok(((*cur.obj).clone(), false));
        }
        if is_namespace(def) && !dry_run {
            has_finalizers |= empty_namespace(sh, &name)?;
        }
        let mut store = sh.lock();
        if has_finalizers {
            let mut obj = (*cur.obj).clone();
            if is_namespace(def) {
                obj["status"] = json!({"phase": "Terminating"});
            }
            let meta = meta_mut(&mut obj);
            meta.insert("deletionTimestamp".into(), json!(now_rfc3339()));
            meta.insert("deletionGracePeriodSeconds".into(), json!(0));
            if let Some(g) = meta.get("generation").and_then(Value::as_i64)
                && g > 0
            {
                meta.insert("generation".into(), json!(g + 1));
            }
            if dry_run {
                return Ok((obj, false));
            }
            match store.put(t.res, key.clone(), obj, Some(cur.rv)) {
                Ok(o) => return Ok(((*o).clone(), false)),
                Err(Retry) => continue,
            }
        }
        if dry_run {
            return Ok(((*cur.obj).clone(), true));
        }
        match store.remove(t.res, key, (*cur.obj).clone(), cur.rv) {
            Ok(o) => {
                drop(store);
                if def.namespaced {
                    finish_namespace(sh, &key.0);
                }
                return Ok(((*o).clone(), true));
            }
            Err(Retry) => continue,
        }
    }
    Err(ApiError::conflict(
        def,
        &name,
        "too many concurrent writes; please retry",
    ))
}

fn delete(
    sh: &Shared,
    t: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
    dry_run: bool,
) -> Result<Response<Body>, ApiError> {
    let def = t.def();
    let opts = delete_options(q, body)?;
    let key = key_of(t, t.name.as_deref().unwrap_or(""));
    let (obj, gone) = delete_one(sh, t, def, &key, &opts, dry_run)?;
    if gone {
        Ok(deleted_response(def, &obj))
    } else {
        Ok(json_response(200, &obj))
    }
}

fn delete_collection(
    sh: &Shared,
    t: &Target,
    q: &HashMap<String, String>,
    body: &[u8],
    dry_run: bool,
) -> Result<Response<Body>, ApiError> {
    let def = t.def();
    let opts = delete_options(q, body)?;
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))?;
    let fields = FieldSelector::parse(
        q.get("fieldSelector").map(String::as_str).unwrap_or(""),
        def,
    )?;
    let keys: Vec<Key> = {
        let store = sh.lock();
        store.tables[t.res]
            .objects
            .iter()
            .filter(|(k, e)| {
                t.namespace.as_ref().is_none_or(|n| &k.0 == n)
                    && labels.matches(&e.obj)
                    && fields.matches(&e.obj)
            })
            .map(|(k, _)| k.clone())
            .collect()
    };
    let mut items = Vec::new();
    for k in keys {
        match delete_one(sh, t, def, &k, &opts, dry_run) {
            Ok((obj, _)) => items.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let rv = sh.lock().rv();
    Ok(json_response(
        200,
        &json!({"kind": def.list_kind(), "apiVersion": def.api_version(), "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    ))
}

/// Creates an object directly (server bootstrap, e.g. the initial
/// namespaces).
pub(crate) fn seed(sh: &Shared, plural: &str, mut obj: Value) -> Result<Value, ApiError> {
    let def = RESOURCES
        .iter()
        .find(|r| r.plural == plural)
        .ok_or_else(ApiError::no_route)?;
    check_type_meta(def, &mut obj)?;
    create_object(
        sh,
        def,
        obj,
        &Write {
            dry_run: false,
            strict: false,
            writer: managed::Writer {
                manager: SERVER_MANAGER.to_string(),
                apply: false,
                api_version: def.api_version(),
                subresource: None,
                applied: None,
            },
        },
    )
}

/// Serves one request in-process: routed and answered as over HTTP, but
/// neither counted nor subject to faults or delays, so that a benchmark's
/// own writes stay out of the figures of the client it measures. They do
/// cost the per-request CPU (`cost.rs`): a real server works for the
/// benchmark's writes too. Watches are refused (they need a connection);
/// the answer is (code, body).
pub(crate) async fn local(
    sh: &Arc<Shared>,
    method: &Method,
    path_and_query: &str,
    content_type: &str,
    body: Bytes,
) -> (u16, Bytes) {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let q = parse_query(query);
    let response = match route(path, sh.addr) {
        Some(Route::Resource(t)) if eventsv1::view_for(t.res).is_none() => {
            match verb_of(method, &t, &q) {
                "WATCH" => error_response(&ApiError::method_not_allowed()),
                verb => {
                    sh.cost.spend().await;
                    let req = Req {
                        method,
                        verb,
                        content_type,
                        user_agent: LOCAL_USER_AGENT,
                    };
                    dispatch(sh, &req, &t, &q, body, None).unwrap_or_else(|e| error_response(&e))
                }
            }
        }
        _ => error_response(&ApiError::no_route()),
    };
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (code, bytes)
}
