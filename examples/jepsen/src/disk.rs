//! The disk fault: ONE node's data directory (the last node's) on its own
//! small tmpfs, so that its disk can be filled up (a ballast file) until its
//! writes fail with ENOSPC. Only that one: tmpfs makes fsync free, and the
//! other nodes keep their data on the real disk so that the run still
//! exercises real fsync timing (the nemesis makes the tmpfs node the leader
//! first, some of the time, for the "the leader's disk fills" case). Behind
//! a guard that unmounts it when dropped (normal exit, error, panic,
//! signal), after the processes are gone; a mount left by a SIGKILLed
//! harness is removed by the next run.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};

/// The name every mount of this harness carries in /proc/self/mounts:
/// `raft-jepsen-<pid>`, so leftovers of a harness that was killed (SIGKILL,
/// no destructor ran) can be found and removed by the next run.
const SOURCE_PREFIX: &str = "raft-jepsen-";

/// Name of the file that fills a node's disk.
const BALLAST: &str = "jepsen-ballast";

/// The one tmpfs mount: the data directory of the node whose disk can be
/// filled. Dropping it unmounts it.
#[derive(Debug)]
pub(crate) struct Disk {
    /// The node (0-based) whose data directory this is.
    node: usize,
    dir: PathBuf,
    /// Whether `dir` is mounted (and so must be unmounted).
    mounted: bool,
    size: u64,
    /// Keep the node's files in `dir` itself after unmounting (the run
    /// failed, or `--work-dir` asked to keep the data).
    keep: bool,
}

fn cstring(path: &Path) -> Result<CString, String> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{}: NUL in path", path.display()))
}

fn unmount(dir: &Path) -> Result<(), String> {
    let target = cstring(dir)?;
    // SAFETY: umount2(2) with a valid NUL-terminated path.
    if unsafe { libc::umount2(target.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let error = std::io::Error::last_os_error();
    // Still busy (a process we could not reap): detach it, the kernel frees
    // it once the last file closes.
    // SAFETY: as above.
    if unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) } == 0 {
        return Ok(());
    }
    Err(format!("umount {}: {error}", dir.display()))
}

/// Unmounts tmpfs mounts left behind by a raft-jepsen process that no
/// longer exists (it was SIGKILLed before it could clean up).
fn sweep_leftovers() {
    let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") else { return };
    for line in mounts.lines() {
        let mut fields = line.split(' ');
        let (Some(source), Some(target), Some("tmpfs")) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Some(pid) = source.strip_prefix(SOURCE_PREFIX).and_then(|p| p.parse::<libc::pid_t>().ok()) else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        if !alive {
            let target = target.replace("\\040", " ");
            match unmount(Path::new(&target)) {
                Ok(()) => println!("removed a tmpfs left by raft-jepsen process {pid}: {target}"),
                Err(e) => eprintln!("warning: {e}"),
            }
        }
    }
}

impl Disk {
    /// Mounts a tmpfs of `size` bytes on `dir` (created if missing, and
    /// empty), node `node`'s data directory. On failure says why
    /// (typically: not root, or no CAP_SYS_ADMIN in a container).
    pub(crate) fn mount(node: usize, dir: &Path, size: u64) -> Result<Self, String> {
        sweep_leftovers();
        let source =
            CString::new(format!("{SOURCE_PREFIX}{}", std::process::id())).map_err(|e| e.to_string())?;
        let fstype = CString::new("tmpfs").map_err(|e| e.to_string())?;
        let data = CString::new(format!("size={size},mode=0700")).map_err(|e| e.to_string())?;
        // A reused `--work-dir` may hold this node's files from an earlier
        // run (the other nodes keep theirs): moved aside, and copied onto the
        // tmpfs once it is mounted, so the node restarts from them too.
        let earlier = PathBuf::from({
            let mut aside = dir.as_os_str().to_owned();
            aside.push(".before-tmpfs");
            aside
        });
        let reuse = std::fs::read_dir(dir).is_ok_and(|mut items| items.next().is_some());
        if reuse {
            std::fs::rename(dir, &earlier).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let target = cstring(dir)?;
        // SAFETY: mount(2) with valid NUL-terminated strings; `data` is the
        // tmpfs option string.
        let rc = unsafe {
            libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                data.as_ptr().cast(),
            )
        };
        if rc != 0 {
            let error = std::io::Error::last_os_error();
            if reuse {
                // Leave the directory as it was (on the real disk).
                let _ = std::fs::remove_dir(dir).and_then(|()| std::fs::rename(&earlier, dir));
            }
            return Err(format!("mount -t tmpfs on {}: {error}", dir.display()));
        }
        let disk = Disk { node, dir: dir.to_owned(), mounted: true, size, keep: false };
        if reuse {
            // On failure `disk` is dropped (unmounted) and the earlier files
            // stay in `<dir>.before-tmpfs`.
            copy_files(&earlier, dir).map_err(|e| {
                format!("copying {} onto the tmpfs: {e} (the files stay there)", earlier.display())
            })?;
            std::fs::remove_dir_all(&earlier).map_err(|e| format!("{}: {e}", earlier.display()))?;
        }
        Ok(disk)
    }

