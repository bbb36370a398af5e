//! The append-only Merkle tree (RFC 6962 section 2.1 shape) with cached complete subtrees, and the
//! RFC 9162 proof verifiers.

use ring::digest::{digest, Context, SHA256};

use super::Hash;

/// Domain-separation prefix of leaf hashes.
pub const LEAF_HASH_PREFIX: u8 = 0x00;
/// Domain-separation prefix of interior node hashes.
pub const NODE_HASH_PREFIX: u8 = 0x01;

fn to_hash(d: ring::digest::Digest) -> Hash {
    let mut h = [0u8; 32];
    h.copy_from_slice(d.as_ref());
    h
}

/// Root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    to_hash(digest(&SHA256, b""))
}

/// `SHA-256(0x00 ‖ data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = Context::new(&SHA256);
    ctx.update(&[LEAF_HASH_PREFIX]);
    ctx.update(data);
    to_hash(ctx.finish())
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_HASH_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    to_hash(digest(&SHA256, &buf))
}

/// Counts `View::mth` calls that missed both caches; tests assert it stays zero.
#[cfg(test)]
pub(crate) static UNCACHED_RANGES: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree over leaf hashes.
///
/// `levels[j][i]` is the hash of the complete subtree covering leaves `[i·2^j, (i+1)·2^j)`;
/// `levels[0]` holds the leaf hashes. Every complete, aligned subtree is cached as soon as its last
/// leaf is pushed (amortised one node hash per push, about 2·n hashes of memory), so the root of any
/// prefix is the fold of at most 64 cached "peaks", and every node of an audit path or consistency
/// proof is either a cached subtree or one of those peak folds: O(log n) hash operations each.
#[derive(Debug, Clone, Default)]
pub struct MerkleTree {
    levels: Vec<Vec<Hash>>,
}

/// Two trees are equal when they hold the same leaf hashes (everything else derives from them).
impl PartialEq for MerkleTree {
    fn eq(&self, other: &Self) -> bool {
        self.leaf_hashes() == other.leaf_hashes()
    }
}

impl Eq for MerkleTree {}

/// Hashes needed to answer questions about the tree as it was at `size` leaves.
struct View<'a> {
    tree: &'a MerkleTree,
    size: u64,
    /// `(start, hash of leaves [start, size))` for the start of every peak of `size`.
    suffixes: Vec<(u64, Hash)>,
}

impl View<'_> {
    /// `MTH(D[start:end])` for `start < end <= size`.
    fn mth(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n.is_power_of_two() && start % n == 0 {
            if let Some(h) = self.tree.complete(n.trailing_zeros(), start / n) {
                return h;
            }
        }
        if end == self.size {
            if let Some((_, h)) = self.suffixes.iter().find(|(s, _)| *s == start) {
                return *h;
            }
        }
        // Not reached by the proof algorithms (their ranges are always complete subtrees or
        // suffixes starting at a peak), but correct for any range.
        #[cfg(test)]
        UNCACHED_RANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let k = split_point(n);
        node_hash(&self.mth(start, start + k), &self.mth(start + k, end))
    }

    /// RFC 6962 PATH(m, D[start:end]), `m` relative to `start`.
    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split_point(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.mth(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.mth(start, start + k));
        }
    }

    /// RFC 6962 SUBPROOF(m, D[start:end], b), `m` relative to `start`.
    fn subproof(&self, m: u64, start: u64, end: u64, b: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !b {
                out.push(self.mth(start, end));
            }
            return;
        }
        let k = split_point(n);
        if m <= k {
            self.subproof(m, start, start + k, b, out);
            out.push(self.mth(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.mth(start, start + k));
        }
    }
}

