//! The standby's copy of each primary's log: loading it, accepting a head (its leaves, the head and the
//! countersignature in one `sync.db` transaction, written with no lock of the shared state held), and
//! what grows with history sent in pages: the `StandbyState` after a handshake and the listing for
//! restore.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

use store::SegmentState;

use super::standby::Shared;
use super::{from_json, now_ms, to_json, with_status, AgentError, Conn};
use crate::identity::PeerPins;
use crate::merkle::{
    check_leaves, check_new_head, Countersignature, HeadCheck, MerkleTree, SegmentLeaf,
    SignedTreeHead,
};
use crate::proto::{paginate, Holding, Message, SegmentKey, MAX_PAGE_ITEMS};
pub(super) use crate::syncdb::HeldSeal;
use crate::syncdb::{NewHead, NewLeaf};

/// What the standby holds of one primary's log.
#[derive(Default)]
pub(super) struct OriginLog {
    loaded: bool,
    tree: MerkleTree,
    pub(super) head: Option<SignedTreeHead>,
    /// Logged sha256 per segment path.
    pub(super) logged: HashMap<String, [u8; 32]>,
    /// Sealed copies held here that no accepted head covers yet, and complete copies whose seal waits
    /// for its leaf (`held`).
    unverified: BTreeSet<String>,
    /// Complete staging copies whose seal (checked against the bytes held) waits for an accepted head
    /// to log their path: unverified, not published into `media/`, returned by restore as such.
    held: BTreeMap<String, HeldSeal>,
}

impl OriginLog {
    fn publish_unverified(&self, shared: &Shared, origin: &str) {
        let count = self.unverified.len() as u64;
        let oldest = self.unverified.iter().next().cloned();
        with_status(&shared.status, |s| {
            if let Some(p) = s.peers.get_mut(origin) {
                p.unverified_segments = count;
                p.oldest_unverified = oldest;
            }
        });
    }
}

/// `origin`'s complete copy of `seal.path` has a seal (consistent with the bytes held) that no
/// accepted head logs yet: it is held unverified until one does (kept in `sync.db`, so a restart or a
/// restore before the primary returns still finds it).
pub(super) fn note_held(shared: &Shared, origin: &str, seal: HeldSeal) -> Result<(), AgentError> {
    if lock(&shared.origins)
        .get(origin)
        .is_some_and(|l| l.logged.contains_key(&seal.path) || l.held.get(&seal.path) == Some(&seal))
    {
        return Ok(());
    }
    tokio::task::block_in_place(|| shared.db.put_held_seal(origin, &seal))?;
    let mut origins = lock(&shared.origins);
    let log = origins.entry(origin.to_owned()).or_default();
    if !log.logged.contains_key(&seal.path) {
        log.unverified.insert(seal.path.clone());
        log.held.insert(seal.path.clone(), seal);
        log.publish_unverified(shared, origin);
    }
    Ok(())
}

/// The seal `origin`'s copy of `path` waits with, if it does.
pub(super) fn held_seal(shared: &Shared, origin: &str, path: &str) -> Option<HeldSeal> {
    lock(&shared.origins)
        .get(origin)
        .and_then(|l| l.held.get(path).cloned())
}

pub(super) type Origins = Mutex<HashMap<String, OriginLog>>;

pub(super) fn lock(origins: &Origins) -> std::sync::MutexGuard<'_, HashMap<String, OriginLog>> {
    match origins.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// Loads `origin`'s log from `sync.db` once (read outside the lock). Leaves beyond the latest head
/// (left by a crash in the middle of an acceptance before heads were one transaction) are covered by
/// no accepted head: they are dropped, so the next head is checked against the accepted log.
pub(super) fn load_origin(shared: &Shared, origin: &str) -> Result<(), AgentError> {
    if lock(&shared.origins).get(origin).is_some_and(|l| l.loaded) {
        return Ok(());
    }
    let mut log = OriginLog::default();
    if let Some(json) = shared.db.latest_head(origin)? {
        log.head = serde_json::from_str(&json).ok();
    }
    let covered = log.head.as_ref().map_or(0, |h| h.head.tree_size);
    let dropped = shared.db.truncate_leaves(origin, covered)?;
    if dropped > 0 {
        tracing::warn!(
            origin,
            dropped,
            covered,
            "dropped leaves that no accepted head covers (an acceptance interrupted by a crash)"
        );
    }
    let mut from = 0u64;
    loop {
        let page = shared
            .db
            .leaves_range(origin, from, from + LOAD_PAGE_LEAVES)?;
        for (bytes, hash) in &page {
            log.tree.push(*hash);
            if let Ok(leaf) = SegmentLeaf::decode(bytes) {
                log.logged.insert(leaf.path, leaf.sha256);
            }
        }
        if (page.len() as u64) < LOAD_PAGE_LEAVES {
            break;
        }
        from += LOAD_PAGE_LEAVES;
    }
    for seal in shared.db.held_seals(origin)? {
        if !log.logged.contains_key(&seal.path) {
            log.unverified.insert(seal.path.clone());
            log.held.insert(seal.path.clone(), seal);
        }
    }
    log.loaded = true;
    let mut origins = lock(&shared.origins);
    let entry = origins.entry(origin.to_owned()).or_default();
    if !entry.loaded {
        *entry = log;
    }
    Ok(())
}

