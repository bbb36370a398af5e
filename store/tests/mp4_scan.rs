//! Scanner tests on synthetic segment files built with `store::mp4`'s own writer: a two-track file
//! (fake `avc1` + `mp4a` sample entries, which the scanner reads only for their type and dimensions),
//! then whole-file scans, truncation at every byte of the last fragment, appended garbage, random
//! byte flips (fixed-seed xorshift) and hand-made hostile boxes.

use store::mp4::{
    init_segment, scan, scan_file, scan_file_headers, scan_samples, FragmentBuilder, Handler,
    Mp4Error, SampleInfo, TrackKind, TrackSpec,
};

const VIDEO_TICKS_PER_FRAME: u32 = 3600;
const AUDIO_TICKS_PER_FRAME: u32 = 1024;
const FRAMES_PER_GOP: usize = 10;
const AUDIO_FRAMES_PER_GOP: usize = 17;

fn visual_entry(width: u16, height: u16) -> Vec<u8> {
    let mut e = vec![0, 0, 0, 0];
    e.extend_from_slice(b"avc1");
    e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]); // reserved, data_reference_index
    e.extend_from_slice(&[0; 16]);
    e.extend_from_slice(&width.to_be_bytes());
    e.extend_from_slice(&height.to_be_bytes());
    e.resize(8 + 78, 0);
    let len = e.len() as u32;
    e[..4].copy_from_slice(&len.to_be_bytes());
    e
}

fn audio_entry(channels: u16, rate_hz: u16) -> Vec<u8> {
    let mut e = vec![0, 0, 0, 36];
    e.extend_from_slice(b"mp4a");
    e.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1]);
    e.extend_from_slice(&[0; 8]);
    e.extend_from_slice(&channels.to_be_bytes());
    e.extend_from_slice(&16u16.to_be_bytes());
    e.extend_from_slice(&[0; 4]);
    e.extend_from_slice(&(u32::from(rate_hz) << 16).to_be_bytes());
    assert_eq!(e.len(), 36);
    e
}

fn tracks() -> Vec<TrackSpec> {
    vec![
        TrackSpec {
            track_id: 1,
            kind: TrackKind::Video {
                width: 640,
                height: 480,
            },
            timescale: 90_000,
            sample_entry: visual_entry(640, 480),
            presentation_delay: 0,
        },
        TrackSpec {
            track_id: 2,
            kind: TrackKind::Audio {
                channels: 2,
                sample_rate_hz: 48_000,
            },
            timescale: 48_000,
            sample_entry: audio_entry(2, 48_000),
            presentation_delay: 0,
        },
    ]
}

/// Returns the file and the end offset of each fragment.
fn build_file(fragments: usize) -> (Vec<u8>, Vec<usize>) {
    let mut file = init_segment(&tracks()).expect("init");
    let mut ends = Vec::new();
    for g in 0..fragments {
        let mut b = FragmentBuilder::new(
            g as u32 + 1,
            &[
                (
                    1,
                    (g * FRAMES_PER_GOP) as u64 * u64::from(VIDEO_TICKS_PER_FRAME),
                ),
                (
                    2,
                    (g * AUDIO_FRAMES_PER_GOP) as u64 * u64::from(AUDIO_TICKS_PER_FRAME),
                ),
            ],
        );
        for i in 0..FRAMES_PER_GOP {
            let data = vec![i as u8; 50 + i * 7 + g];
            let s = SampleInfo {
                duration: VIDEO_TICKS_PER_FRAME,
                size: data.len() as u32,
                is_sync: i == 0,
                composition_offset: 0,
            };
            b.push_sample(0, s, &data);
        }
        for i in 0..AUDIO_FRAMES_PER_GOP {
            let data = vec![0xa0 | (i as u8 & 0xf); 20];
            let s = SampleInfo {
                duration: AUDIO_TICKS_PER_FRAME,
                size: 20,
                is_sync: true,
                composition_offset: 0,
            };
            b.push_sample(1, s, &data);
        }
        file.extend_from_slice(&b.finish());
        ends.push(file.len());
    }
    (file, ends)
}

