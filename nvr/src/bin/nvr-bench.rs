//! `nvr-bench`: the recorder against `ffmpeg -c copy -f segment` on the same looped RTSP streams, and the
//! recorder's shadow mode and live fan-out.
//!
//! The recorder's and the floor's thread counts are sampled with their memory (`Threads:` of
//! `/proc/PID/status`, peak over the window). At the end a summary table over every N is printed.
//!
//! For each stream count N: start `nvr camsim` with N streams (its own process, not measured; the
//! embedded clip, or with `--gop-s S` an ffmpeg-encoded 720p25 2 Mbit/s clip with an S-second GOP), then
//! in turn, each after a warm-up and for the same window:
//!
//! - **record**: the recorder records all N streams. CPU % of one core per stream (/proc utime+stime),
//!   memory per stream as PSS (`/proc/PID/smaps_rollup`, sampled every second: mean and peak) and peak
//!   RSS, frames lost counted exactly from camsim's frame stamps in the recorded segments.
//! - **floor**: `nvr floor` on the same configuration: the same RTSP sessions in the same runtime
//!   set-up, every frame depacketized and dropped (no writing, hashing, catalog or fan-out). Measured
//!   like the recorder; the recorder / floor CPU ratio is the cost of the recorder's own work.
//! - **hash floor** and **write floor** (`--floors`): the same sessions with every frame's bytes
//!   hashed (SHA-256), or appended through the store's segment writer and flushed by its grouped
//!   pass (`nvr floor --level`, nvr/src/floor.rs): what the evidence hash and the power-loss bound
//!   cost by themselves, so recorder / write floor is the cost of everything else the recorder does.
//! - **live** (`--live`): the same recorder with 16 subscribers on `cam1/main` through the control
//!   socket, then one subscriber on each of `cam1`..`cam16`: latency of every received fragment (arrival
//!   wall time − the frame's stamped send time, p50/p99/max) and the recorder's CPU with subscribers.
//! - **shadow** (`--shadow`): a fresh recorder with every stream `record = false`, switched to shadow
//!   through the control socket: CPU and PSS per stream.
//! - **ffmpeg**: N `ffmpeg -c copy -f segment` processes: CPU, PSS (summed) and peak RSS (summed), frames
//!   lost by packet count (ffprobe).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;
use nvr::floor::FloorLevel;

#[derive(Parser)]
#[command(
    about = "Benchmark: nvr recorder vs ffmpeg segmenter on N looped RTSP streams; shadow mode; live fan-out"
)]
struct Args {
    /// Stream counts to run, comma-separated.
    #[arg(long, default_value = "10,50,100,200", value_delimiter = ',')]
    streams: Vec<usize>,
    /// Measurement window per system and stream count.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Warm-up before the window (connections, first key frames).
    #[arg(long, default_value_t = 8)]
    warmup_seconds: u64,
    /// Serve an ffmpeg-encoded 720p25 clip (2 Mbit/s) with a GOP of this many seconds instead of the
    /// embedded clip.
    #[arg(long)]
    gop_s: Option<u32>,
    /// Also measure shadow mode: every stream `record = false`, switched to shadow over the control socket.
    #[arg(long)]
    shadow: bool,
    /// Also measure live fan-out: 16 subscribers on one stream, then one on each of 16 streams.
    #[arg(long)]
    live: bool,
    /// glibc malloc arenas of the recorder (`MALLOC_ARENA_MAX`, as `systemd/nvr.service` sets it); 0
    /// leaves glibc's default (8 per core).
    #[arg(long, default_value_t = 2)]
    malloc_arena_max: u32,
    /// Skip the floors (`nvr floor`).
    #[arg(long)]
    no_floor: bool,
    /// Floors to measure after the recorder, in this order (`nvr floor --level`): `receive` (frames
    /// dropped), `hash` (SHA-256 of every byte), `write` (appended and flushed by the store's writer).
    #[arg(
        long,
        value_enum,
        default_value = "receive,hash,write",
        value_delimiter = ','
    )]
    floors: Vec<FloorLevel>,
    /// CPU seconds per byte of SHA-256 on this machine, measured at the start ([`sha256_cpu_s_per_byte`]).
    #[arg(skip)]
    sha256_cpu_s_per_byte: f64,
    /// Skip the ffmpeg peer (recorder figures only).
    #[arg(long)]
    no_ffmpeg: bool,
    /// Work directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

