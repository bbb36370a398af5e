//! Tests for the Merkle log. The reference implementation below is the literal recursive definition
//! from RFC 6962 section 2.1 (MTH, PATH, PROOF/SUBPROOF) over a slice of leaf hashes, deliberately
//! without caching; the cached tree and the RFC 9162 verifiers are checked against it.

use proptest::prelude::*;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::*;

// ---------------------------------------------------------------- reference implementation

fn sha256(data: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, data).as_ref());
    h
}

fn ref_leaf(data: &[u8]) -> Hash {
    let mut v = vec![0u8];
    v.extend_from_slice(data);
    sha256(&v)
}

fn ref_node(l: &Hash, r: &Hash) -> Hash {
    let mut v = vec![1u8];
    v.extend_from_slice(l);
    v.extend_from_slice(r);
    sha256(&v)
}

fn ref_k(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn ref_mth(d: &[Hash]) -> Hash {
    match d.len() {
        0 => sha256(b""),
        1 => d[0],
        n => {
            let k = ref_k(n);
            ref_node(&ref_mth(&d[..k]), &ref_mth(&d[k..]))
        }
    }
}

fn ref_path(m: usize, d: &[Hash]) -> Vec<Hash> {
    let n = d.len();
    if n <= 1 {
        return vec![];
    }
    let k = ref_k(n);
    if m < k {
        let mut p = ref_path(m, &d[..k]);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_path(m - k, &d[k..]);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
    let n = d.len();
    if m == n {
        return if b { vec![] } else { vec![ref_mth(d)] };
    }
    let k = ref_k(n);
    if m <= k {
        let mut p = ref_subproof(m, &d[..k], b);
        p.push(ref_mth(&d[k..]));
        p
    } else {
        let mut p = ref_subproof(m - k, &d[k..], false);
        p.push(ref_mth(&d[..k]));
        p
    }
}

fn ref_proof(m: usize, d: &[Hash]) -> Vec<Hash> {
    if m == 0 || m == d.len() {
        vec![]
    } else {
        ref_subproof(m, d, true)
    }
}

fn leaves(n: usize) -> Vec<Hash> {
    (0..n as u64).map(|i| ref_leaf(&i.to_be_bytes())).collect()
}

fn tree_of(l: &[Hash]) -> MerkleTree {
    let mut t = MerkleTree::new();
    for (i, h) in l.iter().enumerate() {
        assert_eq!(t.push(*h), i as u64);
    }
    t
}

fn flip(h: &Hash, byte: usize) -> Hash {
    let mut h = *h;
    h[byte % 32] ^= 0x01;
    h
}

fn uncached_ranges() -> usize {
    super::tree::UNCACHED_RANGES.load(std::sync::atomic::Ordering::Relaxed)
}

fn hex(s: &str) -> Hash {
    let v = super::hex::decode(s).expect("hex");
    v.as_slice().try_into().expect("32 bytes")
}

// ---------------------------------------------------------------- hashing and tree shape

#[test]
fn hash_primitives() {
    assert_eq!(
        empty_root(),
        hex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
    );
    assert_eq!(MerkleTree::new().root(), empty_root());
    assert_eq!(MerkleTree::new().root_at(0), Some(empty_root()));
    assert_eq!(leaf_hash(b"abc"), ref_leaf(b"abc"));
    let (a, b) = (ref_leaf(b"a"), ref_leaf(b"b"));
    assert_eq!(node_hash(&a, &b), ref_node(&a, &b));
    assert_ne!(node_hash(&a, &b), node_hash(&b, &a));
}

/// The well-known Certificate Transparency test tree (leaf inputs "", 00, 10, 2021, 3031,
/// 40414243, 50..57, 60..6f) and its roots for sizes 1..=8.
#[test]
fn ct_test_vectors() {
    let inputs: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        vec![0x10],
        vec![0x20, 0x21],
        vec![0x30, 0x31],
        vec![0x40, 0x41, 0x42, 0x43],
        (0x50..0x58).collect(),
        (0x60..0x70).collect(),
    ];
    let roots = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];
    let mut t = MerkleTree::new();
    for (input, root) in inputs.iter().zip(roots) {
        t.push(leaf_hash(input));
        assert_eq!(t.root(), hex(root), "size {}", t.len());
    }
    for (i, root) in roots.iter().enumerate() {
        assert_eq!(t.root_at(i as u64 + 1), Some(hex(root)));
    }
}

