//! Reading a Linux 6.1+ maple tree (`mm_struct.mm_mt`, the VMA tree) out of guest memory.
//!
//! The encoding, as the kernel profile documents it (`[constants]` comments): an encoded node
//! pointer `e` has the node at `e & ~MAPLE_NODE_MASK` and its type at
//! `(e >> MAPLE_NODE_TYPE_SHIFT) & MAPLE_NODE_TYPE_MASK` (`enum maple_type`); a node is a leaf when
//! its type is below `maple_range_64`. The root (`maple_tree.ma_root`) is a node only when
//! `xa_is_node`: `(e & XA_INTERNAL_MASK) == XA_INTERNAL_TAG && e > MAPLE_RESERVED_RANGE`; otherwise
//! it is a single entry for index 0 (never a VMA). VMA trees are allocation-range trees: inner
//! nodes are `maple_arange_64`, leaves `maple_leaf_64` (laid out as `maple_range_64`). Slot `i`
//! covers `(pivot[i-1], pivot[i]]`, the first slot starts at the node's minimum and the last one
//! ends at the node's maximum. The number of slots in use follows the kernel's `ma_data_end()`:
//! `meta.end` for `maple_arange_64`; for range nodes the last pivot decides (0: `meta.end`,
//! equal to the node's max: the last pivot index, else every slot).
//!
//! The walker only reads guest memory (a closure), never trusts it: depth, node count, pivot
//! order and the slot count are all bounded, so a tree caught mid-update or a wrong profile gives
//! a short or empty list, never a hang.

use ailuro_kprofile::KernelProfile;

/// Where the maple-tree fields are (from a kernel profile).
#[derive(Clone, Debug)]
pub(crate) struct MapleLayout {
    node_mask: u64,
    type_shift: u32,
    type_mask: u64,
    leaf_64: u64,
    range_64: u64,
    arange_64: u64,
    reserved: u64,
    xa_mask: u64,
    xa_tag: u64,
    /// `maple_tree.ma_root`.
    pub root: u64,
    range: NodeKind,
    arange: NodeKind,
    node_size: usize,
    /// Bytes of a pivot or slot (the kernel's `unsigned long` / pointer: 4 or 8).
    word: usize,
}

/// Offsets and counts of one node layout.
#[derive(Clone, Copy, Debug)]
struct NodeKind {
    pivot: usize,
    pivots: usize,
    slot: usize,
    slots: usize,
    meta_end: usize,
}

/// Upper bounds that keep a walk of a corrupt tree short.
const MAX_DEPTH: usize = 24;
const MAX_NODES: usize = 20_000;

fn lookup<T>(r: Result<T, ailuro_kprofile::LookupError>) -> Result<T, String> {
    r.map_err(|e| e.to_string())
}

impl MapleLayout {
    /// The maple layout of a profile (`Err` names the missing item).
    pub(crate) fn new(p: &KernelProfile) -> Result<MapleLayout, String> {
        let c = |n: &str| lookup(p.constant(n));
        let e = |n: &str| lookup(p.enum_value("maple_type", n)).map(|v| v as u64);
        let kind = |s: &str| -> Result<NodeKind, String> {
            let piv = lookup(p.member(s, "pivot"))?;
            let slot = lookup(p.member(s, "slot"))?;
            let meta = lookup(p.offset(s, "meta"))?;
            let meta_end = lookup(p.offset("maple_metadata", "end"))?;
            Ok(NodeKind {
                pivot: piv.offset as usize,
                pivots: piv.count.ok_or_else(|| format!("{s}.pivot: no element count in the profile"))? as usize,
                slot: slot.offset as usize,
                slots: slot.count.ok_or_else(|| format!("{s}.slot: no element count in the profile"))? as usize,
                meta_end: (meta + meta_end) as usize,
            })
        };
        let node_size = lookup(p.struct_size("maple_node"))? as usize;
        let word = usize::from(p.arch().pointer_size());
        let l = MapleLayout {
            node_mask: c("MAPLE_NODE_MASK")? as u64,
            type_shift: c("MAPLE_NODE_TYPE_SHIFT")? as u32,
            type_mask: c("MAPLE_NODE_TYPE_MASK")? as u64,
            leaf_64: e("maple_leaf_64")?,
            range_64: e("maple_range_64")?,
            arange_64: e("maple_arange_64")?,
            reserved: c("MAPLE_RESERVED_RANGE")? as u64,
            xa_mask: c("XA_INTERNAL_MASK")? as u64,
            xa_tag: c("XA_INTERNAL_TAG")? as u64,
            root: lookup(p.offset("maple_tree", "ma_root"))?,
            range: kind("maple_range_64")?,
            arange: kind("maple_arange_64")?,
            node_size,
            word,
        };
        for k in [l.range, l.arange] {
            let end = (k.slot + word * k.slots).max(k.pivot + word * k.pivots).max(k.meta_end + 1);
            if end > node_size || k.pivots + 1 != k.slots {
                return Err(format!("maple node layout inconsistent (node size {node_size}, {k:?})"));
            }
        }
        Ok(l)
    }

