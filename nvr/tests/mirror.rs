//! Mirrored segments on a standby (`Store::mirror_*`), quarantine and restores. Real segment files recorded by a "primary" store, mirrored into a "standby" store; real
//! files and SQLite databases in temporary directories.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use base::clock::ManualClock;
use common::synthetic::{ingest_settings, push_frames};
use nvr::config::StreamKind;
use nvr::ingest::Recording;
use store::{
    MirrorError, MirrorHolding, MirrorInfo, SegmentRow, SegmentState, Store, QUARANTINE_DIR,
};

const T0_MS: i64 = 1_790_000_000_000;
const PRIMARY: &str = "nvr-a";
const STANDBY: &str = "nvr-b";

/// A primary that recorded 10 s of one stream in two sealed 5 s segments.
struct Primary {
    _dir: tempfile::TempDir,
    store: Arc<Store>,
    segments: Vec<SegmentRow>,
}

fn primary() -> Primary {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0_MS));
    let store = Arc::new(Store::open(dir.path(), PRIMARY, clock).expect("open primary"));
    let stream = store.ensure_stream("cam1", "main").expect("stream");
    let mut rec = Recording::new(
        store.clone(),
        stream,
        "cam1",
        StreamKind::Main,
        ingest_settings(5000),
    );
    push_frames(&mut rec, 0, 250, 25);
    rec.finish("shutdown").expect("finish");
    let segments = store
        .segments_in_range(stream, 0, i64::MAX)
        .expect("segments");
    assert_eq!(segments.len(), 2, "{segments:#?}");
    Primary {
        _dir: dir,
        store,
        segments,
    }
}

impl Primary {
    fn bytes(&self, i: usize) -> Vec<u8> {
        std::fs::read(self.store.absolute_path(&self.segments[i].path)).expect("read segment")
    }

    fn path(&self, i: usize) -> &str {
        &self.segments[i].path
    }

    fn sha(&self, i: usize) -> &str {
        self.segments[i]
            .sha256
            .as_deref()
            .expect("sealed with a hash")
    }

    fn info(&self, i: usize) -> MirrorInfo {
        let s = &self.segments[i];
        MirrorInfo {
            camera: "cam1".into(),
            stream: "main".into(),
            start_ms: s.start_ms,
            video_codec: s.video_codec.clone(),
            width: s.width as u32,
            height: s.height as u32,
            audio_codec: s.audio_codec.clone(),
            epoch: s.epoch,
        }
    }

    /// Seals segment `i` on `standby` with the primary's info, size and end, and hash `sha`.
    fn seal_into(&self, standby: &Store, i: usize, sha: &str) -> Result<(), MirrorError> {
        let s = &self.segments[i];
        standby
            .mirror_seal(
                PRIMARY,
                self.path(i),
                &self.info(i),
                s.size_bytes as u64,
                sha,
                s.end_ms,
                s.frames,
            )
            .map(|_| ())
    }

    /// Seals segment `i` on `standby` with the primary's hash, returning what sealing did.
    fn seal_into_outcome(
        &self,
        standby: &Store,
        i: usize,
    ) -> Result<store::SealOutcome, MirrorError> {
        let s = &self.segments[i];
        standby.mirror_seal(
            PRIMARY,
            self.path(i),
            &self.info(i),
            s.size_bytes as u64,
            self.sha(i),
            s.end_ms,
            s.frames,
        )
    }

    /// Mirrors segment `i` completely into `standby`.
    fn mirror_to(&self, standby: &Store, i: usize) {
        let bytes = self.bytes(i);
        standby
            .mirror_append(PRIMARY, self.path(i), 0, &bytes, true)
            .expect("append");
        self.seal_into(standby, i, self.sha(i)).expect("seal");
    }
}

struct Standby {
    dir: tempfile::TempDir,
    clock: Arc<ManualClock>,
    store: Store,
}

fn standby() -> Standby {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0_MS + 60_000));
    let store = Store::open(dir.path(), STANDBY, clock.clone()).expect("open standby");
    Standby { dir, clock, store }
}

