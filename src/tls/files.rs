//! Reading PEM certificates and keys, with errors that name the file.
//!
//! Files are read only when they are regular files of at most [`MAX_PEM_FILE_BYTES`]: a path
//! such as `/dev/zero` would otherwise be read without end, and a FIFO nobody writes to would
//! block start-up, `sluice check` and every reload for ever.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate chain and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    /// PEM certificate chain, leaf first.
    pub certificate: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Largest certificate, key or CA file read. A chain or key is a few KiB; even a full CA bundle
/// (some 150 roots) is about 200 KiB.
pub const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

/// A certificate or key file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsFileError {
    /// The path is not a regular file (a FIFO, a device, a directory, a socket).
    #[error("cannot read {path}: it is {kind}, not a regular file")]
    NotAFile {
        /// The file.
        path: String,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than [`MAX_PEM_FILE_BYTES`].
    #[error(
        "cannot read {path}: it is larger than {limit} bytes, too large for a PEM certificate \
         or key file"
    )]
    TooLarge {
        /// The file.
        path: String,
        /// The bound it passed.
        limit: u64,
    },
    /// The file is missing, unreadable or not valid PEM.
    #[error("cannot read {path}: {reason}")]
    Unreadable {
        /// The file.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The file has no certificate, or no private key, where one was expected.
    #[error("{path} contains no PEM {what}")]
    Missing {
        /// The file.
        path: String,
        /// `certificate` or `private key`.
        what: &'static str,
    },
    /// The key cannot be used, or does not belong to the certificate.
    #[error("key {key} cannot be used with certificate {certificate}: {reason}")]
    Unusable {
        /// Certificate file.
        certificate: String,
        /// Key file.
        key: String,
        /// rustls's explanation.
        reason: String,
    },
}

/// The ring provider every TLS configuration in sluice uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn unreadable(path: &Path, err: pem::Error) -> TlsFileError {
    let reason = match err {
        pem::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    };
    TlsFileError::Unreadable { path: path.display().to_string(), reason }
}

/// The bytes of `path`, which must be a regular file of at most [`MAX_PEM_FILE_BYTES`].
pub fn read_pem_file(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let shown = || path.display().to_string();
    let io_error =
        |err: std::io::Error| TlsFileError::Unreadable { path: shown(), reason: err.to_string() };
    // Opening a FIFO for reading waits for a writer unless O_NONBLOCK is given; on a regular
    // file the flag changes nothing. The type is checked on the opened file, so a path swapped
    // between a check and the open cannot slip through.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io_error)?;
    let file_type = file.metadata().map_err(io_error)?.file_type();
    if !file_type.is_file() {
        let kind = if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_dir() {
            "a directory"
        } else if file_type.is_socket() {
            "a socket"
        } else {
            "a special file"
        };
        return Err(TlsFileError::NotAFile { path: shown(), kind });
    }
    let mut contents = Vec::new();
    file.take(MAX_PEM_FILE_BYTES.saturating_add(1)).read_to_end(&mut contents).map_err(io_error)?;
    if u64::try_from(contents.len()).map_or(true, |len| len > MAX_PEM_FILE_BYTES) {
        return Err(TlsFileError::TooLarge { path: shown(), limit: MAX_PEM_FILE_BYTES });
    }
    Ok(contents)
}

/// Every certificate in a PEM file, in order.
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let contents = read_pem_file(path)?;
    let certs = CertificateDer::pem_slice_iter(&contents)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| unreadable(path, err))?;
    if certs.is_empty() {
        return Err(TlsFileError::Missing {
            path: path.display().to_string(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key in a PEM file.
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsFileError> {
    let contents = read_pem_file(path)?;
    PrivateKeyDer::from_pem_slice(&contents).map_err(|err| match err {
        pem::Error::NoItemsFound => {
            TlsFileError::Missing { path: path.display().to_string(), what: "private key" }
        }
        other => unreadable(path, other),
    })
}

/// Loads a certificate chain and its key, checking that they belong together.
pub fn certified_key(files: &CertificateFiles) -> Result<CertifiedKey, TlsFileError> {
    let chain = certificates(&files.certificate)?;
    let key = private_key(&files.key)?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|err| TlsFileError::Unusable {
        certificate: files.certificate.display().to_string(),
        key: files.key.display().to_string(),
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `read` on its own thread and fails the test if it has not returned within a few
    /// seconds, so a file that blocks or never ends fails instead of hanging the suite.
    fn bounded<T: Send + 'static>(read: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = done.send(read());
        });
        result.recv_timeout(std::time::Duration::from_secs(5)).expect("the read did not return")
    }

    #[test]
    fn an_endless_device_is_refused_without_reading_it() {
        let err = bounded(|| certificates(Path::new("/dev/zero"))).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read /dev/zero: it is a character device, not a regular file"
        );
    }

    #[test]
    fn a_fifo_is_refused_without_waiting_for_a_writer() {
        let dir = std::env::temp_dir().join(format!("sluice-fifo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fifo = dir.join("key.pem");
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let path = fifo.clone();
        let err = bounded(move || private_key(&path)).unwrap_err();
        assert!(matches!(err, TlsFileError::NotAFile { kind: "a FIFO", .. }), "{err}");
        assert!(err.to_string().contains("key.pem: it is a FIFO"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_directory_and_a_huge_file_are_refused() {
        let dir = std::env::temp_dir().join(format!("sluice-pem-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = certificates(&dir).unwrap_err();
        assert!(matches!(err, TlsFileError::NotAFile { kind: "a directory", .. }), "{err}");
        let huge = dir.join("huge.pem");
        let file = std::fs::File::create(&huge).unwrap();
        file.set_len(MAX_PEM_FILE_BYTES + 1).unwrap();
        let err = bounded(move || certificates(&huge)).unwrap_err();
        assert!(matches!(err, TlsFileError::TooLarge { .. }), "{err}");
        let at_limit = dir.join("at-limit.pem");
        std::fs::File::create(&at_limit).unwrap().set_len(MAX_PEM_FILE_BYTES).unwrap();
        // Read in full, then found to hold no certificate.
        let err = certificates(&at_limit).unwrap_err();
        assert!(matches!(err, TlsFileError::Missing { .. }), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
