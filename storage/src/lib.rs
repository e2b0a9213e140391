//! File operations behind a small trait, with two implementations: the real
//! file system, and a simulated one that models what survives a power cut.
//! The server's ledger and the agent's slots both go through it, so both
//! are tested for power cuts on the simulation.
//!
//! The simulation follows POSIX durability: a file's contents survive a cut
//! only as of its last `sync`; a name created, renamed or removed in a
//! directory survives only as of that directory's last `sync_dir`. A cut can
//! also leave a torn tail: part of what was appended after the last `sync`.
//! [`SimStorage::after_power_cut_keeping_names`] models the other extreme:
//! every name survives, synced or not, with only torn contents behind it.
//! Each mutating operation counts; a cut can be armed to happen at any
//! operation, after which every operation fails, as the process would be
//! gone.

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// File operations on paths relative to the storage's directory, with `/`
/// as separator. Directories are created as needed by writes; callers make
/// them durable with [`Storage::sync_dir`] on their parents.
pub trait Storage: Send + Sync + 'static {
    /// The whole file, or `None` if it does not exist.
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
    /// `len` bytes from `offset`.
    fn read_range(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>>;
    /// The file's length, or `None` if it does not exist.
    fn len(&self, path: &str) -> io::Result<Option<u64>>;
    /// Creates or replaces the file with `data`. Returns the directories it
    /// had to create (outermost first), whose parents need a `sync_dir`.
    fn write(&self, path: &str, data: &[u8]) -> io::Result<Vec<String>>;
    /// Appends to the file, creating it if needed. Returns the directories
    /// it had to create, as [`Storage::write`].
    fn append(&self, path: &str, data: &[u8]) -> io::Result<Vec<String>>;
    /// Cuts the file to `len` bytes.
    fn truncate(&self, path: &str, len: u64) -> io::Result<()>;
    /// Renames a file, replacing `to`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes a file or an empty directory; absent is fine.
    fn remove(&self, path: &str) -> io::Result<()>;
    /// Makes a file's contents durable (`fsync`).
    fn sync(&self, path: &str) -> io::Result<()>;
    /// Makes a directory's entries durable (`fsync` of the directory); `""`
    /// is the storage's own directory.
    fn sync_dir(&self, dir: &str) -> io::Result<()>;
    /// The names in a directory (files and directories), or empty if it
    /// does not exist.
    fn list(&self, dir: &str) -> io::Result<Vec<String>>;

    /// Takes the directory for this process alone, failing if another holder
    /// has it; held until the storage is dropped.
    fn lock_exclusive(&self) -> io::Result<()> {
        Ok(())
    }
}

/// How long taking a directory's lock waits for a holder that is about to
/// let go (a child process between fork and exec) before it fails.
pub const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(500);

/// The parent directory of a relative path (`""` for top-level names).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// Writes a private file (a key) at `path` on the real file system: only
/// its owner may read it (0600), an existing file is never overwritten, and
/// the contents and the new name are both made durable (the file and its
/// folder synced), so a power cut right after cannot lose a key whose public
/// half was already handed out. The one writer of key files for the server,
/// the agent and the CLI.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f =
        OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(|e| {
            io::Error::new(e.kind(), format!("writing {} (it must not exist yet): {e}", path.display()))
        })?;
    f.write_all(bytes)?;
    f.sync_all()?;
    let folder = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(folder)?.sync_all()
}

/// The real file system under one directory.
#[derive(Debug, Clone)]
pub struct FsStorage {
    root: PathBuf,
    /// The open `LOCK` file while this storage holds the directory.
    lock: std::sync::Arc<Mutex<Option<File>>>,
}

impl FsStorage {
    /// Storage in `root`, which is created if needed.
    pub fn new(root: impl Into<PathBuf>) -> io::Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root)?;
        Ok(FsStorage { root, lock: std::sync::Arc::new(Mutex::new(None)) })
    }

    fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() { self.root.clone() } else { self.root.join(rel) }
    }

    fn create_parents(&self, rel: &str) -> io::Result<Vec<String>> {
        let mut missing = Vec::new();
        let mut dir = parent(rel);
        while !dir.is_empty() && !self.path(dir).is_dir() {
            missing.push(dir.to_owned());
            dir = parent(dir);
        }
        missing.reverse();
        for d in &missing {
            match fs::create_dir(self.path(d)) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
                _ => {}
            }
        }
        Ok(missing)
    }
}