const FPS: u32 = 25;
/// Live subscribers per fan-out case.
const LIVE_SUBSCRIBERS: usize = 16;

fn clk_tck() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// utime + stime of a process (and its reaped children), in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let after = stat
        .rsplit_once(')')
        .map(|(_, a)| a)
        .context("bad /proc stat")?;
    let f: Vec<&str> = after.split_whitespace().collect();
    // Fields after the command: state is index 0; utime is field 14 overall -> index 11 here.
    let utime: u64 = f.get(11).context("utime")?.parse()?;
    let stime: u64 = f.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

/// Peak resident set (VmHWM) in KiB.
fn peak_rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    for line in status.lines() {
        if let Some(v) = line.strip_prefix("VmHWM:") {
            return Ok(v.trim().trim_end_matches("kB").trim().parse()?);
        }
    }
    bail!("no VmHWM for {pid}")
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn nvr_bin() -> Result<PathBuf> {
    let me = std::env::current_exe()?;
    let dir = me.parent().context("exe dir")?;
    let p = dir.join("nvr");
    if !p.exists() {
        bail!(
            "{} not found (build the nvr binary first: cargo build --release)",
            p.display()
        );
    }
    Ok(p)
}

fn wait_exit(child: &mut Child, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn count_packets(path: &Path) -> u64 {
    Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_packets",
            "-show_entries",
            "stream=nb_read_packets",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Threads of a process (`Threads:` of /proc/PID/status); 0 if the process is gone.
fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Threads:")
                    .and_then(|v| v.trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// Proportional set size (`Pss:` of /proc/PID/smaps_rollup) in KiB; 0 if the process is gone.
fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Pss:")
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            })
        })
        .unwrap_or(0)
}

/// What one window measured over a set of processes.
struct Window {
    cpu_pct_per_stream: f64,
    /// Total CPU of the processes, % of one core.
    cpu_pct: f64,
    pss_mean_kib: f64,
    pss_peak_kib: u64,
    rss_peak_kib: u64,
    /// Peak thread count, summed over the processes.
    threads_peak: u64,
    /// The machine's 1-minute load average at the window's end (other work on the shared machine).
    load_1m: f64,
}

/// The 1-minute load average (`/proc/loadavg`).
fn load_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Measures `pids` for `seconds`: CPU from utime+stime, PSS summed over the processes once a second.
fn measure(pids: &[u32], seconds: u64, n: usize) -> Window {
    let ticks = |pids: &[u32]| -> u64 { pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).sum() };
    let c0 = ticks(pids);
    let t0 = Instant::now();
    let (mut sum, mut peak, mut samples, mut threads_peak) = (0u64, 0u64, 0u64, 0u64);
    let end = t0 + Duration::from_secs(seconds);
    while Instant::now() < end {
        std::thread::sleep(
            Duration::from_secs(1).min(end.saturating_duration_since(Instant::now())),
        );
        let pss: u64 = pids.iter().map(|p| pss_kib(*p)).sum();
        sum += pss;
        peak = peak.max(pss);
        samples += 1;
        threads_peak = threads_peak.max(pids.iter().map(|p| threads(*p)).sum());
    }
    let c1 = ticks(pids);
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_pct = (c1.saturating_sub(c0)) as f64 / clk_tck() / wall_s * 100.0;
    Window {
        cpu_pct_per_stream: cpu_pct / n as f64,
        cpu_pct,
        pss_mean_kib: sum as f64 / samples.max(1) as f64,
        pss_peak_kib: peak,
        rss_peak_kib: pids.iter().map(|p| peak_rss_kib(*p).unwrap_or(0)).sum(),
        threads_peak,
        load_1m: load_1m(),
    }
}

