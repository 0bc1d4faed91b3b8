//! The engine's I/O in a browser (`wasm32-unknown-unknown`): the clock read
//! from JavaScript, in-memory files, files in the Origin Private File
//! System through synchronous access handles, and files persisted in
//! IndexedDB ([`IdbIO`]) where OPFS is missing.
//!
//! `std::time` panics on this target, and so does every I/O whose clock uses
//! it (the engine's own `MemoryIO` included), so both I/Os here read time
//! through `web-time` (`performance.now()` and `Date.now()`).
//!
//! OPFS sync access handles exist only in dedicated Workers and are
//! exclusive: while one Worker holds a database's handles, another open of it
//! (from another tab, say) fails with [`Error::Busy`]. Handles are created
//! asynchronously, so [`OpfsIO::open`] opens the database file and its WAL
//! up front; the engine's synchronous calls then read and write them in place.
//! Handles are JavaScript objects and stay on this thread: the engine's file
//! objects hold only an index into a thread-local table.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use turso_core::io::{FileId, FileSyncType};
use turso_core::{
    Buffer, Completion, File, IO, LimboError, MemoryIO, MonotonicInstant, OpenFlags,
    WallClockInstant,
};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    FileSystemDirectoryHandle, FileSystemFileHandle, FileSystemGetDirectoryOptions,
    FileSystemGetFileOptions, FileSystemReadWriteOptions, FileSystemSyncAccessHandle,
};

use crate::error::{Error, Result};

/// The folder of the origin's private file system that holds every database.
pub const OPFS_FOLDER: &str = "nexus-metastore";

/// The `feature` of the [`Error::Unsupported`] that says OPFS itself is
/// missing here (not that one of its files failed to open): where a store
/// may fall back to IndexedDB.
pub const OPFS_FEATURE: &str = "the Origin Private File System";

fn monotonic_now() -> MonotonicInstant {
    thread_local! {
        static START: web_time::Instant = web_time::Instant::now();
    }
    START.with(|start| MonotonicInstant::from_nanos(start.elapsed().as_nanos()))
}

fn wall_clock_now() -> WallClockInstant {
    let since = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    WallClockInstant {
        secs: since.as_secs() as i64,
        micros: since.subsec_micros(),
    }
}

/// In-memory files with the clock read from JavaScript: the browser's
/// in-memory store.
#[derive(Default)]
pub struct WebMemoryIO {
    inner: MemoryIO,
}

impl std::fmt::Debug for WebMemoryIO {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebMemoryIO")
    }
}

impl WebMemoryIO {
    /// A new, empty in-memory file system.
    pub fn new() -> Self {
        WebMemoryIO::default()
    }
}

/// The clock of both I/Os: JavaScript's.
macro_rules! js_clock {
    ($io:ty) => {
        impl turso_core::Clock for $io {
            fn current_time_monotonic(&self) -> turso_core::MonotonicInstant {
                $crate::web::monotonic_now()
            }
            fn current_time_wall_clock(&self) -> turso_core::WallClockInstant {
                $crate::web::wall_clock_now()
            }
        }
    };
}

js_clock!(WebMemoryIO);
js_clock!(OpfsIO);

mod idb;
pub use idb::IdbIO;

impl IO for WebMemoryIO {
    fn open_file(
        &self,
        path: &str,
        flags: OpenFlags,
        direct: bool,
    ) -> turso_core::Result<Arc<dyn File>> {
        self.inner.open_file(path, flags, direct)
    }
    fn remove_file(&self, path: &str) -> turso_core::Result<()> {
        self.inner.remove_file(path)
    }
    fn file_id(&self, path: &str) -> turso_core::Result<FileId> {
        Ok(FileId::from_path_hash(path))
    }
    fn yield_now(&self) {}
    fn sleep(&self, _: Duration) {}
}

thread_local! {
    /// Open sync access handles by slot; `None` once closed.
    static HANDLES: RefCell<Vec<Option<FileSystemSyncAccessHandle>>> = const { RefCell::new(Vec::new()) };
}

fn with_handle<T>(
    slot: usize,
    path: &str,
    f: impl FnOnce(&FileSystemSyncAccessHandle) -> std::result::Result<T, JsValue>,
) -> turso_core::Result<T> {
    HANDLES.with(|handles| {
        let handles = handles.borrow();
        let handle = handles
            .get(slot)
            .and_then(Option::as_ref)
            .ok_or_else(|| LimboError::InternalError(format!("OPFS file {path} is closed")))?;
        f(handle)
            .map_err(|e| LimboError::InternalError(format!("OPFS file {path}: {}", js_message(&e))))
    })
}

/// The text of a JavaScript exception (a `DOMException`'s name and message).
pub fn js_message(e: &JsValue) -> String {
    if let Some(err) = e.dyn_ref::<js_sys::Error>() {
        let name = String::from(err.name());
        let message = String::from(err.message());
        return format!("{name}: {message}");
    }
    if let Some(ex) = e.dyn_ref::<web_sys::DomException>() {
        return format!("{}: {}", ex.name(), ex.message());
    }
    e.as_string().unwrap_or_else(|| format!("{e:?}"))
}