#[test]
fn full_file() {
    let (file, ends) = build_file(4);
    let r = scan(&file).expect("scan");
    let init_len = init_segment(&tracks()).expect("init").len() as u64;
    assert_eq!(r.init_len, init_len);
    assert_eq!(r.tracks.len(), 2);
    let v = &r.tracks[0];
    assert_eq!(
        (v.track_id, v.timescale, v.handler, &v.sample_entry_type),
        (1, 90_000, Handler::Video, b"avc1")
    );
    assert_eq!(v.pixel_dimensions, Some((640, 480)));
    let a = &r.tracks[1];
    assert_eq!(
        (a.track_id, a.timescale, a.handler, &a.sample_entry_type),
        (2, 48_000, Handler::Audio, b"mp4a")
    );
    assert_eq!((a.channels, a.sample_rate_hz), (Some(2), Some(48_000)));
    assert_eq!(r.fragments.len(), 4);
    let mut prev_end = init_len;
    for (g, f) in r.fragments.iter().enumerate() {
        assert_eq!(f.offset, prev_end);
        assert_eq!(f.offset + f.len, ends[g] as u64);
        prev_end = ends[g] as u64;
        assert_eq!(f.sequence_number, g as u32 + 1);
        assert_eq!(f.tracks.len(), 2);
        let (tv, ta) = (&f.tracks[0], &f.tracks[1]);
        assert_eq!(tv.track_id, 1);
        assert_eq!(tv.base_decode_time, (g * FRAMES_PER_GOP) as u64 * 3600);
        assert_eq!(tv.sample_count, FRAMES_PER_GOP as u32);
        assert_eq!(tv.duration_sum, FRAMES_PER_GOP as u64 * 3600);
        assert!(tv.first_sample_is_sync);
        assert_eq!(ta.track_id, 2);
        assert_eq!(ta.sample_count, AUDIO_FRAMES_PER_GOP as u32);
        assert_eq!(ta.duration_sum, AUDIO_FRAMES_PER_GOP as u64 * 1024);
    }
    assert_eq!(r.valid_len, file.len() as u64);
    assert_eq!(r.trailing_bytes, 0);
}

/// `scan_samples` lists every sample of the complete fragments with its data, time and sync flag, and
/// drops a cut-off last fragment's samples.
#[test]
fn samples_are_listed_with_their_data() {
    let (file, ends) = build_file(3);
    let (report, samples) = scan_samples(&file).expect("scan");
    assert_eq!(report.fragments.len(), 3);
    assert_eq!(
        samples.len(),
        3 * (FRAMES_PER_GOP + AUDIO_FRAMES_PER_GOP),
        "{samples:?}"
    );
    let video: Vec<_> = samples.iter().filter(|s| s.track_id == 1).collect();
    assert_eq!(video.len(), 3 * FRAMES_PER_GOP);
    for (n, s) in video.iter().enumerate() {
        let (g, i) = (n / FRAMES_PER_GOP, n % FRAMES_PER_GOP);
        assert_eq!(s.fragment_index, g);
        assert_eq!(s.decode_time, n as u64 * u64::from(VIDEO_TICKS_PER_FRAME));
        assert_eq!(s.is_sync, i == 0, "{s:?}");
        let data = &file[s.offset as usize..s.offset as usize + s.size as usize];
        assert_eq!(data, vec![i as u8; 50 + i * 7 + g].as_slice());
    }
    for s in samples.iter().filter(|s| s.track_id == 2) {
        assert_eq!(s.size, 20);
        assert!(file[s.offset as usize] & 0xf0 == 0xa0);
    }
    let (report, cut) = scan_samples(&file[..ends[2] - 1]).expect("scan");
    assert_eq!(report.fragments.len(), 2);
    assert_eq!(cut, samples[..cut.len()].to_vec());
    assert_eq!(cut.len(), 2 * (FRAMES_PER_GOP + AUDIO_FRAMES_PER_GOP));
}

#[test]
fn init_only_and_scan_file() {
    let (file, _) = build_file(0);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seg.mp4");
    std::fs::write(&path, &file).expect("write");
    let r = scan_file(&path).expect("scan");
    assert!(r.fragments.is_empty());
    assert_eq!((r.valid_len, r.trailing_bytes), (file.len() as u64, 0));
    assert!(matches!(
        scan_file(dir.path().join("missing.mp4")),
        Err(Mp4Error::Io(_))
    ));
}

#[test]
fn non_sync_first_sample_is_reported() {
    let mut file = init_segment(&tracks()).expect("init");
    let mut b = FragmentBuilder::new(9, &[(1, 0)]);
    let s = SampleInfo {
        duration: 1,
        size: 1,
        is_sync: false,
        composition_offset: -1,
    };
    b.push_sample(0, s, b"x");
    file.extend_from_slice(&b.finish());
    let r = scan(&file).expect("scan");
    assert_eq!(r.fragments.len(), 1);
    assert!(!r.fragments[0].tracks[0].first_sample_is_sync);
    assert_eq!(r.fragments[0].tracks.len(), 1);
}

