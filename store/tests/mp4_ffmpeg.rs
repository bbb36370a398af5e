//! End-to-end checks of `store::mp4` against the real `ffmpeg`/`ffprobe` (`/usr/bin`, required: these
//! tests fail if they are missing).
//!
//! Scaffolding: ffmpeg encodes a 3 s 320x240 25 fps H.264 Annex-B clip (GOP 25, no B-frames) and a
//! 3 s AAC ADTS tone; the test splits the H.264 into access units, builds `avcC`/`avc1` from the
//! SPS/PPS and an `mp4a`/`esds` entry from the first ADTS header by hand (in production `retina`
//! provides these entries), converts NALs to 4-byte length prefixes and writes init + one fragment
//! per GOP. Then ffprobe/ffmpeg must read the result without complaint, also when cut after any
//! fragment, and `scan` must agree with what was written.

use std::path::{Path, PathBuf};
use std::process::Command;

use store::mp4::{init_segment, scan, FragmentBuilder, Handler, SampleInfo, TrackKind, TrackSpec};

const FFMPEG: &str = "/usr/bin/ffmpeg";
const FFPROBE: &str = "/usr/bin/ffprobe";
const VIDEO_TIMESCALE: u32 = 90_000;
const FRAME_TICKS: u32 = 3600; // 25 fps
const AAC_FRAME_SAMPLES: u32 = 1024;
const AUDIO_RATE_HZ: u32 = 48_000;

fn run(cmd: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (is ffmpeg installed?): {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        head(&stderr)
    );
    (stdout, stderr)
}

/// The first lines of tool output, for assertion messages.
fn head(s: &str) -> String {
    s.lines().take(8).collect::<Vec<_>>().join("\n")
}

fn gen_h264(dir: &Path) -> Vec<u8> {
    let path = dir.join("clip.h264");
    let p = path.to_str().expect("utf-8 path");
    run(
        FFMPEG,
        &[
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=size=320x240:rate=25",
            "-t",
            "3",
            "-c:v",
            "libx264",
            "-g",
            "25",
            "-bf",
            "0",
            "-pix_fmt",
            "yuv420p",
            "-bsf:v",
            "h264_mp4toannexb,dump_extra",
            "-f",
            "h264",
            p,
        ],
    );
    std::fs::read(&path).expect("read h264")
}

fn gen_aac(dir: &Path) -> Vec<u8> {
    let path = dir.join("tone.aac");
    let p = path.to_str().expect("utf-8 path");
    let src = format!("sine=frequency=440:sample_rate={AUDIO_RATE_HZ}:duration=3");
    run(
        FFMPEG,
        &[
            "-v", "error", "-y", "-f", "lavfi", "-i", &src, "-c:a", "aac", "-f", "adts", p,
        ],
    );
    std::fs::read(&path).expect("read aac")
}

/// Splits Annex-B into NAL units (without start codes).
fn split_nals(data: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new(); // (start code offset, payload offset)
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            let sc = if i > 0 && data[i - 1] == 0 { i - 1 } else { i };
            starts.push((sc, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(n, &(_, payload))| {
            let end = starts.get(n + 1).map_or(data.len(), |&(sc, _)| sc);
            &data[payload..end]
        })
        .collect()
}

fn nal_type(nal: &[u8]) -> u8 {
    nal[0] & 0x1f
}

fn is_vcl(nal: &[u8]) -> bool {
    (1..=5).contains(&nal_type(nal))
}

/// Groups NALs into access units: a new one starts at an AUD/SEI/SPS/PPS after a slice, or at a slice
/// with first_mb_in_slice == 0 (ue(v) "1" bit) after a slice.
fn access_units<'a>(nals: &[&'a [u8]]) -> Vec<Vec<&'a [u8]>> {
    let mut aus: Vec<Vec<&[u8]>> = Vec::new();
    let mut cur: Vec<&[u8]> = Vec::new();
    for &nal in nals {
        let has_vcl = cur.iter().any(|n| is_vcl(n));
        let starts_new =
            has_vcl && (matches!(nal_type(nal), 6..=9) || (is_vcl(nal) && nal[1] & 0x80 != 0));
        if starts_new {
            aus.push(std::mem::take(&mut cur));
        }
        cur.push(nal);
    }
    if !cur.is_empty() {
        aus.push(cur);
    }
    aus
}

