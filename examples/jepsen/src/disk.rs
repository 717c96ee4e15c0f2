//! Disk faults: every node's data directory on its own small tmpfs, so that
//! one node's disk can be filled up (a ballast file) until its writes fail
//! with ENOSPC. Behind a guard that unmounts everything when dropped
//! (normal exit, error, panic, signal), after the processes are gone.

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

/// The tmpfs mounts, one per node data directory. Dropping it unmounts them.
#[derive(Debug)]
pub(crate) struct Disks {
    dirs: Vec<PathBuf>,
    /// Whether `dirs[i]` is mounted (and so must be unmounted).
    mounted: Vec<bool>,
    size: u64,
    /// Copy each node's files to `<dir>.saved` before unmounting (the run
    /// failed and its data is worth keeping).
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

impl Disks {
    /// Mounts a tmpfs of `size` bytes on each of `dirs` (created if
    /// missing, and empty). On any failure, unmounts what it mounted and
    /// says why (typically: not root, or no CAP_SYS_ADMIN in a container).
    pub(crate) fn mount(dirs: &[PathBuf], size: u64) -> Result<Self, String> {
        sweep_leftovers();
        let mut disks = Disks { dirs: dirs.to_vec(), mounted: vec![false; dirs.len()], size, keep: false };
        let source =
            CString::new(format!("{SOURCE_PREFIX}{}", std::process::id())).map_err(|e| e.to_string())?;
        let fstype = CString::new("tmpfs").map_err(|e| e.to_string())?;
        let data = CString::new(format!("size={size},mode=0700")).map_err(|e| e.to_string())?;
        for (i, dir) in dirs.iter().enumerate() {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let target = cstring(dir)?;
            // SAFETY: mount(2) with valid NUL-terminated strings; `data` is
            // the tmpfs option string.
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
                return Err(format!("mount -t tmpfs on {}: {error}", dir.display()));
            }
            disks.mounted[i] = true;
        }
        Ok(disks)
    }

    /// The size of each tmpfs, in bytes.
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    fn ballast(&self, i: usize) -> PathBuf {
        self.dirs[i].join(BALLAST)
    }

    /// Bytes free on node `i`'s filesystem.
    pub(crate) fn free_bytes(&self, i: usize) -> Option<u64> {
        let path = cstring(&self.dirs[i]).ok()?;
        // SAFETY: statvfs(2) into a zeroed struct we own.
        let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
            return None;
        }
        Some(stat.f_bavail as u64 * stat.f_frsize as u64)
    }

    /// Fills node `i`'s filesystem with a ballast file until a write fails
    /// with ENOSPC. Returns the bytes the ballast took.
    pub(crate) fn fill(&mut self, i: usize) -> Result<u64, String> {
        let path = self.ballast(i);
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

    /// Removes node `i`'s ballast (if any): its disk has room again.
    pub(crate) fn free(&mut self, i: usize) -> Result<(), String> {
        let path = self.ballast(i);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Removes every ballast.
    pub(crate) fn free_all(&mut self) -> Result<(), String> {
        (0..self.dirs.len()).try_for_each(|i| self.free(i))
    }

    /// Keep a copy of every node's files (`<dir>.saved`) when unmounting.
    pub(crate) fn keep_data(&mut self) {
        self.keep = true;
    }

    fn save(&self, i: usize) -> Result<(), String> {
        let dir = &self.dirs[i];
        let mut saved = dir.clone().into_os_string();
        saved.push(".saved");
        let saved = PathBuf::from(saved);
        std::fs::create_dir_all(&saved).map_err(|e| format!("{}: {e}", saved.display()))?;
        for item in std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))? {
            let item = item.map_err(|e| e.to_string())?;
            if item.file_name() == BALLAST || !item.file_type().is_ok_and(|t| t.is_file()) {
                continue;
            }
            let mut from = File::open(item.path()).map_err(|e| e.to_string())?;
            let mut to = File::create(saved.join(item.file_name())).map_err(|e| e.to_string())?;
            std::io::copy(&mut from, &mut to).map_err(|e| e.to_string())?;
        }
        Ok(())
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        for i in 0..self.dirs.len() {
            if !self.mounted[i] {
                continue;
            }
            if self.keep {
                if let Err(e) = self.save(i) {
                    eprintln!("warning: cannot save the data of {}: {e}", self.dirs[i].display());
                }
            }
            if let Err(e) = unmount(&self.dirs[i]) {
                eprintln!("warning: {e}");
            }
            self.mounted[i] = false;
        }
    }
}
