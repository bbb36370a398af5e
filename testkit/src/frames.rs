//! Exact frame counts from camsim's stamps in recorded files, through `nvr frames` (a process).

use std::path::PathBuf;
use std::time::Duration;

use crate::cluster::path_str;
use crate::{run_nvr, TestDir};

/// `nvr frames FILES…`: the camsim sequence numbers of every frame, in file order.
pub fn frame_seqs(dir: &TestDir, files: &[PathBuf]) -> Vec<u64> {
    frames(dir, files).into_iter().map(|f| f.seq).collect()
}

/// One stamped frame of a recorded file, as `nvr frames` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub seq: u64,
    /// camsim's send time, µs since the Unix epoch.
    pub send_time_us: u64,
    pub key: bool,
    pub file: String,
}

/// `nvr frames FILES…`: every stamped frame, in file order.
pub fn frames(dir: &TestDir, files: &[PathBuf]) -> Vec<Frame> {
    if files.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["frames".to_owned()];
    args.extend(files.iter().map(|p| path_str(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(dir, &args, Duration::from_secs(120));
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            // SEQ SEND_TIME_US KEY FILE
            let mut words = l.splitn(4, ' ');
            Some(Frame {
                seq: words.next()?.parse().ok()?,
                send_time_us: words.next()?.parse().ok()?,
                key: words.next()? == "1",
                file: words.next()?.to_owned(),
            })
        })
        .collect()
}

/// (missing, duplicated) between the lowest and the highest of `seqs`.
pub fn missing_and_duplicated(seqs: &[u64]) -> (u64, u64) {
    let mut sorted = seqs.to_vec();
    sorted.sort_unstable();
    let n = sorted.len() as u64;
    sorted.dedup();
    let span = match (sorted.first(), sorted.last()) {
        (Some(a), Some(b)) => b - a + 1,
        _ => 0,
    };
    (span - sorted.len() as u64, n - sorted.len() as u64)
}

/// `nvr frames --summary FILES…`: the `# all:` (or single file) line's (frames, missing, duplicated).
pub fn frames_summary(dir: &TestDir, files: &[PathBuf]) -> (u64, u64, u64, String) {
    let mut args = vec!["frames".to_owned(), "--summary".to_owned()];
    args.extend(files.iter().map(|p| path_str(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(dir, &args, Duration::from_secs(120));
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    let line = out.stdout.lines().last().expect("summary line").to_owned();
    // "# NAME: N frames, seq A..B, M missing, D duplicated, U unstamped"
    let num = |word: &str| -> u64 {
        let parts: Vec<&str> = line.split([' ', ',']).filter(|p| !p.is_empty()).collect();
        parts
            .iter()
            .position(|p| *p == word)
            .and_then(|i| parts.get(i.checked_sub(1)?))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {word} in {line:?}"))
    };
    (num("frames"), num("missing"), num("duplicated"), line)
}