/// CPU seconds that SHA-256 (ring, the segment hash) takes per byte on this machine: 1 GiB hashed in
/// 64 KiB pieces on this thread, timed by this process's CPU clock ticks (the benchmark's other
/// threads are idle meanwhile), so the load of other processes does not inflate it.
fn sha256_cpu_s_per_byte() -> f64 {
    const BYTES: usize = 1 << 30;
    let piece = vec![0x5au8; 64 << 10];
    let pid = std::process::id();
    let c0 = cpu_ticks(pid).unwrap_or(0);
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    for _ in 0..BYTES / piece.len() {
        hash.update(&piece);
    }
    std::hint::black_box(hash.finish());
    let c1 = cpu_ticks(pid).unwrap_or(0);
    (c1.saturating_sub(c0)) as f64 / clk_tck() / BYTES as f64
}

/// `key=` value of a floor's summary line.
fn summary_count(summary: &str, key: &str) -> Option<u64> {
    summary
        .split_whitespace()
        .find_map(|f| f.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// Frames of the recorded streams, from camsim's stamps in every segment.
#[derive(Default)]
struct Frames {
    /// Frames in the recorded sequence ranges (recorded + missing).
    expected: u64,
    missing: u64,
    duplicated: u64,
    unstamped: u64,
}

fn write_config(dir: &Path, data: &Path, port: u16, n: usize, record: bool) -> Result<PathBuf> {
    let mut cfg = format!(
        "[recording]\nsegment_duration_s = 60\n[retention]\nmin_free_bytes = 0\n\
         [[nodes]]\nname = \"bench\"\nrole = \"primary\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    for i in 1..=n {
        cfg.push_str(&format!(
            "[[cameras]]\nname = \"cam{i}\"\nnode = \"bench\"\n[cameras.streams.main]\n\
             url = \"rtsp://127.0.0.1:{port}/cam{i}\"\nrecord = {record}\n"
        ));
    }
    let path = dir.join(if record {
        "nvr.toml"
    } else {
        "nvr-shadow.toml"
    });
    std::fs::write(&path, cfg)?;
    Ok(path)
}

struct Recorder {
    child: Child,
    data: PathBuf,
}

impl Recorder {
    fn start(
        nvr: &Path,
        dir: &Path,
        name: &str,
        port: u16,
        n: usize,
        record: bool,
        arena_max: u32,
    ) -> Result<Self> {
        let data = dir.join(format!("{name}-data"));
        if data.exists() {
            // A reused work directory: start from an empty store (camsim's sequence numbers restart).
            std::fs::remove_dir_all(&data)?;
        }
        std::fs::create_dir_all(&data)?;
        let cfg = write_config(dir, &data, port, n, record)?;
        let log = std::fs::File::create(dir.join(format!("{name}.log")))?;
        let mut cmd = Command::new(nvr);
        if arena_max > 0 {
            cmd.env("MALLOC_ARENA_MAX", arena_max.to_string());
        }
        let child = cmd
            .args(["run", "--config"])
            .arg(&cfg)
            .args(["--node", "bench"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        Ok(Recorder { child, data })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn socket(&self) -> PathBuf {
        self.data.join("control.sock")
    }

    fn wait_socket(&self) -> Result<()> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(30) {
            if UnixStream::connect(self.socket()).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "no control socket at {} after 30 s",
            self.socket().display()
        )
    }

    fn stop(mut self) -> Result<PathBuf> {
        signal(self.pid(), "-TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(60)) {
            let _ = self.child.kill();
            bail!("recorder did not stop within 60 s of SIGTERM");
        }
        Ok(self.data)
    }
}

/// `nvr floor` on the recorder's configuration: the same sessions, every frame dropped, hashed or
/// written (`level`).
struct Floor {
    child: Child,
    out: PathBuf,
    data: PathBuf,
}

impl Floor {
    fn start(
        nvr: &Path,
        dir: &Path,
        port: u16,
        n: usize,
        arena_max: u32,
        level: FloorLevel,
    ) -> Result<Self> {
        let data = dir.join("floor-data");
        if data.exists() {
            std::fs::remove_dir_all(&data)?;
        }
        std::fs::create_dir_all(&data)?;
        let cfg = write_config(dir, &data, port, n, true)?;
        let out = dir.join("floor.out");
        let mut cmd = Command::new(nvr);
        if arena_max > 0 {
            cmd.env("MALLOC_ARENA_MAX", arena_max.to_string());
        }
        let child = cmd
            .args(["floor", "--config"])
            .arg(&cfg)
            .args(["--node", "bench", "--level", floor_name(level)])
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create(&out)?)
            .stderr(std::fs::File::create(dir.join("floor.log"))?)
            .spawn()?;
        Ok(Floor { child, out, data })
    }

    /// Stops the floor and returns its summary line (`floor: sessions=… video_frames=…`).
    fn stop(mut self) -> Result<String> {
        signal(self.child.id(), "-TERM");
        if !wait_exit(&mut self.child, Duration::from_secs(30)) {
            let _ = self.child.kill();
            bail!("nvr floor did not stop within 30 s of SIGTERM");
        }
        // A write floor's segments go, as the recorder's do.
        std::fs::remove_dir_all(&self.data)?;
        Ok(std::fs::read_to_string(&self.out)?.trim().to_owned())
    }
}

/// Counts frames exactly: per stream, the stamps of every recorded sample (`nvr::frames::list`).
fn recorded_frames(data: &Path, n: usize) -> Result<Frames> {
    let store = store::Reader::open(data, Arc::new(base::clock::SystemClock))?;
    let streams = store.streams()?;
    if streams.len() != n {
        bail!("recorder registered {} of {n} streams", streams.len());
    }
    let mut f = Frames::default();
    for s in streams {
        let mut frames = Vec::new();
        for seg in store.segments_in_range(s.id, 0, i64::MAX)? {
            frames.extend(nvr::frames::list(&data.join(&seg.path))?);
        }
        let sum = nvr::frames::summarize(&frames);
        f.expected += sum.count - sum.unstamped + sum.missing;
        f.missing += sum.missing;
        f.duplicated += sum.duplicated;
        f.unstamped += sum.unstamped;
    }
    Ok(f)
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut v = (body.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body)?;
    Ok(body)
}

/// Sends one request over the control socket and returns the `result` (an error if refused).
fn control(socket: &Path, request: &serde_json::Value) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(35)))?;
    s.write_all(&framed(&serde_json::to_vec(request)?))?;
    let answer: serde_json::Value = serde_json::from_slice(&read_frame(&mut s)?)?;
    if answer["ok"] != true {
        bail!("{request} refused: {answer}");
    }
    Ok(answer["result"].clone())
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// What one live subscriber saw while `recording` was set.
#[derive(Default)]
struct LiveSeen {
    latencies_us: Vec<i64>,
    /// Sequence numbers skipped between consecutive fragments.
    skipped: u64,
}

/// A live subscriber on `stream`: reads fragments until `stop`; records the latency of each fragment
/// received while `recording` is set.
fn subscriber(
    socket: PathBuf,
    stream: String,
    recording: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
) -> Result<LiveSeen> {
    let mut s = UnixStream::connect(&socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(&framed(
        serde_json::json!({"op": "live", "stream": stream})
            .to_string()
            .as_bytes(),
    ))?;
    let answer: serde_json::Value = serde_json::from_slice(&read_frame(&mut s)?)?;
    if answer["ok"] != true {
        bail!("live {stream} refused: {answer}");
    }
    let mut seen = LiveSeen::default();
    let mut last_seq = None;
    while !stop.load(Ordering::Relaxed) {
        let chunk = read_frame(&mut s).with_context(|| format!("live {stream}"))?;
        let arrival_us = now_us();
        if chunk.get(4..8) != Some(b"moof") {
            continue;
        }
        let moof_bytes = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) as usize;
        let Some(stamp) = chunk
            .get(moof_bytes + 8..)
            .and_then(camsim::stamp::find_in_length_prefixed)
        else {
            continue;
        };
        if recording.load(Ordering::Relaxed) {
            seen.latencies_us
                .push(arrival_us - stamp.send_time_us as i64);
            if let Some(prev) = last_seq {
                seen.skipped += stamp.seq.saturating_sub(prev + 1);
            }
        }
        last_seq = Some(stamp.seq);
    }
    Ok(seen)
}

/// Live latencies and the recorder's CPU over one window with `streams` subscribed.
struct LiveFigures {
    window: Window,
    fragments: usize,
    skipped: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

fn run_live(rec: &Recorder, streams: &[String], n: usize, args: &Args) -> Result<LiveFigures> {
    let recording = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = streams
        .iter()
        .map(|st| {
            let (sock, st, r, s) = (rec.socket(), st.clone(), recording.clone(), stop.clone());
            std::thread::spawn(move || subscriber(sock, st, r, s))
        })
        .collect();
    std::thread::sleep(Duration::from_secs(args.warmup_seconds));
    recording.store(true, Ordering::Relaxed);
    let window = measure(&[rec.pid()], args.seconds, n);
    recording.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    let mut skipped = 0;
    for h in handles {
        let seen = h
            .join()
            .map_err(|_| anyhow::anyhow!("subscriber panicked"))??;
        all.extend(seen.latencies_us);
        skipped += seen.skipped;
    }
    if all.is_empty() {
        bail!("no live fragment received");
    }
    all.sort_unstable();
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    Ok(LiveFigures {
        window,
        fragments: all.len(),
        skipped,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
    })
}

struct FfmpegFigures {
    window: Window,
    expected: u64,
    lost: u64,
}

fn run_ffmpeg(dir: &Path, port: u16, n: usize, args: &Args) -> Result<FfmpegFigures> {
    let out = dir.join("ffmpeg-out");
    std::fs::create_dir_all(&out)?;
    let mut children = Vec::new();
    for i in 1..=n {
        let log = std::fs::File::create(out.join(format!("cam{i}.log")))?;
        let child = Command::new("ffmpeg")
            .args([
                "-nostdin",
                "-loglevel",
                "error",
                "-rtsp_transport",
                "tcp",
                "-i",
            ])
            .arg(format!("rtsp://127.0.0.1:{port}/cam{i}"))
            .args(["-c", "copy", "-f", "segment", "-segment_time", "60"])
            .args(["-reset_timestamps", "1"])
            .arg(out.join(format!("cam{i}_%03d.mp4")))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting ffmpeg (is it installed?)")?;
        children.push(child);
    }
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(args.warmup_seconds));
    let pids: Vec<u32> = children.iter().map(|c| c.id()).collect();
    let window = measure(&pids, args.seconds, n);
    let total_s = started.elapsed().as_secs_f64();
    for p in &pids {
        signal(*p, "-INT");
    }
    for c in &mut children {
        if !wait_exit(c, Duration::from_secs(30)) {
            let _ = c.kill();
        }
    }
    let (mut expected, mut lost) = (0u64, 0u64);
    for i in 1..=n {
        let mut got = 0;
        for e in std::fs::read_dir(&out)? {
            let p = e?.path();
            let name = p.file_name().and_then(|s| s.to_str()).unwrap_or("");
            if name.starts_with(&format!("cam{i}_")) && name.ends_with(".mp4") {
                got += count_packets(&p);
            }
        }
        // ffmpeg ran for total_s; it can only have recorded frames sent while it was connected, and
        // connecting takes under a second on loopback.
        let exp = ((total_s - 1.0).max(0.0) * f64::from(FPS)) as u64;
        expected += exp;
        lost += exp.saturating_sub(got);
    }
    for e in std::fs::read_dir(&out)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "mp4") {
            std::fs::remove_file(&p)?;
        }
    }
    Ok(FfmpegFigures {
        window,
        expected,
        lost,
    })
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