impl Standby {
    /// Appends `data` of `path` from `PRIMARY` at `offset`, synced: the length of the staging copy.
    fn append(&self, path: &str, offset: u64, data: &[u8]) -> u64 {
        self.store
            .mirror_append(PRIMARY, path, offset, data, true)
            .expect("mirror append")
    }

    fn staging(&self, path: &str) -> std::path::PathBuf {
        self.dir.path().join("incoming").join(PRIMARY).join(path)
    }

    fn quarantine_files(&self) -> Vec<std::path::PathBuf> {
        match std::fs::read_dir(self.dir.path().join(QUARANTINE_DIR)) {
            Ok(rd) => {
                let mut v: Vec<_> = rd.map(|e| e.expect("entry").path()).collect();
                v.sort();
                v
            }
            Err(_) => Vec::new(),
        }
    }
}

fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn is_read_only(path: &Path) -> bool {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o222 == 0
}

#[test]
fn append_in_pieces_then_seal_publishes_read_only_and_catalogs_with_origin() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    let (a, b) = (bytes.len() / 3, 2 * bytes.len() / 3);
    assert_eq!(
        s.store
            .mirror_append(PRIMARY, path, 0, &bytes[..a], false)
            .expect("1"),
        a as u64
    );
    assert_eq!(
        s.store
            .mirror_append(PRIMARY, path, a as u64, &bytes[a..b], false)
            .expect("2"),
        b as u64
    );
    assert_eq!(s.append(path, b as u64, &bytes[b..]), bytes.len() as u64);
    assert_eq!(
        s.store.mirror_holdings(PRIMARY).expect("holdings"),
        [MirrorHolding {
            path: path.to_owned(),
            bytes_held: bytes.len() as u64,
            sealed_sha256: None
        }]
    );
    assert!(
        s.store.sealed_segment_by_path(path).expect("row").is_none(),
        "not cataloged before the seal"
    );
    assert!(!s.store.absolute_path(path).exists(), "not published yet");

    let row0 = &p.segments[0];
    p.seal_into(&s.store, 0, p.sha(0)).expect("seal");

    let published = s.store.absolute_path(path);
    assert_eq!(std::fs::read(&published).expect("read"), bytes);
    assert!(is_read_only(&published), "published file is read-only");
    assert!(!s.staging(path).exists(), "staging copy removed");

    let row = s
        .store
        .sealed_segment_by_path(path)
        .expect("lookup")
        .expect("cataloged");
    assert_eq!(row.node, PRIMARY);
    assert_eq!(row.state, SegmentState::Sealed);
    assert_eq!(row.run_id, None);
    assert_eq!(row.sha256.as_deref(), Some(p.sha(0)));
    assert_eq!(row.size_bytes, bytes.len() as i64);
    assert_eq!(row.frames, row0.frames);
    assert_eq!(row.fragments, row0.fragments);
    assert_eq!((row.start_ms, row.end_ms), (row0.start_ms, row0.end_ms));
    assert_eq!(row.video_codec, row0.video_codec);
    assert_eq!((row.width, row.height), (320, 240));

    let stream = s.store.ensure_stream("cam1", "main").expect("stream");
    let visible = s
        .store
        .segments_in_range(stream, 0, i64::MAX)
        .expect("range");
    assert_eq!(visible, std::slice::from_ref(&row));
    assert_eq!(
        s.store.mirror_holdings(PRIMARY).expect("holdings"),
        [MirrorHolding {
            path: path.to_owned(),
            bytes_held: bytes.len() as u64,
            sealed_sha256: Some(p.sha(0).to_owned())
        }]
    );
    assert_eq!(
        s.store.mirror_holdings("nvr-c").expect("holdings"),
        [],
        "per origin"
    );

    // Staging and quarantine files are neither orphans to recovery nor problems to `nvr check`.
    let second = p.bytes(1);
    s.append(p.path(1), 0, &second[..100]);
    s.store
        .quarantine_bytes(PRIMARY, p.path(1), b"refused")
        .expect("quarantine");
    let report = s.store.recover().expect("recover");
    assert!(report.is_empty(), "{report:?}");
    let check = s.store.check(true).expect("check");
    assert!(check.ok(), "{:?}", check.problems);
    assert_eq!(check.sealed_checked, 1);
    assert_eq!(
        std::fs::metadata(s.staging(p.path(1)))
            .expect("staging")
            .len(),
        100
    );
}