    /// Is `root` (the value of `ma_root`) an encoded node?
    pub(crate) fn root_is_node(&self, root: u64) -> bool {
        root & self.xa_mask == self.xa_tag && root > self.reserved
    }

    /// All non-NULL leaf entries of the tree whose root value is `root`, as
    /// `(first index, last index, entry)`, in index order. `read` reads guest memory (pivots
    /// and slots of the kernel's word size); unreadable nodes are skipped.
    pub(crate) fn entries(&self, root: u64, read: &dyn Fn(u64, &mut [u8]) -> bool) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        if !self.root_is_node(root) {
            return out;
        }
        let mut budget = MAX_NODES;
        // The whole index range: ULONG_MAX of the kernel.
        let max = if self.word == 8 { u64::MAX } else { 0xffff_ffff };
        self.node(root, 0, max, 0, &mut budget, read, &mut out);
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn node(
        &self,
        enode: u64,
        min: u64,
        max: u64,
        depth: usize,
        budget: &mut usize,
        read: &dyn Fn(u64, &mut [u8]) -> bool,
        out: &mut Vec<(u64, u64, u64)>,
    ) {
        if depth > MAX_DEPTH || *budget == 0 {
            return;
        }
        *budget -= 1;
        let addr = if self.word == 8 { enode & !self.node_mask } else { enode & !self.node_mask & 0xffff_ffff };
        let ty = (enode >> self.type_shift) & self.type_mask;
        let (k, leaf) = if ty == self.arange_64 {
            (self.arange, false)
        } else if ty == self.range_64 {
            (self.range, false)
        } else if ty == self.leaf_64 {
            (self.range, true)
        } else {
            return; // maple_dense: not used by VMA trees
        };
        if addr == 0 {
            return;
        }
        let mut buf = vec![0u8; self.node_size];
        if !read(addr, &mut buf) {
            return;
        }
        let w = self.word;
        // In bounds: `new` checked that pivots and slots lie inside the node.
        let word = |off: usize| match buf.get(off..off + w) {
            Some(b) if w == 8 => u64::from_le_bytes(b.try_into().unwrap_or_default()),
            Some(b) => u64::from(u32::from_le_bytes(b.try_into().unwrap_or_default())),
            None => 0,
        };
        let pivot = |i: usize| word(k.pivot + w * i);
        let slot = |i: usize| word(k.slot + w * i);
        let meta_end = usize::from(buf[k.meta_end]);
        // ma_data_end()
        let last = k.pivots - 1;
        let end = if ty == self.arange_64 || pivot(last) == 0 {
            meta_end
        } else if pivot(last) == max {
            last
        } else {
            k.pivots
        };
        let end = if end >= k.slots { k.slots - 1 } else { end };
        let mut lo = min;
        for i in 0..=end {
            let piv = if i < k.pivots { pivot(i) } else { max };
            if i > 0 && piv == 0 {
                break;
            }
            if piv < lo || piv > max {
                break; // out of order: a node caught mid-update, or not a node
            }
            let entry = slot(i);
            if entry != 0 {
                if leaf {
                    if entry & self.xa_mask != self.xa_tag {
                        out.push((lo, piv, entry));
                    }
                } else {
                    self.node(entry, lo, piv, depth + 1, budget, read, out);
                }
            }
            if piv >= max {
                break;
            }
            lo = piv.saturating_add(1);
        }
    }
}

