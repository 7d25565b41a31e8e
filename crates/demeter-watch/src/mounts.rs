//! Which filesystem a folder lives on, read from the mount table (`/proc/mounts`).
//!
//! Filesystem events only describe changes made through the local kernel. On a network share
//! (NFS, SMB/CIFS) or most FUSE filesystems, photos written by another machine raise no event
//! at all, so the watcher must poll there instead of trusting a silent event stream.

use std::path::{Path, PathBuf};

/// The mount a path belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

impl Mount {
    /// Whether changes can come from elsewhere without a local filesystem event.
    pub fn is_network(&self) -> bool {
        let t = self.fstype.as_str();
        t.starts_with("nfs")
            || t.starts_with("fuse")
            || matches!(
                t,
                "cifs"
                    | "smb"
                    | "smb3"
                    | "smbfs"
                    | "9p"
                    | "afs"
                    | "ceph"
                    | "glusterfs"
                    | "gpfs"
                    | "lustre"
                    | "davfs"
                    | "sshfs"
                    | "ncpfs"
                    | "coda"
                    | "ocfs2"
                    | "gfs2"
                    | "virtiofs"
                    | "vboxsf"
                    | "vmhgfs"
            )
    }
}

/// The mount holding `dir` (which should be canonical): the longest mount point that is a
/// prefix of it. `table` is the text of `/proc/mounts`; later entries win on equal points,
/// as a later mount hides an earlier one.
pub fn mount_of(dir: &Path, table: &str) -> Option<Mount> {
    let mut best: Option<Mount> = None;
    for line in table.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_device), Some(point), Some(fstype)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let point = PathBuf::from(unescape(point));
        if !dir.starts_with(&point) {
            continue;
        }
        let longer = best.as_ref().is_none_or(|b| point.as_os_str().len() >= b.point.as_os_str().len());
        if longer {
            best = Some(Mount { point, fstype: fstype.to_owned() });
        }
    }
    best
}

/// `/proc/mounts` writes space, tab, newline and backslash in paths as octal escapes (`\040`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = bytes[i + 1..i + 4].iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads the mount table at `table_path` and finds `dir`'s mount. `None` when the table cannot
/// be read (not Linux) or lists nothing above `dir`.
pub fn detect(dir: &Path, table_path: &Path) -> Option<Mount> {
    let table = std::fs::read_to_string(table_path).ok()?;
    mount_of(dir, &table)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
overlay / overlay rw,relatime 0 0
proc /proc proc rw 0 0
/dev/sda1 /srv ext4 rw 0 0
nas:/export/photos /srv/photos nfs4 rw,vers=4.2 0 0
//nas/bench /mnt/bench\\040share cifs rw 0 0
sshfs#pi@pi:/data /mnt/pi fuse.sshfs rw 0 0
tmpfs /mnt/pi/cache tmpfs rw 0 0
";

    fn fs(dir: &str) -> String {
        mount_of(Path::new(dir), TABLE).unwrap().fstype
    }

    #[test]
    fn the_longest_mount_point_wins() {
        assert_eq!(fs("/srv/photos/bench-3"), "nfs4");
        assert_eq!(fs("/srv/other"), "ext4");
        assert_eq!(fs("/srv/photosX"), "ext4", "a prefix of the name is not a parent folder");
        assert_eq!(fs("/home/staff"), "overlay");
        assert_eq!(fs("/mnt/pi/cache/x"), "tmpfs");
        assert_eq!(fs("/mnt/bench share/today"), "cifs", "octal escapes are decoded");
    }

    #[test]
    fn network_and_fuse_filesystems_are_recognised() {
        let net = |dir: &str| mount_of(Path::new(dir), TABLE).unwrap().is_network();
        assert!(net("/srv/photos"));
        assert!(net("/mnt/bench share"));
        assert!(net("/mnt/pi/data"));
        assert!(!net("/srv"));
        assert!(!net("/mnt/pi/cache"));
        assert!(!net("/"));
    }

    #[test]
    fn an_unreadable_table_detects_nothing() {
        assert_eq!(detect(Path::new("/srv"), Path::new("/nonexistent/mounts")), None);
        assert_eq!(mount_of(Path::new("/srv"), "garbage\n\n"), None);
    }
}