/// The mirrored row carries the epoch of the origin's row (the holder's part of a timeline after a
/// takeover), and a row without one stays without.
#[test]
fn the_mirrored_row_carries_the_origins_epoch() {
    let p = primary();
    let s = standby();
    for (i, epoch) in [(0, Some(7)), (1, None)] {
        let bytes = p.bytes(i);
        s.append(p.path(i), 0, &bytes);
        let row = &p.segments[i];
        let info = MirrorInfo { epoch, ..p.info(i) };
        s.store
            .mirror_seal(
                PRIMARY,
                p.path(i),
                &info,
                row.size_bytes as u64,
                p.sha(i),
                row.end_ms,
                row.frames,
            )
            .expect("seal");
        let held = s
            .store
            .sealed_segment_by_path(p.path(i))
            .expect("lookup")
            .expect("cataloged");
        assert_eq!((held.node.as_str(), held.epoch), (PRIMARY, epoch));
    }
}

#[test]
fn identical_resend_is_tolerated_and_only_the_tail_is_appended() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    s.append(path, 0, &bytes[..2000]);
    // The same bytes again (a retransmission after a lost Ack).
    assert_eq!(s.append(path, 0, &bytes[..2000]), 2000);
    assert_eq!(s.append(path, 500, &bytes[500..1500]), 2000);
    // Overlapping the end: the overlap is compared, the rest appended.
    assert_eq!(s.append(path, 1500, &bytes[1500..3000]), 3000);
    assert_eq!(
        std::fs::read(s.staging(path)).expect("staging"),
        &bytes[..3000]
    );
    assert!(s.quarantine_files().is_empty());
}

#[test]
fn contradicting_resend_is_refused_quarantined_and_staging_kept() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    s.append(path, 0, &bytes[..2000]);
    let mut evil = bytes[1000..2500].to_vec();
    evil[10] ^= 0xff;
    match s.store.mirror_append(PRIMARY, path, 1000, &evil, true) {
        Err(MirrorError::Contradiction {
            path: p2,
            quarantine_path: Some(q),
            ..
        }) => {
            assert_eq!(p2, path);
            assert_eq!(std::fs::read(&q).expect("quarantined"), evil);
            assert!(q.starts_with(s.dir.path().join(QUARANTINE_DIR)));
            let name = q.file_name().and_then(|n| n.to_str()).expect("name");
            assert_eq!(
                name,
                format!("{}_{PRIMARY}_{}", T0_MS + 60_000, path.replace('/', "~"))
            );
        }
        other => panic!("expected a quarantined contradiction, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(s.staging(path)).expect("staging"),
        &bytes[..2000],
        "the good staging copy is untouched (nothing appended either)"
    );
    // The same refused bytes again at the same time: a second quarantine file, not an overwrite.
    let again = s.store.mirror_append(PRIMARY, path, 1000, &evil, true);
    assert!(matches!(again, Err(MirrorError::Contradiction { .. })));
    assert_eq!(s.quarantine_files().len(), 2);
    // The honest sender continues.
    assert_eq!(s.append(path, 2000, &bytes[2000..]), bytes.len() as u64);
}

#[test]
fn gaps_are_refused_without_writing() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    match s
        .store
        .mirror_append(PRIMARY, path, 10, &bytes[10..20], true)
    {
        Err(MirrorError::OffsetGap {
            held: 0,
            offset: 10,
            ..
        }) => {}
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(
        !s.staging(path).exists(),
        "no staging file for a refused gap"
    );
    s.append(path, 0, &bytes[..100]);
    match s
        .store
        .mirror_append(PRIMARY, path, 200, &bytes[200..300], true)
    {
        Err(MirrorError::OffsetGap {
            held: 100,
            offset: 200,
            ..
        }) => {}
        other => panic!("expected a gap, got {other:?}"),
    }
    assert_eq!(
        std::fs::metadata(s.staging(path)).expect("staging").len(),
        100
    );
    // Sealing before everything arrived is a gap too (nothing quarantined).
    match p.seal_into(&s.store, 0, p.sha(0)) {
        Err(MirrorError::OffsetGap {
            held: 100, offset, ..
        }) => {
            assert_eq!(offset, bytes.len() as u64)
        }
        other => panic!("expected a gap, got {other:?}"),
    }
    assert!(s.quarantine_files().is_empty());
}