fn js_name(e: &JsValue) -> String {
    if let Some(ex) = e.dyn_ref::<web_sys::DomException>() {
        return ex.name();
    }
    e.dyn_ref::<js_sys::Error>()
        .map(|err| String::from(err.name()))
        .unwrap_or_default()
}

/// One file of an [`OpfsIO`].
struct OpfsFile {
    slot: usize,
    path: String,
}

fn at(pos: u64) -> FileSystemReadWriteOptions {
    let opts = FileSystemReadWriteOptions::new();
    opts.set_at(pos as f64);
    opts
}

impl OpfsFile {
    /// Writes all of `bytes` at `pos`; a short write (quota) is an error.
    fn write_at(&self, pos: u64, bytes: &[u8]) -> turso_core::Result<i32> {
        let written = with_handle(self.slot, &self.path, |h| {
            h.write_with_u8_array_and_options(bytes, &at(pos))
        })?;
        if written as usize != bytes.len() {
            return Err(LimboError::InternalError(format!(
                "OPFS file {}: short write ({written} of {} bytes; is the origin out of quota?)",
                self.path,
                bytes.len()
            )));
        }
        Ok(written as i32)
    }
}

impl File for OpfsFile {
    fn lock_file(&self, _exclusive: bool) -> turso_core::Result<()> {
        // The sync access handle is an exclusive lock already.
        Ok(())
    }
    fn unlock_file(&self) -> turso_core::Result<()> {
        Ok(())
    }

    fn pread(&self, pos: u64, c: Completion) -> turso_core::Result<Completion> {
        let read = with_handle(self.slot, &self.path, |h| {
            let buf = c.as_read().buf();
            h.read_with_u8_array_and_options(buf.as_mut_slice(), &at(pos))
        })?;
        c.complete(read as i32);
        Ok(c)
    }

    fn pwrite(
        &self,
        pos: u64,
        buffer: Arc<Buffer>,
        c: Completion,
    ) -> turso_core::Result<Completion> {
        c.complete(self.write_at(pos, buffer.as_slice())?);
        Ok(c)
    }

    /// One JavaScript call for the whole run of buffers (the engine appends
    /// a transaction's WAL frames this way): each call into OPFS costs far
    /// more than copying the frames together.
    fn pwritev(
        &self,
        pos: u64,
        buffers: Vec<Arc<Buffer>>,
        c: Completion,
    ) -> turso_core::Result<Completion> {
        let total: usize = buffers.iter().map(|b| b.len()).sum();
        let mut joined = Vec::with_capacity(total);
        for b in &buffers {
            joined.extend_from_slice(b.as_slice());
        }
        c.complete(self.write_at(pos, &joined)?);
        Ok(c)
    }

    fn sync(&self, c: Completion, _sync_type: FileSyncType) -> turso_core::Result<Completion> {
        with_handle(self.slot, &self.path, |h| h.flush())?;
        c.complete(0);
        Ok(c)
    }

    fn size(&self) -> turso_core::Result<u64> {
        with_handle(self.slot, &self.path, |h| h.get_size()).map(|s| s as u64)
    }

    fn truncate(&self, len: u64, c: Completion) -> turso_core::Result<Completion> {
        with_handle(self.slot, &self.path, |h| h.truncate_with_f64(len as f64))?;
        c.complete(0);
        Ok(c)
    }
}

/// Files in the Origin Private File System, for one database: its main file
/// and its WAL, opened up front by [`OpfsIO::open`]. Dropping it closes the
/// handles, which lets another Worker open the database.
pub struct OpfsIO {
    name: String,
    files: HashMap<String, Arc<OpfsFile>>,
}

impl std::fmt::Debug for OpfsIO {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpfsIO").field("name", &self.name).finish()
    }
}

/// The OPFS root folder of this origin, or why there is none.
async fn opfs_root() -> Result<FileSystemDirectoryHandle> {
    let unavailable = |reason: String| Error::Unsupported {
        feature: OPFS_FEATURE,
        reason,
    };
    let global = js_sys::global();
    let storage = if let Some(worker) = global.dyn_ref::<web_sys::WorkerGlobalScope>() {
        // Missing outside secure contexts (plain HTTP other than localhost).
        let navigator = worker.navigator();
        let storage = js_sys::Reflect::get(&navigator, &JsValue::from_str("storage"))
            .unwrap_or(JsValue::UNDEFINED);
        if storage.is_undefined() || storage.is_null() {
            return Err(unavailable(
                "navigator.storage is missing (it exists only in secure contexts: HTTPS or localhost)"
                    .into(),
            ));
        }
        storage.unchecked_into::<web_sys::StorageManager>()
    } else {
        return Err(unavailable(
            "OPFS databases open only in a dedicated Worker (sync access handles do not exist on \
             the main thread); use the package's Worker wrapper, or an in-memory database"
                .into(),
        ));
    };
    let root = JsFuture::from(storage.get_directory())
        .await
        .map_err(|e| unavailable(js_message(&e)))?;
    let root: FileSystemDirectoryHandle = root.unchecked_into();
    let opts = FileSystemGetDirectoryOptions::new();
    opts.set_create(true);
    let folder = JsFuture::from(root.get_directory_handle_with_options(OPFS_FOLDER, &opts))
        .await
        .map_err(|e| unavailable(js_message(&e)))?;
    Ok(folder.unchecked_into())
}