/// Leaves read from `sync.db` at a time.
const LOAD_PAGE_LEAVES: u64 = 10_000;

/// Sends what this standby holds of `origin`'s segments, in pages: the segments logged below the first
/// leaf whose segment is neither held sealed nor deleted here are summed up as `sealed_below_leaf`;
/// open segments and sealed ones above it are listed.
pub(super) async fn send_standby_state<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
) -> Result<(), AgentError> {
    let (holdings, sealed_below_leaf) =
        tokio::task::block_in_place(|| standby_holdings(shared, origin))?;
    let head = lock(&shared.origins)
        .get(origin)
        .and_then(|l| l.head.as_ref().map(to_json));
    let pages = paginate(holdings);
    let n = pages.len();
    for (i, page) in pages.into_iter().enumerate() {
        conn.send(&Message::StandbyState {
            holdings: page,
            head: head.clone(),
            sealed_below_leaf,
            more: i + 1 < n,
        })
        .await?;
    }
    Ok(())
}

/// The holdings to list and the `sealed_below_leaf` summary (see [`send_standby_state`]).
fn standby_holdings(shared: &Shared, origin: &str) -> Result<(Vec<Holding>, u64), AgentError> {
    let mut partial = Vec::new();
    let mut sealed = HashMap::new();
    let mut gone = Vec::new();
    for h in shared.store.mirror_holdings(origin)? {
        if h.sealed_sha256.is_some() {
            sealed.insert(h.path.clone(), h);
        } else {
            partial.push(h);
        }
    }
    {
        let mut origins = lock(&shared.origins);
        let log = origins.entry(origin.to_owned()).or_default();
        // A held seal stays while its complete staging copy does (not expired, not published).
        let complete: HashMap<&str, u64> = partial
            .iter()
            .map(|h| (h.path.as_str(), h.bytes_held))
            .collect();
        let logged = &log.logged;
        log.held.retain(|p, seal| {
            let keep = !logged.contains_key(p)
                && complete
                    .get(p.as_str())
                    .is_some_and(|&held| held >= seal.size_bytes);
            if !keep {
                gone.push(p.clone());
            }
            keep
        });
        log.unverified = sealed
            .keys()
            .filter(|p| !log.logged.contains_key(*p))
            .chain(log.held.keys())
            .cloned()
            .collect();
        log.publish_unverified(shared, origin);
    }
    shared.db.delete_held_seals(origin, &gone)?;
    let held = sealed.len() as u64;
    with_status(&shared.status, |s| {
        if let Some(p) = s.peers.get_mut(origin) {
            p.segments_held = held;
        }
    });
    let deleted: HashSet<String> = shared
        .store
        .catalog()
        .node_segments_in_state(origin, SegmentState::Deleted)?
        .into_iter()
        .map(|r| r.path)
        .collect();
    let mut below = 0u64;
    'pages: loop {
        let paths = shared
            .db
            .leaf_paths(origin, below, LOAD_PAGE_LEAVES as usize)?;
        for path in &paths {
            if sealed.remove(path).is_none() && !deleted.contains(path) {
                break 'pages;
            }
            below += 1;
        }
        if (paths.len() as u64) < LOAD_PAGE_LEAVES {
            break;
        }
    }
    let mut rest: Vec<_> = partial.into_iter().chain(sealed.into_values()).collect();
    rest.sort_by(|a, b| a.path.cmp(&b.path));
    let holdings = rest
        .into_iter()
        .map(|h| Holding {
            key: SegmentKey {
                origin_node: origin.to_owned(),
                path: h.path,
            },
            bytes_held: h.bytes_held,
            sealed_sha256: h.sealed_sha256,
        })
        .collect();
    Ok((holdings, below))
}

/// How far ahead of the standby's clock a head's timestamp may be. Heads must not go back in time, so
/// one from the far future would block every honest head after it. Nodes keep their clocks within
/// this (NTP) of each other.
pub const MAX_HEAD_CLOCK_AHEAD_MS: i64 = 5 * 60 * 1000;

