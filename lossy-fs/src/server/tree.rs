//! The in-memory tree the filesystem serves: each file's bytes in shared chunks, each node as it
//! is now and as of its last sync, and the state that a cut rolls back to the durable copies.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use fuser::{Errno, FileAttr, FileType, INodeNo};

use super::{CHUNK, ROOT};
/// A file's bytes: `len` bytes in chunks of [`CHUNK`], the bytes past `len` in the last chunk
/// always zero.
#[derive(Clone, Default)]
pub(super) struct Content {
    pub(super) len: u64,
    pub(super) chunks: Vec<Arc<Vec<u8>>>,
}

impl Content {
    pub(super) fn read(&self, offset: u64, size: u64) -> Vec<u8> {
        if offset >= self.len {
            return Vec::new();
        }
        let end = offset.saturating_add(size).min(self.len);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let (index, within) = split(at);
            let take = ((CHUNK - within) as u64).min(end - at) as usize;
            out.extend_from_slice(&self.chunks[index][within..within + take]);
            at += take as u64;
        }
        out
    }

    pub(super) fn write(&mut self, offset: u64, bytes: &[u8]) {
        let end = offset + bytes.len() as u64;
        if end > self.len {
            self.set_len(end);
        }
        let mut at = offset;
        let mut rest = bytes;
        while !rest.is_empty() {
            let (index, within) = split(at);
            let take = (CHUNK - within).min(rest.len());
            Arc::make_mut(&mut self.chunks[index])[within..within + take]
                .copy_from_slice(&rest[..take]);
            rest = &rest[take..];
            at += take as u64;
        }
    }

    pub(super) fn set_len(&mut self, len: u64) {
        let chunks = len.div_ceil(CHUNK as u64) as usize;
        if len < self.len {
            self.chunks.truncate(chunks);
            let within = split(len).1;
            if within != 0
                && let Some(last) = self.chunks.last_mut()
            {
                Arc::make_mut(last)[within..].fill(0);
            }
        } else {
            self.chunks.resize_with(chunks, || Arc::new(vec![0; CHUNK]));
        }
        self.len = len;
    }

    /// Bytes in which `self` differs from `other`, by chunk, plus the difference of lengths.
    pub(super) fn differing_bytes(&self, other: &Content) -> u64 {
        let shared = self.chunks.len().min(other.chunks.len());
        let changed = (0..shared)
            .filter(|&i| {
                !Arc::ptr_eq(&self.chunks[i], &other.chunks[i]) && self.chunks[i] != other.chunks[i]
            })
            .count() as u64;
        changed * CHUNK as u64 + self.len.abs_diff(other.len)
    }
}

/// The chunk holding byte `at`, and the offset inside it.
pub(super) fn split(at: u64) -> (usize, usize) {
    ((at / CHUNK as u64) as usize, (at % CHUNK as u64) as usize)
}

/// What a node holds now and as of its last sync.
pub(super) enum Body {
    File {
        data: Content,
        durable: Content,
    },
    Dir {
        entries: BTreeMap<OsString, u64>,
        durable: BTreeMap<OsString, u64>,
    },
}

pub(super) struct Node {
    pub(super) body: Body,
    pub(super) perm: u16,
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) changed: SystemTime,
    /// Syncs that succeeded.
    pub(super) syncs: u64,
    /// Handles open on it.
    pub(super) open: usize,
}

impl Node {
    pub(super) fn new(body: Body, perm: u16, uid: u32, gid: u32) -> Node {
        Node {
            body,
            perm,
            uid,
            gid,
            changed: SystemTime::now(),
            syncs: 0,
            open: 0,
        }
    }

    pub(super) fn sync(&mut self) {
        match &mut self.body {
            Body::File { data, durable } => *durable = data.clone(),
            Body::Dir { entries, durable } => *durable = entries.clone(),
        }
    }

    pub(super) fn entries(&self) -> Option<&BTreeMap<OsString, u64>> {
        match &self.body {
            Body::Dir { entries, .. } => Some(entries),
            Body::File { .. } => None,
        }
    }

    pub(super) fn entries_mut(&mut self) -> Option<&mut BTreeMap<OsString, u64>> {
        match &mut self.body {
            Body::Dir { entries, .. } => Some(entries),
            Body::File { .. } => None,
        }
    }
}