/// The names of the files a database `name` uses: the database and its WAL.
fn file_names(name: &str) -> [String; 2] {
    [name.to_string(), format!("{name}-wal")]
}

impl OpfsIO {
    /// Opens (creating if needed) the files of database `name` in OPFS.
    /// Fails with [`Error::Busy`] while another Worker (another tab) has the
    /// database open, and with [`Error::Unsupported`] where OPFS is missing
    /// (outside a dedicated Worker, some private windows, older browsers).
    pub async fn open(name: &str) -> Result<OpfsIO> {
        validate_db_name(name)?;
        let folder = opfs_root().await?;
        let mut io = OpfsIO {
            name: name.to_string(),
            files: HashMap::new(),
        };
        for file in file_names(name) {
            let opts = FileSystemGetFileOptions::new();
            opts.set_create(true);
            let handle = JsFuture::from(folder.get_file_handle_with_options(&file, &opts))
                .await
                .map_err(|e| Error::Unsupported {
                    feature: "OPFS files",
                    reason: format!("opening {file}: {}", js_message(&e)),
                })?;
            let handle: FileSystemFileHandle = handle.unchecked_into();
            let sync = match JsFuture::from(handle.create_sync_access_handle()).await {
                Ok(sync) => sync.unchecked_into::<FileSystemSyncAccessHandle>(),
                // Dropping `io` closes the handles opened so far.
                Err(e) if js_name(&e) == "NoModificationAllowedError" => {
                    return Err(Error::Busy {
                        location: format!("opfs:{name}"),
                        waited: Duration::ZERO,
                    });
                }
                Err(e) => {
                    return Err(Error::Unsupported {
                        feature: "OPFS sync access handles",
                        reason: format!("opening {file}: {}", js_message(&e)),
                    });
                }
            };
            let slot = HANDLES.with(|handles| {
                let mut handles = handles.borrow_mut();
                handles.push(Some(sync));
                handles.len() - 1
            });
            io.files
                .insert(file.clone(), Arc::new(OpfsFile { slot, path: file }));
        }
        Ok(io)
    }

    /// Deletes database `name`'s files from OPFS. Fails with [`Error::Busy`]
    /// while it is open anywhere.
    pub async fn remove(name: &str) -> Result<()> {
        validate_db_name(name)?;
        let folder = opfs_root().await?;
        for file in file_names(name) {
            if let Err(e) = JsFuture::from(folder.remove_entry(&file)).await {
                match js_name(&e).as_str() {
                    "NotFoundError" => {}
                    "NoModificationAllowedError" | "InvalidModificationError" => {
                        return Err(Error::Busy {
                            location: format!("opfs:{name}"),
                            waited: Duration::ZERO,
                        });
                    }
                    _ => {
                        return Err(Error::Unsupported {
                            feature: "OPFS files",
                            reason: format!("removing {file}: {}", js_message(&e)),
                        });
                    }
                }
            }
        }
        Ok(())
    }
}

/// Database names become OPFS file names: keep them plain.
pub(crate) fn validate_db_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "database name",
            name,
            "use 1 to 128 ASCII letters, digits, '-', '_' or '.', not starting with '.'",
        ))
    }
}

impl Drop for OpfsIO {
    fn drop(&mut self) {
        HANDLES.with(|handles| {
            let mut handles = handles.borrow_mut();
            for file in self.files.values() {
                if let Some(handle) = handles.get_mut(file.slot).and_then(Option::take) {
                    let _ = handle.flush();
                    handle.close();
                }
            }
        });
    }
}

impl IO for OpfsIO {
    fn open_file(
        &self,
        path: &str,
        _flags: OpenFlags,
        _direct: bool,
    ) -> turso_core::Result<Arc<dyn File>> {
        match self.files.get(path) {
            Some(file) => Ok(file.clone()),
            None => Err(LimboError::InternalError(format!(
                "OPFS database {}: the engine asked for file {path}, which was not opened \
                 (only the database and its WAL are)",
                self.name
            ))),
        }
    }

    fn remove_file(&self, path: &str) -> turso_core::Result<()> {
        // The handle stays open (it is the lock); an empty file is a removed WAL.
        let file = self.files.get(path).ok_or_else(|| {
            LimboError::InternalError(format!("OPFS database {}: no file {path}", self.name))
        })?;
        with_handle(file.slot, path, |h| {
            h.truncate_with_f64(0.0)?;
            h.flush()
        })
    }

    fn file_id(&self, path: &str) -> turso_core::Result<FileId> {
        Ok(FileId::from_path_hash(&format!("opfs:{path}")))
    }

    fn yield_now(&self) {}
    fn sleep(&self, _: Duration) {}
}
