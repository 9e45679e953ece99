//! Directories and files only the node's user may read: the node directory,
//! the store, and the files that hold bulletins (bundles, the journal,
//! provenance reports), whatever the umask. Key files are made the same way
//! by `herald_keys::keyfile`.

use std::fs::{DirBuilder, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// The mode of a directory only its owner may read, enter or change.
pub const DIR_MODE: u32 = 0o700;

/// The mode of a file only its owner may read or write.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and whichever of its parents are missing, each created
/// readable by its owner only; what exists already is left as it is.
pub fn create_dir_all(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Narrows `dir` to its owner alone if its group or others may use it (only
/// its mode: what it holds is left as it is). Returns the mode it had, if
/// it changed it.
pub fn narrow_dir(dir: &Path) -> io::Result<Option<u32>> {
    let mode = std::fs::metadata(dir)?.permissions().mode() & 0o7777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode & !0o077))?;
    Ok(Some(mode))
}

/// Options that open a file for writing which, if they create it, create it
/// readable and writable by its owner only.
pub fn write_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options.write(true).mode(FILE_MODE);
    options
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn directories_are_made_and_narrowed_to_their_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("b");
        create_dir_all(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&tmp.path().join("a"))), (0o700, 0o700));
        assert_eq!(narrow_dir(&dir).unwrap(), None);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir_all(&dir).unwrap();
        assert_eq!(mode(&dir), 0o755, "an existing directory is not changed");
        assert_eq!(narrow_dir(&dir).unwrap(), Some(0o755));
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn files_are_created_for_their_owner() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("f");
        write_options().create_new(true).open(&path).unwrap();
        assert_eq!(mode(&path), 0o600);
    }
}