#[test]
fn roots_match_reference_for_all_sizes() {
    let l = leaves(130);
    let mut t = MerkleTree::new();
    for n in 0..=130usize {
        assert_eq!(t.len(), n as u64);
        assert_eq!(t.root(), ref_mth(&l[..n]), "root of {n}");
        let loaded = MerkleTree::from_leaf_hashes(l[..n].to_vec());
        assert_eq!(loaded, t, "from_leaf_hashes({n})");
        if n < 130 {
            t.push(l[n]);
        }
    }
    for n in 0..=130usize {
        assert_eq!(t.root_at(n as u64), Some(ref_mth(&l[..n])), "root_at({n})");
    }
    assert_eq!(t.root_at(131), None);
    assert_eq!(t.leaf_hash(129), Some(l[129]));
    assert_eq!(t.leaf_hash(130), None);
    assert_eq!(t.leaf_hashes(), &l[..]);
}

#[test]
fn inclusion_proofs_match_reference_and_verify() {
    let l = leaves(130);
    let t = tree_of(&l);
    for n in 1..=130usize {
        let root = ref_mth(&l[..n]);
        for m in 0..n {
            let p = t.inclusion_proof(m as u64, n as u64).expect("proof exists");
            assert_eq!(p, ref_path(m, &l[..n]), "PATH({m}, {n})");
            assert!(verify_inclusion(&l[m], m as u64, n as u64, &p, &root));
            // Wrong index, wrong size, wrong leaf, wrong root: all fail.
            if n > 1 {
                let other = (m + 1) % n;
                assert!(!verify_inclusion(&l[m], other as u64, n as u64, &p, &root));
                assert!(!verify_inclusion(&l[other], m as u64, n as u64, &p, &root));
            }
            // A size only shapes the path; paired with that size's root, a stale proof fails.
            if n < 130 {
                let next = ref_mth(&l[..=n]);
                assert!(!verify_inclusion(&l[m], m as u64, n as u64 + 1, &p, &next));
            }
            assert!(!verify_inclusion(
                &flip(&l[m], 3),
                m as u64,
                n as u64,
                &p,
                &root
            ));
            assert!(!verify_inclusion(
                &l[m],
                m as u64,
                n as u64,
                &p,
                &flip(&root, 9)
            ));
            for i in 0..p.len() {
                let mut bad = p.clone();
                bad[i] = flip(&bad[i], i);
                assert!(!verify_inclusion(&l[m], m as u64, n as u64, &bad, &root));
            }
            let mut longer = p.clone();
            longer.push(root);
            assert!(!verify_inclusion(&l[m], m as u64, n as u64, &longer, &root));
            if !p.is_empty() {
                assert!(!verify_inclusion(
                    &l[m],
                    m as u64,
                    n as u64,
                    &p[..p.len() - 1],
                    &root
                ));
            }
        }
        assert_eq!(t.inclusion_proof(n as u64, n as u64), None);
    }
    // Every path node came from the level cache or a peak fold: O(log n) hashing per proof.
    assert_eq!(uncached_ranges(), 0);
    assert_eq!(t.inclusion_proof(0, 131), None);
    assert!(!verify_inclusion(&l[0], 0, 0, &[], &empty_root()));
}