#[test]
fn seal_with_a_wrong_hash_keeps_the_staging_copy_and_publishes_nothing() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    let row = &p.segments[0];
    s.append(path, 0, &bytes);
    // Checked without sealing: the right hash agrees, another one contradicts.
    s.store
        .mirror_check_seal(PRIMARY, path, bytes.len() as u64, p.sha(0))
        .expect("matching seal");
    assert!(matches!(
        s.store
            .mirror_check_seal(PRIMARY, path, bytes.len() as u64, p.sha(1)),
        Err(MirrorError::Contradiction { .. })
    ));
    assert!(matches!(
        s.store
            .mirror_check_seal(PRIMARY, path, bytes.len() as u64 + 1, p.sha(0)),
        Err(MirrorError::OffsetGap { .. })
    ));
    match p.seal_into(&s.store, 0, p.sha(1)) {
        Err(MirrorError::Contradiction {
            quarantine_path: None,
            ..
        }) => {}
        other => panic!("expected a contradiction, got {other:?}"),
    }
    assert!(!s.store.absolute_path(path).exists(), "nothing published");
    assert!(s.store.sealed_segment_by_path(path).expect("row").is_none());
    // The acknowledged bytes stay staged: the path cannot start afresh with other bytes.
    assert_eq!(std::fs::read(s.staging(path)).expect("staging kept"), bytes);
    let other = vec![0x5au8; 100];
    assert!(matches!(
        s.store.mirror_append(PRIMARY, path, 0, &other, true),
        Err(MirrorError::Contradiction { .. })
    ));
    assert_eq!(std::fs::read(s.staging(path)).expect("staging kept"), bytes);
    // A malformed hash is refused outright.
    s.append(path, 0, &bytes);
    assert!(matches!(
        p.seal_into(&s.store, 0, "xyz"),
        Err(MirrorError::BadPath { .. })
    ));
    // Info that does not match the path is refused.
    let mut wrong = p.info(0);
    wrong.camera = "cam2".into();
    assert!(matches!(
        s.store.mirror_seal(
            PRIMARY,
            path,
            &wrong,
            bytes.len() as u64,
            p.sha(0),
            row.end_ms,
            row.frames
        ),
        Err(MirrorError::BadPath { .. })
    ));
    // The right hash still seals.
    p.seal_into(&s.store, 0, p.sha(0)).expect("seal");
}

#[test]
fn a_seal_shorter_than_the_copy_held_seals_the_matching_prefix_and_keeps_the_tail() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    let row = &p.segments[0];
    // The standby holds more than the primary sealed (its tail was lost in a crash there).
    let mut longer = bytes.clone();
    longer.extend_from_slice(&[0x77u8; 5000]);
    s.append(path, 0, &longer);
    // A prefix that does not hash to the seal: refused, nothing moved.
    let short = (bytes.len() - 10) as u64;
    let r = s.store.mirror_seal(
        PRIMARY,
        path,
        &p.info(0),
        short,
        p.sha(0),
        row.end_ms,
        row.frames,
    );
    assert!(matches!(r, Err(MirrorError::Contradiction { .. })), "{r:?}");
    assert_eq!(
        std::fs::read(s.staging(path)).expect("staging kept"),
        longer
    );
    // The matching prefix seals; the tail goes to quarantine.
    let outcome = p.seal_into_outcome(&s.store, 0).expect("seal");
    let cut = outcome.cut_tail.expect("tail cut");
    assert_eq!(cut.bytes, 5000);
    assert_eq!(
        std::fs::read(&cut.quarantine_path).expect("tail"),
        vec![0x77u8; 5000]
    );
    assert_eq!(
        std::fs::read(s.store.absolute_path(path)).expect("sealed"),
        bytes
    );
    assert!(!s.staging(path).exists());
    let sealed = s
        .store
        .sealed_segment_by_path(path)
        .expect("row")
        .expect("sealed");
    assert_eq!(sealed.sha256.as_deref(), Some(p.sha(0)));
}