fn not_found_is_none<T>(r: io::Result<T>) -> io::Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

impl Storage for FsStorage {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        not_found_is_none(fs::read(self.path(path)))
    }

    fn read_range(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut f = File::open(self.path(path))?;
        f.seek(SeekFrom::Start(offset))?;
        // Read into spare capacity: no zero-filling of large buffers first.
        let mut buf = Vec::with_capacity(len);
        f.take(len as u64).read_to_end(&mut buf)?;
        if buf.len() != len {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        Ok(buf)
    }

    fn len(&self, path: &str) -> io::Result<Option<u64>> {
        not_found_is_none(fs::metadata(self.path(path)).map(|m| m.len()))
    }

    fn write(&self, path: &str, data: &[u8]) -> io::Result<Vec<String>> {
        let created = self.create_parents(path)?;
        fs::write(self.path(path), data)?;
        Ok(created)
    }

    fn append(&self, path: &str, data: &[u8]) -> io::Result<Vec<String>> {
        let created = self.create_parents(path)?;
        let mut f = OpenOptions::new().create(true).append(true).open(self.path(path))?;
        f.write_all(data)?;
        Ok(created)
    }

    fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        OpenOptions::new().write(true).open(self.path(path))?.set_len(len)
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.path(from), self.path(to))
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        let p = self.path(path);
        let r = if p.is_dir() { fs::remove_dir(&p) } else { fs::remove_file(&p) };
        not_found_is_none(r).map(|_| ())
    }

    fn sync(&self, path: &str) -> io::Result<()> {
        // fdatasync: the data and the metadata needed to read it back (the
        // size), without the timestamps that fsync would also write.
        File::open(self.path(path))?.sync_data()
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        File::open(self.path(dir))?.sync_all()
    }

    fn lock_exclusive(&self) -> io::Result<()> {
        // This storage may hold it already (a ledger reopened through it).
        if self.lock.lock().is_ok_and(|held| held.is_some()) {
            return Ok(());
        }
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(self.path("LOCK"))?;
        // A lock just released can stay held for a moment: a child process
        // that another thread of this process started between fork and exec
        // holds a copy of every descriptor, the lock's included, until its
        // exec closes them. So a few tries over LOCK_PATIENCE before "in
        // use": long enough for an exec, far too short to hide a second
        // owner.
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut taken = file.try_lock();
        while taken.is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
            taken = file.try_lock();
        }
        taken.map_err(|_| {
            io::Error::new(
                io::ErrorKind::WouldBlock,
                format!(
                    "the directory {} is in use by another process (or another open in this one)",
                    self.root.display()
                ),
            )
        })?;
        if let Ok(mut held) = self.lock.lock() {
            *held = Some(file);
        }
        Ok(())
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        let Some(entries) = not_found_is_none(fs::read_dir(self.path(dir)))? else { return Ok(Vec::new()) };
        let mut names = Vec::new();
        for e in entries {
            names.push(e?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
}

impl FsStorage {
    /// The directory this storage lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

// ---------------------------------------------------------------------------
// The simulated file system
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File(u64),
    Dir,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    current: Vec<u8>,
    durable: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct DirEntries {
    current: BTreeMap<String, Node>,
    durable: BTreeMap<String, Node>,
}

#[derive(Debug, Default)]
struct SimState {
    inodes: HashMap<u64, Inode>,
    /// Directories by path (`""` is the root).
    dirs: HashMap<String, DirEntries>,
    next_inode: u64,
    /// Mutating operations so far.
    ops: u64,
    /// The operation at which the power goes out.
    cut_at: Option<u64>,
    /// The power is out: every operation fails.
    dead: bool,
}

/// A simulated file system for power-cut tests (see the module docs).
#[derive(Debug, Default)]
pub struct SimStorage {
    state: Mutex<SimState>,
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power cut")
}

fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", path),
    }
}