impl MerkleTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a tree from stored leaf hashes in O(n).
    pub fn from_leaf_hashes(leaves: Vec<Hash>) -> Self {
        let mut levels = vec![leaves];
        loop {
            let below = &levels[levels.len() - 1];
            if below.len() < 2 {
                break;
            }
            let next: Vec<Hash> = below
                .chunks_exact(2)
                .map(|pair| node_hash(&pair[0], &pair[1]))
                .collect();
            levels.push(next);
        }
        MerkleTree { levels }
    }

    /// Appends a leaf hash and returns its index.
    pub fn push(&mut self, leaf_hash: Hash) -> u64 {
        let index = self.len();
        let mut h = leaf_hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let row = &mut self.levels[level];
            row.push(h);
            if row.len() % 2 != 0 {
                break;
            }
            h = node_hash(&row[row.len() - 2], &row[row.len() - 1]);
            level += 1;
        }
        index
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The leaf hash at `index`, if present.
    pub fn leaf_hash(&self, index: u64) -> Option<Hash> {
        self.complete(0, index)
    }

    /// All leaf hashes, in order (for persisting the tree).
    pub fn leaf_hashes(&self) -> &[Hash] {
        self.levels.first().map_or(&[], |l| l.as_slice())
    }

    /// Cached hash of the complete subtree at `level`, position `index`.
    fn complete(&self, level: u32, index: u64) -> Option<Hash> {
        let row = self.levels.get(usize::try_from(level).ok()?)?;
        row.get(usize::try_from(index).ok()?).copied()
    }

    /// The peaks (maximal complete subtrees, left to right) of the tree at `size <= len()`, as
    /// `(start, hash)`.
    fn peaks(&self, size: u64) -> Option<Vec<(u64, Hash)>> {
        let mut peaks = Vec::with_capacity(size.count_ones() as usize);
        let mut start = 0u64;
        for level in (0..64u32).rev() {
            let width = 1u64 << level;
            if size & width != 0 {
                peaks.push((start, self.complete(level, start >> level)?));
                start += width;
            }
        }
        Some(peaks)
    }

    fn view(&self, size: u64) -> Option<View<'_>> {
        if size > self.len() {
            return None;
        }
        let mut suffixes = self.peaks(size)?;
        let mut acc: Option<Hash> = None;
        for (_, h) in suffixes.iter_mut().rev() {
            let folded = match acc {
                None => *h,
                Some(right) => node_hash(h, &right),
            };
            *h = folded;
            acc = Some(folded);
        }
        Some(View {
            tree: self,
            size,
            suffixes,
        })
    }

    /// Current root (`SHA-256("")` for the empty tree).
    pub fn root(&self) -> Hash {
        self.root_at(self.len()).unwrap_or_else(empty_root)
    }

    /// Root of the tree as it was with `size` leaves; `None` if `size > len()`.
    pub fn root_at(&self, size: u64) -> Option<Hash> {
        let view = self.view(size)?;
        Some(view.suffixes.first().map_or_else(empty_root, |(_, h)| *h))
    }

    /// Audit path for leaf `index` in the tree of `size` leaves (RFC 6962 PATH), leaf to root.
    /// `None` unless `index < size <= len()`.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Option<Vec<Hash>> {
        if index >= size {
            return None;
        }
        let view = self.view(size)?;
        let mut out = Vec::with_capacity(64);
        view.path(index, 0, size, &mut out);
        Some(out)
    }

    /// Consistency proof from the tree at `old_size` to the tree at `new_size` (RFC 6962 PROOF).
    /// Empty when `old_size` is 0 or equal to `new_size`. `None` unless
    /// `old_size <= new_size <= len()`.
    pub fn consistency_proof(&self, old_size: u64, new_size: u64) -> Option<Vec<Hash>> {
        if old_size > new_size {
            return None;
        }
        let view = self.view(new_size)?;
        let mut out = Vec::with_capacity(64);
        if old_size > 0 && old_size < new_size {
            view.subproof(old_size, 0, new_size, true, &mut out);
        }
        Some(out)
    }

    /// The root the tree would have after appending `extra` leaf hashes, without modifying it.
    /// O(log n + extra.len()) hash operations.
    pub fn root_with_appended(&self, extra: &[Hash]) -> Hash {
        // The peaks behave like a binary counter: push a level-0 peak, merge equal neighbours.
        let mut stack: Vec<(u32, Hash)> = Vec::new();
        let len = self.len();
        for level in (0..64u32).rev() {
            if len & (1u64 << level) != 0 {
                match self.complete(level, (len >> level) - 1) {
                    Some(h) => stack.push((level, h)),
                    None => return self.slow_root_with_appended(extra),
                }
            }
        }
        for leaf in extra {
            let mut cur = (0u32, *leaf);
            while let Some(&(level, left)) = stack.last() {
                if level != cur.0 {
                    break;
                }
                stack.pop();
                cur = (level + 1, node_hash(&left, &cur.1));
            }
            stack.push(cur);
        }
        let mut acc: Option<Hash> = None;
        for (_, h) in stack.iter().rev() {
            acc = Some(match acc {
                None => *h,
                Some(right) => node_hash(h, &right),
            });
        }
        acc.unwrap_or_else(empty_root)
    }

    /// Fallback that cannot be reached while the cache invariant holds.
    fn slow_root_with_appended(&self, extra: &[Hash]) -> Hash {
        let mut copy = self.clone();
        for h in extra {
            copy.push(*h);
        }
        copy.root()
    }
}

/// Verifies an audit path (RFC 9162 section 2.1.3.2): `leaf_hash` is leaf `index` of the tree of
/// `size` leaves whose root is `root`.
pub fn verify_inclusion(
    leaf_hash: &Hash,
    index: u64,
    size: u64,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Verifies a consistency proof (RFC 9162 section 2.1.4.2): the tree of `old_size` leaves with
/// root `old_root` is a prefix of the tree of `new_size` leaves with root `new_root`.
///
/// Edge cases: equal sizes need an empty proof and equal roots; `old_size == 0` needs an empty
/// proof and `old_root` equal to the empty-tree root (every tree extends the empty tree).
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == empty_root();
    }
    let (first, rest): (Hash, &[Hash]) = if old_size.is_power_of_two() {
        (*old_root, proof)
    } else {
        match proof.split_first() {
            Some((first, rest)) => (*first, rest),
            None => return false,
        }
    };
    let (mut f, mut s) = (old_size - 1, new_size - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}