fn boxed(box_type: &[u8; 4], body: &[u8]) -> Vec<u8> {
    let mut b = ((8 + body.len()) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(box_type);
    b.extend_from_slice(body);
    b
}

fn avc1_entry(sps: &[u8], pps: &[u8], width: u16, height: u16) -> Vec<u8> {
    let mut avcc = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    avcc.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(sps);
    avcc.push(1);
    avcc.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    avcc.extend_from_slice(pps);
    if matches!(sps[1], 100 | 110 | 122 | 144) {
        // High profiles: chroma_format_idc 1 (4:2:0), 8-bit luma and chroma, no SPS extensions.
        avcc.extend_from_slice(&[0xfc | 1, 0xf8, 0xf8, 0]);
    }
    let mut e = vec![0; 6];
    e.extend_from_slice(&1u16.to_be_bytes()); // data_reference_index
    e.extend_from_slice(&[0; 16]);
    e.extend_from_slice(&width.to_be_bytes());
    e.extend_from_slice(&height.to_be_bytes());
    e.extend_from_slice(&0x0048_0000u32.to_be_bytes()); // 72 dpi
    e.extend_from_slice(&0x0048_0000u32.to_be_bytes());
    e.extend_from_slice(&[0; 4]);
    e.extend_from_slice(&1u16.to_be_bytes()); // frame_count
    e.extend_from_slice(&[0; 32]); // compressorname
    e.extend_from_slice(&0x0018u16.to_be_bytes()); // depth
    e.extend_from_slice(&(-1i16).to_be_bytes());
    e.extend_from_slice(&boxed(b"avcC", &avcc));
    boxed(b"avc1", &e)
}

struct Adts<'a> {
    object_type: u8,
    freq_index: u8,
    channel_config: u8,
    payload: &'a [u8],
}

fn adts_frames(data: &[u8]) -> Vec<Adts<'_>> {
    let mut frames = Vec::new();
    let mut i = 0;
    while i + 7 <= data.len() {
        let h = &data[i..i + 7];
        assert!(h[0] == 0xff && h[1] & 0xf0 == 0xf0, "ADTS sync at {i}");
        let protection_absent = h[1] & 1 == 1;
        let frame_len =
            (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let header_len = if protection_absent { 7 } else { 9 };
        frames.push(Adts {
            object_type: (h[2] >> 6) + 1,
            freq_index: (h[2] >> 2) & 0xf,
            channel_config: ((h[2] & 1) << 2) | (h[3] >> 6),
            payload: &data[i + header_len..i + frame_len],
        });
        i += frame_len;
    }
    frames
}

fn mp4a_entry(first: &Adts<'_>, rate_hz: u32) -> Vec<u8> {
    let asc = [
        (first.object_type << 3) | (first.freq_index >> 1),
        ((first.freq_index & 1) << 7) | (first.channel_config << 3),
    ];
    let mut dcd = vec![0x40, 0x15, 0, 0, 0];
    dcd.extend_from_slice(&[0; 8]); // max, avg bitrate unknown
    dcd.extend_from_slice(&[5, asc.len() as u8]);
    dcd.extend_from_slice(&asc);
    let mut es = vec![0, 0, 0]; // ES_ID, flags
    es.extend_from_slice(&[4, dcd.len() as u8]);
    es.extend_from_slice(&dcd);
    es.extend_from_slice(&[6, 1, 2]); // SLConfigDescriptor: predefined 2
    let mut esds = vec![0, 0, 0, 0, 3, es.len() as u8];
    esds.extend_from_slice(&es);

    let mut e = vec![0; 6];
    e.extend_from_slice(&1u16.to_be_bytes());
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&u16::from(first.channel_config).to_be_bytes());
    e.extend_from_slice(&16u16.to_be_bytes());
    e.extend_from_slice(&[0; 4]);
    e.extend_from_slice(&(rate_hz << 16).to_be_bytes());
    e.extend_from_slice(&boxed(b"esds", &esds));
    boxed(b"mp4a", &e)
}