fn print_window(label: &str, n: usize, w: &Window, extra: &str) {
    println!(
        "  {label:<16} cpu {:>6.3} %/stream ({:>6.1} % total)  PSS/stream mean {:>6.3} MiB, peak {:>6.3} MiB  \
         (total mean {:>7.1} MiB)  peak RSS {:>8.1} MiB  threads {:>4}  load {:.2}{extra}",
        w.cpu_pct_per_stream,
        w.cpu_pct,
        mib(w.pss_mean_kib) / n as f64,
        mib(w.pss_peak_kib as f64) / n as f64,
        mib(w.pss_mean_kib),
        mib(w.rss_peak_kib as f64),
        w.threads_peak,
        w.load_1m,
    );
}

/// Encodes the `--gop-s` clip (720p25, 2 Mbit/s) into `work`, once.
fn encode_clip(work: &Path, gop_s: u32) -> Result<PathBuf> {
    let out = work.join(format!("clip-gop{gop_s}s.h264"));
    if !out.exists() {
        let seconds = (5 * gop_s).max(10);
        let status = camsim::ffmpeg_clip_command(&out, (1280, 720), seconds, gop_s * FPS, Some(2))
            .status()
            .context("running ffmpeg to encode the clip")?;
        if !status.success() {
            bail!("ffmpeg could not encode the clip: {status}");
        }
    }
    Ok(out)
}