/// A `TreeHead` as received.
pub(super) struct HeadMessage<'a> {
    pub head: &'a serde_json::Value,
    pub first_leaf: u64,
    pub proof: &'a [String],
    pub leaves: &'a [serde_json::Value],
}

/// A head checked against the held log, ready to be written.
struct Checked {
    new: SignedTreeHead,
    leaves: Vec<SegmentLeaf>,
    hashes: Vec<[u8; 32]>,
    base: u64,
}

/// Verifies a new head (signature, chain, consistency, leaves) and countersigns it. The leaves, the
/// head and the countersignature are kept in one transaction, run on a blocking thread with no lock of
/// the shared state held; heads are accepted one at a time.
pub(super) async fn accept_head(
    shared: &Shared,
    peer: &PeerPins,
    msg: HeadMessage<'_>,
) -> Result<serde_json::Value, String> {
    let origin = &peer.node;
    let _one_at_a_time = shared.accept_lock.lock().await;
    let checked = match check_head(shared, peer, &msg)? {
        Ok(checked) => checked,
        Err(already_held) => return Ok(already_held),
    };
    let encoded: Vec<Vec<u8>> = checked.leaves.iter().map(SegmentLeaf::encode).collect();
    let json = serde_json::to_string(&checked.new).map_err(|e| e.to_string())?;
    let hash = checked.new.head.head_hash();
    let cs = Countersignature::create(&shared.node, &checked.new.head, &|m| shared.id.sign(m));
    let cs_json = serde_json::to_string(&cs).map_err(|e| e.to_string())?;
    let db = shared.db.clone();
    let (origin2, base, size) = (origin.clone(), checked.base, checked.new.head.tree_size);
    let paths: Vec<String> = checked.leaves.iter().map(|l| l.path.clone()).collect();
    let was_held: Vec<String> = {
        let origins = lock(&shared.origins);
        origins.get(origin).map_or_else(Vec::new, |l| {
            paths
                .iter()
                .filter(|p| l.held.contains_key(p.as_str()))
                .cloned()
                .collect()
        })
    };
    let hashes = checked.hashes.clone();
    let cs_json2 = cs_json.clone();
    tokio::task::spawn_blocking(move || {
        let new_leaves: Vec<NewLeaf<'_>> = encoded
            .iter()
            .zip(&hashes)
            .zip(&paths)
            .map(|((leaf, hash), path)| NewLeaf {
                leaf,
                leaf_hash: hash,
                segment_path: path,
            })
            .collect();
        db.accept_head(
            &origin2,
            base,
            &new_leaves,
            &NewHead {
                tree_size: size,
                head_hash: &hash,
                head_json: &json,
                countersignature_json: Some(&cs_json2),
                received_ms: now_ms(),
            },
        )
    })
    .await
    .map_err(|e| format!("head acceptance task: {e}"))?
    .map_err(|e| e.to_string())?;
    {
        let mut origins = lock(&shared.origins);
        let log = origins.entry(origin.clone()).or_default();
        for (leaf, hash) in checked.leaves.iter().zip(&checked.hashes) {
            log.tree.push(*hash);
            log.logged.insert(leaf.path.clone(), leaf.sha256);
            log.unverified.remove(&leaf.path);
            log.held.remove(&leaf.path);
        }
        log.head = Some(checked.new);
        log.publish_unverified(shared, origin);
    }
    // Logged now: no longer held (a row left by a crash here is dropped when the log is loaded).
    let db = shared.db.clone();
    let origin2 = origin.clone();
    let forgotten =
        tokio::task::spawn_blocking(move || db.delete_held_seals(&origin2, &was_held)).await;
    if let Ok(Err(e)) | Err(e) = forgotten.map_err(|e| store::StorageError::SyncDb(e.to_string())) {
        tracing::warn!(origin, error = %e, "cannot forget held seals now logged");
    }
    with_status(&shared.status, |s| {
        if let Some(p) = s.peers.get_mut(origin) {
            p.last_head_size = Some(size);
            p.last_head_ms = Some(now_ms());
        }
    });
    Ok(to_json(&cs))
}

