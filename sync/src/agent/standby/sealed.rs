//! The standby's handling of `SegmentSealed`: check the seal against the log, publish the staging copy
//! write-once, acknowledge, or refuse with an alarm. A seal whose leaf no accepted head logs yet is
//! checked against the bytes held and then held complete but unverified: counted in the status's
//! `unverified_segments`, returned by restore as unverified, published only once a head logs it.

use std::collections::HashMap;

use store::{MirrorError, MirrorInfo};

use super::{lock, refuse, refuse_foreign, Shared};
use crate::agent::standby_log::{note_held, HeldSeal};
use crate::agent::{raise_alarm, with_status, AgentError, Conn};
use crate::proto::{Message, SegmentInfo, SegmentKey};

/// Seals waiting on one connection for an accepted head to log their path, at most this many.
const MAX_WAITING_SEALS: usize = 10_000;

/// Seals that arrived before the leaf logging their path (the primary announces a seal before the
/// head that covers it): published once a head logging them is accepted, never before.
#[derive(Default)]
pub(super) struct Waiting {
    seals: HashMap<String, Seal>,
}

/// A `SegmentSealed` message's content.
pub(super) struct Seal {
    pub key: SegmentKey,
    pub size_bytes: u64,
    pub sha256: String,
    pub end_ms: i64,
    pub frames: i64,
    /// The origin's epoch of the segment (its catalog row's), kept in the mirrored row.
    pub epoch: Option<u64>,
}

/// Seals `seal.key` once a logged leaf covers its path (until then it waits in `waiting`), if its hash
/// agrees with the leaf and with the bytes held; a staging copy longer than the seal (the primary
/// lost a tail in a crash) seals the matching prefix and keeps the tail in quarantine, with a
/// `crash_cut` alarm.
pub(super) async fn handle<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    infos: &HashMap<String, SegmentInfo>,
    waiting: &mut Waiting,
    seal: Seal,
) -> Result<(), AgentError> {
    if refuse_foreign(shared, conn, origin, &seal.key).await? {
        return Ok(());
    }
    let logged = lock(&shared.origins)
        .get(origin)
        .and_then(|l| l.logged.get(&seal.key.path).copied());
    let Some(logged) = logged else {
        // Refused at once if it contradicts the bytes held; else it waits for its leaf.
        let check = tokio::task::block_in_place(|| {
            shared
                .store
                .mirror_check_seal(origin, &seal.key.path, seal.size_bytes, &seal.sha256)
        });
        let reason = match check {
            Ok(())
                if waiting.seals.len() < MAX_WAITING_SEALS
                    || waiting.seals.contains_key(&seal.key.path) =>
            {
                // Held complete but unverified (counted so, returned so by restore) until then.
                let held = HeldSeal {
                    path: seal.key.path.clone(),
                    size_bytes: seal.size_bytes,
                    sha256: seal.sha256.clone(),
                    start_ms: infos.get(&seal.key.path).map_or(0, |i| i.start_ms),
                    end_ms: seal.end_ms,
                    frames: seal.frames,
                };
                note_held(shared, origin, held)?;
                waiting.seals.insert(seal.key.path.clone(), seal);
                return Ok(());
            }
            Ok(()) => format!("more than {MAX_WAITING_SEALS} seals wait for their leaf"),
            Err(MirrorError::Storage(e)) => {
                super::store_failed(&shared.status, origin, &seal.key.path, &e.to_string());
                return Err(e.into());
            }
            Err(e) => e.to_string(),
        };
        return refuse(
            shared,
            conn,
            origin,
            Some(seal.key),
            "refused_seal",
            &reason,
        )
        .await;
    };
    let Seal {
        key,
        size_bytes,
        sha256,
        end_ms,
        frames,
        epoch,
    } = seal;
    if base::hex::encode(&logged) != sha256 {
        let reason = format!(
            "seal hash {sha256} contradicts the logged {}",
            base::hex::encode(&logged)
        );
        return refuse(shared, conn, origin, Some(key), "contradicts_log", &reason).await;
    }
    let Some(info) = infos.get(&key.path) else {
        return refuse(
            shared,
            conn,
            origin,
            Some(key),
            "protocol",
            "sealed before it was opened",
        )
        .await;
    };
    let info = MirrorInfo {
        camera: info.camera.clone(),
        stream: info.stream.clone(),
        start_ms: info.start_ms,
        video_codec: info.video_codec.clone(),
        width: info.width,
        height: info.height,
        audio_codec: info.audio_codec.clone(),
        epoch,
    };
    let r = tokio::task::block_in_place(|| {
        shared.store.mirror_seal(
            origin, &key.path, &info, size_bytes, &sha256, end_ms, frames,
        )
    });
    match r {
        Ok(outcome) => {
            if let Some(cut) = outcome.cut_tail {
                raise_alarm(
                    &shared.db,
                    "crash_cut",
                    Some(origin),
                    Some(&key.path),
                    &format!(
                        "the primary sealed {size_bytes} bytes but had sent {} more (lost in a crash on the primary?); sealed the matching {size_bytes} bytes, the tail is kept in {}",
                        cut.bytes,
                        cut.quarantine_path.display()
                    ),
                );
            }
            with_status(&shared.status, |s| {
                if let Some(p) = s.peers.get_mut(origin) {
                    p.segments_sealed_on_peer += 1;
                    p.segments_held += 1;
                }
            });
            conn.send(&Message::Ack {
                key,
                bytes_durable: size_bytes,
            })
            .await
        }
        Err(MirrorError::Storage(e)) => {
            super::store_failed(&shared.status, origin, &key.path, &e.to_string());
            Err(e.into())
        }
        Err(e) => {
            refuse(
                shared,
                conn,
                origin,
                Some(key),
                "refused_seal",
                &e.to_string(),
            )
            .await
        }
    }
}

/// After a head was accepted: handles the waiting seals whose path it logged.
pub(super) async fn release<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    infos: &HashMap<String, SegmentInfo>,
    waiting: &mut Waiting,
) -> Result<(), AgentError> {
    if waiting.seals.is_empty() {
        return Ok(());
    }
    let ready: Vec<String> = {
        let origins = lock(&shared.origins);
        let Some(log) = origins.get(origin) else {
            return Ok(());
        };
        waiting
            .seals
            .keys()
            .filter(|p| log.logged.contains_key(p.as_str()))
            .cloned()
            .collect()
    };
    for path in ready {
        if let Some(seal) = waiting.seals.remove(&path) {
            handle(shared, conn, origin, infos, waiting, seal).await?;
        }
    }
    Ok(())
}