#[test]
fn truncation_anywhere_in_last_fragment_ends_at_previous_fragment() {
    let (file, ends) = build_file(3);
    let prev_end = ends[1];
    for cut in prev_end..file.len() {
        let r = scan(&file[..cut]).expect("scan");
        assert_eq!(r.valid_len, prev_end as u64, "cut at {cut}");
        assert_eq!(r.trailing_bytes, (cut - prev_end) as u64, "cut at {cut}");
        assert_eq!(r.fragments.len(), 2, "cut at {cut}");
    }
}

/// Reading only the init and the `moof`s finds what a scan of the whole file finds, whole, cut
/// anywhere in its last fragment, or followed by garbage.
#[test]
fn scan_of_headers_only_agrees_with_the_whole_file_scan() {
    let (file, ends) = build_file(4);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("seg.mp4");
    let mut garbage = file.clone();
    garbage.extend_from_slice(b"\0\0\0\x10moofjunkjunk");
    let cuts = (ends[2]..file.len()).map(|cut| file[..cut].to_vec());
    for bytes in std::iter::once(file.clone()).chain(cuts).chain([garbage]) {
        std::fs::write(&path, &bytes).expect("write");
        let whole = scan(&bytes).expect("scan");
        assert_eq!(
            scan_file_headers(&path).expect("scan headers"),
            whole,
            "{} bytes",
            bytes.len()
        );
    }
    std::fs::write(&path, &file[..20]).expect("write");
    assert!(scan_file_headers(&path).is_err());
}

#[test]
fn truncated_or_missing_init_is_an_error() {
    let (file, _) = build_file(1);
    let init_len = init_segment(&tracks()).expect("init").len();
    assert!(matches!(scan(&[]), Err(Mp4Error::NotMp4(_))));
    assert!(matches!(
        scan(b"garbage!garbage!"),
        Err(Mp4Error::NotMp4(_))
    ));
    for cut in 0..init_len {
        assert!(scan(&file[..cut]).is_err(), "cut at {cut}");
    }
    // ftyp followed directly by a fragment: no moov.
    let ftyp_len = u32::from_be_bytes([file[0], file[1], file[2], file[3]]) as usize;
    let mut no_moov = file[..ftyp_len].to_vec();
    no_moov.extend_from_slice(&file[init_len..]);
    assert!(matches!(scan(&no_moov), Err(Mp4Error::MissingBox("moov"))));
}

#[test]
fn appended_garbage_is_trailing() {
    let (file, _) = build_file(2);
    let mut rng = XorShift(0x1234_5678_9abc_def1);
    for garbage_len in [1usize, 7, 8, 15, 16, 100, 4096] {
        let mut f = file.clone();
        f.extend((0..garbage_len).map(|_| rng.next() as u8));
        let r = scan(&f).expect("scan");
        assert_eq!(r.valid_len, file.len() as u64);
        assert_eq!(r.trailing_bytes, garbage_len as u64);
        assert_eq!(r.fragments.len(), 2);
    }
    // A plausible-looking header whose size runs past the end.
    let mut f = file.clone();
    f.extend_from_slice(&[0x7f, 0xff, 0xff, 0xff]);
    f.extend_from_slice(b"moof");
    f.extend_from_slice(&[0; 32]);
    let r = scan(&f).expect("scan");
    assert_eq!(r.valid_len, file.len() as u64);
}

#[test]
fn free_boxes_between_fragments_are_skipped() {
    let (file, ends) = build_file(2);
    let mut f = file[..ends[0]].to_vec();
    f.extend_from_slice(&[0, 0, 0, 12]);
    f.extend_from_slice(b"free");
    f.extend_from_slice(&[0; 4]);
    f.extend_from_slice(&file[ends[0]..]);
    let r = scan(&f).expect("scan");
    assert_eq!(r.fragments.len(), 2);
    assert_eq!(r.valid_len, f.len() as u64);
    assert_eq!(r.fragments[1].offset, ends[0] as u64 + 12);
}

/// Offsets of the named box's header within `data`, found by type bytes.
fn find_all(data: &[u8], box_type: &[u8; 4]) -> Vec<usize> {
    data.windows(4)
        .enumerate()
        .filter(|(_, w)| w == box_type)
        .map(|(i, _)| i - 4)
        .collect()
}