#[test]
fn unverified_bytes_stop_at_the_quota_and_sealing_frees_them() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    let quota = bytes.len() as u64 + 700;
    s.store.set_mirror_quota(quota);
    assert_eq!(s.store.mirror_unverified_bytes(PRIMARY).expect("count"), 0);
    s.append(path, 0, &bytes);
    assert_eq!(
        s.store.mirror_unverified_bytes(PRIMARY).expect("count"),
        bytes.len() as u64
    );
    // Another segment past the quota: refused, nothing written.
    let other = p.path(1);
    match s.store.mirror_append(PRIMARY, other, 0, &p.bytes(1), true) {
        Err(MirrorError::QuotaExceeded {
            used_bytes,
            quota_bytes,
            ..
        }) => {
            assert_eq!((used_bytes, quota_bytes), (bytes.len() as u64, quota));
        }
        r => panic!("expected QuotaExceeded, got {r:?}"),
    }
    assert!(!s.staging(other).exists());
    // Refused (contradicting) bytes are kept in quarantine only within the quota.
    let evil = vec![0x99u8; 500];
    match s.store.mirror_append(PRIMARY, path, 0, &evil, true) {
        Err(MirrorError::Contradiction {
            quarantine_path: Some(_),
            ..
        }) => {}
        r => panic!("expected a kept contradiction, got {r:?}"),
    }
    match s.store.mirror_append(PRIMARY, path, 0, &evil, true) {
        Err(MirrorError::Contradiction {
            quarantine_path: None,
            ..
        }) => {}
        r => panic!("expected a contradiction not kept, got {r:?}"),
    }
    // A fresh count from disk agrees (staging plus this origin's quarantine).
    let reopened = Store::open(s.dir.path(), STANDBY, s.clock.clone()).expect("reopen");
    assert_eq!(
        reopened.mirror_unverified_bytes(PRIMARY).expect("count"),
        bytes.len() as u64 + 500
    );
    drop(reopened);
    // Sealing publishes the copy: it no longer counts, and the other segment fits.
    p.seal_into(&s.store, 0, p.sha(0)).expect("seal");
    assert_eq!(
        s.store.mirror_unverified_bytes(PRIMARY).expect("count"),
        500
    );
    s.append(other, 0, &p.bytes(1)[..1000]);
}

#[test]
fn seal_never_replaces_an_existing_different_file() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    let target = s.store.absolute_path(path);
    std::fs::create_dir_all(target.parent().expect("parent")).expect("mkdir");
    std::fs::write(&target, b"something else").expect("write");
    s.append(path, 0, &bytes);
    let r = p.seal_into(&s.store, 0, p.sha(0));
    assert!(matches!(r, Err(MirrorError::Contradiction { .. })), "{r:?}");
    assert_eq!(
        std::fs::read(&target).expect("read"),
        b"something else",
        "untouched"
    );
    assert!(s.store.sealed_segment_by_path(path).expect("row").is_none());
}

#[test]
fn data_for_a_sealed_segment_must_match_it() {
    let p = primary();
    let s = standby();
    p.mirror_to(&s.store, 0);
    let bytes = p.bytes(0);
    let path = p.path(0);
    let published = s.store.absolute_path(path);
    // The same bytes again are acknowledged with the full size, nothing written.
    assert_eq!(s.append(path, 100, &bytes[100..900]), bytes.len() as u64);
    assert!(!s.staging(path).exists());
    let mut evil = bytes[100..900].to_vec();
    evil[0] ^= 1;
    match s.store.mirror_append(PRIMARY, path, 100, &evil, true) {
        Err(MirrorError::Contradiction {
            quarantine_path: Some(q),
            ..
        }) => assert_eq!(std::fs::read(q).expect("quarantined"), evil),
        other => panic!("expected a contradiction, got {other:?}"),
    }
    // Bytes beyond the sealed end are a contradiction too.
    let beyond = s
        .store
        .mirror_append(PRIMARY, path, bytes.len() as u64, b"more", true);
    assert!(matches!(beyond, Err(MirrorError::Contradiction { .. })));
    assert_eq!(std::fs::read(&published).expect("read"), bytes);
    assert!(!s.staging(path).exists(), "no staging copy appeared");
    // A seal with another hash is refused; the sealed file stays.
    let r = p.seal_into(&s.store, 0, &"0".repeat(64));
    assert!(matches!(r, Err(MirrorError::Contradiction { .. })), "{r:?}");
    assert_eq!(std::fs::read(&published).expect("read"), bytes);
    assert_eq!(
        s.store
            .sealed_segment_by_path(path)
            .expect("row")
            .and_then(|r| r.sha256),
        Some(p.sha(0).to_owned())
    );
}

