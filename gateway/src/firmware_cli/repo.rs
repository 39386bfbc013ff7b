//! Store upkeep, as kubo has it: `export` (`ipfs dag export`), `pins` (`ipfs pin ls`), `unpin`
//! (`ipfs pin rm`) and `gc` (`ipfs repo gc`), so an integrator can move an image to a gateway
//! off the network and reclaim the SD card of a Raspberry Pi.

use std::path::Path;

use cid::Cid;
use firmware::blockstore::GcReport;
use firmware::update::{StoreBlocks, write_dag_car};

use super::{FirmwareError, export_error, open_existing_store, write_atomically};

/// Writes the complete DAG of `root` (every block read back and verified) as a CARv1 to `out`
/// (temp file, fsync, rename); returns the number of blocks written.
pub fn export_car(store_dir: &Path, root: &Cid, out: &Path) -> Result<usize, FirmwareError> {
    let store = open_existing_store(store_dir)?;
    let src = StoreBlocks::new(&store);
    write_atomically(out, |w, tmp| {
        write_dag_car(w, &src, root)
            .map(|(_, n)| n)
            .map_err(|e| export_error(&store, &src, e, tmp))
    })
}

/// A pinned image: its root and how many blocks the pin holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// The image root.
    pub root: Cid,
    /// Blocks pinned under it (the root included).
    pub blocks: usize,
}

/// The pinned images, in CID order.
pub fn pins(store_dir: &Path) -> Result<Vec<Pin>, FirmwareError> {
    let store = open_existing_store(store_dir)?;
    let mut out = Vec::new();
    for root in store.pinned_roots().map_err(FirmwareError::Store)? {
        let blocks = store
            .pinned_blocks(&root)
            .map_err(FirmwareError::Store)?
            .map_or(0, |b| b.len());
        out.push(Pin { root, blocks });
    }
    out.sort_by_key(|p| p.root.to_string());
    Ok(out)
}

/// Removes the pin of `root`; false if it was not pinned. Its blocks stay until [`gc`].
pub fn unpin(store_dir: &Path, root: &Cid) -> Result<bool, FirmwareError> {
    let store = open_existing_store(store_dir)?;
    store.unpin(root).map_err(FirmwareError::Store)
}

/// Removes every block no pin holds. Do not run it while another process fetches into the
/// same store: blocks of an unfinished fetch are not pinned yet.
pub fn gc(store_dir: &Path) -> Result<GcReport, FirmwareError> {
    let store = open_existing_store(store_dir)?;
    store.gc().map_err(FirmwareError::Store)
}