fn run_count(
    nvr: &Path,
    work: &Path,
    clip: Option<&Path>,
    n: usize,
    args: &Args,
) -> Result<Summary> {
    let dir = work.join(format!("n{n}"));
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let mut cmd = Command::new(nvr);
    cmd.args(["camsim", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--streams", &n.to_string()]);
    if let Some(clip) = clip {
        cmd.arg("--clip")
            .arg(clip)
            .args(["--fps", &FPS.to_string()]);
    }
    let mut sim = cmd
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("camsim.log"))?)
        .spawn()?;
    std::thread::sleep(Duration::from_millis(500));
    let result = run_systems(nvr, &dir, port, n, args);
    signal(sim.id(), "-TERM");
    wait_exit(&mut sim, Duration::from_secs(10));
    result
}

/// One stream count's figures for the summary table.
struct Summary {
    n: usize,
    record: Window,
    frames: Frames,
    /// The floors measured, in `--floors` order.
    floors: Vec<(FloorLevel, Window)>,
    /// SHA-256 of the receive floor's bytes at [`sha256_cpu_s_per_byte`], % of a core per stream.
    hash_pct_per_stream: Option<f64>,
    ffmpeg_cpu_pct_per_stream: Option<f64>,
}

fn run_systems(nvr: &Path, dir: &Path, port: u16, n: usize, args: &Args) -> Result<Summary> {
    println!("N = {n} streams:");
    // Record mode, then live fan-out on the same recorder.
    let rec = Recorder::start(nvr, dir, "nvr", port, n, true, args.malloc_arena_max)?;
    std::thread::sleep(Duration::from_secs(args.warmup_seconds));
    let record = measure(&[rec.pid()], args.seconds, n);
    let mut live = Vec::new();
    if args.live {
        let one = vec!["cam1/main".to_owned(); LIVE_SUBSCRIBERS];
        live.push(("16 on cam1", run_live(&rec, &one, n, args)));
        if n >= LIVE_SUBSCRIBERS {
            let spread: Vec<String> = (1..=LIVE_SUBSCRIBERS)
                .map(|i| format!("cam{i}/main"))
                .collect();
            live.push(("1 on each of 16", run_live(&rec, &spread, n, args)));
        }
    }
    let data = rec.stop()?;
    let frames = recorded_frames(&data, n)?;
    // Counted: the recordings go, so a run needs the disk of one system's window, not of all of them.
    std::fs::remove_dir_all(&data)?;
    print_window(
        "nvr record",
        n,
        &record,
        &format!(
            "  frames lost {} / {} (duplicated {}, unstamped {})",
            frames.missing, frames.expected, frames.duplicated, frames.unstamped
        ),
    );
    for (label, l) in live {
        let l = l?;
        print_window(
            &format!("nvr live {label}"),
            n,
            &l.window,
            &format!(
                "  latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} fragments ({} skipped)",
                l.p50_ms, l.p99_ms, l.max_ms, l.fragments, l.skipped
            ),
        );
    }

    let mut floors = Vec::new();
    let mut hash_pct_per_stream = None;
    let levels: &[FloorLevel] = if args.no_floor { &[] } else { &args.floors };
    for &level in levels {
        let started = Instant::now();
        let floor = Floor::start(nvr, dir, port, n, args.malloc_arena_max, level)?;
        std::thread::sleep(Duration::from_secs(args.warmup_seconds));
        let w = measure(&[floor.child.id()], args.seconds, n);
        let received = floor.stop()?;
        let name = floor_name(level);
        print_window(&format!("floor {name}"), n, &w, &format!("  {received}"));
        println!(
            "  ratio record / {name} floor (same run): cpu {:.2}",
            record.cpu_pct_per_stream / w.cpu_pct_per_stream.max(1e-9)
        );
        if level == FloorLevel::Receive {
            // What hashing every received byte costs by itself, from the bytes this floor received.
            let bytes_per_s_per_stream = summary_count(&received, "video_bytes").unwrap_or(0)
                as f64
                / started.elapsed().as_secs_f64()
                / n as f64;
            let pct = bytes_per_s_per_stream * args.sha256_cpu_s_per_byte * 100.0;
            println!(
                "  SHA-256 of every received byte ({:.0} kB/s per stream, hashed at {:.0} MB/s): \
                 {pct:.4} %/stream = {:.2} × the receive floor",
                bytes_per_s_per_stream / 1e3,
                1e-6 / args.sha256_cpu_s_per_byte.max(1e-15),
                pct / w.cpu_pct_per_stream.max(1e-9)
            );
            hash_pct_per_stream = Some(pct);
        }
        floors.push((level, w));
    }

    let shadow = if args.shadow {
        let rec = Recorder::start(
            nvr,
            dir,
            "nvr-shadow",
            port,
            n,
            false,
            args.malloc_arena_max,
        )?;
        rec.wait_socket()?;
        for i in 1..=n {
            control(
                &rec.socket(),
                &serde_json::json!({"op": "start", "stream": format!("cam{i}/main"), "mode": "shadow"}),
            )?;
        }
        std::thread::sleep(Duration::from_secs(args.warmup_seconds));
        let status = control(&rec.socket(), &serde_json::json!({"op": "status"}))?;
        let shadowing = status
            .as_array()
            .map(|a| a.iter().filter(|s| s["state"] == "shadowing").count())
            .unwrap_or(0);
        let w = measure(&[rec.pid()], args.seconds, n);
        rec.stop()?;
        print_window(
            "nvr shadow",
            n,
            &w,
            &format!("  {shadowing} of {n} streams shadowing at the window's start"),
        );
        Some(w)
    } else {
        None
    };

    let mut ffmpeg_cpu_pct_per_stream = None;
    if !args.no_ffmpeg {
        let ff = run_ffmpeg(dir, port, n, args)?;
        ffmpeg_cpu_pct_per_stream = Some(ff.window.cpu_pct_per_stream);
        print_window(
            "ffmpeg",
            n,
            &ff.window,
            &format!("  frames lost {} / {} (packet count)", ff.lost, ff.expected),
        );
        let cpu = |w: &Window| w.cpu_pct_per_stream / ff.window.cpu_pct_per_stream.max(1e-9);
        let pss = |w: &Window| w.pss_mean_kib / ff.window.pss_mean_kib.max(1e-9);
        print!(
            "  ratios to ffmpeg (same run): record cpu {:.2}, PSS {:.3}",
            cpu(&record),
            pss(&record)
        );
        if let Some(s) = &shadow {
            print!("; shadow cpu {:.2}, PSS {:.3}", cpu(s), pss(s));
        }
        println!();
    }
    Ok(Summary {
        n,
        record,
        frames,
        floors,
        hash_pct_per_stream,
        ffmpeg_cpu_pct_per_stream,
    })
}

