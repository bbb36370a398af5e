//! Carrying out one promotion decided by the core: find the frame to continue after (hot: the last
//! frame held from the previous holder; cold: none), ask the recorder, then report how far the first
//! frame recorded here is from the last frame held from the previous holder (the gap of the takeover).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base::clock::SystemClock;
use store::frame::FrameId;

use crate::core::Takeover;
use crate::{mirror, recorder};

/// How long the gap report waits for the first segment written under the new epoch.
const GAP_REPORT_WAIT: Duration = Duration::from_secs(30);

/// One promotion of `stream` under `epoch` on this node (`node`).
#[derive(Debug, Clone)]
pub struct Promotion {
    pub socket: PathBuf,
    pub data_dir: PathBuf,
    pub node: String,
    pub stream: String,
    pub epoch: u64,
    pub takeover: Takeover,
    /// The previous holder, whose mirrored frames the takeover continues.
    pub origin: String,
    /// A hand-back: continue exactly after this frame (the previous holder's last written).
    pub after: Option<FrameId>,
    pub reason: String,
}

impl Promotion {
    fn camera_kind(&self) -> (String, String) {
        let (camera, kind) = self
            .stream
            .split_once('/')
            .unwrap_or((self.stream.as_str(), "main"));
        (camera.to_owned(), kind.to_owned())
    }

    /// The newest frame of the stream this node holds (read through the store): the last one mirrored
    /// from the previous holder, or the last one this node wrote itself if that is newer (a stream it
    /// handed back and takes again before the new holder recorded anything).
    async fn last_held(&self) -> Result<Option<FrameId>, String> {
        let (camera, kind) = self.camera_kind();
        let (data_dir, origin, me) = (
            self.data_dir.clone(),
            self.origin.clone(),
            self.node.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let reader =
                store::Reader::open(&data_dir, Arc::new(SystemClock)).map_err(|e| e.to_string())?;
            let theirs =
                mirror::last_frame(&reader, &origin, &camera, &kind).map_err(|e| e.to_string())?;
            let mine =
                mirror::last_frame(&reader, &me, &camera, &kind).map_err(|e| e.to_string())?;
            Ok(match (theirs, mine) {
                (Some(t), Some(m)) => Some(if m.wall_ms > t.wall_ms { m } else { t }),
                (t, m) => t.or(m),
            })
        })
        .await
        .map_err(|e| e.to_string())?
    }

    /// Asks the recorder; returns its answer.
    pub async fn run(&self) -> Result<serde_json::Value, String> {
        if let Some(a) = &self.after {
            let reason = format!("{}; after {a}", self.reason);
            return recorder::promote(&self.socket, &self.stream, Some(a), self.epoch, &reason)
                .await
                .map_err(|e| e.to_string());
        }
        let after = match self.takeover {
            Takeover::Cold => None,
            Takeover::Hot => self.last_held().await?,
        };
        let origin = &self.origin;
        let reason = match (&after, self.takeover) {
            (Some(a), _) => format!(
                "{}; after the last frame held from {origin} (mirrored) or written here, {a}",
                self.reason
            ),
            (None, Takeover::Hot) => format!(
                "{}; nothing held from {origin}: from the newest key frame",
                self.reason
            ),
            (None, Takeover::Cold) => format!("{}; cold", self.reason),
        };
        recorder::promote(
            &self.socket,
            &self.stream,
            after.as_ref(),
            self.epoch,
            &reason,
        )
        .await
        .map_err(|e| e.to_string())
    }

    /// Once the first segment under the new epoch exists: the time between the last frame held from
    /// the previous holder and the first frame recorded here (one frame interval for a seamless hot
    /// takeover; detection + connect + up to a GOP for a cold one). `None` if either is unknown.
    pub async fn gap_report(&self) -> Option<String> {
        let last = match &self.after {
            Some(a) => a.clone(),
            None => self.last_held().await.ok().flatten()?,
        };
        let (camera, kind) = self.camera_kind();
        let (data_dir, node, epoch) = (self.data_dir.clone(), self.node.clone(), self.epoch);
        let deadline = tokio::time::Instant::now() + GAP_REPORT_WAIT;
        let first_ms = loop {
            let (d, n, c, k) = (data_dir.clone(), node.clone(), camera.clone(), kind.clone());
            let found = tokio::task::spawn_blocking(move || {
                let reader = store::Reader::open(&d, Arc::new(SystemClock)).ok()?;
                mirror::first_start_under(&reader, &n, &c, &k, epoch)
                    .ok()
                    .flatten()
            })
            .await
            .ok()
            .flatten();
            if let Some(ms) = found {
                break ms;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        Some(format!(
            "{}: {} takeover gap {} ms (last frame held from {} at {}, first frame recorded here at {})",
            self.stream,
            match self.takeover {
                Takeover::Hot => "hot",
                Takeover::Cold => "cold",
            },
            first_ms - last.wall_ms,
            self.origin,
            last.wall_ms,
            first_ms
        ))
    }
}