impl SimState {
    fn new() -> Self {
        let mut s = SimState::default();
        s.dirs.insert(String::new(), DirEntries::default());
        s
    }

    /// Counts a mutating operation, failing it if the cut is due.
    fn tick(&mut self) -> io::Result<()> {
        if self.dead {
            return Err(power_cut());
        }
        self.ops += 1;
        if self.cut_at.is_some_and(|at| self.ops >= at) {
            self.dead = true;
            return Err(power_cut());
        }
        Ok(())
    }

    fn alive(&self) -> io::Result<()> {
        if self.dead { Err(power_cut()) } else { Ok(()) }
    }

    fn lookup(&self, path: &str) -> Option<&Node> {
        let (dir, name) = split(path);
        self.dirs.get(dir)?.current.get(name)
    }

    fn file(&self, path: &str) -> Option<u64> {
        match self.lookup(path) {
            Some(Node::File(ino)) => Some(*ino),
            _ => None,
        }
    }

    fn mkdirs(&mut self, path: &str) -> io::Result<Vec<String>> {
        let mut created = Vec::new();
        let dir = parent(path);
        if dir.is_empty() {
            return Ok(created);
        }
        let mut prefix = String::new();
        for part in dir.split('/') {
            let parent_dir = prefix.clone();
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            if !self.dirs.contains_key(&prefix) {
                let entries = self.dirs.get_mut(&parent_dir).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                entries.current.insert(part.to_owned(), Node::Dir);
                self.dirs.insert(prefix.clone(), DirEntries::default());
                created.push(prefix.clone());
            }
        }
        Ok(created)
    }

    fn create_file(&mut self, path: &str) -> io::Result<(u64, Vec<String>)> {
        let created = self.mkdirs(path)?;
        if let Some(ino) = self.file(path) {
            return Ok((ino, created));
        }
        let ino = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(ino, Inode::default());
        let (dir, name) = split(path);
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
            .current
            .insert(name.to_owned(), Node::File(ino));
        Ok((ino, created))
    }
}

impl SimStorage {
    /// An empty simulated file system.
    pub fn new() -> Self {
        SimStorage { state: Mutex::new(SimState::new()) }
    }

    fn with<T>(&self, f: impl FnOnce(&mut SimState) -> io::Result<T>) -> io::Result<T> {
        let mut state = self.state.lock().map_err(|_| io::Error::other("poisoned"))?;
        f(&mut state)
    }

