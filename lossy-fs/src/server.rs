//! The filesystem itself, served by the `lossy-fs` program in a process of its own ([`run`]),
//! driven by [`crate::LossyFs`] over its standard input and output, one command a line.
//!
//! A process of its own: a process that maps a file of a FUSE filesystem it serves itself can
//! deadlock (unmapping holds the process's memory lock while the kernel waits for the serving
//! thread to take the written-back pages, and that thread needs the same lock to fault in its
//! own memory). SQLite maps its `-shm` file, and the stores under test run in the test process.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{self, BufRead, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileHandle, FileType, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow,
    WriteFlags,
};

use crate::Cut;

mod tree;

use tree::{Body, Content, Node, State};

/// The root directory's inode number (FUSE's).
const ROOT: u64 = 1;
/// Bytes of a file are kept in chunks of this size, shared between the current and the durable
/// copy until written: a sync copies pointers, not the file.
const CHUNK: usize = 16 * 1024;
/// Attributes and entries are never cached by the kernel: after a cut, it must ask again.
const TTL: Duration = Duration::ZERO;

/// Where `LOSSY_FS_TRACE` asks for a line per write, sync, creation, removal, rename and cut
/// (inode numbers, offsets and lengths; never the bytes): to see what a program made durable.
static TRACE: std::sync::OnceLock<Option<Mutex<std::fs::File>>> = std::sync::OnceLock::new();

fn trace(line: std::fmt::Arguments<'_>) {
    let trace = TRACE.get_or_init(|| {
        let path = std::env::var_os("LOSSY_FS_TRACE")?;
        std::fs::File::create(path).ok().map(Mutex::new)
    });
    if let Some(file) = trace {
        let mut file = file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let _ = writeln!(file, "{line}");
    }
}

/// Mounts the filesystem on `mountpoint`, says `ready` on standard output, then answers the
/// commands read from standard input (see [`crate::LossyFs`]) until it closes; then unmounts
/// (lazily: files still open keep working until closed) and returns.
pub fn run(mountpoint: &Path) -> io::Result<()> {
    let mounted = Mounted::mount(mountpoint)?;
    let mut out = io::stdout().lock();
    writeln!(out, "ready")?;
    out.flush()?;
    for line in io::stdin().lock().lines() {
        let line = line?;
        let (command, argument) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let answer = match command {
            "cut" => {
                let cut = mounted.cut();
                format!("cut {} {} {}", cut.files, cut.bytes, cut.entries)
            }
            "sync-all" => {
                mounted.sync_all();
                "ok".to_owned()
            }
            "copy" => match mounted.durable_copy(Path::new(argument)) {
                Ok(()) => "ok".to_owned(),
                Err(error) => format!("error {error}"),
            },
            "fail-syncs" => {
                mounted.fail_syncs(argument == "on");
                "ok".to_owned()
            }
            "syncs" => match mounted.syncs(Path::new(argument)) {
                Some(count) => format!("syncs {count}"),
                None => "syncs none".to_owned(),
            },
            "open-handles" => format!("open {}", mounted.open_handles()),
            other => format!("error unknown command {other:?}"),
        };
        writeln!(out, "{answer}")?;
        out.flush()?;
    }
    drop(mounted);
    Ok(())
}

/// The mounted filesystem, in the serving process; unmounted when dropped.
struct Mounted {
    state: Arc<Mutex<State>>,
    mountpoint: PathBuf,
    notifier: fuser::Notifier,
    _session: fuser::BackgroundSession,
}

impl Drop for Mounted {
    /// Unmounts lazily: a process still holding a file cannot keep the mount. The connection ends
    /// when this process exits (its requests then fail rather than wait).
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl std::fmt::Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mounted({})", self.mountpoint.display())
    }
}

