//! libnftables in process: a burst of bans costs one netlink transaction instead of an `nft`
//! process, whose exec, library start-up and cache fetch take about 3–4 ms a burst on a small
//! machine. The library (libnftables1, installed with the nftables package) is loaded with
//! dlopen at first use; where it is missing, the action falls back to running `nft`.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::{Mutex, OnceLock};

type NewFn = unsafe extern "C" fn(u32) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type BufferFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBufferFn = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The few libnftables entry points we use.
struct Library {
    // Keeps the functions below valid.
    _lib: libloading::Library,
    new: NewFn,
    free: FreeFn,
    buffer_output: BufferFn,
    buffer_error: BufferFn,
    get_output: GetBufferFn,
    get_error: GetBufferFn,
    run: RunFn,
}

/// libnftables does not promise that two contexts may run at once; bans are rare enough that
/// one at a time costs nothing.
static CALLS: Mutex<()> = Mutex::new(());

fn library() -> Option<&'static Library> {
    static LIBRARY: OnceLock<Option<Library>> = OnceLock::new();
    LIBRARY
        .get_or_init(|| match load() {
            Ok(lib) => Some(lib),
            Err(error) => {
                tracing::info!(%error, "libnftables not loaded; nftables bans run the nft command");
                None
            }
        })
        .as_ref()
}

fn load() -> Result<Library, libloading::Error> {
    // SAFETY: loading libnftables runs its initialisers, which have no preconditions; each symbol
    // is read with the C signature libnftables.h declares for it (LIBNFTABLES_1 ABI).
    unsafe {
        let lib = libloading::Library::new("libnftables.so.1")?;
        let new = *lib.get::<NewFn>(b"nft_ctx_new\0")?;
        let free = *lib.get::<FreeFn>(b"nft_ctx_free\0")?;
        let buffer_output = *lib.get::<BufferFn>(b"nft_ctx_buffer_output\0")?;
        let buffer_error = *lib.get::<BufferFn>(b"nft_ctx_buffer_error\0")?;
        let get_output = *lib.get::<GetBufferFn>(b"nft_ctx_get_output_buffer\0")?;
        let get_error = *lib.get::<GetBufferFn>(b"nft_ctx_get_error_buffer\0")?;
        let run = *lib.get::<RunFn>(b"nft_run_cmd_from_buffer\0")?;
        Ok(Library {
            _lib: lib,
            new,
            free,
            buffer_output,
            buffer_error,
            get_output,
            get_error,
            run,
        })
    }
}

/// One libnftables context, owned by one action.
pub(crate) struct Nft {
    lib: &'static Library,
    ctx: *mut c_void,
}

// SAFETY: the context is only ever used through `&mut self` (one thread at a time), and every
// call into the library is serialised by `CALLS`.
unsafe impl Send for Nft {}

impl Nft {
    /// A context whose output and errors are buffered (never printed); None without the library.
    pub(crate) fn open() -> Option<Nft> {
        let lib = library()?;
        let _one = CALLS.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: nft_ctx_new(NFT_CTX_DEFAULT) has no preconditions; a null result is checked.
        let ctx = unsafe { (lib.new)(0) };
        if ctx.is_null() {
            return None;
        }
        // SAFETY: ctx is a live context.
        unsafe {
            (lib.buffer_output)(ctx);
            (lib.buffer_error)(ctx);
        }
        Some(Nft { lib, ctx })
    }

    /// Runs an nft script as one transaction (all or nothing); the error is nft's own message.
    pub(crate) fn run(&mut self, script: &str) -> Result<(), NftError> {
        let script = CString::new(script).map_err(|_| NftError::NulByte)?;
        let _one = CALLS.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: ctx is live; the script is a NUL-terminated string that outlives the call.
        let rc = unsafe { (self.lib.run)(self.ctx, script.as_ptr()) };
        // Reading a buffer also empties it, so neither grows over the daemon's life.
        // SAFETY: ctx is live; libnftables returns a NUL-terminated buffer (or null) that stays
        // valid until the next call on this context, and it is copied before that.
        let (_, error) = unsafe {
            let read = |p: *const c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            (
                read((self.lib.get_output)(self.ctx)),
                read((self.lib.get_error)(self.ctx)),
            )
        };
        if rc == 0 {
            Ok(())
        } else if error.trim().is_empty() {
            Err(NftError::Failed(rc))
        } else {
            Err(NftError::Refused(error.trim().to_string()))
        }
    }
}

/// Why an nft script did not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NftError {
    /// The script cannot be passed as a C string.
    #[error("nft script holds a NUL byte")]
    NulByte,
    /// libnftables failed without a message (its return code).
    #[error("nft failed ({0})")]
    Failed(c_int),
    /// libnftables' own message.
    #[error("{0}")]
    Refused(String),
}

impl Drop for Nft {
    fn drop(&mut self) {
        let _one = CALLS.lock().unwrap_or_else(|p| p.into_inner());
        // SAFETY: ctx is live and dropped exactly once.
        unsafe { (self.lib.free)(self.ctx) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libnftables_loads_and_reports_nft_errors() {
        // scripts/test installs nftables, which brings libnftables1.
        let mut nft = Nft::open().expect("libnftables.so.1 (apt-get install nftables)");
        let error = nft.run("add table inet\n").unwrap_err().to_string();
        assert!(error.contains("syntax error"), "{error}");
        // The context stays usable after an error, and its buffers were emptied.
        let again = nft.run("add chain\n").unwrap_err().to_string();
        assert!(!again.contains("add table"), "{again}");
        assert!(nft.run("a\0b").is_err());
    }
}