#[test]
fn consistency_proofs_match_reference_and_verify() {
    let l = leaves(130);
    let t = tree_of(&l);
    let roots: Vec<Hash> = (0..=130).map(|n| ref_mth(&l[..n])).collect();
    for n in 0..=130usize {
        for m in 0..=n {
            let p = t
                .consistency_proof(m as u64, n as u64)
                .expect("proof exists");
            assert_eq!(p, ref_proof(m, &l[..n]), "PROOF({m}, {n})");
            assert!(
                verify_consistency(m as u64, n as u64, &roots[m], &roots[n], &p),
                "verify({m}, {n})"
            );
            // Swapped roots, wrong sizes, tampered and truncated proofs fail.
            if m != n {
                assert!(!verify_consistency(
                    m as u64, n as u64, &roots[n], &roots[m], &p
                ));
                assert!(!verify_consistency(
                    n as u64, m as u64, &roots[m], &roots[n], &p
                ));
            }
            if m > 0 && n < 130 {
                let next = &roots[n + 1];
                assert!(!verify_consistency(
                    m as u64,
                    n as u64 + 1,
                    &roots[m],
                    next,
                    &p
                ));
            }
            for i in 0..p.len() {
                let mut bad = p.clone();
                bad[i] = flip(&bad[i], i + 7);
                assert!(!verify_consistency(
                    m as u64, n as u64, &roots[m], &roots[n], &bad
                ));
            }
            let mut longer = p.clone();
            longer.push(roots[n]);
            assert!(!verify_consistency(
                m as u64, n as u64, &roots[m], &roots[n], &longer
            ));
            if !p.is_empty() {
                let short = &p[..p.len() - 1];
                assert!(!verify_consistency(
                    m as u64, n as u64, &roots[m], &roots[n], short
                ));
            }
        }
        assert_eq!(t.consistency_proof(n as u64 + 1, n as u64), None);
    }
    assert_eq!(t.consistency_proof(0, 131), None);
    assert_eq!(uncached_ranges(), 0);
    // The empty tree: only the real empty root is consistent with anything.
    assert!(verify_consistency(0, 5, &empty_root(), &roots[5], &[]));
    assert!(!verify_consistency(0, 5, &roots[1], &roots[5], &[]));
    assert!(!verify_consistency(
        0,
        5,
        &empty_root(),
        &roots[5],
        &[roots[1]]
    ));
}

/// Every (m, n) pair up to 70: changing any leaf of the old prefix breaks consistency, whichever
/// side the proof was computed from.
#[test]
fn consistency_fails_when_any_old_leaf_changes() {
    let l = leaves(70);
    let honest = tree_of(&l);
    for i in 0..70usize {
        let mut changed = l.clone();
        changed[i] = flip(&changed[i], i);
        let rewritten = tree_of(&changed);
        for n in (i + 1)..=70usize {
            let new_root = honest.root_at(n as u64).expect("root");
            let rewritten_root = rewritten.root_at(n as u64).expect("root");
            for m in (i + 1)..=n {
                // The standby held the honest root at m; the log rewrote leaf i and presents its
                // root at n with a proof from the rewritten tree.
                let old_root = honest.root_at(m as u64).expect("root");
                let p = rewritten
                    .consistency_proof(m as u64, n as u64)
                    .expect("proof");
                assert!(
                    !verify_consistency(m as u64, n as u64, &old_root, &rewritten_root, &p),
                    "leaf {i} changed, ({m}, {n}) still verified"
                );
                // And the other way: held the rewritten prefix, honest tree presented.
                let p = honest.consistency_proof(m as u64, n as u64).expect("proof");
                let old_rewritten = rewritten.root_at(m as u64).expect("root");
                assert!(!verify_consistency(
                    m as u64,
                    n as u64,
                    &old_rewritten,
                    &new_root,
                    &p
                ));
            }
        }
    }
}