pub(super) struct State {
    pub(super) nodes: HashMap<u64, Node>,
    pub(super) next_ino: u64,
    /// Open handles and the node each is on.
    pub(super) handles: HashMap<u64, u64>,
    pub(super) next_handle: u64,
    pub(super) failing_syncs: bool,
}

impl State {
    pub(super) fn new(uid: u32, gid: u32) -> State {
        let root = Node::new(
            Body::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
            0o755,
            uid,
            gid,
        );
        State {
            nodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_handle: 1,
            failing_syncs: false,
        }
    }

    pub(super) fn attr(&self, ino: u64) -> Option<FileAttr> {
        let node = self.nodes.get(&ino)?;
        let (kind, size, nlink) = match &node.body {
            Body::File { data, .. } => {
                let links = self
                    .nodes
                    .values()
                    .filter_map(Node::entries)
                    .flat_map(BTreeMap::values)
                    .filter(|&&child| child == ino)
                    .count();
                (FileType::RegularFile, data.len, links as u32)
            }
            Body::Dir { entries, .. } => (FileType::Directory, entries.len() as u64, 2),
        };
        Some(FileAttr {
            ino: INodeNo(ino),
            size,
            blocks: size.div_ceil(512),
            atime: node.changed,
            mtime: node.changed,
            ctime: node.changed,
            crtime: node.changed,
            kind,
            perm: node.perm,
            nlink,
            uid: node.uid,
            gid: node.gid,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }

    pub(super) fn child(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        let entries = self
            .nodes
            .get(&parent)
            .ok_or(Errno::ENOENT)?
            .entries()
            .ok_or(Errno::ENOTDIR)?;
        entries.get(name).copied().ok_or(Errno::ENOENT)
    }

    pub(super) fn resolve(&self, relative: &Path) -> Option<u64> {
        relative
            .components()
            .try_fold(ROOT, |ino, part| match part {
                std::path::Component::Normal(name) => self.child(ino, name).ok(),
                std::path::Component::CurDir => Some(ino),
                _ => None,
            })
    }

    /// Adds a new node named `name` in `parent`.
    pub(super) fn add(&mut self, parent: u64, name: &OsStr, node: Node) -> Result<u64, Errno> {
        match self.child(parent, name) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(error) if error != Errno::ENOENT => return Err(error),
            Err(_) => {}
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        self.entries_of(parent)?.insert(name.to_owned(), ino);
        Ok(ino)
    }

    pub(super) fn entries_of(&mut self, dir: u64) -> Result<&mut BTreeMap<OsString, u64>, Errno> {
        self.nodes
            .get_mut(&dir)
            .ok_or(Errno::ENOENT)?
            .entries_mut()
            .ok_or(Errno::ENOTDIR)
    }

    pub(super) fn open(&mut self, ino: u64) -> Result<u64, Errno> {
        self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?.open += 1;
        let handle = self.next_handle;
        self.next_handle += 1;
        self.handles.insert(handle, ino);
        Ok(handle)
    }

    pub(super) fn release(&mut self, handle: u64) {
        if let Some(ino) = self.handles.remove(&handle)
            && let Some(node) = self.nodes.get_mut(&ino)
        {
            node.open = node.open.saturating_sub(1);
        }
        self.collect();
    }

    pub(super) fn sync(&mut self, ino: u64) -> Result<(), Errno> {
        if self.failing_syncs {
            return Err(Errno::EIO);
        }
        let node = self.nodes.get_mut(&ino).ok_or(Errno::ENOENT)?;
        node.sync();
        node.syncs += 1;
        Ok(())
    }

    /// Forgets nodes that no directory names, now or durably, and that nobody holds open.
    pub(super) fn collect(&mut self) {
        loop {
            let named: std::collections::HashSet<u64> = self
                .nodes
                .values()
                .filter_map(|node| match &node.body {
                    Body::Dir { entries, durable } => {
                        Some(entries.values().chain(durable.values()))
                    }
                    Body::File { .. } => None,
                })
                .flatten()
                .copied()
                .collect();
            let before = self.nodes.len();
            self.nodes
                .retain(|ino, node| *ino == ROOT || node.open > 0 || named.contains(ino));
            if self.nodes.len() == before {
                break;
            }
        }
    }
}
