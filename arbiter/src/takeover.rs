//! Carrying out one promotion decided by the core: find the frame to continue after (hot: the last
//! frame held from the previous holder; cold: none), ask the recorder, then report the gap of the
//! takeover on one clock: the recorder measures it in its own session with the camera, from the frame
//! it continued after to the first frame it recorded (the two nodes' wall clocks are never compared).

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

    /// The gap of the takeover, from the recorder's `answer`: on one clock (the presentation times
    /// of this node's own session with the camera, `gap_90k`) when the frame it continued after was
    /// in the shadow ring; otherwise "not known", with what can be said instead. `asked_ms`: when
    /// the promotion was asked, on this node's clock. `None` for a promotion that found the stream
    /// recorded already (a restarted arbiter asking again: its gap was reported the first time).
    pub async fn gap_report(&self, answer: &serde_json::Value, asked_ms: i64) -> Option<String> {
        if answer["already_recording"] == true {
            return None;
        }
        let mode = match self.takeover {
            Takeover::Hot => "hot",
            Takeover::Cold => "cold",
        };
        let stream = &self.stream;
        let origin = &self.origin;
        if let Some(g) = answer["gap_90k"].as_i64() {
            return Some(format!(
                "{stream}: {mode} takeover gap {:.1} ms ({g} in 90 kHz units, on this node's session \
                 clock: from the last frame held from {origin} to the first frame recorded here)",
                g as f64 / 90.0
            ));
        }
        if let Some(ms) = answer["gap_ms"].as_i64() {
            return Some(format!(
                "{stream}: {mode} takeover gap not known on one clock (the last frame held from \
                 {origin} was not in the shadow ring: recording started at its oldest key frame, \
                 {ms} ms later by the two nodes' wall clocks)"
            ));
        }
        if answer["first_frame"].is_object() {
            return Some(format!(
                "{stream}: {mode} takeover gap not known (nothing held from {origin}: recording \
                 started at the shadow ring's newest key frame)"
            ));
        }
        // A cold start: the session opened on the promotion. Only a bound on this node's clock.
        let first_ms = self.first_recorded_ms().await;
        Some(match first_ms {
            Some(first) => format!(
                "{stream}: {mode} takeover gap not known on one clock (cold start: the session opened on \
                 the promotion); at least {} ms if {origin} had stopped by then: from the promotion \
                 to the first frame recorded here, on this node's clock",
                first - asked_ms
            ),
            None => format!(
                "{stream}: {mode} takeover gap not known (cold start: nothing recorded here within {} s)",
                GAP_REPORT_WAIT.as_secs()
            ),
        })
    }

    /// The wall time (this node's clock) of the first frame written under the new epoch, once the
    /// first segment exists (waits up to [`GAP_REPORT_WAIT`]).
    async fn first_recorded_ms(&self) -> Option<i64> {
        let (camera, kind) = self.camera_kind();
        let (data_dir, node, epoch) = (self.data_dir.clone(), self.node.clone(), self.epoch);
        let deadline = tokio::time::Instant::now() + GAP_REPORT_WAIT;
        loop {
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
            if found.is_some() {
                return found;
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}