#[test]
fn seal_is_idempotent() {
    let p = primary();
    let s = standby();
    p.mirror_to(&s.store, 0);
    s.clock.advance_ms(1000);
    for _ in 0..2 {
        p.seal_into(&s.store, 0, &p.sha(0).to_uppercase())
            .expect("seal again");
    }
    let stream = s.store.ensure_stream("cam1", "main").expect("stream");
    assert_eq!(
        s.store
            .segments_in_range(stream, 0, i64::MAX)
            .expect("range")
            .len(),
        1
    );
    assert!(s.quarantine_files().is_empty());
}

#[test]
fn bad_paths_are_refused() {
    let p = primary();
    let s = standby();
    let good = p.path(0).to_owned();
    let other_origin = good.replace("_nvr-a.mp4", "_nvr-c.mp4");
    let own = good.replace("_nvr-a.mp4", "_nvr-b.mp4");
    let cases = [
        "../x".to_owned(),
        format!("../{good}"),
        format!("/{good}"),
        s.dir.path().join(&good).display().to_string(),
        good.replacen("media/", "media//", 1),
        good.replacen("media/", "media/./", 1),
        good.replace("cam1", ".."),
        other_origin.clone(),
        "media/cam1/main/2026-01-01/garbage.mp4".to_owned(),
        String::new(),
    ];
    for bad in &cases {
        match s.store.mirror_append(PRIMARY, bad, 0, b"x", true) {
            Err(MirrorError::BadPath { .. }) => {}
            other => panic!("{bad:?}: expected BadPath, got {other:?}"),
        }
    }
    // The standby's own node name as origin would clash with its own recordings.
    assert!(matches!(
        s.store.mirror_append(STANDBY, &own, 0, b"x", true),
        Err(MirrorError::BadPath { .. })
    ));
    assert!(matches!(
        s.store.mirror_append("../nvr-a", &good, 0, b"x", true),
        Err(MirrorError::BadPath { .. })
    ));
    assert!(s.store.mirror_holdings("../x").is_err());
    // Nothing was written anywhere outside the data directory's incoming tree.
    assert!(!s.dir.path().join("incoming").exists());
    assert!(matches!(
        s.store.restore_sealed("../x", b""),
        Err(MirrorError::BadPath { .. })
    ));
    assert!(matches!(
        s.store.restore_missing("/etc/passwd", b"", &"0".repeat(64)),
        Err(MirrorError::BadPath { .. })
    ));
}

#[test]
fn holdings_report_partial_and_sealed() {
    let p = primary();
    let s = standby();
    p.mirror_to(&s.store, 0);
    s.append(p.path(1), 0, &p.bytes(1)[..777]);
    let mut want = vec![
        MirrorHolding {
            path: p.path(0).to_owned(),
            bytes_held: p.bytes(0).len() as u64,
            sealed_sha256: Some(p.sha(0).to_owned()),
        },
        MirrorHolding {
            path: p.path(1).to_owned(),
            bytes_held: 777,
            sealed_sha256: None,
        },
    ];
    want.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(s.store.mirror_holdings(PRIMARY).expect("holdings"), want);
}