/// One video frame: 4-byte length-prefixed NALs without SPS/PPS/AUD (those live in avcC).
struct Frame {
    data: Vec<u8>,
    is_sync: bool,
}

struct Clip {
    tracks: Vec<TrackSpec>,
    gops: Vec<Vec<Frame>>,
    audio: Vec<Vec<u8>>,
}

fn clip(dir: &Path, with_audio: bool) -> Clip {
    let h264 = gen_h264(dir);
    let nals = split_nals(&h264);
    let sps = *nals.iter().find(|n| nal_type(n) == 7).expect("SPS");
    let pps = *nals.iter().find(|n| nal_type(n) == 8).expect("PPS");
    let mut gops: Vec<Vec<Frame>> = Vec::new();
    for au in access_units(&nals) {
        let mut data = Vec::new();
        for nal in au.iter().filter(|n| !matches!(nal_type(n), 7..=9)) {
            data.extend_from_slice(&(nal.len() as u32).to_be_bytes());
            data.extend_from_slice(nal);
        }
        let is_sync = au.iter().any(|n| nal_type(n) == 5);
        if is_sync || gops.is_empty() {
            gops.push(Vec::new());
        }
        gops.last_mut().expect("gop").push(Frame { data, is_sync });
    }
    let mut tracks = vec![TrackSpec {
        track_id: 1,
        kind: TrackKind::Video {
            width: 320,
            height: 240,
        },
        timescale: VIDEO_TIMESCALE,
        sample_entry: avc1_entry(sps, pps, 320, 240),
        presentation_delay: 0,
    }];
    let mut audio = Vec::new();
    if with_audio {
        let aac = gen_aac(dir);
        let frames = adts_frames(&aac);
        tracks.push(TrackSpec {
            track_id: 2,
            kind: TrackKind::Audio {
                channels: u16::from(frames[0].channel_config),
                sample_rate_hz: AUDIO_RATE_HZ,
            },
            timescale: AUDIO_RATE_HZ,
            sample_entry: mp4a_entry(&frames[0], AUDIO_RATE_HZ),
            presentation_delay: 0,
        });
        audio = frames.iter().map(|f| f.payload.to_vec()).collect();
    }
    Clip {
        tracks,
        gops,
        audio,
    }
}

/// Writes init + one fragment per GOP; audio frames go with the GOP during which they start.
/// Returns the file and each fragment's end offset.
fn write_segment(c: &Clip) -> (Vec<u8>, Vec<usize>) {
    let mut file = init_segment(&c.tracks).expect("init");
    let mut ends = Vec::new();
    let mut video_ticks = 0u64;
    let mut next_audio = 0usize;
    for (g, gop) in c.gops.iter().enumerate() {
        let gop_end_ticks = video_ticks + gop.len() as u64 * u64::from(FRAME_TICKS);
        let audio_start_ticks = next_audio as u64 * u64::from(AAC_FRAME_SAMPLES);
        let mut track_list = vec![(1, video_ticks)];
        if !c.audio.is_empty() {
            track_list.push((2, audio_start_ticks));
        }
        let mut b = FragmentBuilder::new(g as u32 + 1, &track_list);
        for f in gop {
            let s = SampleInfo {
                duration: FRAME_TICKS,
                size: f.data.len() as u32,
                is_sync: f.is_sync,
                composition_offset: 0,
            };
            b.push_sample(0, s, &f.data);
        }
        let last_gop = g + 1 == c.gops.len();
        while next_audio < c.audio.len() {
            // Audio frame start, in seconds * (video ticks * audio rate) to stay in integers.
            let start =
                next_audio as u64 * u64::from(AAC_FRAME_SAMPLES) * u64::from(VIDEO_TIMESCALE);
            if !last_gop && start >= gop_end_ticks * u64::from(AUDIO_RATE_HZ) {
                break;
            }
            let data = &c.audio[next_audio];
            let s = SampleInfo {
                duration: AAC_FRAME_SAMPLES,
                size: data.len() as u32,
                is_sync: true,
                composition_offset: 0,
            };
            b.push_sample(1, s, data);
            next_audio += 1;
        }
        file.extend_from_slice(&b.finish());
        ends.push(file.len());
        video_ticks = gop_end_ticks;
    }
    (file, ends)
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write");
    p
}