#[test]
fn root_with_appended_matches_push() {
    let l = leaves(80);
    for held in 0..=40usize {
        let t = tree_of(&l[..held]);
        for extra in 0..=40usize {
            assert_eq!(
                t.root_with_appended(&l[held..held + extra]),
                ref_mth(&l[..held + extra]),
                "{held} + {extra}"
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn prop_inclusion(
        data in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..300),
        pick in any::<prop::sample::Index>(),
        size_pick in any::<prop::sample::Index>(),
        tamper in any::<prop::sample::Index>(),
    ) {
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let t = tree_of(&hashes);
        let size = size_pick.index(hashes.len()) + 1;
        let m = pick.index(size);
        let root = t.root_at(size as u64).expect("root");
        prop_assert_eq!(root, ref_mth(&hashes[..size]));
        let p = t.inclusion_proof(m as u64, size as u64).expect("proof");
        prop_assert!(verify_inclusion(&hashes[m], m as u64, size as u64, &p, &root));
        // Tampered leaf data (unless two leaves happen to be equal).
        let mut other = data[m].clone();
        other.push(0xA5);
        prop_assert!(!verify_inclusion(&leaf_hash(&other), m as u64, size as u64, &p, &root));
        prop_assert!(!verify_inclusion(&hashes[m], m as u64, size as u64, &p, &flip(&root, m)));
        if !p.is_empty() {
            let mut bad = p.clone();
            let i = tamper.index(bad.len());
            bad[i] = flip(&bad[i], i);
            prop_assert!(!verify_inclusion(&hashes[m], m as u64, size as u64, &bad, &root));
        }
    }

    #[test]
    fn prop_consistency(
        data in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..40), 1..300),
        a in any::<prop::sample::Index>(),
        b in any::<prop::sample::Index>(),
        changed in any::<prop::sample::Index>(),
    ) {
        let hashes: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let t = tree_of(&hashes);
        let n = b.index(hashes.len()) + 1;
        let m = a.index(n) + 1;
        let (old_root, new_root) = (t.root_at(m as u64).expect("old"), t.root_at(n as u64).expect("new"));
        let p = t.consistency_proof(m as u64, n as u64).expect("proof");
        prop_assert!(verify_consistency(m as u64, n as u64, &old_root, &new_root, &p));
        // Rewrite one leaf of the old prefix: the held (honest) old root no longer connects.
        let mut rewritten = hashes.clone();
        let i = changed.index(m);
        rewritten[i] = flip(&rewritten[i], i);
        let r = tree_of(&rewritten);
        let rp = r.consistency_proof(m as u64, n as u64).expect("proof");
        let r_new = r.root_at(n as u64).expect("root");
        prop_assert!(!verify_consistency(m as u64, n as u64, &old_root, &r_new, &rp));
    }

    #[test]
    fn prop_leaf_round_trip(
        origin_node in ".{0,20}",
        camera in ".{0,20}",
        stream in "[a-z]{0,8}",
        path in ".{0,60}",
        start_ms in any::<i64>(),
        end_ms in any::<i64>(),
        size_bytes in any::<u64>(),
        sha256 in any::<[u8; 32]>(),
    ) {
        let leaf = SegmentLeaf { origin_node, camera, stream, path, start_ms, end_ms, size_bytes, sha256 };
        let enc = leaf.encode();
        prop_assert_eq!(SegmentLeaf::decode(&enc), Ok(leaf.clone()));
        // Every strict prefix is rejected, and so is any extension.
        for cut in 0..enc.len() {
            prop_assert!(SegmentLeaf::decode(&enc[..cut]).is_err());
        }
        let mut longer = enc.clone();
        longer.push(0);
        prop_assert_eq!(SegmentLeaf::decode(&longer), Err(DecodeError::TrailingBytes(1)));
        let json = serde_json::to_string(&leaf).expect("json");
        prop_assert_eq!(serde_json::from_str::<SegmentLeaf>(&json).expect("parse"), leaf);
    }
}

// ---------------------------------------------------------------- encodings

fn sample_leaf() -> SegmentLeaf {
    SegmentLeaf {
        origin_node: "nvr-a".into(),
        camera: "cam1".into(),
        stream: "main".into(),
        path: "cam1/main/2024/01/01/000000.mp4".into(),
        start_ms: 1_700_000_000_000,
        end_ms: 1_700_000_060_000,
        size_bytes: 12_345_678,
        sha256: [0xAB; 32],
    }
}

#[test]
fn leaf_encoding_layout() {
    let leaf = SegmentLeaf {
        origin_node: "n".into(),
        camera: "c".into(),
        stream: "".into(),
        path: "p/q".into(),
        start_ms: -1,
        end_ms: 2,
        size_bytes: 0x0102,
        sha256: [7; 32],
    };
    let mut want = vec![1u8];
    want.extend_from_slice(&[0, 0, 0, 1, b'n']);
    want.extend_from_slice(&[0, 0, 0, 1, b'c']);
    want.extend_from_slice(&[0, 0, 0, 0]);
    want.extend_from_slice(&[0, 0, 0, 3, b'p', b'/', b'q']);
    want.extend_from_slice(&[0xff; 8]);
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    want.extend_from_slice(&[7; 32]);
    assert_eq!(leaf.encode(), want);
    let mut prefixed = vec![0u8];
    prefixed.extend_from_slice(&want);
    assert_eq!(leaf.leaf_hash(), sha256(&prefixed));
    // Field boundaries are unambiguous: moving a character between fields changes the encoding.
    let moved = SegmentLeaf {
        origin_node: "nc".into(),
        camera: "".into(),
        ..leaf.clone()
    };
    assert_ne!(moved.encode(), leaf.encode());
    assert_ne!(moved.leaf_hash(), leaf.leaf_hash());
}