/// The checks of [`accept_head`] under the shared lock, in memory and catalog look-ups only:
/// `Ok(Err(countersignature))` for a head already held.
fn check_head(
    shared: &Shared,
    peer: &PeerPins,
    msg: &HeadMessage<'_>,
) -> Result<Result<Checked, serde_json::Value>, String> {
    let origin = &peer.node;
    let new: SignedTreeHead = from_json(msg.head, "tree head").map_err(|e| e.to_string())?;
    let ahead_ms = new.head.timestamp_ms - now_ms();
    if ahead_ms > MAX_HEAD_CLOCK_AHEAD_MS {
        return Err(format!(
            "head timestamp {} is {ahead_ms} ms ahead of this node's clock (at most {MAX_HEAD_CLOCK_AHEAD_MS} ms)",
            new.head.timestamp_ms
        ));
    }
    let proof: Vec<[u8; 32]> = msg
        .proof
        .iter()
        .map(|h| base::hex::decode_32(h).ok_or_else(|| format!("bad proof hash {h:?}")))
        .collect::<Result<_, _>>()?;
    let leaves: Vec<SegmentLeaf> = msg
        .leaves
        .iter()
        .map(|l| from_json(l, "leaf").map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    if new.head.log_node != *origin {
        return Err(format!(
            "head of log {:?} sent by {origin}",
            new.head.log_node
        ));
    }
    let origins = lock(&shared.origins);
    let empty = OriginLog::default();
    let log = origins.get(origin).unwrap_or(&empty);
    match check_new_head(log.head.as_ref(), &new, &proof, &peer.signing_public_key)
        .map_err(|e| e.to_string())?
    {
        HeadCheck::AlreadyHeld => {
            drop(origins);
            let stored = shared
                .db
                .head_by_hash(origin, &new.head.head_hash())
                .map_err(|e| e.to_string())?;
            return stored
                .and_then(|h| h.countersignature_json)
                .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok())
                .map(Err)
                .ok_or_else(|| "head held without countersignature".to_owned());
        }
        HeadCheck::First | HeadCheck::Extends { .. } => {}
    }
    let base = log.tree.len();
    if msg.first_leaf != base {
        return Err(format!(
            "leaves start at index {}, this log holds {base}",
            msg.first_leaf
        ));
    }
    if leaves.iter().any(|l| l.origin_node != *origin) {
        return Err("leaf of another node in this log".into());
    }
    // One leaf per path, ever: a second one (even with the same hash) would become restore's answer
    // once retention deleted the first copy.
    let mut new_paths = HashSet::new();
    for leaf in &leaves {
        if log.logged.contains_key(&leaf.path) || !new_paths.insert(leaf.path.as_str()) {
            return Err(format!(
                "leaf for {}: the log already holds a leaf for this path",
                leaf.path
            ));
        }
    }
    let hashes: Vec<[u8; 32]> = leaves.iter().map(|l| l.leaf_hash()).collect();
    check_leaves(&log.tree, &hashes, &new.head).map_err(|e| e.to_string())?;
    drop(origins);
    // A leaf must not contradict a sealed copy held here.
    for leaf in &leaves {
        if let Ok(Some(row)) = shared.store.sealed_segment_by_path(&leaf.path) {
            if row.node == *origin
                && row.state == SegmentState::Sealed
                && row.sha256.as_deref() != Some(base::hex::encode(&leaf.sha256).as_str())
            {
                return Err(format!(
                    "leaf for {} says sha256 {} but the held copy is {}",
                    leaf.path,
                    base::hex::encode(&leaf.sha256),
                    row.sha256.as_deref().unwrap_or("-")
                ));
            }
        }
    }
    Ok(Ok(Checked {
        new,
        leaves,
        hashes,
        base,
    }))
}

