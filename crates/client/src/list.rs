//! Walking a list (API.md, "Lists"): `GET path?params` page after page, following `has_more`
//! with a cursor, until the list or `max` items run out.
//!
//! Every list answers `{"data": [...], "has_more": bool}`, each item with an `id`. Forward, the
//! next page starts after the last item seen (`starting_after`). A walk that starts with
//! `ending_before` goes backward, the way that cursor points: the next page ends before the first
//! item seen (`ending_before` again), and items come out nearest the cursor first, i.e. each page
//! turned round (Stripe's auto-pagination does the same), so the walk reads as one sequence.
//!
//! Each page is one `Client::get`: the client's retries, backoff, budget and attempt timeout
//! apply to it alone, and a page that gives up ends the walk with what came before it already
//! handed out (`Pages` hands out pages as they come; `Client::list_all` collects them).

use std::fmt;

use serde_json::Value;

use crate::{Client, ClientError};

/// The server's page size when `limit` is not sent (API.md).
pub const LIMIT_DEFAULT: usize = 10;
/// The largest `limit` a list takes (API.md).
pub const LIMIT_MAX: usize = 100;

/// A list to walk: its path (`/v1/accounts`), its query parameters (`limit`, `order`,
/// filters, at most one cursor to start from) and how many items to take at most.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRequest {
    pub path: String,
    pub params: Vec<(String, String)>,
    /// Stop after this many items (`None`: the whole list). Pages are asked no larger than what
    /// is left to take.
    pub max: Option<usize>,
}

/// Why a walk stopped before the end of the list.
#[derive(Debug)]
#[non_exhaustive]
pub enum ListError {
    /// The request cannot be a list request (a path with a query, a `limit` out of range, two
    /// cursors); nothing was sent.
    Invalid(String),
    /// No final answer for a page (or the client cannot be set up).
    Client(ClientError),
    /// A final answer other than 2xx (a 400 for an unknown cursor, a 404 for an unknown
    /// account): its status and body.
    Refused { status: u16, body: String },
    /// A 2xx that is not a list page, or one whose cursor would not move the walk on.
    Malformed(String),
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::Invalid(why) => write!(f, "not sent: {why}"),
            ListError::Client(error) => error.fmt(f),
            ListError::Refused { status, body } => write!(f, "HTTP {status} {body}"),
            ListError::Malformed(why) => write!(f, "not a list page: {why}"),
        }
    }
}

impl std::error::Error for ListError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // Transparent: the message is the client error's, so the source is its own.
            ListError::Client(error) => std::error::Error::source(error),
            ListError::Invalid(_) | ListError::Refused { .. } | ListError::Malformed(_) => None,
        }
    }
}

impl From<ClientError> for ListError {
    fn from(error: ClientError) -> Self {
        ListError::Client(error)
    }
}

/// A walk through a list, one page per `next_page`.
pub struct Pages<'c> {
    client: &'c Client,
    walk: Walk,
}

impl Pages<'_> {
    /// The next page's items in walk order, or `None` once the list (or `max`) is exhausted.
    pub async fn next_page(&mut self) -> Result<Option<Vec<Value>>, ListError> {
        let Some(path) = self.walk.next_path() else {
            return Ok(None);
        };
        let answer = self.client.get("list", &path).await?;
        if !answer.is_success() {
            return Err(ListError::Refused {
                status: answer.status,
                body: String::from_utf8_lossy(&answer.body).into_owned(),
            });
        }
        let page: Value = serde_json::from_slice(&answer.body)
            .map_err(|e| ListError::Malformed(format!("{path}: {e}")))?;
        self.walk.take(page).map(Some)
    }

    /// Pages fetched so far.
    pub fn pages(&self) -> u64 {
        self.walk.pages
    }

    /// Items handed out so far.
    pub fn items(&self) -> usize {
        self.walk.taken
    }

    /// Whether the list has items beyond those handed out (known once `max` stopped the walk
    /// or the list ended).
    pub fn has_more(&self) -> bool {
        self.walk.has_more
    }
}

