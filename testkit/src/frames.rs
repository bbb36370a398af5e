//! Exact frame counts from camsim's stamps in recorded files, through `nvr frames` (a process).

use std::path::{Path, PathBuf};
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

/// The number before `word` in an `nvr frames` summary line ("# NAME: N frames, seq A..B, M missing, …").
fn number_before(line: &str, word: &str) -> u64 {
    let parts: Vec<&str> = line.split([' ', ',']).filter(|p| !p.is_empty()).collect();
    parts
        .iter()
        .position(|p| *p == word)
        .and_then(|i| parts.get(i.checked_sub(1)?))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no {word} in {line:?}"))
}

/// `nvr frames --summary FILES…`: the `# all:` (or single file) line's (frames, missing, duplicated).
pub fn frames_summary(dir: &TestDir, files: &[PathBuf]) -> (u64, u64, u64, String) {
    let mut args = vec!["frames".to_owned(), "--summary".to_owned()];
    args.extend(files.iter().map(|p| path_str(p)));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_nvr(dir, &args, Duration::from_secs(120));
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    // "# NAME: N frames, seq A..B, M missing, D duplicated, U unstamped"
    let line = out.stdout.lines().last().expect("summary line").to_owned();
    (
        number_before(&line, "frames"),
        number_before(&line, "missing"),
        number_before(&line, "duplicated"),
        line,
    )
}

/// `nvr frames --data-dir DATA --timeline STREAM --summary`: the stream's de-duplicated timeline in
/// that catalog: (frames, missing, duplicated, trimmed, summary line).
pub fn timeline_summary(dir: &TestDir, data: &Path, stream: &str) -> (u64, u64, u64, u64, String) {
    let d = path_str(data);
    let out = run_nvr(
        dir,
        &[
            "frames",
            "--data-dir",
            &d,
            "--timeline",
            stream,
            "--summary",
        ],
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "nvr frames: {}", out.stderr);
    let trimmed_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("# trimmed:"))
        .expect("trimmed line");
    let line = out.stdout.lines().last().expect("summary line").to_owned();
    (
        number_before(&line, "frames"),
        number_before(&line, "missing"),
        number_before(&line, "duplicated"),
        number_before(trimmed_line, "frames"),
        line,
    )
}