#[test]
fn leaf_decode_is_strict() {
    let enc = sample_leaf().encode();
    assert_eq!(SegmentLeaf::decode(&enc), Ok(sample_leaf()));
    assert_eq!(
        SegmentLeaf::decode(&[]),
        Err(DecodeError::Truncated { field: "version" })
    );
    let mut v = enc.clone();
    v[0] = 2;
    assert_eq!(
        SegmentLeaf::decode(&v),
        Err(DecodeError::UnsupportedVersion(2))
    );
    let mut v = enc.clone();
    v.extend_from_slice(&[1, 2, 3]);
    assert_eq!(SegmentLeaf::decode(&v), Err(DecodeError::TrailingBytes(3)));
    assert_eq!(
        SegmentLeaf::decode(&enc[..enc.len() - 1]),
        Err(DecodeError::Truncated { field: "sha256" })
    );
    // Length of origin_node larger than the input.
    let mut v = enc.clone();
    v[1..5].copy_from_slice(&1000u32.to_be_bytes());
    assert!(matches!(
        SegmentLeaf::decode(&v),
        Err(DecodeError::Truncated { .. })
    ));
    // Length over the limit.
    let mut v = enc.clone();
    v[1..5].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        SegmentLeaf::decode(&v),
        Err(DecodeError::FieldTooLong {
            field: "origin_node"
        })
    );
    // Invalid UTF-8 in the camera name.
    let mut v = vec![1u8, 0, 0, 0, 0, 0, 0, 0, 2, 0xff, 0xfe];
    v.extend_from_slice(&enc[1 + 4 + 5 + 4 + 4..]);
    assert_eq!(
        SegmentLeaf::decode(&v),
        Err(DecodeError::InvalidUtf8 { field: "camera" })
    );
    // A field at the limit is fine; one byte more is not.
    let long = SegmentLeaf {
        path: "x".repeat(MAX_FIELD_LEN),
        ..sample_leaf()
    };
    assert_eq!(SegmentLeaf::decode(&long.encode()), Ok(long));
    let too_long = SegmentLeaf {
        path: "x".repeat(MAX_FIELD_LEN + 1),
        ..sample_leaf()
    };
    assert_eq!(
        SegmentLeaf::decode(&too_long.encode()),
        Err(DecodeError::FieldTooLong { field: "path" })
    );
}

#[test]
fn json_uses_hex() {
    let leaf = sample_leaf();
    let json = serde_json::to_value(&leaf).expect("json");
    assert_eq!(json["sha256"], "ab".repeat(32));
    let mut bad = json.clone();
    bad["sha256"] = "ab".repeat(31).into();
    assert!(serde_json::from_value::<SegmentLeaf>(bad).is_err());
    let mut bad = json.clone();
    bad["sha256"] = format!("{}zz", "ab".repeat(31)).into();
    assert!(serde_json::from_value::<SegmentLeaf>(bad).is_err());

    let k = Key::new(1);
    let sth = head("nvr-a", 3, [9; 32], 1000, [0; 32]).sign(&k.signer());
    let json = serde_json::to_string(&sth).expect("json");
    let back: SignedTreeHead = serde_json::from_str(&json).expect("parse");
    assert_eq!(back, sth);
    assert!(back.verify_signature(&k.public()));
    let value = serde_json::to_value(&sth).expect("json");
    assert_eq!(value["head"]["root_hash"], "09".repeat(32));
    assert_eq!(value["signature"].as_str().map(str::len), Some(128));
}

#[test]
fn tree_head_encoding() {
    let h = head("nvr-a", 0x0102, [3; 32], -5, [4; 32]);
    let mut want = vec![1u8, 0, 0, 0, 5];
    want.extend_from_slice(b"nvr-a");
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    want.extend_from_slice(&[3; 32]);
    want.extend_from_slice(&(-5i64).to_be_bytes());
    want.extend_from_slice(&[4; 32]);
    assert_eq!(h.encode(), want);
    assert_eq!(TreeHead::decode(&want), Ok(h.clone()));
    let mut prefixed = vec![2u8];
    prefixed.extend_from_slice(&want);
    assert_eq!(h.head_hash(), sha256(&prefixed));
    let mut msg = b"nvr-sync tree head v1\0".to_vec();
    msg.extend_from_slice(&want);
    assert_eq!(h.signing_message(), msg);
    for cut in 0..want.len() {
        assert!(TreeHead::decode(&want[..cut]).is_err());
    }
    want.push(0);
    assert_eq!(TreeHead::decode(&want), Err(DecodeError::TrailingBytes(1)));
}

