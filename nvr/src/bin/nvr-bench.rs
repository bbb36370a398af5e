//! `nvr-bench`: recorder against `ffmpeg -c copy -f segment` on the same looped RTSP streams.
//!
//! For each stream count N: start `nvr camsim` with N streams (its own process, not measured), then run
//! the recorder for the measurement window and, after it, N `ffmpeg` processes for the same window. Prints
//! per system: CPU % of one core per stream (from /proc utime+stime over the window), peak RSS, and frames
//! lost (frames the simulator sent at 25 fps over each stream's recorded span that are not in the output).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(about = "Benchmark: nvr recorder vs ffmpeg segmenter on N looped RTSP streams")]
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
    /// Skip the ffmpeg peer (recorder figures only).
    #[arg(long)]
    no_ffmpeg: bool,
    /// Work directory (default: a fresh temporary directory, removed afterwards).
    #[arg(long)]
    work_dir: Option<PathBuf>,
}

const FPS: f64 = 25.0;

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

struct Figures {
    cpu_pct_per_stream: f64,
    rss_mib: f64,
    frames_expected: u64,
    frames_lost: u64,
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

fn run_recorder(nvr: &Path, dir: &Path, port: u16, n: usize, args: &Args) -> Result<Figures> {
    let data = dir.join("nvr-data");
    std::fs::create_dir_all(&data)?;
    let mut cfg = format!(
        "[recording]\nsegment_duration_s = 60\n[retention]\nmin_free_bytes = 0\n\
         [[nodes]]\nname = \"bench\"\nrole = \"primary\"\ndata_dir = \"{}\"\n",
        data.display()
    );
    for i in 1..=n {
        cfg.push_str(&format!(
            "[[cameras]]\nname = \"cam{i}\"\nnode = \"bench\"\n[cameras.streams.main]\nurl = \"rtsp://127.0.0.1:{port}/cam{i}\"\n"
        ));
    }
    let cfg_path = dir.join("nvr.toml");
    std::fs::write(&cfg_path, cfg)?;
    let log = std::fs::File::create(dir.join("nvr.log"))?;
    let mut child = Command::new(nvr)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .args(["--node", "bench"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()?;
    let pid = child.id();
    std::thread::sleep(Duration::from_secs(args.warmup_seconds));
    let c0 = cpu_ticks(pid)?;
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    let c1 = cpu_ticks(pid)?;
    let wall_s = t0.elapsed().as_secs_f64();
    let rss_kib = peak_rss_kib(pid)?;
    signal(pid, "-TERM");
    if !wait_exit(&mut child, Duration::from_secs(60)) {
        let _ = child.kill();
        bail!("recorder did not stop within 60 s of SIGTERM");
    }
    // Frames from the catalog: per stream, frames recorded vs frames sent over the recorded span.
    let store = store::Reader::open(&data, std::sync::Arc::new(base::clock::SystemClock))?;
    let (mut expected, mut lost) = (0u64, 0u64);
    let streams = store.streams()?;
    if streams.len() != n {
        bail!("recorder registered {} of {n} streams", streams.len());
    }
    for s in streams {
        let segs = store.segments_in_range(s.id, 0, i64::MAX)?;
        let (Some(first), Some(last)) = (segs.first(), segs.last()) else {
            expected += ((args.seconds + args.warmup_seconds) as f64 * FPS) as u64;
            lost += ((args.seconds + args.warmup_seconds) as f64 * FPS) as u64;
            continue;
        };
        let span_frames = ((last.end_ms - first.start_ms) as f64 / 1000.0 * FPS).round() as u64;
        let got: u64 = segs.iter().map(|s| s.frames.max(0) as u64).sum();
        expected += span_frames;
        lost += span_frames.saturating_sub(got);
    }
    Ok(Figures {
        cpu_pct_per_stream: (c1 - c0) as f64 / clk_tck() / wall_s * 100.0 / n as f64,
        rss_mib: rss_kib as f64 / 1024.0,
        frames_expected: expected,
        frames_lost: lost,
    })
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

fn run_ffmpeg(dir: &Path, port: u16, n: usize, args: &Args) -> Result<Figures> {
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
            .args([
                "-c",
                "copy",
                "-f",
                "segment",
                "-segment_time",
                "60",
                "-reset_timestamps",
                "1",
            ])
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
    let c0: u64 = pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).sum();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds));
    let c1: u64 = pids.iter().map(|p| cpu_ticks(*p).unwrap_or(0)).sum();
    let wall_s = t0.elapsed().as_secs_f64();
    let rss_kib: u64 = pids.iter().map(|p| peak_rss_kib(*p).unwrap_or(0)).sum();
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
        let exp = ((total_s - 1.0).max(0.0) * FPS) as u64;
        expected += exp;
        lost += exp.saturating_sub(got);
    }
    Ok(Figures {
        cpu_pct_per_stream: (c1 - c0) as f64 / clk_tck() / wall_s * 100.0 / n as f64,
        rss_mib: rss_kib as f64 / 1024.0,
        frames_expected: expected,
        frames_lost: lost,
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    let nvr = nvr_bin()?;
    let tmp;
    let work = match &args.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = tempfile::tempdir()?;
            tmp.path().to_owned()
        }
    };
    println!(
        "nvr-bench: {} s window after {} s warm-up; CPU in % of one core per stream; RSS = peak (sum over processes for ffmpeg)",
        args.seconds, args.warmup_seconds
    );
    println!(
        "{:>7}  {:>10} {:>9} {:>12}  {:>10} {:>9} {:>12}  {:>9}",
        "streams",
        "nvr cpu%",
        "nvr MiB",
        "nvr lost",
        "ffm cpu%",
        "ffm MiB",
        "ffm lost",
        "cpu ratio"
    );
    for &n in &args.streams {
        let dir = work.join(format!("n{n}"));
        std::fs::create_dir_all(&dir)?;
        let port = free_port()?;
        let mut sim = Command::new(&nvr)
            .args([
                "camsim",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--streams",
                &n.to_string(),
            ])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("camsim.log"))?)
            .spawn()?;
        std::thread::sleep(Duration::from_millis(500));
        let rec = run_recorder(&nvr, &dir, port, n, &args);
        let ff = if args.no_ffmpeg {
            None
        } else {
            Some(run_ffmpeg(&dir, port, n, &args))
        };
        signal(sim.id(), "-TERM");
        wait_exit(&mut sim, Duration::from_secs(10));
        let rec = rec?;
        match ff {
            Some(ff) => {
                let ff = ff?;
                println!(
                    "{n:>7}  {:>10.3} {:>9.1} {:>5}/{:<6}  {:>10.3} {:>9.1} {:>5}/{:<6}  {:>9.2}",
                    rec.cpu_pct_per_stream,
                    rec.rss_mib,
                    rec.frames_lost,
                    rec.frames_expected,
                    ff.cpu_pct_per_stream,
                    ff.rss_mib,
                    ff.frames_lost,
                    ff.frames_expected,
                    rec.cpu_pct_per_stream / ff.cpu_pct_per_stream.max(1e-9)
                );
            }
            None => println!(
                "{n:>7}  {:>10.3} {:>9.1} {:>5}/{:<6}",
                rec.cpu_pct_per_stream, rec.rss_mib, rec.frames_lost, rec.frames_expected
            ),
        }
    }
    Ok(())
}