/// `nvr floor --level` value of `level`.
fn floor_name(level: FloorLevel) -> &'static str {
    match level {
        FloorLevel::Receive => "receive",
        FloorLevel::Hash => "hash",
        FloorLevel::Write => "write",
    }
}

/// The summary over every stream count, as a Markdown table (`docs/performance.md`). "floor" is the
/// receive floor; the hash and write floors are given as ratios to it, and the recorder against the
/// write floor.
fn print_summary(rows: &[Summary]) {
    println!(
        "\n| streams | recorder CPU %/stream | floor CPU %/stream | recorder / floor | SHA-256 alone / floor | hash floor / floor | \
         write floor / floor | recorder / write floor | ffmpeg CPU %/stream | recorder / ffmpeg | \
         recorder PSS MiB/stream mean (peak) | MB/stream | recorder threads (peak) | floor threads | \
         frames lost (exact) | load (1 min) |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let opt =
        |v: Option<f64>, digits: usize| v.map_or("–".to_owned(), |v| format!("{v:.digits$}"));
    for r in rows {
        let rec = r.record.cpu_pct_per_stream;
        let level = |l: FloorLevel| r.floors.iter().find(|(f, _)| *f == l).map(|(_, w)| w);
        let cpu = |l: FloorLevel| level(l).map(|w| w.cpu_pct_per_stream.max(1e-9));
        let floor = cpu(FloorLevel::Receive);
        let to_floor = |l: FloorLevel| cpu(l).zip(floor).map(|(c, f)| c / f);
        let pss_mib = mib(r.record.pss_mean_kib) / r.n as f64;
        println!(
            "| {} | {:.3} | {} | {} | {} | {} | {} | {} | {} | {} | {:.3} ({:.3}) | {:.3} | {} | {} | {} / {} | {:.2} |",
            r.n,
            rec,
            opt(floor, 3),
            opt(floor.map(|f| rec / f), 2),
            opt(r.hash_pct_per_stream.zip(floor).map(|(h, f)| h / f), 2),
            opt(to_floor(FloorLevel::Hash), 2),
            opt(to_floor(FloorLevel::Write), 2),
            opt(cpu(FloorLevel::Write).map(|w| rec / w), 2),
            opt(r.ffmpeg_cpu_pct_per_stream, 3),
            opt(r.ffmpeg_cpu_pct_per_stream.map(|f| rec / f.max(1e-9)), 2),
            pss_mib,
            mib(r.record.pss_peak_kib as f64) / r.n as f64,
            pss_mib * 1.048_576,
            r.record.threads_peak,
            level(FloorLevel::Receive).map_or("–".to_owned(), |w| w.threads_peak.to_string()),
            r.frames.missing,
            r.frames.expected,
            r.record.load_1m,
        );
    }
}

fn main() -> Result<()> {
    let mut args = Args::parse();
    args.sha256_cpu_s_per_byte = sha256_cpu_s_per_byte();
    let nvr = nvr_bin()?;
    let tmp;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    std::fs::create_dir_all(&work)?;
    let clip = match args.gop_s {
        Some(g) => Some(encode_clip(&work, g)?),
        None => None,
    };
    println!(
        "nvr-bench: {} s windows after {} s warm-ups; clip {}; recorder MALLOC_ARENA_MAX {}; CPU in % of one core; PSS sampled every second \
         (summed over processes for ffmpeg); RSS = peak (summed for ffmpeg)",
        args.seconds,
        args.warmup_seconds,
        match args.gop_s {
            Some(g) => format!("720p25 2 Mbit/s, {g} s GOP"),
            None => "embedded".to_owned(),
        },
        match args.malloc_arena_max {
            0 => "unset".to_owned(),
            a => a.to_string(),
        }
    );
    println!(
        "SHA-256 (ring) on this machine: {:.0} MB/s of one core's time",
        1e-6 / args.sha256_cpu_s_per_byte.max(1e-15)
    );
    let mut rows = Vec::new();
    for &n in &args.streams {
        rows.push(run_count(&nvr, &work, clip.as_deref(), n, &args)?);
    }
    print_summary(&rows);
    Ok(())
}