#[cfg(test)]
pub(crate) mod build {
    //! Writing small maple trees into test memory, with the same layout rules.

    /// [`range_node`] in the x86_64 layout: parent @0, pivot[15] @8, slot[16] @128, meta @248.
    pub(crate) fn range_node64(ranges: &[(u64, u64)], node_max: u64) -> Vec<u8> {
        let mut b = vec![0u8; 256];
        assert!(ranges.len() <= 16);
        for (i, &(last, entry)) in ranges.iter().enumerate() {
            if i < 15 {
                assert!(last <= node_max);
                b[8 + 8 * i..16 + 8 * i].copy_from_slice(&last.to_le_bytes());
            }
            b[128 + 8 * i..136 + 8 * i].copy_from_slice(&entry.to_le_bytes());
        }
        if ranges.len() < 15 {
            b[248] = (ranges.len() - 1) as u8;
        }
        b
    }

    /// [`arange_node`] in the x86_64 layout: pivot[9] @8, slot[10] @80, gap[10] @160, meta @240.
    pub(crate) fn arange_node64(children: &[(u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; 256];
        assert!(children.len() <= 10);
        for (i, &(last, child)) in children.iter().enumerate() {
            if i < 9 {
                b[8 + 8 * i..16 + 8 * i].copy_from_slice(&last.to_le_bytes());
            }
            b[80 + 8 * i..88 + 8 * i].copy_from_slice(&child.to_le_bytes());
        }
        b[240] = (children.len() - 1) as u8;
        b
    }

    /// A leaf-64 node's image: `ranges` are `(last index, entry)` in order; the last range must
    /// end at the node's max. Returns the node bytes (256 bytes, i386 layout).
    pub(crate) fn range_node(ranges: &[(u64, u64)], node_max: u64) -> Vec<u8> {
        // maple_range_64 on i386: parent @0, pivot[31] @4, slot[32] @128, meta @252
        let mut b = vec![0u8; 256];
        assert!(ranges.len() <= 32);
        for (i, &(last, entry)) in ranges.iter().enumerate() {
            // Every slot but the 32nd has its pivot stored (also when it ends at the node's max).
            if i < 31 {
                assert!(last <= node_max);
                b[4 + 4 * i..8 + 4 * i].copy_from_slice(&(last as u32).to_le_bytes());
            }
            b[128 + 4 * i..132 + 4 * i].copy_from_slice(&(entry as u32).to_le_bytes());
        }
        if ranges.len() < 31 {
            b[252] = (ranges.len() - 1) as u8; // meta.end
        }
        b
    }

    /// An arange-64 node: `children` are `(last index, encoded child)`.
    pub(crate) fn arange_node(children: &[(u64, u64)]) -> Vec<u8> {
        // maple_arange_64 on i386: parent @0, pivot[20] @4, slot[21] @84, gap[21] @168, meta @252
        let mut b = vec![0u8; 256];
        assert!(children.len() <= 21);
        for (i, &(last, child)) in children.iter().enumerate() {
            if i < 20 {
                b[4 + 4 * i..8 + 4 * i].copy_from_slice(&(last as u32).to_le_bytes());
            }
            b[84 + 4 * i..88 + 4 * i].copy_from_slice(&(child as u32).to_le_bytes());
        }
        b[252] = (children.len() - 1) as u8;
        b
    }

    /// Encoded node pointer (`mt_mk_node`): node | type << 3 | MAPLE_ENODE_NULL (4).
    pub(crate) fn enode(node: u64, ty: u64) -> u64 {
        node | (ty << 3) | 4
    }

    /// The root value (`mte_mk_root`): enode | 2.
    pub(crate) fn root(enode: u64) -> u64 {
        enode | 2
    }
}
