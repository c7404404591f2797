//! `GET /callgate/feed?types=...&from=POSITION` (admin; analytics.md): the export's records as a live,
//! lossless, chunked NDJSON stream.
//!
//! Records still in the feed's buffer are read from it, from the reader's own cursor. Older ones, still
//! in the journal, are made again by folding the journal as `callgate export` does (at most
//! [`CATCH_UPS`] at once), until the buffer holds every record of the position reached: the stream goes
//! on from the buffer there. A position the journal no longer holds gets 410 with the oldest it holds.
//! A reader slower than the buffer's turnover is disconnected (its next record is gone) and resumes with
//! `from`: it is never coalesced.

use super::AppState;
use super::http::error;
use crate::access::Principal;
use crate::export::Types;
use crate::export::feed::{Evicted, FeedBuffer};
use crate::journal::Position;
use axum::Extension;
use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;

/// Catch-ups from the journal at once (each folds the journal from its start).
pub const CATCH_UPS: usize = 2;

/// Bytes of records read from the buffer per chunk.
const CHUNK: usize = 256 * 1024;

/// The feed of a gateway with a journal.
pub struct Feed {
    /// The newest records.
    pub buffer: Arc<FeedBuffer>,
    /// The journal's folder.
    pub journal: PathBuf,
    /// One permit per catch-up from the journal.
    pub catch_ups: Arc<Semaphore>,
}

impl Feed {
    /// The feed of `buffer`, backed by the journal in `journal`.
    pub fn new(buffer: Arc<FeedBuffer>, journal: PathBuf) -> Feed {
        Feed {
            buffer,
            journal,
            catch_ups: Arc::new(Semaphore::new(CATCH_UPS)),
        }
    }
}

/// `GET /callgate/feed`.
pub async fn feed(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(query): RawQuery,
) -> Response {
    if principal
        .user
        .as_ref()
        .is_some_and(|user| !user.roles.admin)
    {
        return error(
            StatusCode::FORBIDDEN,
            "the analytics feed is for administrators",
        );
    }
    let Some(feed) = &state.feed else {
        return error(
            StatusCode::NOT_FOUND,
            "the analytics feed is off: it needs a journal (serve --journal) and a buffer (--feed-buffer-bytes, e.g. 67108864)",
        );
    };
    let (types, from) = match parse(query.as_deref().unwrap_or("")) {
        Ok(asked) => asked,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let start = match from {
        None => Start::Buffer(feed.buffer.end()),
        Some(from) => {
            let oldest = match oldest_held(&feed.journal) {
                Ok(oldest) => oldest,
                Err(message) => return error(StatusCode::INTERNAL_SERVER_ERROR, &message),
            };
            if from < oldest {
                return gone(from, oldest);
            }
            match feed.buffer.cursor_at(from) {
                Some(cursor) => Start::Buffer(cursor),
                None => match catch_up(feed, types, from) {
                    Some(catch_up) => Start::Journal(catch_up),
                    None => {
                        return error(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "as many readers as allowed are catching up from the journal; retry later",
                        );
                    }
                },
            }
        }
    };
    metrics::counter!("callgate_feed_readers_total").increment(1);
    let reader = Reader {
        buffer: Arc::clone(&feed.buffer),
        changes: feed.buffer.subscribe(),
        types,
        from: from.unwrap_or(0),
        cancel: state.cancel.clone(),
        phase: Some(start),
    };
    let body = Body::from_stream(futures_util::stream::unfold(reader, Reader::next_chunk));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        body,
    )
        .into_response()
}

/// `types` (default every type) and `from`.
fn parse(query: &str) -> Result<(Types, Option<Position>), String> {
    let mut types = Types::ALL;
    let mut from = None;
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "types" => types = value.parse()?,
            "from" => {
                from = Some(
                    value
                        .parse::<Position>()
                        .map_err(|_| format!("from must be a journal position, not {value:?}"))?,
                );
            }
            other => return Err(format!("unknown parameter {other:?}: give types and from")),
        }
    }
    Ok((types, from))
}