#[test]
fn restore_sealed_replaces_a_damaged_file_and_keeps_it_in_quarantine() {
    let p = primary();
    let path = p.path(0);
    let good = p.bytes(0);
    let file = p.store.absolute_path(path);
    // "Ransomware": the file is made writable and encrypted in place.
    let mut perms = std::fs::metadata(&file).expect("stat").permissions();
    perms.set_mode(0o644);
    std::fs::set_permissions(&file, perms).expect("chmod");
    let damaged: Vec<u8> = good.iter().map(|b| b ^ 0x5a).collect();
    std::fs::write(&file, &damaged).expect("encrypt");
    assert!(!p.store.check(true).expect("check").ok());

    let mut wrong = good.clone();
    wrong[good.len() / 2] ^= 1;
    let r = p.store.restore_sealed(path, &wrong);
    assert!(
        matches!(
            r,
            Err(MirrorError::Contradiction {
                quarantine_path: None,
                ..
            })
        ),
        "{r:?}"
    );
    assert_eq!(
        std::fs::read(&file).expect("read"),
        damaged,
        "nothing changed"
    );

    p.store.restore_sealed(path, &good).expect("restore");
    assert_eq!(std::fs::read(&file).expect("read"), good);
    assert!(is_read_only(&file));
    let check = p.store.check(true).expect("check");
    assert!(check.ok(), "{:?}", check.problems);
    let qdir = p.store.data_dir().join(QUARANTINE_DIR);
    let kept: Vec<Vec<u8>> = std::fs::read_dir(&qdir)
        .expect("quarantine dir")
        .map(|e| std::fs::read(e.expect("entry").path()).expect("read"))
        .collect();
    assert_eq!(kept, [damaged], "the damaged file is kept, not deleted");
    // Restoring a file that is fine changes nothing.
    p.store.restore_sealed(path, &good).expect("no-op");
    assert_eq!(std::fs::read_dir(&qdir).expect("dir").count(), 1);
    // A file that vanished is put back, and its `missing` row sealed again.
    std::fs::remove_file(&file).expect("remove");
    let report = p.store.recover().expect("recover");
    assert_eq!(report.missing, [path.to_owned()]);
    p.store
        .restore_sealed(path, &good)
        .expect("restore missing file");
    assert_eq!(
        p.store
            .sealed_segment_by_path(path)
            .expect("row")
            .map(|r| r.state),
        Some(SegmentState::Sealed)
    );
    assert!(p.store.check(true).expect("check").ok());
}

#[test]
fn restore_missing_indexes_segments_on_a_wiped_store() {
    let p = primary();
    let wiped = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(T0_MS + 3_600_000));
    let store = Store::open(wiped.path(), PRIMARY, clock).expect("open wiped");
    let path = p.path(1);
    let good = p.bytes(1);

    let r = store.restore_missing(path, &good, p.sha(0));
    assert!(matches!(r, Err(MirrorError::Contradiction { .. })), "{r:?}");
    assert!(!store.absolute_path(path).exists());

    store
        .restore_missing(path, &good, p.sha(1))
        .expect("restore");
    let file = store.absolute_path(path);
    assert_eq!(std::fs::read(&file).expect("read"), good);
    assert!(is_read_only(&file));
    let row = store
        .sealed_segment_by_path(path)
        .expect("lookup")
        .expect("indexed");
    let orig = &p.segments[1];
    assert_eq!(row.node, PRIMARY);
    assert_eq!(row.sha256.as_deref(), Some(p.sha(1)));
    assert_eq!(row.size_bytes, orig.size_bytes);
    assert_eq!(row.frames, orig.frames);
    assert_eq!(row.fragments, orig.fragments);
    assert_eq!((row.start_ms, row.end_ms), (orig.start_ms, orig.end_ms));
    assert_eq!((row.width, row.height), (320, 240));
    let stream = store.ensure_stream("cam1", "main").expect("stream");
    assert_eq!(
        store.segments_in_range(stream, 0, i64::MAX).expect("range"),
        [row]
    );
    // Again: idempotent. Then recovery and check agree with the catalog.
    store.restore_missing(path, &good, p.sha(1)).expect("again");
    assert!(store.recover().expect("recover").is_empty());
    assert!(store.check(true).expect("check").ok());
    // A different hash for a path the catalog knows is refused.
    assert!(matches!(
        store.restore_missing(path, &p.bytes(0), p.sha(0)),
        Err(MirrorError::Contradiction { .. })
    ));
    assert!(!wiped.path().join(QUARANTINE_DIR).exists());
}