// ---------------------------------------------------------------- signatures and head checks

struct Key(Ed25519KeyPair);

impl Key {
    fn new(seed: u8) -> Key {
        Key(Ed25519KeyPair::from_seed_unchecked(&[seed; 32]).expect("seed"))
    }

    fn public(&self) -> [u8; 32] {
        self.0.public_key().as_ref().try_into().expect("32 bytes")
    }

    fn signer(&self) -> impl Fn(&[u8]) -> [u8; 64] + '_ {
        |m: &[u8]| {
            self.0
                .sign(m)
                .as_ref()
                .try_into()
                .expect("64-byte signature")
        }
    }
}

fn head(node: &str, size: u64, root: Hash, ts: i64, prev: Hash) -> TreeHead {
    TreeHead {
        log_node: node.into(),
        tree_size: size,
        root_hash: root,
        timestamp_ms: ts,
        prev_head_hash: prev,
    }
}

#[test]
fn signatures_and_countersignatures() {
    let (k, other) = (Key::new(1), Key::new(2));
    let h = head("nvr-a", 3, [9; 32], 1000, [0; 32]);
    let sth = h.sign(&k.signer());
    assert_eq!(sth.signature.len(), 64);
    assert!(sth.verify_signature(&k.public()));
    assert!(!sth.verify_signature(&other.public()));
    let mut bad = sth.clone();
    bad.head.tree_size = 4;
    assert!(!bad.verify_signature(&k.public()));
    let mut bad = sth.clone();
    bad.signature[10] ^= 1;
    assert!(!bad.verify_signature(&k.public()));
    let mut bad = sth.clone();
    bad.signature.pop();
    assert!(!bad.verify_signature(&k.public()));

    let cs = Countersignature::create("nvr-b", &h, &other.signer());
    assert_eq!(cs.head_hash, h.head_hash());
    assert!(cs.verify(&other.public()));
    assert!(cs.verify_for(&h, &other.public()));
    assert!(!cs.verify(&k.public()));
    assert!(!cs.verify_for(&head("nvr-a", 4, [9; 32], 1000, [0; 32]), &other.public()));
    let mut bad = cs.clone();
    bad.head_hash[0] ^= 1;
    assert!(!bad.verify(&other.public()));
    // A head signature is not a countersignature and vice versa (different contexts).
    let forged = Countersignature {
        signer_node: "nvr-a".into(),
        head_hash: h.head_hash(),
        signature: sth.signature.clone(),
    };
    assert!(!forged.verify(&k.public()));
    let json = serde_json::to_string(&cs).expect("json");
    assert_eq!(
        serde_json::from_str::<Countersignature>(&json).expect("parse"),
        cs
    );
}

/// A primary's log: its tree and the chain of heads it signed.
struct Log {
    key: Key,
    tree: MerkleTree,
    heads: Vec<SignedTreeHead>,
}

impl Log {
    fn new(leaves: &[Hash]) -> Log {
        Log {
            key: Key::new(1),
            tree: tree_of(leaves),
            heads: vec![],
        }
    }

    /// Signs a head at `size` chained to the previous one.
    fn sign_at(&mut self, size: u64, ts: i64) -> SignedTreeHead {
        let prev = self.heads.last().map_or([0; 32], |h| h.head.head_hash());
        let h = head(
            "nvr-a",
            size,
            self.tree.root_at(size).expect("size"),
            ts,
            prev,
        );
        let sth = h.sign(&self.key.signer());
        self.heads.push(sth.clone());
        sth
    }
}

