//! Private files on disk: written whole or not at all, and refused when
//! others may read them.

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _},
    path::Path,
};

use anyhow::{Context as _, bail};

/// Writes `contents` to a new file at `path` with mode 0600 (its directory,
/// when missing, with mode 0700). Returns false, writing nothing, when the
/// file exists: two processes doing this at once keep the first one's file
/// whole.
///
/// # Errors
/// When the directory or file cannot be written.
pub fn write_private_file_once(path: &Path, contents: &[u8]) -> io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    // Write a private temporary file, then link it into place: the link
    // fails if another process got there first, and then its file wins.
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    let written = file
        .write_all(contents)
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match written {
        Ok(()) => Ok(true),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(err) => Err(err),
    }
}

/// Refuses a private-key file that users other than its owner and group
/// may read, or that its group may write: what such a key protects is not
/// protected. A key its group may read (a Kubernetes secret mounted with an
/// `fsGroup`, say) is accepted with a warning.
///
/// # Errors
/// When the file's mode lets others read it, or its group write it; the
/// message says how to fix it.
pub fn ensure_private(path: &Path, what: &str) -> anyhow::Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))?
        .permissions()
        .mode()
        & 0o777;
    if mode & 0o027 != 0 {
        bail!(
            "the {what} file {} has mode {mode:o}: other users may read or change it; \
             restrict it to 0600 (chmod 600), or 0640 to share it with a group",
            path.display()
        );
    }
    if mode & 0o040 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:o}"),
            "the {what} file is readable by its group"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_written_once_and_privately() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/secret");
        assert!(write_private_file_once(&path, b"first").unwrap());
        assert!(!write_private_file_once(&path, b"second").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"first");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
    }
}
