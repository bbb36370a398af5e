//! Test 4 of the issue (N:1): three primaries, one standby with room for two of their streams. When
//! all three die at once, the standby records the two of higher priority (a lower one it may have
//! taken first is given up for a higher one) and reports the third uncovered.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use common::*;

#[test]
fn three_primaries_one_standby_at_capacity_priorities_respected_the_rest_uncovered() {
    let dir = TestDir::new();
    let (_camsim, port) = spawn_camsim(&dir, 3);
    let primaries: Vec<Node> = ["node-a", "node-b", "node-c"]
        .iter()
        .map(|n| node(&dir, n))
        .collect();
    let s = node(&dir, STANDBY);
    // cam-c is the most important, cam-a the least.
    let cams: Vec<Cam> = primaries
        .iter()
        .enumerate()
        .map(|(i, p)| Cam {
            name: format!("cam{}", i + 1),
            url: format!("rtsp://127.0.0.1:{port}/cam{}", i + 1),
            node: p.name.clone(),
            cold: false,
            priority: 100 * (i as u32 + 1),
            bitrate_kbps: None,
        })
        .collect();
    let refs: Vec<&Node> = primaries.iter().collect();
    let cfg = write_cluster_many(&dir, &refs, &s, Some(2), &cams);

    let (mut rec_s, mut sync_s, mut arb_s) = spawn_node(&dir, &cfg, STANDBY);
    let mut procs: Vec<NvrProcess> = Vec::new();
    for p in &primaries {
        procs.push(spawn_recorder(&dir, &cfg, &p.name));
        procs.push(spawn_sync(&dir, &cfg, &p.name));
        procs.push(spawn_arbiter(&dir, &cfg, &p.name));
    }
    let mut why = String::new();
    let ready = wait_until(Duration::from_secs(180), Duration::from_millis(500), || {
        let st = arbiter_status(&dir, &cfg, STANDBY);
        let heard = st["peers"]
            .as_array()
            .is_some_and(|p| p.len() == 3 && p.iter().all(|x| x["alive"] == true));
        let mirrored = (1..=3).all(|i| {
            let r = store::Reader::open(&s.data, Arc::new(base::clock::SystemClock));
            r.ok()
                .and_then(|r| {
                    let id = r.find_stream(&format!("cam{i}"), "main").ok()??;
                    Some(r.stream_segments(id).ok()?.len() >= 2)
                })
                .unwrap_or(false)
        });
        let shadowing = recorder_status(&dir, &cfg, STANDBY)
            .as_array()
            .is_some_and(|a| a.len() == 3 && a.iter().all(|x| x["state"] == "shadowing"));
        why = format!("peers heard {heard}, mirrored {mirrored}, shadowing {shadowing}");
        heard && mirrored && shadowing
    });
    assert!(
        ready,
        "{why}\n{}\n{}\n{}",
        arb_s.stderr_tail(20),
        sync_s.stderr_tail(20),
        rec_s.stderr_tail(20)
    );

    for p in procs.iter_mut() {
        p.kill9();
    }
    let settled = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        let st = arbiter_status(&dir, &cfg, STANDBY);
        holding(&st, "cam3/main") == Some((STANDBY.to_owned(), 1))
            && holding(&st, "cam2/main") == Some((STANDBY.to_owned(), 1))
            && st["uncovered"] == serde_json::json!(["cam1/main"])
    });
    let st = arbiter_status(&dir, &cfg, STANDBY);
    assert!(settled, "{st:#}\n{}", arb_s.stderr_tail(30));
    let events = event_messages(&st);
    assert!(
        events
            .iter()
            .any(|m| m.starts_with("cam1/main is uncovered")),
        "{events:#?}"
    );
    // The standby records exactly the two higher-priority streams.
    let recording = wait_until(Duration::from_secs(20), Duration::from_millis(200), || {
        let rec = recorder_status(&dir, &cfg, STANDBY);
        let mode = |cam: &str| {
            rec.as_array()
                .and_then(|a| a.iter().find(|x| x["camera"] == cam).cloned())
                .map(|x| (x["mode"].clone(), x["state"].clone()))
        };
        mode("cam3") == Some(("record".into(), "recording".into()))
            && mode("cam2") == Some(("record".into(), "recording".into()))
            && mode("cam1").is_some_and(|(m, _)| m != "record")
    });
    assert!(recording, "{}", rec_s.stderr_tail(30));
    std::thread::sleep(Duration::from_secs(3));
    arb_s.sigterm();
    rec_s.sigterm();
    rec_s.expect_clean_exit(Duration::from_secs(30));
    sync_s.sigterm();
    for e in &events {
        println!("{e}");
    }
    // The two covered streams continue after their last mirrored frame: nothing missing.
    let r = store::Reader::open(&s.data, Arc::new(base::clock::SystemClock)).expect("catalog");
    for cam in ["cam2", "cam3"] {
        let origin = if cam == "cam2" { "node-b" } else { "node-c" };
        let id = r.find_stream(cam, "main").expect("query").expect("stream");
        let mut paths: Vec<PathBuf> = r
            .stream_segments(id)
            .expect("segments")
            .iter()
            .map(|x| r.absolute_path(&x.path))
            .collect();
        let staging = s.data.join(store::INCOMING_DIR).join(origin);
        for rel in store::layout::list_media_files(&staging).expect("staging") {
            if !paths.iter().any(|p| p.ends_with(&rel)) {
                paths.push(staging.join(&rel));
            }
        }
        let mut args = vec!["frames".to_owned(), "--summary".to_owned()];
        args.extend(paths.iter().map(|p| path_str(p)));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = run_nvr(&dir, &args, Duration::from_secs(60));
        let line = out.stdout.lines().last().unwrap_or_default().to_owned();
        println!("{cam}: {line}");
        assert!(line.contains(" 0 missing, 0 duplicated"), "{cam}: {line}");
    }
}