#[test]
fn head_checks_accept_honest_extensions() {
    let l = leaves(20);
    let mut log = Log::new(&l);
    let pk = log.key.public();
    let h0 = log.sign_at(0, 100);
    let h5 = log.sign_at(5, 200);
    let h5b = log.sign_at(5, 250); // re-signed, no new leaves
    let h16 = log.sign_at(16, 300);
    let h20 = log.sign_at(20, 300);

    assert_eq!(check_new_head(None, &h5, &[], &pk), Ok(HeadCheck::First));
    let p = log.tree.consistency_proof(0, 5).expect("proof");
    assert_eq!(
        check_new_head(Some(&h0), &h5, &p, &pk),
        Ok(HeadCheck::Extends {
            old_size: 0,
            new_size: 5
        })
    );
    assert_eq!(
        check_new_head(Some(&h5), &h5b, &[], &pk),
        Ok(HeadCheck::Extends {
            old_size: 5,
            new_size: 5
        })
    );
    let p = log.tree.consistency_proof(5, 16).expect("proof");
    assert_eq!(
        check_new_head(Some(&h5b), &h16, &p, &pk),
        Ok(HeadCheck::Extends {
            old_size: 5,
            new_size: 16
        })
    );
    let p = log.tree.consistency_proof(16, 20).expect("proof");
    assert_eq!(
        check_new_head(Some(&h16), &h20, &p, &pk),
        Ok(HeadCheck::Extends {
            old_size: 16,
            new_size: 20
        })
    );
    assert_eq!(
        check_new_head(Some(&h20), &h20, &[], &pk),
        Ok(HeadCheck::AlreadyHeld)
    );

    // The standby's own copy of the leaves confirms the head.
    let held = tree_of(&l[..16]);
    assert_eq!(check_leaves(&held, &l[16..20], &h20.head), Ok(()));
    assert_eq!(
        check_leaves(&held, &l[16..19], &h20.head),
        Err(LeafRejection::SizeMismatch {
            held: 16,
            received: 3,
            expected: 20
        })
    );
    let mut swapped = l[16..20].to_vec();
    swapped.swap(0, 1);
    assert_eq!(
        check_leaves(&held, &swapped, &h20.head),
        Err(LeafRejection::RootMismatch)
    );
    assert_eq!(check_leaves(&MerkleTree::new(), &l, &h20.head), Ok(()));
}

#[test]
fn head_checks_refuse_attacks() {
    let l = leaves(20);
    let mut log = Log::new(&l);
    let pk = log.key.public();
    let h10 = log.sign_at(10, 1000);
    let h12 = log.sign_at(12, 2000);
    let p = log.tree.consistency_proof(10, 12).expect("proof");
    assert!(check_new_head(Some(&h10), &h12, &p, &pk).is_ok());

    // Replay of the older head while holding the newer one.
    assert_eq!(
        check_new_head(Some(&h12), &h10, &[], &pk),
        Err(HeadRejection::Rollback {
            held_size: 12,
            new_size: 10
        })
    );

    // Fork at the same size: a different leaf 11, chained correctly, signed by the real key.
    let mut forked = l.clone();
    forked[11] = flip(&forked[11], 0);
    let ft = tree_of(&forked);
    let fork = head(
        "nvr-a",
        12,
        ft.root_at(12).expect("root"),
        2000,
        h10.head.head_hash(),
    )
    .sign(&log.key.signer());
    assert_eq!(
        check_new_head(Some(&h12), &fork, &[], &pk),
        Err(HeadRejection::Fork { size: 12 })
    );

    // Rewritten leaf in the held prefix: chained and signed, but the consistency proof fails.
    let mut rewritten = l.clone();
    rewritten[3] = flip(&rewritten[3], 5);
    let rt = tree_of(&rewritten);
    let rw = head(
        "nvr-a",
        20,
        rt.root_at(20).expect("root"),
        3000,
        h12.head.head_hash(),
    )
    .sign(&log.key.signer());
    let rp = rt.consistency_proof(12, 20).expect("proof");
    assert_eq!(
        check_new_head(Some(&h12), &rw, &rp, &pk),
        Err(HeadRejection::Inconsistent {
            old_size: 12,
            new_size: 20
        })
    );
    // The honest proof does not help either.
    let hp = log.tree.consistency_proof(12, 20).expect("proof");
    assert_eq!(
        check_new_head(Some(&h12), &rw, &hp, &pk),
        Err(HeadRejection::Inconsistent {
            old_size: 12,
            new_size: 20
        })
    );
    // Nor does an empty proof.
    assert!(matches!(
        check_new_head(Some(&h12), &rw, &[], &pk),
        Err(HeadRejection::Inconsistent { .. })
    ));

    let h20 = log.sign_at(20, 3000);
    assert!(check_new_head(Some(&h12), &h20, &hp, &pk).is_ok());

    // Wrong key, tampered signature, tampered head.
    let stranger = Key::new(9);
    let forged = h20.head.sign(&stranger.signer());
    assert_eq!(
        check_new_head(Some(&h12), &forged, &hp, &pk),
        Err(HeadRejection::BadSignature)
    );
    assert_eq!(
        check_new_head(Some(&h12), &h20, &hp, &stranger.public()),
        Err(HeadRejection::BadSignature)
    );
    let mut tampered = h20.clone();
    tampered.head.timestamp_ms += 1;
    assert_eq!(
        check_new_head(Some(&h12), &tampered, &hp, &pk),
        Err(HeadRejection::BadSignature)
    );
    assert_eq!(
        check_new_head(None, &tampered, &[], &pk),
        Err(HeadRejection::BadSignature)
    );

    // Wrong prev hash: correct tree, but chained to an older head (skips h12).
    let skip =
        head("nvr-a", 20, h20.head.root_hash, 3000, h10.head.head_hash()).sign(&log.key.signer());
    assert_eq!(
        check_new_head(Some(&h12), &skip, &hp, &pk),
        Err(HeadRejection::BrokenChain)
    );
    let zero_prev = head("nvr-a", 20, h20.head.root_hash, 3000, [0; 32]).sign(&log.key.signer());
    assert_eq!(
        check_new_head(Some(&h12), &zero_prev, &hp, &pk),
        Err(HeadRejection::BrokenChain)
    );

    // Timestamp older than held.
    let old_ts =
        head("nvr-a", 20, h20.head.root_hash, 1999, h12.head.head_hash()).sign(&log.key.signer());
    assert_eq!(
        check_new_head(Some(&h12), &old_ts, &hp, &pk),
        Err(HeadRejection::TimestampRegressed {
            held_ms: 2000,
            new_ms: 1999
        })
    );

    // Another log node's head, even signed by the same key.
    let other_node =
        head("nvr-x", 20, h20.head.root_hash, 3000, h12.head.head_hash()).sign(&log.key.signer());
    assert_eq!(
        check_new_head(Some(&h12), &other_node, &hp, &pk),
        Err(HeadRejection::WrongLogNode {
            held: "nvr-a".into(),
            new: "nvr-x".into()
        })
    );

    // A size-0 head must carry the empty root.
    let bogus_empty = head("nvr-a", 0, [1; 32], 0, [0; 32]).sign(&log.key.signer());
    assert_eq!(
        check_new_head(None, &bogus_empty, &[], &pk),
        Err(HeadRejection::MalformedEmptyHead)
    );

    // Messages are readable.
    let msg = HeadRejection::Rollback {
        held_size: 12,
        new_size: 10,
    }
    .to_string();
    assert!(msg.contains("replay"), "{msg}");
}