#[test]
fn hostile_fragment_boxes_end_the_valid_region() {
    let (file, ends) = build_file(2);
    let last = ends[0];
    let check = |f: &[u8], what: &str| {
        let r = scan(f).expect("scan");
        assert_eq!(r.valid_len, last as u64, "{what}");
        assert_eq!(r.fragments.len(), 1, "{what}");
    };

    // moof size 0 ("to end of file").
    let mut f = file.clone();
    f[last..last + 4].copy_from_slice(&[0; 4]);
    check(&f, "moof size 0");

    // moof with a 64-bit largesize far past the end.
    let mut f = file[..last].to_vec();
    f.extend_from_slice(&[0, 0, 0, 1]);
    f.extend_from_slice(b"moof");
    f.extend_from_slice(&u64::MAX.to_be_bytes());
    f.extend_from_slice(&file[last + 8..]);
    check(&f, "moof largesize");

    // mdat size 0.
    let moof_len =
        u32::from_be_bytes([file[last], file[last + 1], file[last + 2], file[last + 3]]) as usize;
    let mut f = file.clone();
    f[last + moof_len..last + moof_len + 4].copy_from_slice(&[0; 4]);
    check(&f, "mdat size 0");

    // mdat shorter than the trun data it should hold (shrink it and drop the tail).
    let mut f = file.clone();
    let mdat_len = (file.len() - last - moof_len - 1) as u32;
    f[last + moof_len..last + moof_len + 4].copy_from_slice(&mdat_len.to_be_bytes());
    f.pop();
    check(&f, "short mdat");

    // trun sample count larger than its table.
    let truns: Vec<usize> = find_all(&file, b"trun")
        .into_iter()
        .filter(|&p| p > last)
        .collect();
    let mut f = file.clone();
    f[truns[0] + 12..truns[0] + 16].copy_from_slice(&1000u32.to_be_bytes());
    check(&f, "trun count too large");

    // trun with only a data offset and a huge count: no per-sample table, defaults 0; must not loop
    // 4 billion times. Its data (0 bytes) fits, so the fragment is valid.
    let mut f = file.clone();
    f[truns[0] + 9..truns[0] + 12].copy_from_slice(&[0, 0, 1]);
    f[truns[0] + 12..truns[0] + 16].copy_from_slice(&u32::MAX.to_be_bytes());
    let r = scan(&f).expect("scan");
    assert_eq!(r.fragments.len(), 2);
    assert_eq!(r.fragments[1].tracks[0].sample_count, u32::MAX);
    assert_eq!(r.fragments[1].tracks[0].duration_sum, 0);

    // data offset pointing before the mdat, and past it.
    for off in [0i32, i32::MAX, -1000] {
        let mut f = file.clone();
        f[truns[0] + 16..truns[0] + 20].copy_from_slice(&off.to_be_bytes());
        check(&f, "bad data offset");
    }

    // traf naming a track that is not in the moov.
    let tfhds: Vec<usize> = find_all(&file, b"tfhd")
        .into_iter()
        .filter(|&p| p > last)
        .collect();
    let mut f = file.clone();
    f[tfhds[1] + 12..tfhds[1] + 16].copy_from_slice(&77u32.to_be_bytes());
    check(&f, "unknown track");

    // traf size larger than the moof.
    let trafs: Vec<usize> = find_all(&file, b"traf")
        .into_iter()
        .filter(|&p| p > last)
        .collect();
    let mut f = file.clone();
    f[trafs[1]..trafs[1] + 4].copy_from_slice(&0xffffu32.to_be_bytes());
    check(&f, "traf overflows moof");
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn random_byte_flips_never_panic() {
    let (file, ends) = build_file(3);
    let init_len = init_segment(&tracks()).expect("init").len();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut fewer_fragments = 0;
    for iteration in 0..3000 {
        let mut f = file.clone();
        // Mostly fragment damage, some init damage.
        let lo = if iteration % 5 == 0 { 0 } else { init_len };
        for _ in 0..1 + rng.below(4) {
            let at = lo + rng.below(f.len() - lo);
            f[at] ^= 1 << rng.below(8);
        }
        if iteration % 3 == 0 {
            f.truncate(init_len + rng.below(file.len() - init_len));
        }
        match scan(&f) {
            Ok(r) => {
                assert!(r.valid_len >= r.init_len);
                assert_eq!(r.valid_len + r.trailing_bytes, f.len() as u64);
                let mut end = r.init_len;
                for frag in &r.fragments {
                    assert!(frag.offset >= end);
                    end = frag.offset + frag.len;
                }
                assert_eq!(end, r.valid_len);
                if r.fragments.len() < ends.len() {
                    fewer_fragments += 1;
                }
            }
            Err(_) => assert_eq!(lo, 0, "fragment damage must not be an error"),
        }
        // Listed samples lie inside their complete fragment.
        if let Ok((r, samples)) = scan_samples(&f) {
            for smp in &samples {
                let frag = &r.fragments[smp.fragment_index];
                assert!(smp.offset >= frag.offset, "{smp:?}");
                assert!(smp.offset + u64::from(smp.size) <= frag.offset + frag.len);
            }
        }
    }
    // The flips must actually have exercised the damage paths.
    assert!(fewer_fragments > 500, "{fewer_fragments}");
}