impl Client {
    /// A walk through the list `request` names; see the module's note for the order of items.
    pub fn list(&self, request: ListRequest) -> Result<Pages<'_>, ListError> {
        Ok(Pages {
            client: self,
            walk: Walk::new(request)?,
        })
    }

    /// Every item of the list (at most `request.max`), in walk order. A page that fails loses
    /// the items before it; use `list` to keep them.
    pub async fn list_all(&self, request: ListRequest) -> Result<Vec<Value>, ListError> {
        let mut pages = self.list(request)?;
        let mut items = Vec::new();
        while let Some(page) = pages.next_page().await? {
            items.extend(page);
        }
        Ok(items)
    }
}

/// The paging arithmetic, apart from the network: which page to ask for next, and what a page
/// answered means.
#[derive(Debug)]
struct Walk {
    path: String,
    /// The caller's parameters without `limit` and the cursors (the walk sets those).
    params: Vec<(String, String)>,
    limit: Option<usize>,
    backward: bool,
    /// The cursor of the next page (the caller's to start with).
    cursor: Option<String>,
    max: Option<usize>,
    taken: usize,
    pages: u64,
    has_more: bool,
    done: bool,
}

impl Walk {
    fn new(request: ListRequest) -> Result<Walk, ListError> {
        let invalid = |why: String| Err(ListError::Invalid(why));
        if !request.path.starts_with('/') || request.path.contains(['?', '#']) {
            return invalid(format!(
                "{:?}: give a path such as /v1/accounts, and its query as parameters",
                request.path
            ));
        }
        let mut params = Vec::new();
        let (mut limit, mut cursor, mut backward) = (None, None, false);
        for (key, value) in request.params {
            match key.as_str() {
                "limit" => match value.parse::<usize>() {
                    Ok(n) if (1..=LIMIT_MAX).contains(&n) => limit = Some(n),
                    _ => return invalid(format!("limit {value:?} is not 1..={LIMIT_MAX}")),
                },
                "starting_after" | "ending_before" => {
                    if cursor.is_some() {
                        return invalid("one cursor at most".into());
                    }
                    backward = key == "ending_before";
                    cursor = Some(value);
                }
                "order" if !matches!(value.as_str(), "asc" | "desc") => {
                    return invalid(format!("order {value:?} is neither asc nor desc"));
                }
                _ => params.push((key, value)),
            }
        }
        Ok(Walk {
            path: request.path,
            params,
            limit,
            backward,
            cursor,
            max: request.max,
            taken: 0,
            pages: 0,
            has_more: false,
            done: request.max == Some(0),
        })
    }

    /// The next page's path and query, or `None` when the walk is over.
    fn next_path(&self) -> Option<String> {
        if self.done {
            return None;
        }
        let mut query: Vec<(&str, String)> = self
            .params
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        // No page larger than what is left to take; the server's default otherwise.
        let left = self.max.map(|max| max - self.taken);
        let limit = match (self.limit, left) {
            (Some(limit), Some(left)) => Some(limit.min(left)),
            (None, Some(left)) if left < LIMIT_DEFAULT => Some(left),
            (limit, _) => limit,
        };
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        if let Some(cursor) = &self.cursor {
            let name = if self.backward {
                "ending_before"
            } else {
                "starting_after"
            };
            query.push((name, cursor.clone()));
        }
        let mut path = self.path.clone();
        for (i, (key, value)) in query.iter().enumerate() {
            path.push(if i == 0 { '?' } else { '&' });
            path.push_str(&encode_component(key));
            path.push('=');
            path.push_str(&encode_component(value));
        }
        Some(path)
    }