/// For restore: the chain of heads kept (`HeadChain` pages), the latest head with every leaf (the head
/// repeated with each page of leaves), then the
/// sealed segments matching the filter (and those this standby's retention deleted, `deleted: true`), in
/// pages.
pub(super) async fn send_listing<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    filter: &ListFilter<'_>,
) -> Result<(), AgentError> {
    send_head_chain(shared, conn, origin).await?;
    let head = lock(&shared.origins)
        .get(origin)
        .and_then(|l| l.head.clone());
    let size = head.as_ref().map_or(0, |h| h.head.tree_size);
    let head_json = head
        .as_ref()
        .map(to_json)
        .unwrap_or(serde_json::Value::Null);
    let mut first = 0u64;
    loop {
        let to = size.min(first + MAX_PAGE_ITEMS as u64);
        let rows = tokio::task::block_in_place(|| shared.db.leaves_range(origin, first, to))?;
        let leaves: Vec<serde_json::Value> = rows
            .iter()
            .filter_map(|(b, _)| SegmentLeaf::decode(b).ok())
            .map(|l| to_json(&l))
            .collect();
        for page in paginate(leaves) {
            let n = page.len() as u64;
            conn.send(&Message::TreeHead {
                head: head_json.clone(),
                first_leaf: first,
                consistency_proof: Vec::new(),
                leaves: page,
            })
            .await?;
            first += n;
        }
        if first >= size || rows.is_empty() {
            break;
        }
    }
    let mut after_id = 0i64;
    let mut pending: Vec<serde_json::Value> = Vec::new();
    loop {
        let rows = tokio::task::block_in_place(|| {
            shared
                .store
                .catalog()
                .node_segments_after(origin, after_id, LISTING_SCAN_ROWS)
        })?;
        let done = rows.len() < LISTING_SCAN_ROWS as usize;
        after_id = rows.last().map_or(after_id, |r| r.id.0);
        pending.extend(
            rows.into_iter()
                .filter(|r| {
                    matches!(r.state, SegmentState::Sealed | SegmentState::Deleted)
                        && filter.matches(r)
                })
                .map(|r| {
                    serde_json::json!({
                        "path": r.path, "start_ms": r.start_ms, "end_ms": r.end_ms,
                        "size_bytes": r.size_bytes, "sha256": r.sha256, "frames": r.frames,
                        "deleted": r.state == SegmentState::Deleted,
                    })
                }),
        );
        let mut pages = paginate(std::mem::take(&mut pending));
        if !done {
            // The last (possibly short) page waits for more rows.
            pending = pages.pop().unwrap_or_default();
            for page in pages {
                conn.send(&Message::FetchListReply {
                    segments: page,
                    more: true,
                })
                .await?;
            }
            continue;
        }
        // Complete copies whose seal waits for its leaf: returned unverified, by the announced hash.
        let held: Vec<(String, HeldSeal)> = lock(&shared.origins)
            .get(origin)
            .map(|l| {
                l.held
                    .iter()
                    .filter(|(p, s)| filter.matches_parts(p, s.start_ms, s.end_ms))
                    .map(|(p, s)| (p.clone(), s.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut last: Vec<serde_json::Value> = pages.into_iter().flatten().collect();
        last.extend(held.into_iter().map(|(path, s)| {
            serde_json::json!({
                "path": path, "start_ms": s.start_ms, "end_ms": s.end_ms,
                "size_bytes": s.size_bytes, "sha256": s.sha256, "frames": s.frames,
                "deleted": false, "unverified": true,
            })
        }));
        let pages = paginate(last);
        let n = pages.len();
        for (i, page) in pages.into_iter().enumerate() {
            conn.send(&Message::FetchListReply {
                segments: page,
                more: i + 1 < n,
            })
            .await?;
        }
        return Ok(());
    }
}

/// For restore: every head kept of `origin`'s log, in acceptance order, with its countersignature, in
/// `HeadChain` pages.
async fn send_head_chain<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
) -> Result<(), AgentError> {
    let mut after_id = 0i64;
    loop {
        let rows = tokio::task::block_in_place(|| {
            shared.db.heads_after(origin, after_id, MAX_PAGE_ITEMS)
        })?;
        after_id = rows.last().map_or(after_id, |(id, _)| *id);
        let more = rows.len() == MAX_PAGE_ITEMS;
        let entries: Vec<serde_json::Value> = rows
            .into_iter()
            .filter_map(|(_, h)| {
                let head = serde_json::from_str::<serde_json::Value>(&h.head_json).ok()?;
                let cs = h
                    .countersignature_json
                    .and_then(|j| serde_json::from_str::<serde_json::Value>(&j).ok());
                Some(serde_json::json!({"head": head, "countersignature": cs}))
            })
            .collect();
        let pages = paginate(entries);
        let n = pages.len();
        for (i, page) in pages.into_iter().enumerate() {
            conn.send(&Message::HeadChain {
                heads: page,
                more: more || i + 1 < n,
            })
            .await?;
        }
        if !more {
            return Ok(());
        }
    }
}

/// Catalog rows scanned at a time for a listing.
const LISTING_SCAN_ROWS: u32 = 2000;

/// The filters of a `FetchList`.
pub(super) struct ListFilter<'a> {
    pub camera: Option<&'a str>,
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
}

impl ListFilter<'_> {
    fn matches(&self, r: &store::SegmentRow) -> bool {
        self.matches_parts(&r.path, r.start_ms, r.end_ms)
    }

    fn matches_parts(&self, path: &str, start_ms: i64, end_ms: i64) -> bool {
        self.start_ms.is_none_or(|s| end_ms > s)
            && self.end_ms.is_none_or(|e| start_ms < e)
            && self
                .camera
                .is_none_or(|c| path.split('/').nth(1) == Some(c))
    }
}
