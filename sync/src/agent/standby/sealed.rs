//! The standby's handling of `SegmentSealed`: check the seal against the log, publish the staging copy
//! write-once, acknowledge, or refuse with an alarm.

use std::collections::HashMap;

use store::{MirrorError, MirrorInfo};

use super::{lock, refuse, refuse_foreign, Shared};
use crate::agent::{raise_alarm, with_status, AgentError, Conn};
use crate::proto::{Message, SegmentInfo, SegmentKey};

/// A `SegmentSealed` message's content.
pub(super) struct Seal {
    pub key: SegmentKey,
    pub size_bytes: u64,
    pub sha256: String,
    pub end_ms: i64,
    pub frames: i64,
}

/// Seals `seal.key` if its hash agrees with the logged leaf (when there is one) and with the bytes
/// held; a staging copy longer than the seal (the primary lost a tail in a crash) seals the matching
/// prefix and keeps the tail in quarantine, with a `crash_cut` alarm.
pub(super) async fn handle<S: tokio::io::AsyncRead + tokio::io::AsyncWrite>(
    shared: &Shared,
    conn: &mut Conn<S>,
    origin: &str,
    infos: &HashMap<String, SegmentInfo>,
    seal: Seal,
) -> Result<(), AgentError> {
    let Seal {
        key,
        size_bytes,
        sha256,
        end_ms,
        frames,
    } = seal;
    if refuse_foreign(shared, conn, origin, &key).await? {
        return Ok(());
    }
    let logged = lock(&shared.origins)
        .get(origin)
        .and_then(|l| l.logged.get(&key.path).copied());
    if let Some(logged) = logged {
        if base::hex::encode(&logged) != sha256 {
            let reason = format!(
                "seal hash {sha256} contradicts the logged {}",
                base::hex::encode(&logged)
            );
            return refuse(shared, conn, origin, Some(key), "contradicts_log", &reason).await;
        }
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