    /// Arms a power cut at the `n`-th mutating operation from now (1 = the next).
    pub fn cut_after(&self, n: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.cut_at = Some(s.ops + n.max(1));
        }
    }

    /// Mutating operations so far.
    pub fn ops(&self) -> u64 {
        self.state.lock().map(|s| s.ops).unwrap_or(0)
    }

    /// Whether the power is out.
    pub fn is_dead(&self) -> bool {
        self.state.lock().map(|s| s.dead).unwrap_or(true)
    }

    /// The file system as the machine finds it after the power comes back:
    /// only durable names and contents, plus, for files that grew since
    /// their last sync, a torn tail of `torn(extra_len)` bytes.
    pub fn after_power_cut(&self, torn: impl FnMut(usize) -> usize) -> SimStorage {
        self.after_cut(torn, false)
    }

    /// The other extreme POSIX allows after a power cut: every name created,
    /// renamed or removed survives, synced or not (the file system's own
    /// journal committed them), while contents survive only as of the last
    /// `sync`: a file that grew keeps a torn tail of `torn(extra_len)` bytes,
    /// one cut shorter keeps its cut, and a file written anew since keeps
    /// only the first
    /// `torn(new_len)` bytes of its new contents (ext4 after a rename or a
    /// rewrite without fsync: often an empty file).
    pub fn after_power_cut_keeping_names(&self, torn: impl FnMut(usize) -> usize) -> SimStorage {
        self.after_cut(torn, true)
    }

    fn after_cut(&self, mut torn: impl FnMut(usize) -> usize, keep_names: bool) -> SimStorage {
        let Ok(old) = self.state.lock() else { return SimStorage::new() };
        let mut new = SimState::new();
        new.next_inode = old.next_inode;
        // Walk the durable tree (or the current one) from the root.
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let Some(entries) = old.dirs.get(&dir) else { continue };
            let durable = if keep_names { entries.current.clone() } else { entries.durable.clone() };
            for (name, node) in &durable {
                let path = if dir.is_empty() { name.clone() } else { format!("{dir}/{name}") };
                match node {
                    Node::Dir => {
                        new.dirs.insert(path.clone(), DirEntries::default());
                        stack.push(path);
                    }
                    Node::File(ino) => {
                        let Some(inode) = old.inodes.get(ino) else { continue };
                        let mut contents = inode.durable.clone();
                        if inode.current.len() > contents.len() && inode.current.starts_with(&contents) {
                            let extra = inode.current.len() - contents.len();
                            let keep = torn(extra).min(extra);
                            contents.extend_from_slice(&inode.current[inode.durable.len()..inode.durable.len() + keep]);
                        } else if keep_names && inode.durable.starts_with(&inode.current) {
                            // A cut made since (a truncate): the name's
                            // metadata survived with it.
                            contents = inode.current.clone();
                        } else if keep_names && inode.current != inode.durable {
                            let keep = torn(inode.current.len()).min(inode.current.len());
                            contents = inode.current[..keep].to_vec();
                        }
                        new.inodes.insert(*ino, Inode { current: contents.clone(), durable: contents });
                    }
                }
            }
            if let Some(d) = new.dirs.get_mut(&dir) {
                d.current = durable.clone();
                d.durable = durable;
            }
        }
        SimStorage { state: Mutex::new(new) }
    }
}