#[test]
fn quarantine_bytes_never_overwrites() {
    let s = standby();
    let path = "media/cam1/main/2026-09-21/20260921T080000000Z_nvr-a.mp4";
    let a = s.store.quarantine_bytes(PRIMARY, path, b"one").expect("a");
    let b = s.store.quarantine_bytes(PRIMARY, path, b"two").expect("b");
    assert_ne!(a, b);
    assert_eq!(std::fs::read(&a).expect("a"), b"one");
    assert_eq!(std::fs::read(&b).expect("b"), b"two");
    // Hostile names stay inside the quarantine directory.
    let c = s
        .store
        .quarantine_bytes("../..", "../../etc/passwd", b"three")
        .expect("c");
    assert_eq!(
        c.parent(),
        Some(s.dir.path().join(QUARANTINE_DIR).as_path())
    );
    assert_eq!(s.quarantine_files().len(), 3);
}

#[test]
fn mirrored_bytes_hash_matches() {
    // Guards the test helper itself: the primary's cataloged hash is the file's.
    let p = primary();
    assert_eq!(sha256_hex(&p.bytes(0)), p.sha(0));
}

/// Sealing uses the hash kept while appending (no re-read); it must agree with the bytes whatever
/// way they arrived: small pieces, identical re-sends, an early seal attempt, unsynced appends
/// flushed by `mirror_sync`, and a restart half-way (the hash then comes from the file).
#[test]
fn running_hash_survives_pieces_resends_early_seals_and_restarts() {
    let p = primary();
    let s = standby();
    let bytes = p.bytes(0);
    let path = p.path(0);
    let seal = |store: &Store, sha: &str| p.seal_into(store, 0, sha);
    let half = bytes.len() / 2;
    let mut off = 0;
    while off < half {
        let end = (off + 777).min(half);
        s.store
            .mirror_append(PRIMARY, path, off as u64, &bytes[off..end], false)
            .expect("append piece");
        // Every third piece is re-sent with the next bytes attached.
        if off % 3 == 0 && end < half {
            let more = (end + 100).min(half);
            s.store
                .mirror_append(PRIMARY, path, off as u64, &bytes[off..more], false)
                .expect("re-send with a longer tail");
            off = more;
        } else {
            off = end;
        }
    }
    assert!(matches!(
        seal(&s.store, p.sha(0)),
        Err(MirrorError::OffsetGap { held, .. }) if held == half as u64
    ));
    s.store
        .mirror_append(PRIMARY, path, half as u64, &bytes[half..], false)
        .expect("rest");
    s.store.mirror_sync(PRIMARY, path).expect("sync");
    seal(&s.store, p.sha(0)).expect("seal from the running hash");
    assert_eq!(
        std::fs::read(s.store.absolute_path(path)).expect("published"),
        bytes
    );
    // mirror_sync of a segment sealed meanwhile has nothing to do.
    s.store.mirror_sync(PRIMARY, path).expect("sync after seal");

    // Segment 1: half before a restart, the rest after; a wrong hash is still caught.
    let bytes1 = p.bytes(1);
    let path1 = p.path(1);
    let half1 = bytes1.len() / 2;
    s.append(path1, 0, &bytes1[..half1]);
    let reopened =
        Store::open(s.dir.path(), STANDBY, s.clock.clone()).expect("reopen the standby store");
    reopened
        .mirror_append(PRIMARY, path1, half1 as u64, &bytes1[half1..], true)
        .expect("second half after the restart");
    let seal1 = |sha: &str| p.seal_into(&reopened, 1, sha);
    assert!(matches!(
        seal1(p.sha(0)),
        Err(MirrorError::Contradiction { .. })
    ));
    reopened
        .mirror_append(PRIMARY, path1, 0, &bytes1, true)
        .expect("sent again after the refusal");
    seal1(p.sha(1)).expect("seal");
    assert_eq!(
        std::fs::read(reopened.absolute_path(path1)).expect("published"),
        bytes1
    );
}