fn oldest_held(journal: &std::path::Path) -> Result<Position, String> {
    crate::journal::Reader::open(journal, 0)
        .map(|reader| reader.first())
        .map_err(|err| err.to_string())
}

/// 410 with the oldest position still held.
fn gone(from: Position, oldest: Position) -> Response {
    let body = format!(
        "{{\"statusCode\":410,\"statusMessage\":\"position {from} is no longer held; the oldest is {oldest}\",\"oldest\":\"{oldest:020}\"}}"
    );
    (
        StatusCode::GONE,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// Where a reader starts.
enum Start {
    /// At this record of the buffer.
    Buffer(u64),
    /// With a fold of the journal, then in the buffer.
    Journal(CatchUp),
}

/// A fold of the journal for one reader, until the buffer holds the rest.
struct CatchUp {
    lines: mpsc::Receiver<Bytes>,
    /// Where the reader goes on in the buffer, once the fold has handed over.
    handover: Arc<Mutex<Option<u64>>>,
    done: tokio::task::JoinHandle<Result<(), String>>,
}

/// Starts a catch-up of `types` from `from`, if a permit is free.
fn catch_up(feed: &Feed, types: Types, from: Position) -> Option<CatchUp> {
    let permit = Arc::clone(&feed.catch_ups).try_acquire_owned().ok()?;
    let (lines, receiver) = mpsc::channel(8);
    let handover = Arc::new(Mutex::new(None));
    let slot = Arc::clone(&handover);
    let buffer = Arc::clone(&feed.buffer);
    let journal = feed.journal.clone();
    let runtime = tokio::runtime::Handle::current();
    let done = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let take = |position: Position| -> bool {
            if position < from {
                return false;
            }
            let Some(cursor) = buffer.cursor_at(position) else {
                return false;
            };
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(cursor);
            true
        };
        crate::cli::export::backfill(&journal, types, from, lines, &take, &runtime)
            .map(drop)
            .map_err(|err| err.to_string())
    });
    Some(CatchUp {
        lines: receiver,
        handover,
        done: tokio::spawn(async move { done.await.unwrap_or_else(|err| Err(err.to_string())) }),
    })
}

/// One reader's stream.
struct Reader {
    buffer: Arc<FeedBuffer>,
    changes: watch::Receiver<u64>,
    types: Types,
    from: Position,
    cancel: CancellationToken,
    phase: Option<Start>,
}

impl Reader {
    /// The next chunk of lines; `None` ends the stream (shutdown, a reader too slow, a failed fold).
    async fn next_chunk(mut self) -> Option<(Result<Bytes, std::io::Error>, Reader)> {
        loop {
            match self.phase.take()? {
                Start::Journal(mut catch_up) => {
                    let line = tokio::select! {
                        line = catch_up.lines.recv() => line,
                        () = self.cancel.cancelled() => return None,
                    };
                    if let Some(chunk) = line {
                        self.phase = Some(Start::Journal(catch_up));
                        return Some((Ok(chunk), self));
                    }
                    if let Ok(Err(why)) | Err(why) = catch_up.done.await.map_err(|e| e.to_string())
                    {
                        tracing::warn!("a feed reader's catch-up from the journal failed: {why}");
                        return None;
                    }
                    let cursor = *catch_up.handover.lock().unwrap_or_else(|p| p.into_inner());
                    self.phase = Some(Start::Buffer(cursor?));
                }
                Start::Buffer(cursor) => {
                    match self.buffer.read(cursor, self.types, self.from, CHUNK) {
                        Err(Evicted { oldest }) => {
                            metrics::counter!("callgate_feed_readers_too_slow_total").increment(1);
                            tracing::info!(
                                oldest,
                                "a feed reader fell behind the buffer: disconnected (it resumes with from)"
                            );
                            return None;
                        }
                        Ok((lines, next)) => {
                            self.phase = Some(Start::Buffer(next));
                            if !lines.is_empty() {
                                return Some((Ok(Bytes::from(lines.concat())), self));
                            }
                            if next == cursor || next >= self.buffer.end() {
                                tokio::select! {
                                    changed = self.changes.changed() => changed.ok()?,
                                    () = self.cancel.cancelled() => return None,
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