impl Mounted {
    /// Mounts an empty lossy filesystem on `mountpoint` (an existing, empty directory). Fails,
    /// saying why, where FUSE cannot run.
    fn mount(mountpoint: &Path) -> io::Result<Mounted> {
        let mountpoint = &mountpoint.canonicalize()?;
        let owner = std::fs::metadata(mountpoint)?;
        let state = Arc::new(Mutex::new(State::new(owner.uid(), owner.gid())));
        let mut config = Config::default();
        config.mount_options = vec![
            MountOption::FSName("lossy-fs".to_owned()),
            MountOption::NoAtime,
        ];
        let session =
            fuser::spawn_mount(Served(state.clone()), mountpoint, &config).map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!(
                        "cannot mount the lossy filesystem on {} (FUSE needs /dev/fuse and the \
                         right to mount: root, or fusermount3 from the fuse3 package): {error}",
                        mountpoint.display()
                    ),
                )
            })?;
        Ok(Mounted {
            notifier: session.notifier(),
            state,
            mountpoint: mountpoint.to_owned(),
            _session: session,
        })
    }

    /// Drops every write not yet synced, as a power cut would. The processes that wrote must be
    /// dead: a handle still open is forgotten, and what is written through it afterwards lands
    /// on the state after the cut.
    fn cut(&self) -> Cut {
        let (cut, inodes, entries) = {
            let mut state = self.lock();
            let mut cut = Cut::default();
            let mut gone = Vec::new();
            for (&ino, node) in &mut state.nodes {
                match &mut node.body {
                    Body::File { data, durable } => {
                        let lost = data.differing_bytes(durable);
                        if lost > 0 {
                            cut.files += 1;
                            cut.bytes += lost;
                        }
                        *data = durable.clone();
                    }
                    Body::Dir { entries, durable } => {
                        for (name, child) in entries.iter() {
                            if durable.get(name) != Some(child) {
                                gone.push((ino, name.clone()));
                            }
                        }
                        cut.entries += entries
                            .iter()
                            .filter(|&(name, child)| durable.get(name) != Some(child))
                            .count()
                            + durable
                                .iter()
                                .filter(|&(name, child)| entries.get(name) != Some(child))
                                .count();
                        *entries = durable.clone();
                    }
                }
                node.open = 0;
            }
            state.handles.clear();
            state.collect();
            trace(format_args!(
                "cut {} {} {}",
                cut.files, cut.bytes, cut.entries
            ));
            let inodes: Vec<u64> = state.nodes.keys().copied().collect();
            (cut, inodes, gone)
        };
        // Outside the lock: the kernel may ask the filesystem to write back pages meanwhile.
        for (parent, name) in entries {
            let _ = self.notifier.inval_entry(INodeNo(parent), &name);
        }
        for ino in inodes {
            let _ = self.notifier.inval_inode(INodeNo(ino), 0, 0);
        }
        cut
    }

    /// Makes everything written so far durable, as a machine left running long enough would
    /// (the kernel writes back on its own): for a set-up that must not be part of what is cut.
    fn sync_all(&self) {
        let mut state = self.lock();
        for node in state.nodes.values_mut() {
            node.sync();
        }
        state.collect();
    }

    /// Writes what a cut now would leave into `to` (created if needed), without touching the
    /// filesystem: what a running process has made durable.
    fn durable_copy(&self, to: &Path) -> io::Result<()> {
        let mut files = Vec::new();
        {
            let state = self.lock();
            let mut pending = vec![(ROOT, PathBuf::new())];
            while let Some((ino, path)) = pending.pop() {
                match state.nodes.get(&ino).map(|node| &node.body) {
                    Some(Body::Dir { durable, .. }) => {
                        files.push((path.clone(), None));
                        for (name, &child) in durable {
                            pending.push((child, path.join(name)));
                        }
                    }
                    Some(Body::File { durable, .. }) => {
                        files.push((path, Some(durable.read(0, durable.len))));
                    }
                    None => {}
                }
            }
        }
        for (path, bytes) in files {
            let target = to.join(path);
            match bytes {
                None => std::fs::create_dir_all(&target)?,
                Some(bytes) => std::fs::write(&target, bytes)?,
            }
        }
        Ok(())
    }

    /// While `failing`, every `fsync`, `fdatasync` and directory sync answers `EIO` and makes
    /// nothing durable: a disk that stopped taking writes.
    fn fail_syncs(&self, failing: bool) {
        self.lock().failing_syncs = failing;
    }

    /// How many syncs of the file or directory at `relative` (a path inside the filesystem, as it
    /// is now) succeeded; `None` when there is no such file.
    fn syncs(&self, relative: &Path) -> Option<u64> {
        let state = self.lock();
        let ino = state.resolve(relative)?;
        state.nodes.get(&ino).map(|node| node.syncs)
    }

    /// How many files and directories are open (handles not yet released by the kernel).
    fn open_handles(&self) -> usize {
        self.lock().handles.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // A panic in a handler leaves the state as consistent as the operation it interrupted.
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The filesystem as the FUSE session serves it.
struct Served(Arc<Mutex<State>>);

impl Served {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.0)
    }

    fn reply_entry(state: &State, ino: u64, reply: ReplyEntry) {
        match state.attr(ino) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }
}