/// `ffprobe -count_frames` per stream as key=value maps; asserts nothing on stderr.
fn probe(path: &Path) -> Vec<std::collections::BTreeMap<String, String>> {
    let (out, err) = run(
        FFPROBE,
        &[
            "-v",
            "error",
            "-count_frames",
            "-show_entries",
            "stream=nb_read_frames,codec_name,width,height,duration,sample_rate,channels",
            "-of",
            "default",
            path.to_str().expect("utf-8 path"),
        ],
    );
    assert!(
        err.is_empty(),
        "ffprobe stderr for {path:?}: {}",
        head(&err)
    );
    let mut streams = Vec::new();
    for line in out.lines() {
        match line {
            "[STREAM]" => streams.push(Default::default()),
            "[/STREAM]" => {}
            kv => {
                let (k, v) = kv.split_once('=').expect("key=value");
                let s: &mut std::collections::BTreeMap<String, String> =
                    streams.last_mut().expect("inside [STREAM]");
                s.insert(k.to_owned(), v.to_owned());
            }
        }
    }
    streams
}

fn assert_decodes_cleanly(path: &Path) {
    let (out, err) = run(
        FFMPEG,
        &[
            "-v",
            "error",
            "-i",
            path.to_str().expect("utf-8 path"),
            "-f",
            "null",
            "-",
        ],
    );
    assert!(
        out.is_empty() && err.is_empty(),
        "ffmpeg decode of {path:?}: {}{}",
        head(&out),
        head(&err)
    );
}

fn duration_s(s: &std::collections::BTreeMap<String, String>) -> f64 {
    s["duration"].parse().expect("numeric duration")
}

#[test]
fn h264_segment_plays_in_ffmpeg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clip(dir.path(), false);
    assert_eq!(c.gops.len(), 3, "GOP 25 over 75 frames");
    let (file, ends) = write_segment(&c);
    let path = write(dir.path(), "video.mp4", &file);

    let streams = probe(&path);
    eprintln!("ffprobe: {streams:?}");
    assert_eq!(streams.len(), 1, "{streams:?}");
    let v = &streams[0];
    assert_eq!(v["codec_name"], "h264");
    assert_eq!((v["width"].as_str(), v["height"].as_str()), ("320", "240"));
    assert_eq!(v["nb_read_frames"], "75");
    assert!((duration_s(v) - 3.0).abs() < 0.05, "{v:?}");
    assert_decodes_cleanly(&path);

    // The scanner agrees with what was written.
    let r = scan(&file).expect("scan");
    assert_eq!(r.fragments.len(), 3);
    assert_eq!(r.valid_len, file.len() as u64);
    assert_eq!(r.tracks[0].sample_entry_type, *b"avc1");
    assert_eq!(r.tracks[0].pixel_dimensions, Some((320, 240)));
    for (g, f) in r.fragments.iter().enumerate() {
        let t = &f.tracks[0];
        assert_eq!(t.sample_count, 25);
        assert_eq!(t.duration_sum, 25 * u64::from(FRAME_TICKS));
        assert_eq!(t.base_decode_time, g as u64 * 25 * u64::from(FRAME_TICKS));
        assert!(t.first_sample_is_sync);
        assert_eq!(f.offset + f.len, ends[g] as u64);
    }

    // Every prefix ending at a fragment boundary is a complete, playable file.
    for (k, &end) in ends.iter().enumerate() {
        let p = write(dir.path(), &format!("prefix{k}.mp4"), &file[..end]);
        let s = probe(&p);
        assert_eq!(
            s[0]["nb_read_frames"],
            (25 * (k + 1)).to_string(),
            "prefix {k}"
        );
        assert_decodes_cleanly(&p);
    }

    // A crash mid-append: the scanner's valid_len is again a playable file.
    let cut = &file[..ends[1] + (ends[2] - ends[1]) / 2];
    let r = scan(cut).expect("scan");
    assert_eq!(r.valid_len, ends[1] as u64);
    let p = write(dir.path(), "recovered.mp4", &cut[..r.valid_len as usize]);
    assert_eq!(probe(&p)[0]["nb_read_frames"], "50");
    assert_decodes_cleanly(&p);
}

