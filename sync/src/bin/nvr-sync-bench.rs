//! `nvr-sync-bench`: mirror throughput (against rsync of the same files and ring's SHA-256 speed, all
//! measured in the same run) and mirroring lag with many live streams. Prints figures; asserts nothing.
//!
//!   nvr-sync-bench throughput [--total-mb 512] [--segment-mb 8] [--dir /dev/shm]
//!   nvr-sync-bench lag [--streams 100] [--seconds 60] [--mbit 4]
//!   nvr-sync-bench tamper [--runs 20] [--files 20] [--streams 4]
//!   nvr-sync-bench history [--segments 10000,100000] [--restore-segments 256] [--payload-kb 1024]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

#[path = "nvr-sync-bench/tamper.rs"]
mod tamper;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Mirror a store of sealed segments to an empty standby; compare with rsync and SHA-256 speed.
    Throughput {
        #[arg(long, default_value_t = 512)]
        total_mb: u64,
        #[arg(long, default_value_t = 8)]
        segment_mb: u64,
        /// Where both stores live (default: the system's temporary directory). A tmpfs such as
        /// /dev/shm takes the disk out of the measurement.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Record N simulated streams and mirror them; print lag percentiles from the agent's status.
    Lag {
        #[arg(long, default_value_t = 100)]
        streams: usize,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// Bit rate of each stream: a 720p25 clip with a 2 s GOP is encoded at this rate with
        /// ffmpeg (libx264) for the camera simulator; 0 serves camsim's embedded ~2 Mbit/s clip.
        #[arg(long, default_value_t = 4)]
        mbit: u32,
    },
    /// Encrypt sealed files on a recording primary, run after run; print the time from the first change
    /// to the first alarm and to the last file repaired from the standby.
    Tamper {
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Sealed files encrypted in each run.
        #[arg(long, default_value_t = 20)]
        files: usize,
        #[arg(long, default_value_t = 4)]
        streams: usize,
    },
    /// Reconnect time and agents' memory with a long logged history (built straight into both nodes),
    /// and restore throughput.
    History {
        /// History sizes to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        segments: Vec<u64>,
        /// Segments whose files are removed on the primary and restored from the standby.
        #[arg(long, default_value_t = 256)]
        restore_segments: u64,
        /// Size of every segment file (one file hard-linked under every path).
        #[arg(long, default_value_t = 1024)]
        payload_kb: usize,
    },
}

fn bin(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let p = me.parent().context("exe dir")?.join(name);
    if !p.exists() {
        bail!("{} not found: build the workspace binaries first (cargo build --release --workspace --bins)", p.display());
    }
    Ok(p)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The one cluster file of the benchmark's two nodes (primary `node-a`, standby `standby-1`).
struct Nodes {
    cluster: PathBuf,
}

/// Writes `dir/cluster.toml`: node-a (recording into `data_a`, owning `cameras`, extra TOML of
/// `[[cameras]]` tables) protected by standby-1 (into `data_s`), scrubbing off.
fn write_configs(dir: &Path, data_a: &Path, data_s: &Path, cameras: &str) -> Result<Nodes> {
    write_configs_with(dir, data_a, data_s, cameras, 60, "")
}

/// [`write_configs`] with segments of `segment_s` seconds and `sync_extra` appended to `[sync]`.
fn write_configs_with(
    dir: &Path,
    data_a: &Path,
    data_s: &Path,
    cameras: &str,
    segment_s: u64,
    sync_extra: &str,
) -> Result<Nodes> {
    let a = nvr_sync::identity::generate(&dir.join("id-a"), "node-a")?;
    let s = nvr_sync::identity::generate(&dir.join("id-s"), "standby-1")?;
    let port = free_port()?;
    let (a_cert, a_key) = a.pins().to_hex_strings();
    let (s_cert, s_key) = s.pins().to_hex_strings();
    let text = format!(
        "[recording]\nsegment_duration_s = {segment_s}\n[retention]\nmin_free_bytes = 0\n[sync]\nscrub_interval_ms = 0\n{sync_extra}\
         [[nodes]]\nname = \"node-a\"\nrole = \"primary\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
         cert_sha256 = \"{a_cert}\"\nsigning_public_key = \"{a_key}\"\n\
         [[nodes]]\nname = \"standby-1\"\nrole = \"standby\"\ndata_dir = \"{}\"\nidentity_dir = \"{}\"\n\
         address = \"127.0.0.1:{port}\"\nprotects = [\"node-a\"]\n\
         cert_sha256 = \"{s_cert}\"\nsigning_public_key = \"{s_key}\"\n{cameras}",
        data_a.display(),
        dir.join("id-a").display(),
        data_s.display(),
        dir.join("id-s").display()
    );
    let cluster = dir.join("cluster.toml");
    std::fs::write(&cluster, text)?;
    Ok(Nodes { cluster })
}

impl Nodes {
    /// Starts `program run` (the recorder or the sync agent) as `node` of the cluster, logging to `log`.
    fn run(&self, program: &Path, node: &str, log: &Path) -> Result<Child> {
        let cluster = self.cluster.to_string_lossy();
        spawn(program, &["run", "--config", &cluster, "--node", node], log)
    }

    /// Starts the standby agent (log in `dir/stby.log`) and gives it time to listen.
    fn start_standby(&self, agent: &Path, dir: &Path) -> Result<Child> {
        let child = self.run(agent, "standby-1", &dir.join("stby.log"))?;
        std::thread::sleep(Duration::from_millis(300));
        Ok(child)
    }

    /// Starts the primary agent (log in `dir/prim.log`).
    fn start_primary(&self, agent: &Path, dir: &Path) -> Result<Child> {
        self.run(agent, "node-a", &dir.join("prim.log"))
    }
}

fn spawn(program: &Path, args: &[&str], log: &Path) -> Result<Child> {
    Ok(Command::new(program)
        .args(args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log)?)
        .spawn()?)
}

fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

fn cpu_ticks(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = s
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>();
            Some(after.get(11)?.parse::<u64>().ok()? + after.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

fn throughput(total_mb: u64, segment_mb: u64, dir: Option<&Path>) -> Result<()> {
    let tmp = match dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let dir = tmp.path();
    let data_a = dir.join("a");
    let data_s = dir.join("s");
    let clock = Arc::new(base::clock::SystemClock);
    let store = Arc::new(store::Store::open(&data_a, "node-a", clock)?);
    let stream = store.ensure_stream("bench", "main")?;
    let run = store
        .catalog()
        .insert_run(stream, "node-a", 1_790_000_000_000)?;
    let tracks = [store::mp4::synthetic_video_track(1280, 720)];
    let segments = (total_mb / segment_mb).max(1);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut chunk = vec![0u8; 1 << 20];
    for i in 0..segments {
        let mut w = store.create_segment(&store::NewSegment {
            stream_id: stream,
            run_id: run,
            camera: "bench",
            stream: "main",
            start_ms: 1_790_000_000_000 + i as i64 * 60_000,
            tracks: &tracks,
            video_codec: "avc1.64001f",
            width: 1280,
            height: 720,
            audio_codec: None,
            epoch: None,
        })?;
        for f in 0..segment_mb {
            for b in chunk.iter_mut() {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                *b = seed as u8;
            }
            let mut fb = store::mp4::FragmentBuilder::new(f as u32 + 1, &[(1, f * 90_000)]);
            fb.push_sample(
                0,
                store::mp4::SampleInfo {
                    duration: 90_000,
                    size: chunk.len() as u32,
                    is_sync: true,
                    composition_offset: 0,
                },
                &chunk,
            );
            w.append_fragment(&fb.finish(), 1, (f as i64 + 1) * 1000)?;
        }
        w.seal()?;
    }
    let bytes: u64 = store
        .catalog()
        .segments_in_state(store::SegmentState::Sealed)?
        .iter()
        .map(|r| r.size_bytes.max(0) as u64)
        .sum();
    drop(store);
    let mb = bytes as f64 / 1e6;

    // ring SHA-256 on this machine.
    let buf = vec![0x5au8; 64 << 20];
    let t = Instant::now();
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for _ in 0..4 {
        ctx.update(&buf);
    }
    let _ = ctx.finish();
    let sha_mbps = (4.0 * buf.len() as f64 / 1e6) / t.elapsed().as_secs_f64();

    // Writing the same amount to this file system and making it durable (what the standby must do).
    let disk_mbps = {
        use std::io::Write;
        let path = dir.join("disk-probe");
        let mut f = std::fs::File::create(&path)?;
        let t = Instant::now();
        for _ in 0..(bytes >> 20).max(1) {
            f.write_all(&chunk)?;
        }
        f.sync_data()?;
        let mbps =
            ((bytes >> 20).max(1) as f64 * chunk.len() as f64 / 1e6) / t.elapsed().as_secs_f64();
        drop(f);
        std::fs::remove_file(&path)?;
        let _ = Command::new("sync").status();
        mbps
    };

    // rsync of the same files (local copy, no network, no TLS, no hashing by us).
    let dst = dir.join("rsync-dst");
    let t = Instant::now();
    let st = Command::new("rsync")
        .args(["-a", "--whole-file"])
        .arg(format!("{}/", data_a.join("media").display()))
        .arg(&dst)
        .status()
        .context("rsync (apt-get install rsync)")?;
    let rsync_s = t.elapsed().as_secs_f64();
    if !st.success() {
        bail!("rsync failed");
    }
    let _ = Command::new("sync").status();

    // The agents over loopback mutual TLS.
    // The standby accepts only streams the cluster file gives the primary; no recorder runs here.
    let bench_camera = "[[cameras]]\nname = \"bench\"\nnode = \"node-a\"\n\
                        [cameras.streams.main]\nurl = \"rtsp://127.0.0.1:9/bench\"\n";
    let nodes = write_configs(dir, &data_a, &data_s, bench_camera)?;
    let agent = bin("nvr-sync")?;
    let mut standby = nodes.start_standby(&agent, dir)?;
    let t = Instant::now();
    let mut primary = nodes.start_primary(&agent, dir)?;
    let (p0, s0) = (cpu_ticks(primary.id()), cpu_ticks(standby.id()));
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let done = store::Reader::open(&data_s, Arc::new(base::clock::SystemClock))
            .ok()
            .and_then(|s| s.segments_in_state(store::SegmentState::Sealed).ok())
            .is_some_and(|rows| {
                rows.iter().filter(|r| r.node == "node-a").count() as u64 == segments
            });
        if done {
            break;
        }
        if Instant::now() > deadline {
            bail!("standby did not converge in 600 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let agent_s = t.elapsed().as_secs_f64();
    let (p1, s1) = (cpu_ticks(primary.id()), cpu_ticks(standby.id()));
    stop(&mut primary);
    stop(&mut standby);
    let agent_mbps = mb / agent_s;
    println!("files: {segments} sealed segments, {mb:.0} MB");
    println!("ring SHA-256 (one core):          {sha_mbps:8.1} MB/s");
    println!("write + fdatasync on this fs:     {disk_mbps:8.1} MB/s");
    println!(
        "rsync -a (local copy):            {:8.1} MB/s ({rsync_s:.2} s)",
        mb / rsync_s
    );
    println!("nvr-sync (mTLS, hashing, fsync):  {agent_mbps:8.1} MB/s ({agent_s:.2} s)");
    println!(
        "  ratio to rsync {:.2}, to SHA-256 {:.2}, to write + fdatasync {:.2}; CPU s primary {:.1}, standby {:.1}",
        agent_mbps / (mb / rsync_s),
        agent_mbps / sha_mbps,
        agent_mbps / disk_mbps,
        (p1 - p0) as f64 / 100.0,
        (s1 - s0) as f64 / 100.0
    );
    Ok(())
}

/// A 4 s 1280x720 25 fps H.264 clip (High profile, no B-frames, IDR every 50 frames) at `mbit`
/// Mbit/s, encoded by ffmpeg from its test pattern, for `nvr camsim --clip`.
fn encode_clip(dir: &Path, mbit: u32) -> Result<PathBuf> {
    let out = dir.join(format!("clip-{mbit}mbit.h264"));
    let st = camsim::ffmpeg_clip_command(&out, (1280, 720), 4, 50, Some(mbit))
        .status()
        .context("ffmpeg (apt-get install ffmpeg)")?;
    if !st.success() {
        bail!("ffmpeg could not encode the {mbit} Mbit/s clip");
    }
    Ok(out)
}

fn lag(streams: usize, seconds: u64, mbit: u32) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let data_a = dir.join("a");
    let data_s = dir.join("s");
    let nvr = bin("nvr")?;
    let agent = bin("nvr-sync")?;
    let cam_port = free_port()?;
    let mut cam_args = vec![
        "camsim".to_owned(),
        "--listen".to_owned(),
        format!("127.0.0.1:{cam_port}"),
        "--streams".to_owned(),
        streams.to_string(),
    ];
    if mbit > 0 {
        let clip = encode_clip(dir, mbit)?;
        cam_args.extend(["--clip".to_owned(), clip.to_string_lossy().into_owned()]);
    }
    let cam_args: Vec<&str> = cam_args.iter().map(String::as_str).collect();
    let mut camsim = spawn(&nvr, &cam_args, &dir.join("camsim.log"))?;
    let mut rec = String::new();
    for i in 1..=streams {
        rec.push_str(&format!("[[cameras]]\nname = \"cam{i}\"\nnode = \"node-a\"\n[cameras.streams.main]\nurl = \"rtsp://127.0.0.1:{cam_port}/cam{i}\"\n"));
    }
    let nodes = write_configs(dir, &data_a, &data_s, &rec)?;
    let mut recorder = nodes.run(&nvr, "node-a", &dir.join("rec.log"))?;
    let mut standby = nodes.start_standby(&agent, dir)?;
    let mut primary = nodes.start_primary(&agent, dir)?;
    std::thread::sleep(Duration::from_secs(8));
    let (p0, s0) = (cpu_ticks(primary.id()), cpu_ticks(standby.id()));
    let t0 = Instant::now();
    let (mut lag_ms, mut lag_bytes) = (Vec::new(), Vec::new());
    while t0.elapsed() < Duration::from_secs(seconds) {
        if let Ok(body) = std::fs::read(data_a.join("sync-status.json")) {
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                if let Some(m) = v["peers"]["standby-1"]["streams"].as_object() {
                    for s in m.values() {
                        lag_ms.push(s["lag_ms"].as_i64().unwrap_or(0));
                        lag_bytes.push(s["lag_bytes"].as_i64().unwrap_or(0));
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let wall = t0.elapsed().as_secs_f64();
    let (p1, s1) = (cpu_ticks(primary.id()), cpu_ticks(standby.id()));
    stop(&mut primary);
    stop(&mut standby);
    stop(&mut recorder);
    stop(&mut camsim);
    // The largest fragment recorded (the recorder sealed everything on stop).
    let mut max_fragment_bytes = 0u64;
    let store = store::Reader::open(&data_a, Arc::new(base::clock::SystemClock))?;
    for row in store
        .segments_in_state(store::SegmentState::Sealed)?
        .iter()
        .take(20)
    {
        if let Ok(scan) = store::mp4::scan_file(store.absolute_path(&row.path)) {
            for f in &scan.fragments {
                max_fragment_bytes = max_fragment_bytes.max(f.len);
            }
        }
    }
    lag_ms.sort_unstable();
    lag_bytes.sort_unstable();
    let pct = |v: &[i64], p: f64| {
        v.get(((v.len().max(1) - 1) as f64 * p).round() as usize)
            .copied()
            .unwrap_or(0)
    };
    let rate = if mbit > 0 {
        format!("{mbit} Mbit/s clip")
    } else {
        "embedded ~2 Mbit/s clip".to_owned()
    };
    println!(
        "{streams} streams (camsim 720p25, {rate}, 2 s GOP = one fragment; largest fragment {max_fragment_bytes} bytes), {seconds} s, {} samples",
        lag_ms.len()
    );
    println!(
        "lag ms    p50 {:6} p99 {:6} max {:6}",
        pct(&lag_ms, 0.5),
        pct(&lag_ms, 0.99),
        lag_ms.last().copied().unwrap_or(0)
    );
    println!(
        "lag bytes p50 {:6} p99 {:6} max {:6}",
        pct(&lag_bytes, 0.5),
        pct(&lag_bytes, 0.99),
        lag_bytes.last().copied().unwrap_or(0)
    );
    println!(
        "agent CPU % of a core: primary {:.1}, standby {:.1}",
        (p1 - p0) as f64 / wall,
        (s1 - s0) as f64 / wall
    );
    Ok(())
}

/// Peak and current resident memory of a process, in MiB (`VmHWM`, `VmRSS`).
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn status_json(data_dir: &Path) -> serde_json::Value {
    std::fs::read(data_dir.join("sync-status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Waits (polling every 20 ms, at most `limit`) until `ok`; the time it took.
fn time_until(limit: Duration, mut ok: impl FnMut() -> bool) -> Result<Duration> {
    let t0 = Instant::now();
    while !ok() {
        if t0.elapsed() > limit {
            bail!("not reached within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(t0.elapsed())
}

fn history(sizes: &[u64], restore_segments: u64, payload_kb: usize) -> Result<()> {
    let agent = bin("nvr-sync")?;
    println!(
        "| logged segments | build s | primary start to connected s | standby restart to reconnected s | RSS primary MiB (peak) | RSS standby MiB (peak) | log pages to restore s | restore {restore_segments} x {payload_kb} KiB: s, MB/s |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &count in sizes {
        let tmp = tempfile::tempdir()?;
        let dir = tmp.path();
        let (data_a, data_s) = (dir.join("a"), dir.join("s"));
        let nodes = write_configs(dir, &data_a, &data_s, "")?;
        let id_a = nvr_sync::identity::load(&dir.join("id-a"))?;
        let id_s = nvr_sync::identity::load(&dir.join("id-s"))?;
        let segment_ms = 60_000;
        let first_start_ms =
            chrono::Utc::now().timestamp_millis() - 3_600_000 - count as i64 * segment_ms;
        let h = nvr_sync::fixture::History {
            count,
            camera: "old".into(),
            first_start_ms,
            segment_ms,
            payload: (0..payload_kb * 1024).map(|i| (i % 251) as u8).collect(),
        };
        let t0 = Instant::now();
        nvr_sync::fixture::build(&h, &data_a, &id_a, &data_s, &id_s)?;
        let build_s = t0.elapsed().as_secs_f64();

        let connected = |v: &serde_json::Value| {
            v["peers"]["standby-1"]["connected"].as_bool() == Some(true)
                && v["peers"]["standby-1"]["last_head_size"].as_u64() >= Some(count)
        };
        let mut standby = nodes.start_standby(&agent, dir)?;
        let mut primary = nodes.start_primary(&agent, dir)?;
        let first = time_until(Duration::from_secs(600), || {
            connected(&status_json(&data_a))
        })?;
        // A reconnect: the standby restarts (the primary retries after at most its 5 s backoff).
        stop(&mut standby);
        time_until(Duration::from_secs(60), || {
            status_json(&data_a)["peers"]["standby-1"]["connected"].as_bool() == Some(false)
        })?;
        let mut standby2 = nodes.start_standby(&agent, dir)?;
        let again = time_until(Duration::from_secs(600), || {
            connected(&status_json(&data_a))
        })?;
        std::thread::sleep(Duration::from_secs(2));
        let (p_peak, p_now) = rss_mib(primary.id());
        let (s_peak, s_now) = rss_mib(standby2.id());
        stop(&mut primary);

        // Restore: the whole log in pages with nothing to fetch, then the last segments' files.
        let config = nodes.cluster.to_string_lossy().into_owned();
        let restore = |from_ms: i64, to_ms: i64| -> Result<(Duration, serde_json::Value)> {
            let t0 = Instant::now();
            let out = Command::new(&agent)
                .args(["restore", "--config", &config, "--node", "node-a"])
                .args([
                    "--from-ms",
                    &from_ms.to_string(),
                    "--to-ms",
                    &to_ms.to_string(),
                ])
                .env("RUST_LOG", "error")
                .output()?;
            if !out.status.success() {
                bail!("restore failed: {}", String::from_utf8_lossy(&out.stderr));
            }
            Ok((t0.elapsed(), serde_json::from_slice(&out.stdout)?))
        };
        let (log_only, _) = restore(0, 1)?;
        let k = restore_segments.min(count);
        let from_ms = first_start_ms + (count - k) as i64 * segment_ms;
        let store = store::Reader::open(&data_a, Arc::new(base::clock::SystemClock))?;
        let rows = store.segments_in_state(store::SegmentState::Sealed)?;
        for row in rows.iter().filter(|r| r.start_ms >= from_ms) {
            let _ = std::fs::remove_file(store.absolute_path(&row.path));
        }
        let (took, report) = restore(from_ms, i64::MAX)?;
        let bytes = report["bytes_fetched"].as_u64().unwrap_or(0);
        let restored = report["restored_damaged"].as_array().map_or(0, Vec::len);
        if restored as u64 != k {
            bail!("restored {restored} of {k}: {report}");
        }
        stop(&mut standby2);
        println!(
            "| {count} | {build_s:.1} | {:.2} | {:.2} | {p_now:.0} ({p_peak:.0}) | {s_now:.0} ({s_peak:.0}) | {:.2} | {:.2}, {:.0} |",
            first.as_secs_f64(),
            again.as_secs_f64(),
            log_only.as_secs_f64(),
            took.as_secs_f64(),
            bytes as f64 / 1e6 / took.as_secs_f64()
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    match Args::parse().command {
        Cmd::Throughput {
            total_mb,
            segment_mb,
            dir,
        } => throughput(total_mb, segment_mb, dir.as_deref()),
        Cmd::Lag {
            streams,
            seconds,
            mbit,
        } => lag(streams, seconds, mbit),
        Cmd::Tamper {
            runs,
            files,
            streams,
        } => tamper::run(runs, files, streams),
        Cmd::History {
            segments,
            restore_segments,
            payload_kb,
        } => history(&segments, restore_segments, payload_kb),
    }
}