// ---------------------------------------------------------------- scale

/// One million leaves: append, roots, proofs and loading must be feasible in a debug build. No
/// timing assertions; this fails only if the results are wrong (or the test times out).
#[test]
fn million_leaves() {
    const N: u64 = 1_000_000;
    let mut t = MerkleTree::new();
    let mut leaf = [0u8; 32];
    for i in 0..N {
        leaf[..8].copy_from_slice(&i.to_be_bytes());
        t.push(leaf);
    }
    assert_eq!(t.len(), N);
    let root = t.root();
    let mid = t.root_at(N / 2 + 3).expect("root");
    for index in [0, 1, N / 3, N - 1] {
        leaf[..8].copy_from_slice(&index.to_be_bytes());
        let p = t.inclusion_proof(index, N).expect("proof");
        assert!(p.len() <= 20);
        assert!(verify_inclusion(&leaf, index, N, &p, &root));
        let p = t.inclusion_proof(index, N / 2 + 3);
        if index < N / 2 + 3 {
            let p = p.expect("proof");
            assert!(verify_inclusion(&leaf, index, N / 2 + 3, &p, &mid));
        }
    }
    let p = t.consistency_proof(N / 2 + 3, N).expect("proof");
    assert!(verify_consistency(N / 2 + 3, N, &mid, &root, &p));
    assert!(!verify_consistency(N / 2 + 3, N, &flip(&mid, 1), &root, &p));

    // Loading half from storage, then checking a batch of received leaves against a head.
    let half = (N / 2 + 3) as usize;
    let prefix = MerkleTree::from_leaf_hashes(t.leaf_hashes()[..half].to_vec());
    assert_eq!(prefix.root(), mid);
    let batch = &t.leaf_hashes()[half..half + 1000];
    let head = head(
        "nvr-a",
        half as u64 + 1000,
        t.root_at(half as u64 + 1000).expect("root"),
        0,
        [0; 32],
    );
    assert_eq!(check_leaves(&prefix, batch, &head), Ok(()));
}