    /// Takes one answered page: its items in walk order, and where the next one starts.
    fn take(&mut self, page: Value) -> Result<Vec<Value>, ListError> {
        let malformed = |why: &str| Err(ListError::Malformed(why.to_owned()));
        let Some(has_more) = page.get("has_more").and_then(Value::as_bool) else {
            return malformed("no boolean has_more");
        };
        let Some(Value::Array(mut items)) = page.get("data").cloned() else {
            return malformed("no data array");
        };
        self.pages += 1;
        if has_more && items.is_empty() {
            return malformed("an empty page with has_more: the walk would not move");
        }
        // The item the next page is relative to: the last of the page forward, the first
        // backward (pages come in the list's order either way).
        let edge = if self.backward {
            items.first()
        } else {
            items.last()
        };
        let next = edge
            .and_then(|item| item.get("id"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        if self.backward {
            items.reverse();
        }
        let left = self.max.map_or(usize::MAX, |max| max - self.taken);
        let cut = items.len() > left;
        items.truncate(left);
        self.taken += items.len();
        self.has_more = has_more || cut;
        self.done = !has_more || self.max.is_some_and(|max| self.taken >= max);
        if !self.done {
            let Some(next) = next else {
                return malformed("the page's last item has no string id to continue from");
            };
            if self.cursor.as_deref() == Some(next.as_str()) {
                return malformed("the page ends at the cursor it started from");
            }
            self.cursor = Some(next);
        }
        Ok(items)
    }
}

/// `text` as a query component: unreserved characters as they are, every other byte `%XX`
/// (RFC 3986), so a `+` of a time zone or a `&` of an id cannot change the query.
fn encode_component(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(params: &[(&str, &str)], max: Option<usize>) -> ListRequest {
        ListRequest {
            path: "/v1/accounts".into(),
            params: params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            max,
        }
    }

    fn page(ids: &[&str], has_more: bool) -> Value {
        let data: Vec<Value> = ids.iter().map(|id| serde_json::json!({"id": id})).collect();
        serde_json::json!({"data": data, "has_more": has_more})
    }

    /// Forward: each page starts after the last item; parameters keep their order, the walk's
    /// own come last, every component encoded.
    #[test]
    fn forward_pages_start_after_the_last_item() {
        let params = [("order", "asc"), ("limit", "2"), ("created_gte", "a+b&c")];
        let mut walk = Walk::new(request(&params, None)).expect("valid");
        assert_eq!(
            walk.next_path().as_deref(),
            Some("/v1/accounts?order=asc&created_gte=a%2Bb%26c&limit=2")
        );
        let items = walk.take(page(&["a", "b"], true)).expect("a page");
        assert_eq!(items.len(), 2);
        assert_eq!(
            walk.next_path().as_deref(),
            Some("/v1/accounts?order=asc&created_gte=a%2Bb%26c&limit=2&starting_after=b")
        );
        walk.take(page(&["c"], false)).expect("the last page");
        assert_eq!(walk.next_path(), None);
        assert_eq!((walk.taken, walk.pages, walk.has_more), (3, 2, false));
    }

    /// Backward from `ending_before`: each page ends before its first item, and items come out
    /// nearest the cursor first.
    #[test]
    fn backward_pages_end_before_the_first_item() {
        let mut walk = Walk::new(request(&[("ending_before", "z")], None)).expect("valid");
        assert_eq!(
            walk.next_path().as_deref(),
            Some("/v1/accounts?ending_before=z")
        );
        let items = walk.take(page(&["x", "y"], true)).expect("a page");
        let ids: Vec<&str> = items.iter().filter_map(|i| i["id"].as_str()).collect();
        assert_eq!(ids, ["y", "x"]);
        assert_eq!(
            walk.next_path().as_deref(),
            Some("/v1/accounts?ending_before=x")
        );
    }

    /// `max` caps the page sizes asked for and the items handed out, and says whether the list
    /// went on.
    #[test]
    fn max_caps_pages_and_items() {
        let mut walk = Walk::new(request(&[("limit", "7")], Some(10))).expect("valid");
        assert_eq!(walk.next_path().as_deref(), Some("/v1/accounts?limit=7"));
        walk.take(page(&["1", "2", "3", "4", "5", "6", "7"], true))
            .expect("a page");
        assert_eq!(
            walk.next_path().as_deref(),
            Some("/v1/accounts?limit=3&starting_after=7")
        );
        // A server that answers more than asked still hands out no more than `max`.
        let items = walk
            .take(page(&["8", "9", "10", "11"], true))
            .expect("a page");
        assert_eq!(items.len(), 3);
        assert_eq!(
            (walk.taken, walk.has_more, walk.next_path()),
            (10, true, None)
        );
        // Without --limit, a small max is the page size; a large one leaves the server's.
        let small = Walk::new(request(&[], Some(4))).expect("valid");
        assert_eq!(small.next_path().as_deref(), Some("/v1/accounts?limit=4"));
        let large = Walk::new(request(&[], Some(400))).expect("valid");
        assert_eq!(large.next_path().as_deref(), Some("/v1/accounts"));
        let none = Walk::new(request(&[], Some(0))).expect("valid");
        assert_eq!(none.next_path(), None);
    }

    /// What would loop for ever or is not a list is refused, and requests that cannot be list
    /// requests are not sent.
    #[test]
    fn malformed_pages_and_invalid_requests_are_refused() {
        let mut walk = Walk::new(request(&[], None)).expect("valid");
        assert!(matches!(
            walk.take(page(&[], true)),
            Err(ListError::Malformed(_))
        ));
        let mut walk = Walk::new(request(&[("starting_after", "a")], None)).expect("valid");
        assert!(matches!(
            walk.take(page(&["a"], true)),
            Err(ListError::Malformed(_))
        ));
        let mut walk = Walk::new(request(&[], None)).expect("valid");
        let no_id = serde_json::json!({"data": [{"name": "x"}], "has_more": true});
        assert!(matches!(walk.take(no_id), Err(ListError::Malformed(_))));
        assert!(matches!(
            walk.take(serde_json::json!({"data": []})),
            Err(ListError::Malformed(_))
        ));
        for params in [
            &[("limit", "0")][..],
            &[("limit", "101")],
            &[("order", "up")],
            &[("starting_after", "a"), ("ending_before", "b")],
        ] {
            assert!(
                matches!(Walk::new(request(params, None)), Err(ListError::Invalid(_))),
                "{params:?}"
            );
        }
        let mut with_query = request(&[], None);
        with_query.path = "/v1/accounts?limit=3".into();
        assert!(matches!(Walk::new(with_query), Err(ListError::Invalid(_))));
    }

    /// Over the wire, against a tiny server of canned pages (the paging arithmetic only; the
    /// real lists are tested against the server in tests/it/client.rs).
    mod wire {
        use std::net::SocketAddr;
        use std::sync::{Arc, Mutex};
        use std::time::Duration;

        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        use tokio::net::TcpListener;

        use super::*;
        use crate::{Backoff, ClientConfig};

        const ITEMS: usize = 25;

        /// What the canned server was asked, request targets in order.
        type Asked = Arc<Mutex<Vec<String>>>;

        /// Serves one list of `ITEMS` items `it_00`.. in creation order, with API.md's cursor
        /// rules (newest first unless `order=asc`). Its first answer of all is a 503, so one page
        /// is asked twice.
        async fn canned_server() -> (SocketAddr, Asked) {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let asked: Asked = Arc::default();
            let seen = asked.clone();
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let mut buffer = Vec::new();
                        loop {
                            let mut chunk = [0u8; 4096];
                            let Ok(read) = socket.read(&mut chunk).await else {
                                return;
                            };
                            if read == 0 {
                                return;
                            }
                            buffer.extend_from_slice(&chunk[..read]);
                            // A GET is its head alone; answer each complete one in turn.
                            while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buffer[..end]).into_owned();
                                buffer.drain(..end + 4);
                                let target = head.split(' ').nth(1).unwrap_or("").to_owned();
                                let first = {
                                    let mut seen = seen.lock().expect("lock");
                                    seen.push(target.clone());
                                    seen.len() == 1
                                };
                                let answer = if first {
                                    "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
                                        .to_owned()
                                } else {
                                    let (status, body) = answer(&target);
                                    format!(
                                        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
                                         content-length: {}\r\n\r\n{body}",
                                        body.len()
                                    )
                                };
                                if socket.write_all(answer.as_bytes()).await.is_err() {
                                    return;
                                }
                            }
                        }
                    });
                }
            });
            (addr, asked)
        }

        /// One page of the canned list for `target`.
        fn answer(target: &str) -> (&'static str, String) {
            let query = target.split_once('?').map_or("", |(_, q)| q);
            let param = |name: &str| {
                query
                    .split('&')
                    .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
            };
            let limit = param("limit").map_or(LIMIT_DEFAULT, |l| l.parse().expect("limit"));
            let mut ids: Vec<String> = (0..ITEMS).map(|i| format!("it_{i:02}")).collect();
            if param("order") != Some("asc") {
                ids.reverse();
            }
            let at = |id: &str| ids.iter().position(|x| x == id);
            let (start, end) = match (param("starting_after"), param("ending_before")) {
                (Some(id), None) => match at(id) {
                    Some(i) => (i + 1, (i + 1 + limit).min(ids.len())),
                    None => return ("400 Bad Request", "{}".into()),
                },
                (None, Some(id)) => match at(id) {
                    Some(i) => (i.saturating_sub(limit), i),
                    None => return ("400 Bad Request", "{}".into()),
                },
                _ => (0, limit.min(ids.len())),
            };
            let has_more = if param("ending_before").is_some() {
                start > 0
            } else {
                end < ids.len()
            };
            let data: Vec<Value> = ids[start..end]
                .iter()
                .map(|id| serde_json::json!({ "id": id }))
                .collect();
            let page = serde_json::json!({"data": data, "has_more": has_more});
            ("200 OK", page.to_string())
        }

        fn client(addr: SocketAddr) -> Client {
            let config = ClientConfig {
                backoff: Backoff {
                    base: Duration::from_millis(1),
                    cap: Duration::from_millis(5),
                },
                ..ClientConfig::default()
            };
            Client::new(&format!("http://{addr}"), config).expect("client")
        }

        fn ids(items: &[Value]) -> Vec<String> {
            items
                .iter()
                .map(|item| item["id"].as_str().expect("id").to_owned())
                .collect()
        }

        /// Every item once, in order, whichever way and page size; the 503 is retried; a page
        /// is one request, asked with the previous page's edge as its cursor.
        #[tokio::test]
        async fn a_walk_yields_every_item_once_in_order() {
            let (addr, asked) = canned_server().await;
            let client = client(addr);
            let all = |params: &[(&str, &str)], max| {
                let request = request(params, max);
                let client = client.clone();
                async move { client.list_all(request).await.expect("walked") }
            };
            let ascending: Vec<String> = (0..ITEMS).map(|i| format!("it_{i:02}")).collect();
            let items = all(&[("limit", "7"), ("order", "asc")], None).await;
            assert_eq!(ids(&items), ascending);
            assert_eq!(
                *asked.lock().expect("lock"),
                [
                    "/v1/accounts?order=asc&limit=7",
                    "/v1/accounts?order=asc&limit=7",
                    "/v1/accounts?order=asc&limit=7&starting_after=it_06",
                    "/v1/accounts?order=asc&limit=7&starting_after=it_13",
                    "/v1/accounts?order=asc&limit=7&starting_after=it_20",
                ],
                "the first answer was a 503"
            );
            let mut descending = ascending.clone();
            descending.reverse();
            for limit in ["1", "5", "25", "100"] {
                let items = all(&[("limit", limit)], None).await;
                assert_eq!(ids(&items), descending, "newest first by {limit}");
            }
            // Backward from it_20 in ascending order: it_19 down to it_00.
            let items = all(
                &[("order", "asc"), ("ending_before", "it_20"), ("limit", "3")],
                None,
            )
            .await;
            assert_eq!(ids(&items), descending[ITEMS - 20..]);
            let items = all(&[("order", "asc"), ("limit", "7")], Some(10)).await;
            assert_eq!(ids(&items), ascending[..10]);
        }

        /// A final refusal ends a walk with its status; a walk by pages hands each one out as it
        /// comes, and knows whether the list goes on.
        #[tokio::test]
        async fn a_refused_page_ends_the_walk() {
            let (addr, _) = canned_server().await;
            let client = client(addr);
            let request = request(&[("starting_after", "nope")], None);
            let mut pages = client.list(request).expect("valid");
            match pages.next_page().await {
                Err(ListError::Refused { status, .. }) => assert_eq!(status, 400),
                other => panic!("an unknown cursor: {other:?}"),
            }
            let mut pages = client.list(request_limit_20()).expect("valid");
            let first = pages.next_page().await.expect("a page").expect("items");
            assert_eq!(
                (first.len(), pages.has_more(), pages.pages()),
                (20, true, 1)
            );
            let second = pages.next_page().await.expect("a page").expect("items");
            assert_eq!((second.len(), pages.has_more()), (5, false));
            assert!(pages.next_page().await.expect("the end").is_none());
            assert_eq!(pages.items(), ITEMS);
        }

        fn request_limit_20() -> ListRequest {
            request(&[("limit", "20")], None)
        }
    }
}