impl Storage for SimStorage {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        self.with(|s| {
            s.alive()?;
            Ok(s.file(path).and_then(|ino| s.inodes.get(&ino)).map(|i| i.current.clone()))
        })
    }

    fn read_range(&self, path: &str, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        self.with(|s| {
            s.alive()?;
            let ino = s.file(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let data = &s.inodes.get(&ino).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?.current;
            let start = usize::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            data.get(start..start.saturating_add(len))
                .map(<[u8]>::to_vec)
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        })
    }

    fn len(&self, path: &str) -> io::Result<Option<u64>> {
        self.with(|s| {
            s.alive()?;
            Ok(s.file(path).and_then(|ino| s.inodes.get(&ino)).map(|i| i.current.len() as u64))
        })
    }

    fn write(&self, path: &str, data: &[u8]) -> io::Result<Vec<String>> {
        self.with(|s| {
            s.tick()?;
            let (ino, created) = s.create_file(path)?;
            if let Some(i) = s.inodes.get_mut(&ino) {
                i.current = data.to_vec();
            }
            Ok(created)
        })
    }

    fn append(&self, path: &str, data: &[u8]) -> io::Result<Vec<String>> {
        self.with(|s| {
            s.tick()?;
            let (ino, created) = s.create_file(path)?;
            if let Some(i) = s.inodes.get_mut(&ino) {
                i.current.extend_from_slice(data);
            }
            Ok(created)
        })
    }

    fn truncate(&self, path: &str, len: u64) -> io::Result<()> {
        self.with(|s| {
            s.tick()?;
            let ino = s.file(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            if let Some(i) = s.inodes.get_mut(&ino) {
                i.current.truncate(usize::try_from(len).unwrap_or(usize::MAX));
            }
            Ok(())
        })
    }

    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.with(|s| {
            s.tick()?;
            let ino = s.file(from).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            let (fd, fname) = split(from);
            let (td, tname) = split(to);
            if !s.dirs.contains_key(td) {
                return Err(io::Error::from(io::ErrorKind::NotFound));
            }
            if let Some(d) = s.dirs.get_mut(fd) {
                d.current.remove(fname);
            }
            if let Some(d) = s.dirs.get_mut(td) {
                d.current.insert(tname.to_owned(), Node::File(ino));
            }
            Ok(())
        })
    }

    fn remove(&self, path: &str) -> io::Result<()> {
        self.with(|s| {
            s.tick()?;
            let (dir, name) = split(path);
            if let Some(Node::Dir) = s.lookup(path) {
                if s.dirs.get(path).is_some_and(|d| !d.current.is_empty()) {
                    return Err(io::Error::other("directory not empty"));
                }
                s.dirs.remove(path);
            }
            if let Some(d) = s.dirs.get_mut(dir) {
                d.current.remove(name);
            }
            Ok(())
        })
    }

    fn sync(&self, path: &str) -> io::Result<()> {
        self.with(|s| {
            s.tick()?;
            let ino = s.file(path).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            if let Some(i) = s.inodes.get_mut(&ino) {
                i.durable = i.current.clone();
            }
            Ok(())
        })
    }

    fn sync_dir(&self, dir: &str) -> io::Result<()> {
        self.with(|s| {
            s.tick()?;
            let d = s.dirs.get_mut(dir).ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            d.durable = d.current.clone();
            Ok(())
        })
    }

    fn list(&self, dir: &str) -> io::Result<Vec<String>> {
        self.with(|s| {
            s.alive()?;
            Ok(s.dirs.get(dir).map(|d| d.current.keys().cloned().collect()).unwrap_or_default())
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unsynced_writes_and_names_are_lost_in_a_power_cut() {
        let s = SimStorage::new();
        let created = s.write("a/b/f", b"one").unwrap();
        assert_eq!(created, vec!["a".to_owned(), "a/b".to_owned()]);
        s.sync("a/b/f").unwrap();
        // The file's contents are durable but its name is not: the dirs were never synced.
        assert_eq!(s.after_power_cut(|_| 0).read("a/b/f").unwrap(), None);
        s.sync_dir("").unwrap();
        s.sync_dir("a").unwrap();
        s.sync_dir("a/b").unwrap();
        s.append("a/b/f", b" two").unwrap();
        let after = s.after_power_cut(|_| 0);
        assert_eq!(after.read("a/b/f").unwrap(), Some(b"one".to_vec()));
        // A torn tail keeps part of the unsynced append.
        let torn = s.after_power_cut(|extra| extra / 2);
        assert_eq!(torn.read("a/b/f").unwrap(), Some(b"one t".to_vec()));
    }

    #[test]
    fn rename_is_durable_only_after_the_directory_sync() {
        let s = SimStorage::new();
        s.write("cp", b"old").unwrap();
        s.sync("cp").unwrap();
        s.sync_dir("").unwrap();
        s.write("cp.tmp", b"new").unwrap();
        s.sync("cp.tmp").unwrap();
        s.rename("cp.tmp", "cp").unwrap();
        assert_eq!(s.after_power_cut(|_| 0).read("cp").unwrap(), Some(b"old".to_vec()));
        s.sync_dir("").unwrap();
        assert_eq!(s.after_power_cut(|_| 0).read("cp").unwrap(), Some(b"new".to_vec()));
    }

    #[test]
    fn keeping_names_keeps_unsynced_names_with_torn_contents() {
        let s = SimStorage::new();
        s.write("d/kept", b"synced").unwrap();
        s.sync("d/kept").unwrap();
        s.append("d/kept", b" and more").unwrap();
        s.write("d/tmp", b"new contents").unwrap();
        s.rename("d/tmp", "d/new").unwrap();
        // The conservative cut keeps no unsynced name.
        assert_eq!(s.after_power_cut(|_| 0).read("d/new").unwrap(), None);
        let after = s.after_power_cut_keeping_names(|n| n / 2);
        assert_eq!(after.read("d/new").unwrap(), Some(b"new co".to_vec()));
        assert_eq!(after.read("d/tmp").unwrap(), None);
        assert_eq!(after.read("d/kept").unwrap(), Some(b"synced and".to_vec()));
    }

    #[test]
    fn an_armed_cut_fails_that_operation_and_every_later_one() {
        let s = SimStorage::new();
        s.cut_after(2);
        s.write("x", b"1").unwrap();
        assert!(s.write("y", b"2").is_err());
        assert!(s.read("x").is_err());
        assert!(s.is_dead());
    }
}