    /// The node (0-based) whose data directory is on the tmpfs.
    pub(crate) fn node(&self) -> usize {
        self.node
    }

    /// The size of the tmpfs, in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn ballast(&self) -> PathBuf {
        self.dir.join(BALLAST)
    }

    /// Bytes free on the tmpfs.
    pub(crate) fn free_bytes(&self) -> Option<u64> {
        let path = cstring(&self.dir).ok()?;
        // SAFETY: statvfs(2) into a zeroed struct we own.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Fills the tmpfs with a ballast file until a write fails with ENOSPC.
    /// Returns the bytes the ballast took.
    pub(crate) fn fill(&mut self) -> Result<u64, String> {
        let path = self.ballast();
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        Ok(written)
    }

    /// Removes the ballast (if any): the disk has room again.
    pub(crate) fn free(&mut self) -> Result<(), String> {
        let path = self.ballast();
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Keep the node's files when unmounting: they are copied aside, and
    /// moved into the (then empty) mount point once the tmpfs is gone, so
    /// the kept directory looks like the other nodes'.
    pub(crate) fn keep_data(&mut self) {
        self.keep = true;
    }

    /// `<dir>.saved`: where the files wait while the tmpfs is unmounted.
    fn saved_path(&self) -> PathBuf {
        let mut saved = self.dir.clone().into_os_string();
        saved.push(".saved");
        PathBuf::from(saved)
    }

    /// Copies the node's files (not the ballast) to `<dir>.saved`.
    fn save(&self) -> Result<PathBuf, String> {
        let saved = self.saved_path();
        std::fs::create_dir_all(&saved).map_err(|e| format!("{}: {e}", saved.display()))?;
        copy_files(&self.dir, &saved)?;
        Ok(saved)
    }
}

/// Copies the regular files of `from` (a node's store is flat), but not a
/// ballast, into the existing directory `to`.
fn copy_files(from: &Path, to: &Path) -> Result<(), String> {
    for item in std::fs::read_dir(from).map_err(|e| format!("{}: {e}", from.display()))? {
        let item = item.map_err(|e| e.to_string())?;
        if item.file_name() == BALLAST || !item.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let mut source = File::open(item.path()).map_err(|e| format!("{}: {e}", item.path().display()))?;
        let target = to.join(item.file_name());
        let mut copy = File::create(&target).map_err(|e| format!("{}: {e}", target.display()))?;
        std::io::copy(&mut source, &mut copy).map_err(|e| format!("{}: {e}", target.display()))?;
    }
    Ok(())
}

impl Drop for Disk {
    fn drop(&mut self) {
        if !self.mounted {
            return;
        }
        let saved = if self.keep {
            match self.save() {
                Ok(saved) => Some(saved),
                Err(e) => {
                    eprintln!("warning: cannot save the data of {}: {e}", self.dir.display());
                    None
                }
            }
        } else {
            None
        };
        if let Err(e) = unmount(&self.dir) {
            eprintln!("warning: {e}");
            return;
        }
        self.mounted = false;
        // Put the saved files where the node's directory was (the mount
        // point, now empty again); if it is not empty, leave them in
        // `<dir>.saved`.
        if let Some(saved) = saved {
            let moved = std::fs::remove_dir(&self.dir).and_then(|()| std::fs::rename(&saved, &self.dir));
            if let Err(e) = moved {
                eprintln!("warning: the data of {} is kept in {} ({e})", self.dir.display(), saved.display());
            }
        }
    }
}

/// Whether `path` is on a tmpfs (or ramfs), where fsync costs nothing.
pub(crate) fn on_tmpfs(path: &Path) -> bool {
    let Ok(path) = cstring(path) else { return false };
    // SAFETY: statfs(2) into a zeroed struct we own.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(path.as_ptr(), &mut stat) } != 0 {
        return false;
    }
    // f_type and the magic numbers have target-dependent integer types.
    #[allow(clippy::unnecessary_cast)]
    let (kind, tmpfs) = (stat.f_type as i64, libc::TMPFS_MAGIC as i64);
    // RAMFS_MAGIC (0x858458f6) is not in libc.
    kind == tmpfs || kind == 0x8584_58f6
}
