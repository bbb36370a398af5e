//! Playback of recorded ranges against real processes (`nvr run` recording camsim, `nvr-web run`): a
//! range spanning several segments comes back as one MP4 that ffmpeg decodes, with exactly the
//! catalog's frames, no camsim frame missing or twice, and decode times that run on across segment
//! boundaries; range requests return the same bytes as the whole file; a real camera outage ends the
//! range at the gap and names where the recording goes on.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{
    client, one_camera, sealed_segments, start_camsim, start_web, wait_sealed_segments, web_user,
    PASSWORD,
};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use serde_json::json;
use testkit::{run_nvr, wait_until, NvrProcess, TestDir};

fn url(port: u16, path: &str) -> String {
    format!("https://localhost:{port}{path}")
}

/// Sealed segments of cam/main, oldest first.
fn header(r: &reqwest::blocking::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

fn get_range(c: &Client, u: &str, range: &str) -> (StatusCode, String, Vec<u8>) {
    let r = c
        .get(u)
        .header("range", range)
        .send()
        .expect("range request");
    let status = r.status();
    let content_range = header(&r, "content-range");
    (status, content_range, r.bytes().expect("body").to_vec())
}

/// Decode times (seconds) of the video packets, in file order.
fn packet_dts(path: &std::path::Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=dts_time",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .expect("ffprobe");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().trim_end_matches(',').parse().ok())
        .collect()
}

#[test]
fn a_range_across_segments_plays_as_one_mp4_with_range_requests_and_ends_at_a_gap() {
    let dir = TestDir::new();
    let (mut sim, cam_port, web_port, config) = one_camera(&dir);
    let mut nvr = NvrProcess::spawn(&dir, &["run", "--config", &config.to_string_lossy()]);
    web_user(&dir, &config, &["add", "alice", "--role", "viewer"]);
    let _web = start_web(&dir, &config, web_port);
    let c = client(&dir.join("web/tls.crt"), web_port);
    let (status, _) = (
        c.post(url(web_port, "/api/login"))
            .json(&json!({"user": "alice", "password": PASSWORD}))
            .send()
            .expect("login")
            .status(),
        (),
    );
    assert_eq!(status, StatusCode::OK);

    // Six sealed 2 s segments of one run.
    let segs = wait_sealed_segments(&dir, 6, &nvr);
    let run = segs[1].run_id;
    let range: Vec<_> = segs[1..5].to_vec();
    assert!(range.iter().all(|s| s.run_id == run), "{range:?}");
    let (start_ms, end_ms) = (range[0].start_ms, range[3].end_ms);
    let frames: i64 = range.iter().map(|s| s.frames).sum();
    let play = url(
        web_port,
        &format!("/api/streams/cam/main/play.mp4?start_ms={start_ms}&end_ms={end_ms}"),
    );

    // The whole range: one MP4, the catalog's frames, no stamp missing or twice, continuous times.
    let r = c.get(&play).send().expect("play");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "content-type"), "video/mp4");
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "x-frames"), frames.to_string());
    assert_eq!(header(&r, "x-media-start-ms"), start_ms.to_string());
    assert_eq!(header(&r, "x-stop"), "");
    let total: usize = header(&r, "content-length")
        .parse()
        .expect("content-length");
    let whole = r.bytes().expect("body").to_vec();
    assert_eq!(whole.len(), total);
    let path = dir.write("play.mp4", &whole);
    let probe = testkit::ffprobe(&path);
    assert_eq!(probe.codec, "h264", "{probe:?}");
    assert_eq!(probe.frames, frames as u64, "{probe:?}");
    assert!(probe.stderr_errors.trim().is_empty(), "{probe:?}");
    let out = run_nvr(
        &dir,
        &["frames", "--summary", &path.to_string_lossy()],
        Duration::from_secs(60),
    );
    assert!(
        out.stdout.contains(&format!(": {frames} frames, seq ")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(" 0 missing, 0 duplicated, 0 unstamped"),
        "{}",
        out.stdout
    );
    let dts = packet_dts(&path);
    assert_eq!(dts.len(), frames as usize);
    let steps: Vec<f64> = dts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps.iter().all(|&s| s > 0.0 && s < 0.2),
        "decode times jump or go back: {:?}",
        steps
            .iter()
            .filter(|&&s| s <= 0.0 || s >= 0.2)
            .collect::<Vec<_>>()
    );
    let span_s = dts[dts.len() - 1] - dts[0];
    let recorded_s = (end_ms - start_ms) as f64 / 1000.0;
    assert!(
        (span_s - recorded_s).abs() < 0.5,
        "{span_s} s of media for {recorded_s} s recorded"
    );

    // Range requests: the same bytes as the whole file.
    let n = whole.len() as u64;
    for (asked, first, last) in [
        ("bytes=0-99".to_owned(), 0, 99),
        (format!("bytes=500-{}", n / 2), 500, n / 2),
        (format!("bytes={}-", n - 1000), n - 1000, n - 1),
        ("bytes=-777".to_owned(), n - 777, n - 1),
        (format!("bytes={}-{}", n / 3, n * 2), n / 3, n - 1),
    ] {
        let (status, content_range, body) = get_range(&c, &play, &asked);
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{asked}");
        assert_eq!(
            content_range,
            format!("bytes {first}-{last}/{n}"),
            "{asked}"
        );
        assert!(
            body == whole[first as usize..=last as usize],
            "{asked}: other bytes"
        );
    }
    let (status, content_range, _) = get_range(&c, &play, &format!("bytes={n}-"));
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(content_range, format!("bytes */{n}"));

    // A real outage: the range over it ends at the gap and names where recording goes on.
    sim.kill9();
    std::thread::sleep(Duration::from_secs(5));
    let (_sim2, _) = start_camsim(&dir, Some(cam_port));
    let before = sealed_segments(&dir).len();
    assert!(
        wait_until(Duration::from_secs(60), Duration::from_millis(250), || {
            let s = sealed_segments(&dir);
            s.len() >= before + 2 && s.iter().any(|x| x.run_id != run)
        }),
        "no new run after the outage: {}",
        nvr.stderr_tail(30)
    );
    let segs = sealed_segments(&dir);
    let after = segs.iter().position(|s| s.run_id != run).expect("new run");
    let (last_before, first_after) = (&segs[after - 1], &segs[after]);
    assert!(
        first_after.start_ms - last_before.end_ms >= 3000,
        "{last_before:?} {first_after:?}"
    );
    let over_gap = url(
        web_port,
        &format!(
            "/api/streams/cam/main/play.mp4?start_ms={}&end_ms={}",
            last_before.start_ms, first_after.end_ms
        ),
    );
    let r = c.get(&over_gap).send().expect("play over the gap");
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(header(&r, "x-stop"), "gap");
    assert_eq!(
        header(&r, "x-next-start-ms"),
        first_after.start_ms.to_string()
    );
    assert_eq!(header(&r, "x-frames"), last_before.frames.to_string());
    let media_end: i64 = header(&r, "x-media-end-ms").parse().expect("end");
    assert!(
        (media_end - last_before.end_ms).abs() < 200,
        "{media_end} vs {last_before:?}"
    );

    // The timeline's merged spans: the two runs either side of the outage; a range over 6 hours has
    // no segment list.
    let t0 = segs[0].start_ms;
    let t1 = segs[segs.len() - 1].end_ms;
    let timeline = |start: i64, end: i64| -> serde_json::Value {
        c.get(url(
            web_port,
            &format!("/api/streams/cam/main/recordings?start_ms={start}&end_ms={end}"),
        ))
        .send()
        .expect("recordings")
        .json()
        .expect("json")
    };
    let v = timeline(t0, t1);
    let spans = v["spans"].as_array().expect("spans");
    assert_eq!(spans.len(), 2, "{v}");
    assert_eq!(spans[0]["start_ms"], json!(t0));
    assert_eq!(spans[0]["end_ms"], json!(last_before.end_ms));
    assert_eq!(spans[1]["start_ms"], json!(first_after.start_ms));
    assert_eq!(spans[1]["node"], json!("node-a"));
    assert_eq!(
        v["segment_count"],
        json!(v["segments"].as_array().map(Vec::len))
    );
    let long = timeline(t1 - 7 * 3_600_000, t1);
    assert!(long.get("segments").is_none(), "{long}");
    assert_eq!(long["spans"].as_array().map(Vec::len), Some(2), "{long}");

    // Nothing recorded in a range: not found.
    let empty = url(
        web_port,
        &format!(
            "/api/streams/cam/main/play.mp4?start_ms={}&end_ms={}",
            last_before.end_ms + 500,
            first_after.start_ms - 500
        ),
    );
    assert_eq!(
        c.get(&empty).send().expect("empty").status(),
        StatusCode::NOT_FOUND
    );
    nvr.sigterm();
    nvr.expect_clean_exit(Duration::from_secs(30));
}