impl fuser::Filesystem for Served {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let state = self.state();
        match state.child(parent.0, name) {
            Ok(ino) => Self::reply_entry(&state, ino, reply),
            Err(error) => reply.error(error),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.state().attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.state();
        let Some(node) = state.nodes.get_mut(&ino.0) else {
            return reply.error(Errno::ENOENT);
        };
        if let Some(size) = size {
            match &mut node.body {
                Body::File { data, .. } => {
                    trace(format_args!("truncate {} {size}", ino.0));
                    data.set_len(size);
                }
                Body::Dir { .. } => return reply.error(Errno::EISDIR),
            }
        }
        if let Some(mode) = mode {
            node.perm = (mode & 0o7777) as u16;
        }
        node.uid = uid.unwrap_or(node.uid);
        node.gid = gid.unwrap_or(node.gid);
        node.changed = SystemTime::now();
        match state.attr(ino.0) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        if mode & S_IFMT != S_IFREG {
            return reply.error(Errno::EPERM);
        }
        let mut state = self.state();
        let node = Node::new(
            Body::File {
                data: Content::default(),
                durable: Content::default(),
            },
            (mode & !umask & 0o7777) as u16,
            req.uid(),
            req.gid(),
        );
        match state.add(parent.0, name, node) {
            Ok(ino) => Self::reply_entry(&state, ino, reply),
            Err(error) => reply.error(error),
        }
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mut state = self.state();
        let node = Node::new(
            Body::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
            (mode & !umask & 0o7777) as u16,
            req.uid(),
            req.gid(),
        );
        match state.add(parent.0, name, node) {
            Ok(ino) => Self::reply_entry(&state, ino, reply),
            Err(error) => reply.error(error),
        }
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let removed = state.child(parent.0, name).and_then(|ino| {
            if state.nodes.get(&ino).and_then(Node::entries).is_some() {
                return Err(Errno::EISDIR);
            }
            state.entries_of(parent.0)?.remove(name);
            trace(format_args!("unlink {} {name:?} {ino}", parent.0));
            Ok(())
        });
        state.collect();
        match removed {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut state = self.state();
        let removed = state.child(parent.0, name).and_then(|ino| {
            match state.nodes.get(&ino).and_then(Node::entries) {
                None => return Err(Errno::ENOTDIR),
                Some(entries) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                Some(_) => {}
            }
            state.entries_of(parent.0)?.remove(name);
            Ok(())
        });
        state.collect();
        match removed {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut state = self.state();
        let renamed = (|| {
            let ino = state.child(parent.0, name)?;
            let replaced = state.child(newparent.0, newname).ok();
            if flags.contains(RenameFlags::RENAME_EXCHANGE) {
                return Err(Errno::EINVAL);
            }
            if replaced.is_some() && flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(Errno::EEXIST);
            }
            if let Some(replaced) = replaced {
                let moving_dir = state.nodes.get(&ino).and_then(Node::entries).is_some();
                match state.nodes.get(&replaced).and_then(Node::entries) {
                    Some(entries) if !entries.is_empty() => return Err(Errno::ENOTEMPTY),
                    Some(_) if !moving_dir => return Err(Errno::EISDIR),
                    None if moving_dir => return Err(Errno::ENOTDIR),
                    _ => {}
                }
            }
            state.entries_of(newparent.0)?;
            state.entries_of(parent.0)?.remove(name);
            state
                .entries_of(newparent.0)?
                .insert(newname.to_owned(), ino);
            trace(format_args!(
                "rename {} {name:?} {} {newname:?} {ino}",
                parent.0, newparent.0
            ));
            Ok(())
        })();
        state.collect();
        match renamed {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.state().open(ino.0) {
            // No FOPEN_KEEP_CACHE: the kernel drops its cached pages at each open, so a process
            // started after a cut reads what the cut left.
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.state();
        match state.nodes.get(&ino.0).map(|node| &node.body) {
            Some(Body::File { data, .. }) => reply.data(&data.read(offset, u64::from(size))),
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        bytes: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.state();
        match state.nodes.get_mut(&ino.0) {
            Some(node) => match &mut node.body {
                Body::File { data, .. } => {
                    trace(format_args!("write {} {offset} {}", ino.0, bytes.len()));
                    data.write(offset, bytes);
                    node.changed = SystemTime::now();
                    reply.written(bytes.len() as u32);
                }
                Body::Dir { .. } => reply.error(Errno::EISDIR),
            },
            None => reply.error(Errno::ENOENT),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        trace(format_args!("fsync {}", ino.0));
        match self.state().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.state();
        if state.nodes.get(&ino.0).and_then(Node::entries).is_none() {
            return reply.error(Errno::ENOTDIR);
        }
        match state.open(ino.0) {
            Ok(handle) => reply.opened(FileHandle(handle), FopenFlags::empty()),
            Err(error) => reply.error(error),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.state();
        let Some(entries) = state.nodes.get(&ino.0).and_then(Node::entries) else {
            return reply.error(Errno::ENOTDIR);
        };
        let listed = [
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ]
        .into_iter()
        .chain(entries.iter().map(|(name, &child)| {
            let kind = match state.nodes.get(&child).map(|node| &node.body) {
                Some(Body::Dir { .. }) => FileType::Directory,
                _ => FileType::RegularFile,
            };
            (child, kind, name.clone())
        }));
        for (index, (child, kind, name)) in listed.enumerate().skip(offset as usize) {
            if reply.add(INodeNo(child), index as u64 + 1, kind, &name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.state().release(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        trace(format_args!("fsync {}", ino.0));
        match self.state().sync(ino.0) {
            Ok(()) => reply.ok(),
            Err(error) => reply.error(error),
        }
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // 4 GiB, all free: memory is the limit, not this.
        reply.statfs(1 << 20, 1 << 20, 1 << 20, 1 << 20, 1 << 20, 4096, 255, 4096);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.state();
        let node = Node::new(
            Body::File {
                data: Content::default(),
                durable: Content::default(),
            },
            (mode & !umask & 0o7777) as u16,
            req.uid(),
            req.gid(),
        );
        let created = state
            .add(parent.0, name, node)
            .inspect(|ino| trace(format_args!("create {} {name:?} {ino}", parent.0)))
            .and_then(|ino| Ok((ino, state.open(ino)?)));
        match created {
            Ok((ino, handle)) => match state.attr(ino) {
                Some(attr) => reply.created(
                    &TTL,
                    &attr,
                    Generation(0),
                    FileHandle(handle),
                    FopenFlags::empty(),
                ),
                None => reply.error(Errno::ENOENT),
            },
            Err(error) => reply.error(error),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        if mode != 0 {
            return reply.error(Errno::EOPNOTSUPP);
        }
        let mut state = self.state();
        match state.nodes.get_mut(&ino.0).map(|node| &mut node.body) {
            Some(Body::File { data, .. }) => {
                if offset + length > data.len {
                    data.set_len(offset + length);
                }
                reply.ok();
            }
            Some(Body::Dir { .. }) => reply.error(Errno::EISDIR),
            None => reply.error(Errno::ENOENT),
        }
    }
}

/// The file-type bits of a mode, and those of a regular file (the same on every Unix).
const S_IFMT: u32 = 0o170000;
const S_IFREG: u32 = 0o100000;