#[test]
fn h264_and_aac_segment_plays_in_ffmpeg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let c = clip(dir.path(), true);
    let (file, ends) = write_segment(&c);
    let path = write(dir.path(), "av.mp4", &file);

    let streams = probe(&path);
    eprintln!("ffprobe: {streams:?}");
    assert_eq!(streams.len(), 2, "{streams:?}");
    let (v, a) = (&streams[0], &streams[1]);
    assert_eq!(v["codec_name"], "h264");
    assert_eq!(v["nb_read_frames"], "75");
    assert_eq!(a["codec_name"], "aac");
    assert_eq!(a["sample_rate"], AUDIO_RATE_HZ.to_string());
    assert_eq!(a["nb_read_frames"], c.audio.len().to_string());
    assert!((duration_s(a) - 3.0).abs() < 0.1, "{a:?}");
    assert_decodes_cleanly(&path);

    let r = scan(&file).expect("scan");
    assert_eq!(r.tracks.len(), 2);
    assert_eq!(r.tracks[1].handler, Handler::Audio);
    assert_eq!(r.tracks[1].sample_entry_type, *b"mp4a");
    assert_eq!(r.tracks[1].sample_rate_hz, Some(AUDIO_RATE_HZ));
    assert_eq!(r.fragments.len(), ends.len());
    let audio_frames: u32 = r.fragments.iter().map(|f| f.tracks[1].sample_count).sum();
    assert_eq!(audio_frames as usize, c.audio.len());

    for (k, &end) in ends.iter().enumerate() {
        let p = write(dir.path(), &format!("av_prefix{k}.mp4"), &file[..end]);
        assert_eq!(probe(&p).len(), 2, "prefix {k}");
        assert_decodes_cleanly(&p);
    }
}

/// The scanner also reads fragments written by another muxer (ffmpeg's, which relies on `tfhd`
/// default sample duration/flags and first-sample flags rather than full per-sample tables).
#[test]
fn scanner_reads_ffmpeg_fragmented_mp4() {
    let dir = tempfile::tempdir().expect("tempdir");
    gen_h264(dir.path());
    let src = dir.path().join("clip.h264");
    let out = dir.path().join("ffmpeg_frag.mp4");
    run(
        FFMPEG,
        &[
            "-v",
            "error",
            "-y",
            "-r",
            "25",
            "-i",
            src.to_str().expect("utf-8 path"),
            "-c",
            "copy",
            "-movflags",
            "frag_keyframe+empty_moov+default_base_moof",
            "-f",
            "mp4",
            out.to_str().expect("utf-8 path"),
        ],
    );
    let file = std::fs::read(&out).expect("read");
    let r = scan(&file).expect("scan");
    assert_eq!(r.tracks.len(), 1);
    assert_eq!(r.tracks[0].pixel_dimensions, Some((320, 240)));
    assert_eq!(r.fragments.len(), 3, "{r:?}");
    let samples: u32 = r.fragments.iter().map(|f| f.tracks[0].sample_count).sum();
    assert_eq!(samples, 75);
    let timescale = u64::from(r.tracks[0].timescale);
    for f in &r.fragments {
        assert!(f.tracks[0].first_sample_is_sync, "{f:?}");
        assert_eq!(f.tracks[0].duration_sum, timescale, "1 s per GOP: {f:?}");
    }
    // Anything after the last fragment (ffmpeg appends an `mfra` index) is trailing.
    assert_eq!(r.valid_len + r.trailing_bytes, file.len() as u64);
    if r.trailing_bytes > 0 {
        assert_eq!(
            &file[r.valid_len as usize + 4..r.valid_len as usize + 8],
            b"mfra"
        );
    }
}