/// Capacity in Mbit/s with measured bitrates: three hot cameras each configured at 100 Mbit/s
/// (`bitrate_kbps`), a standby with room for 250 Mbit/s. By the configured figures only two would
/// fit; the recorders measure about 2 Mbit/s each (camsim's clip), so when the primary dies the
/// standby takes all three over, and its status counts them at their measured bitrates.
#[test]
fn capacity_in_mbps_counts_the_bitrates_the_recorders_measure() {
    let dir = TestDir::new();
    let (_camsim, port) = spawn_camsim(&dir, 3);
    let a = node(&dir, PRIMARY);
    let s = node(&dir, STANDBY);
    let cams: Vec<Cam> = (1..=3)
        .map(|i| Cam {
            name: format!("cam{i}"),
            url: format!("rtsp://127.0.0.1:{port}/cam{i}"),
            node: a.name.clone(),
            cold: false,
            priority: 100,
            bitrate_kbps: Some(100_000),
        })
        .collect();
    let capacity = Capacity {
        streams: None,
        mbps: Some(250),
    };
    let cfg = write_cluster_with(&dir, &[&a], &s, capacity, &cams);
    let (mut rec_s, mut sync_s, arb_s) = spawn_node(&dir, &cfg, STANDBY);
    let mut procs = [
        spawn_recorder(&dir, &cfg, PRIMARY),
        spawn_sync(&dir, &cfg, PRIMARY),
        spawn_arbiter(&dir, &cfg, PRIMARY),
    ];
    // Measured: every stream counts well below its configured 100 Mbit/s.
    let mut st = serde_json::Value::Null;
    let measured = wait_until(Duration::from_secs(120), Duration::from_millis(500), || {
        st = arbiter_status(&dir, &cfg, STANDBY);
        let mirrored = store::Reader::open(&s.data, Arc::new(base::clock::SystemClock))
            .ok()
            .is_some_and(|r| {
                (1..=3).all(|i| {
                    nvr_arbiter::mirror::copies(&r, PRIMARY, &format!("cam{i}"), "main")
                        .is_ok_and(|c| c.len() >= 2)
                })
            });
        mirrored
            && st["peers"][0]["alive"] == true
            && st["streams"].as_array().is_some_and(|v| {
                v.len() == 3
                    && v.iter().all(|x| {
                        x["bitrate_kbps"]
                            .as_u64()
                            .is_some_and(|b| b > 0 && b < 20_000)
                    })
            })
    });
    assert!(measured, "{st:#}\n{}", arb_s.stderr_tail(20));
    for p in procs.iter_mut() {
        p.kill9();
    }
    let took_all = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
        st = arbiter_status(&dir, &cfg, STANDBY);
        (1..=3).all(|i| holding(&st, &format!("cam{i}/main")) == Some((STANDBY.to_owned(), 1)))
    });
    assert!(took_all, "{st:#}\n{}", arb_s.stderr_tail(30));
    assert_eq!(st["uncovered"], serde_json::json!([]), "{st:#}");
    let kbps = st["capacity"]["kbps"].as_u64().expect("capacity in status");
    println!(
        "three streams taken over, counted at {kbps} kbit/s in all (configured: 300 000), cap {}",
        st["capacity"]["kbps_cap"]
    );
    assert!(kbps > 0 && kbps <= 250_000, "{st:#}");
    assert_eq!(st["capacity"]["kbps_cap"], 250_000);
    assert_eq!(st["capacity"]["streams"], 3);
    rec_s.sigterm();
    rec_s.expect_clean_exit(Duration::from_secs(30));
    sync_s.sigterm();
}
