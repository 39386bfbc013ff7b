//! `mef-gateway firmware …`: firmware images on the gateway (issue 7, seed 004's firmware
//! scenario).
//!
//! * `add FILE [--car OUT]`: import into the on-disk blockstore and pin; print the root CID
//!   exactly as `ipfs add --cid-version=1 -Q` does (optionally also write a CARv1 of the DAG).
//! * `import-car CAR`: store a CAR's blocks (each verified against its CID); print its roots.
//! * `get CID -o FILE [--peer PEER]...`: rebuild a file, every block verified, written to a temp
//!   file and renamed only on success (never a partial FILE); with `--peer`, blocks missing from
//!   the store are first fetched from those mesh peers ([`crate::firmware_net::fetch`]).
//! * `serve --key MESH_KEY`: serve the store's blocks to mesh peers until Ctrl-C/SIGTERM
//!   ([`crate::firmware_net::FirmwareNode`]); prints this node's peer string first. With
//!   `--manifests DIR …` the gateway is also a swarm member:
//!   newer signed manifests dropped into DIR are fetched from providers and other gateways,
//!   verified and staged (`staged PATH` on stdout), and the blocks served on.
//! * `publish`: sign a manifest with the manufacturer's ed25519 key (the `mef-gateway keygen`
//!   file format).
//! * `verify MANIFEST --trust KEY`: would a device accept this manifest?
//! * `stage MANIFEST …`: the update check, then the image staged from the blockstore with
//!   [`firmware::update::Stager`] (nothing unverified reaches the staging directory).
//! * `export CID -o CAR`, `pins`, `unpin CID`, `gc`: store upkeep ([`repo`]).
//!
//! The file rebuilding works over any [`BlockSource`]; the commands here use the local blockstore
//! ([`StoreBlocks`]), filled from the mesh first when peers are given.

pub mod repo;

use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use cid::Cid;
use clap::{Args, Subcommand};
use ed25519_dalek::VerifyingKey;
use firmware::blockstore::{Blockstore, BlockstoreError};
use firmware::car::{CarError, CarReader};
use firmware::manifest::{MAX_MANIFEST_LEN, Manifest, ManifestError, SignedManifest, Version};
use firmware::unixfs::dagpb::{PbNode, UnixFsData};
use firmware::unixfs::{
    BlockSink, BlockSource, DAG_PB_CODEC, ExportError, ImportError, RAW_CODEC, export, import,
};
use firmware::update::{
    Decision, Stager, StoreBlocks, UpdateError, UpdatePolicy, authenticate, check_version,
    is_complete, pin_image, write_dag_car,
};
use indicatif::{ProgressBar, ProgressStyle};

use crate::daemon::key::{self, KeyError};
use crate::firmware_net::{
    FetchOptions, FirmwareNode, MeshKeyError, NetError, NodeEvent, PeerAddr, UpdateConfig,
    generate_identity, read_mesh_key,
};
use firmware::exchange::{PeerKind, ServerConfig};

/// Files smaller than this get no progress bar.
const PROGRESS_MIN_BYTES: u64 = 4 << 20;

/// Why a firmware command failed.
#[derive(Debug, thiserror::Error)]
pub enum FirmwareError {
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The blockstore failed (I/O, or a stored block no longer matches its CID).
    #[error("firmware store: {0}")]
    Store(#[source] BlockstoreError),
    /// `unpin` of a CID that is not pinned.
    #[error("{0} is not pinned (see `firmware pins`)")]
    NotPinned(Cid),
    /// The store directory does not exist (commands that only read do not create it).
    #[error(
        "no firmware store at {0} (see --store; `firmware add` or `firmware import-car` create one)"
    )]
    NoStore(PathBuf),
    /// Importing a file failed.
    #[error("importing {path}: {source}")]
    Import {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: ImportError,
    },
    /// A CAR file is malformed or holds a block that does not match its CID.
    #[error("CAR {path}: {source}")]
    Car {
        /// The CAR file.
        path: PathBuf,
        /// The error (boxed: it may hold a CID).
        #[source]
        source: Box<CarError>,
    },
    /// A block of the image is not in the local store.
    #[error(
        "block {cid} is not in the firmware store {store} (import a CAR holding it, or fetch it)"
    )]
    MissingBlock {
        /// The missing block.
        cid: Cid,
        /// The store directory.
        store: PathBuf,
    },
    /// The image could not be rebuilt (a corrupt block or a malformed DAG).
    #[error("rebuilding the image: {0}")]
    Export(#[source] ExportError),
    /// The key file could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A manifest file could not be decoded, or a manifest could not be built.
    #[error("manifest {path}: {source}")]
    Manifest {
        /// The manifest file.
        path: PathBuf,
        /// The error.
        #[source]
        source: ManifestError,
    },
    /// The manifest would not be accepted.
    #[error("refused: {0}")]
    Refused(#[source] Box<UpdateError>),
    /// The manifest names the running version: nothing to stage.
    #[error("refused: already running version {0} (not an update)")]
    UpToDate(Version),
    /// Staging the image failed.
    #[error("staging: {0}")]
    Stage(#[source] Box<UpdateError>),
    /// The arguments do not make sense together (what clap cannot check).
    #[error("{0}")]
    Usage(&'static str),
    /// The mesh key file could not be read.
    #[error(transparent)]
    MeshKey(#[from] MeshKeyError),
    /// Fetching from or serving to mesh peers failed.
    #[error(transparent)]
    Net(Box<NetError>),
}

impl From<NetError> for FirmwareError {
    fn from(e: NetError) -> Self {
        Self::Net(Box::new(e))
    }
}

impl FirmwareError {
    fn refused(e: UpdateError) -> Self {
        Self::Refused(Box::new(e))
    }

    fn stage(e: UpdateError) -> Self {
        Self::Stage(Box::new(e))
    }
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> FirmwareError + use<> {
    let path = path.to_path_buf();
    move |source| FirmwareError::Io { op, path, source }
}

/// The firmware blockstore directory (`--store`).
#[derive(Args, Debug, Clone)]
pub struct StoreArg {
    /// Firmware blockstore directory.
    #[arg(
        long = "store",
        value_name = "DIR",
        env = "MEF_GATEWAY_FIRMWARE_STORE",
        default_value = "./mef-firmware"
    )]
    pub dir: PathBuf,
}

/// `--peer`, `--key`, `--timeout`: the mesh peers blocks missing from the store are fetched
/// from.
#[derive(Args, Debug, Clone)]
pub struct PeerArgs {
    /// A mesh peer serving the image, `KEY@IP:PORT` as `firmware serve` prints it; repeatable.
    #[arg(long = "peer", value_name = "PEER")]
    pub peers: Vec<PeerAddr>,
    /// This node's mesh key file (`keygen --mesh`); default: a fresh identity.
    #[arg(long, value_name = "MESH_KEY_FILE", requires = "peers")]
    pub key: Option<PathBuf>,
    /// Give up fetching after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600)]
    pub timeout: u64,
}

impl PeerArgs {
    fn options(&self) -> FetchOptions {
        FetchOptions {
            timeout: Duration::from_secs(self.timeout),
            ..FetchOptions::default()
        }
    }
}

/// `mef-gateway firmware` subcommands.
#[derive(Subcommand, Debug)]
pub enum FirmwareCmd {
    /// Import FILE into the blockstore and pin it; print its root CID (as
    /// `ipfs add --cid-version=1 -Q`).
    Add {
        /// The file to import.
        file: PathBuf,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
        /// Also write a CARv1 of the image's DAG (root first) to OUT.
        #[arg(long, value_name = "OUT")]
        car: Option<PathBuf>,
    },
    /// Store the blocks of a CARv1 (each verified against its CID); print its roots. Roots whose
    /// DAG is complete are pinned.
    ImportCar {
        /// The CAR file.
        car: PathBuf,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Write the image CID's whole DAG from the blockstore as a CARv1 (as `ipfs dag export`),
    /// every block verified; for a gateway off the network (`import-car` there).
    Export {
        /// The image root CID.
        #[arg(value_parser = parse_cid)]
        cid: Cid,
        /// The CAR file to write (temp file, then renamed).
        #[arg(short = 'o', long = "output", value_name = "CAR")]
        output: PathBuf,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
    },
    /// List the pinned images: root CID and number of blocks (as `ipfs pin ls`).
    Pins {
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove an image's pin; its blocks go at the next `gc` (as `ipfs pin rm`).
    Unpin {
        /// The image root CID.
        #[arg(value_parser = parse_cid)]
        cid: Cid,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Remove every block no pin holds (as `ipfs repo gc`). Not while another process fetches
    /// into the same store; a gateway running the update flow collects after each staging.
    Gc {
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Rebuild the file CID from the blockstore into FILE, verifying every block.
    ///
    /// FILE appears only once complete (written to a temp file, then renamed). With --peer,
    /// blocks missing from the store are first fetched from those mesh peers (each verified
    /// against its CID, stored, and the image pinned); an interrupted fetch resumes.
    Get {
        /// The image root CID.
        #[arg(value_parser = parse_cid)]
        cid: Cid,
        /// The output file.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: PathBuf,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
        /// Where blocks missing from the store are fetched from.
        #[command(flatten)]
        fetch: PeerArgs,
    },
    /// Serve the blockstore's blocks to mesh peers (`get --peer`) until Ctrl-C or SIGTERM.
    ///
    /// Prints this node's peer string (`KEY@IP:PORT`) on the first line of stdout, then its
    /// hashname, its key in base32 (for a `[[mesh.seed]]` entry) and the bound address.
    ///
    /// With --manifests the node is also a member of the firmware swarm: it watches DIR for
    /// `*.manifest` files, fetches the newest valid update from --provider and --swarm-peer
    /// peers (and gateways that connect to it), stages it in --staging (a `staged PATH` line
    /// on stdout), and keeps serving its blocks to the other gateways.
    Serve {
        /// The firmware blockstore (created with --manifests if missing).
        #[command(flatten)]
        store: StoreArg,
        /// The mesh identity key file (`mef-gateway keygen --mesh`).
        #[arg(long, value_name = "MESH_KEY_FILE")]
        key: PathBuf,
        /// UDP address of the mesh (port 0: any).
        #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:4242")]
        listen: SocketAddr,
        /// Watch this directory for signed manifests (`firmware publish` output, `*.manifest`)
        /// and fetch, verify and stage newer images as a swarm member.
        #[arg(
            long,
            value_name = "DIR",
            requires_all = ["trust", "model", "current", "staging"]
        )]
        manifests: Option<PathBuf>,
        /// A trusted manufacturer public key (base64); repeatable (with --manifests).
        #[arg(long, value_name = "PUBKEY", value_parser = parse_pubkey, requires = "manifests")]
        trust: Vec<VerifyingKey>,
        /// The device model (with --manifests).
        #[arg(long, requires = "manifests")]
        model: Option<String>,
        /// The running version; only newer manifests are fetched (with --manifests).
        #[arg(long, value_name = "X.Y.Z", requires = "manifests")]
        current: Option<Version>,
        /// The staging directory, created if needed (with --manifests).
        #[arg(long, value_name = "DIR", requires = "manifests")]
        staging: Option<PathBuf>,
        /// The manufacturer's node (`KEY@IP:PORT`): dialled, asked for the blocks the swarm
        /// lacks; repeatable (with --manifests).
        #[arg(long = "provider", value_name = "PEER", requires = "manifests")]
        providers: Vec<PeerAddr>,
        /// Another gateway (`KEY@IP:PORT`): dialled, asked for the blocks it announces;
        /// repeatable (with --manifests).
        #[arg(long = "swarm-peer", value_name = "PEER", requires = "manifests")]
        swarm_peers: Vec<PeerAddr>,
        /// Super-seeding, for the manufacturer's node: serve each leaf block of an image at
        /// most N times, then answer DONT_HAVE so that gateways fetch it from each other (they
        /// still get, by an urgent re-ask, a block no other gateway announces).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        copies_per_block: Option<u32>,
        /// Cap what this node uploads to the swarm (blocks served and its own wants), in tc
        /// units: `8mbit`, `500kbit`, `1mbps` (bytes/s); peers share it chunk by chunk.
        #[arg(long, value_name = "RATE", value_parser = parse_upload_rate)]
        max_upload: Option<u64>,
        /// Abandon a fetch after this many seconds (retried later).
        #[arg(long, value_name = "SECS", default_value_t = 600)]
        fetch_timeout: u64,
        /// After a failed fetch, try again after this many seconds.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        retry_after: u64,
    },
    /// Sign a firmware manifest with the manufacturer's key; print its summary.
    ///
    /// Give either FILE (imported into the store and pinned, for its root and size) or
    /// --cid and --size.
    Publish {
        /// The manufacturer's ed25519 secret key file (`mef-gateway keygen` format).
        #[arg(long, value_name = "KEYFILE")]
        key: PathBuf,
        /// Device model the image is for.
        #[arg(long)]
        model: String,
        /// Image version, MAJOR.MINOR.PATCH.
        #[arg(long, value_name = "X.Y.Z")]
        version: Version,
        /// Release notes.
        #[arg(long, default_value = "")]
        notes: String,
        /// Root CID of an image already imported elsewhere.
        #[arg(long, value_parser = parse_cid, requires = "size", conflicts_with = "file")]
        cid: Option<Cid>,
        /// Image size in bytes (with --cid).
        #[arg(long, requires = "cid", conflicts_with = "file")]
        size: Option<u64>,
        /// The image file.
        #[arg(required_unless_present = "cid")]
        file: Option<PathBuf>,
        /// Where to write the signed manifest.
        #[arg(short = 'o', long = "output", value_name = "OUT")]
        output: PathBuf,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
    },
    /// Check whether a device would accept MANIFEST: trusted signer and valid signature, and,
    /// if given, the model and a version newer than --current. Exit status 0 if accepted.
    Verify {
        /// The signed manifest file.
        manifest: PathBuf,
        /// A trusted manufacturer public key (base64, as `mef-gateway keygen` prints); repeatable.
        #[arg(long, value_name = "PUBKEY", value_parser = parse_pubkey, required = true)]
        trust: Vec<VerifyingKey>,
        /// The device model.
        #[arg(long)]
        model: Option<String>,
        /// The running version; the manifest must be newer.
        #[arg(long, value_name = "X.Y.Z")]
        current: Option<Version>,
    },
    /// Run the update check on MANIFEST, then rebuild its image from the blockstore (every
    /// block verified, size checked) and stage it atomically in --staging; print its path.
    Stage {
        /// The signed manifest file.
        manifest: PathBuf,
        /// A trusted manufacturer public key (base64); repeatable.
        #[arg(long, value_name = "PUBKEY", value_parser = parse_pubkey, required = true)]
        trust: Vec<VerifyingKey>,
        /// The device model.
        #[arg(long)]
        model: String,
        /// The running version; the manifest must be newer.
        #[arg(long, value_name = "X.Y.Z")]
        current: Version,
        /// The firmware blockstore.
        #[command(flatten)]
        store: StoreArg,
        /// The staging directory (created if needed).
        #[arg(long, value_name = "DIR")]
        staging: PathBuf,
        /// Where blocks missing from the store are fetched from (after the manifest is checked,
        /// before anything is staged).
        #[command(flatten)]
        fetch: PeerArgs,
    },
}

fn parse_cid(s: &str) -> Result<Cid, String> {
    Cid::try_from(s).map_err(|e| format!("not a CID: {e}"))
}

/// An upload cap in tc units (bits per second), at least 8 kbit/s.
pub fn parse_upload_rate(s: &str) -> Result<u64, String> {
    let bps = sim_netem::units::parse_rate(s).map_err(|e| e.to_string())?;
    if bps < 8_000 {
        return Err(format!("{s:?}: an upload cap below 8kbit is not usable"));
    }
    Ok(bps)
}

/// A manufacturer public key: base64 of the 32-byte ed25519 key, as `mef-gateway keygen` prints.
pub fn parse_pubkey(s: &str) -> Result<VerifyingKey, String> {
    let bytes = STANDARD
        .decode(s.trim())
        .map_err(|_| "not base64".to_owned())?;
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| format!("{} bytes, an ed25519 public key has 32", bytes.len()))?;
    VerifyingKey::from_bytes(&arr).map_err(|_| "not a valid ed25519 public key".to_owned())
}

/// Runs one `firmware` subcommand, printing its result on stdout.
pub fn run(cmd: FirmwareCmd) -> Result<(), FirmwareError> {
    match cmd {
        FirmwareCmd::Add { file, store, car } => {
            let added = add(&file, &store.dir, car.as_deref())?;
            println!("{}", added.root);
        }
        FirmwareCmd::Export { cid, output, store } => {
            let n = repo::export_car(&store.dir, &cid, &output)?;
            eprintln!("wrote {} ({n} blocks)", output.display());
        }
        FirmwareCmd::Pins { store } => {
            for pin in repo::pins(&store.dir)? {
                println!("{} {}", pin.root, pin.blocks);
            }
        }
        FirmwareCmd::Unpin { cid, store } => {
            if !repo::unpin(&store.dir, &cid)? {
                return Err(FirmwareError::NotPinned(cid));
            }
            eprintln!("unpinned {cid}; `firmware gc` removes its blocks");
        }
        FirmwareCmd::Gc { store } => {
            let r = repo::gc(&store.dir)?;
            println!(
                "removed {} blocks ({} bytes), kept {}",
                r.blocks_removed, r.bytes_freed, r.blocks_kept
            );
        }
        FirmwareCmd::ImportCar { car, store } => {
            let imported = import_car(&car, &store.dir)?;
            for root in &imported.roots {
                println!("{root}");
            }
            eprintln!(
                "imported {} blocks ({} new) from {}",
                imported.blocks,
                imported.new_blocks,
                car.display()
            );
            for (root, missing) in &imported.incomplete {
                eprintln!("root {root} is incomplete (block {missing} missing): not pinned");
            }
        }
        FirmwareCmd::Get {
            cid,
            output,
            store,
            fetch,
        } => {
            let n = if fetch.peers.is_empty() {
                let store = open_existing_store(&store.dir)?;
                get(&store, &cid, &output)?
            } else {
                get_with_peers(&store.dir, &cid, &output, &fetch)?
            };
            eprintln!("wrote {} ({n} bytes)", output.display());
        }
        FirmwareCmd::Serve {
            store,
            key,
            listen,
            manifests: Some(manifests),
            trust,
            model,
            current,
            staging,
            providers,
            swarm_peers,
            copies_per_block,
            max_upload,
            fetch_timeout,
            retry_after,
        } => {
            let (Some(model), Some(current), Some(staging)) = (model, current, staging) else {
                return Err(FirmwareError::Usage(
                    "--manifests needs --trust, --model, --current and --staging",
                ));
            };
            let mut update =
                UpdateConfig::new(manifests, UpdatePolicy::new(model, current, trust), staging);
            update.fetch_timeout = Duration::from_secs(fetch_timeout);
            update.retry_after = Duration::from_secs(retry_after);
            let identity = read_mesh_key(&key)?;
            let blocks = open_store(&store.dir)?;
            runtime()?.block_on(serve_node(
                blocks,
                identity,
                listen,
                Some(update),
                (server_config(copies_per_block), max_upload),
                &providers,
                &swarm_peers,
            ))?;
        }
        FirmwareCmd::Serve {
            store,
            key,
            listen,
            copies_per_block,
            max_upload,
            ..
        } => {
            let identity = read_mesh_key(&key)?;
            let blocks = open_existing_store(&store.dir)?;
            let serving = (server_config(copies_per_block), max_upload);
            runtime()?.block_on(serve_node(
                blocks,
                identity,
                listen,
                None,
                serving,
                &[],
                &[],
            ))?;
        }
        FirmwareCmd::Publish {
            key: key_file,
            model,
            version,
            notes,
            cid,
            size,
            file,
            output,
            store,
        } => {
            let key = key::read(&key_file)?;
            let (root, size) = match (file, cid.zip(size)) {
                (Some(file), _) => {
                    let added = add(&file, &store.dir, None)?;
                    (added.root, added.size)
                }
                (None, Some(given)) => given,
                (None, None) => return Err(FirmwareError::Usage("give FILE, or --cid and --size")),
            };
            let manifest = Manifest {
                model,
                version,
                root,
                size,
                notes,
                released_ms: crate::reading::now_ms(),
            };
            let signed = publish(manifest, &key, &output)?;
            print!("{}", summary(&signed));
            println!("written:  {}", output.display());
        }
        FirmwareCmd::Verify {
            manifest,
            trust,
            model,
            current,
        } => {
            let signed = read_manifest(&manifest)?;
            verify(&signed, &trust, model.as_deref(), current)?;
            println!("accepted");
            print!("{}", summary(&signed));
        }
        FirmwareCmd::Stage {
            manifest,
            trust,
            model,
            current,
            store,
            staging,
            fetch,
        } => {
            let signed = read_manifest(&manifest)?;
            let policy = UpdatePolicy::new(model, current, trust);
            let staged = stage(&policy, &signed, &store.dir, &staging, &fetch)?;
            println!("{}", staged.display());
        }
    }
    Ok(())
}

/// Prints how to reach a serving node on stdout. The first line is what `get --peer` takes. A
/// closed stdout (a reader that took the first line and went) must not stop the server: errors
/// are ignored.
fn print_node(peer: PeerAddr, hashname: mesh::Hashname, key_base32: &str, listen: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{peer}")
        .and_then(|()| writeln!(out, "hashname: {hashname}"))
        .and_then(|()| writeln!(out, "key:      {key_base32} (base32, for [[mesh.seed]])"))
        .and_then(|()| writeln!(out, "listen:   {listen}"))
        .and_then(|()| out.flush());
}

/// `serve`: a [`FirmwareNode`] serving `store` until Ctrl-C or SIGTERM; with `update`
/// (`--manifests`), also updating as a swarm member, printing `staged PATH` on stdout for every
/// image staged.
async fn serve_node(
    store: Blockstore,
    identity: mesh::Identity,
    listen: SocketAddr,
    update: Option<UpdateConfig>,
    (server, max_upload): (ServerConfig, Option<u64>),
    providers: &[PeerAddr],
    swarm_peers: &[PeerAddr],
) -> Result<(), FirmwareError> {
    let dir = store.root().to_path_buf();
    let manifests = update.as_ref().map(|u| u.manifests.clone());
    let mut node = FirmwareNode::start(store, identity, listen, update, server).await?;
    node.set_upload_cap(max_upload);
    for p in providers {
        node.add_peer(*p, PeerKind::Provider).await?;
    }
    for p in swarm_peers {
        node.add_peer(*p, PeerKind::Swarm).await?;
    }
    print_node(
        node.peer_addr(),
        node.hashname(),
        &node.key_base32(),
        node.local_addr(),
    );
    match &manifests {
        Some(m) => eprintln!(
            "serving {} over the mesh, watching {} for manifests ({} provider(s), {} swarm \
             peer(s)); Ctrl-C to stop",
            dir.display(),
            m.display(),
            providers.len(),
            swarm_peers.len()
        ),
        None => eprintln!("serving {} over the mesh; Ctrl-C to stop", dir.display()),
    }
    let report = node
        .run(crate::daemon::shutdown_signal(), |ev| match ev {
            NodeEvent::Staged { image, progress } => {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "staged {}", image.path.display()).and_then(|()| out.flush());
                eprintln!(
                    "staged {} ({} bytes, root {}): {} blocks from swarm peers, {} from \
                     providers, {} already here",
                    image.version,
                    image.size,
                    image.root,
                    progress.blocks_from_swarm,
                    progress.blocks_from_providers,
                    progress.blocks_held
                );
            }
            NodeEvent::Refused { path, reason } => {
                eprintln!("manifest {} refused: {reason}", path.display());
            }
            NodeEvent::Fetching { version, root, .. } => {
                eprintln!("fetching {version} (root {root})");
            }
            NodeEvent::Failed { root, reason } => {
                eprintln!("update {root} failed: {reason}; will retry");
            }
        })
        .await?;
    eprintln!(
        "served {} blocks ({} bytes) to {} peer(s)",
        report.stats.served.blocks, report.stats.served.block_bytes, report.peers,
    );
    if let Some(v) = report.current {
        eprintln!("running version {v}");
    }
    Ok(())
}

/// The serving side's configuration: defaults, with the super-seeding budget if given.
pub fn server_config(copies_per_block: Option<u32>) -> ServerConfig {
    ServerConfig {
        copies_per_block,
        ..ServerConfig::default()
    }
}

/// Human summary of a signed manifest, one `key: value` per line.
pub fn summary(signed: &SignedManifest) -> String {
    let m = &signed.manifest;
    let mut s = format!(
        "model:    {}\nversion:  {}\nroot:     {}\nsize:     {}\nreleased: {} ms\nsigner:   {}\n",
        m.model,
        m.version,
        m.root,
        m.size,
        m.released_ms,
        STANDARD.encode(signed.signer)
    );
    if !m.notes.is_empty() {
        s.push_str(&format!(
            "notes:    {}\n",
            m.notes.replace('\n', "\n          ")
        ));
    }
    s
}

fn open_store(dir: &Path) -> Result<Blockstore, FirmwareError> {
    Blockstore::open(dir).map_err(FirmwareError::Store)
}

/// Opens the store at `dir`, which must exist (reading commands do not create one).
pub fn open_existing_store(dir: &Path) -> Result<Blockstore, FirmwareError> {
    if !dir.is_dir() {
        return Err(FirmwareError::NoStore(dir.to_path_buf()));
    }
    open_store(dir)
}

/// A progress bar on stderr for `len` bytes (hidden for small sizes, and by indicatif when
/// stderr is not a terminal).
fn progress_bar(len: u64, what: &str) -> ProgressBar {
    if len < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
    )
    .map(|s| s.progress_chars("=> "))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(len)
        .with_style(style)
        .with_message(what.to_owned())
}

/// Writes `dest` through a temp file in its directory: `fill` writes the content, then the file
/// is fsynced and renamed over `dest`. On any error the temp file is removed and `dest` is left
/// untouched.
fn write_atomically<T>(
    dest: &Path,
    fill: impl FnOnce(&mut BufWriter<File>, &Path) -> Result<T, FirmwareError>,
) -> Result<T, FirmwareError> {
    let name = dest
        .file_name()
        .ok_or_else(|| io("write", dest)(std::io::Error::other("not a file name")))?;
    let dir = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io("create", &tmp))?;
        let mut w = BufWriter::new(file);
        let t = fill(&mut w, &tmp)?;
        let file = w
            .into_inner()
            .map_err(|e| io("write", &tmp)(e.into_error()))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        fs::rename(&tmp, dest).map_err(io("rename to", dest))?;
        if let Ok(d) = File::open(dir) {
            // Durability of the rename; not being able to fsync a directory is not an error.
            let _ = d.sync_all();
        }
        Ok(t)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The result of [`add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Added {
    /// The image's root CID.
    pub root: Cid,
    /// The file size in bytes.
    pub size: u64,
    /// Distinct blocks in its DAG.
    pub blocks: usize,
}

/// Collects the imported blocks into the store.
struct StoreSink<'a> {
    store: &'a Blockstore,
    cids: Vec<Cid>,
    error: Option<BlockstoreError>,
}

impl BlockSink for &mut StoreSink<'_> {
    fn put_block(&mut self, cid: &Cid, data: &[u8]) -> std::io::Result<()> {
        match self.store.put(cid, data) {
            Ok(_) => {
                self.cids.push(*cid);
                Ok(())
            }
            Err(e) => {
                let msg = e.to_string();
                self.error = Some(e);
                Err(std::io::Error::other(msg))
            }
        }
    }
}

/// Imports `file` into the store at `store_dir` (created if needed) and pins it; with `car`,
/// also writes a CARv1 of its DAG there (atomically).
pub fn add(file: &Path, store_dir: &Path, car: Option<&Path>) -> Result<Added, FirmwareError> {
    let f = File::open(file).map_err(io("open", file))?;
    let len = f.metadata().map_err(io("stat", file))?.len();
    let store = open_store(store_dir)?;
    let bar = progress_bar(len, "adding");
    let mut sink = StoreSink {
        store: &store,
        cids: Vec::new(),
        error: None,
    };
    let mut reader = Counting {
        inner: f,
        n: 0,
        bar: &bar,
    };
    let result = import(&mut reader, &mut sink).map(|(root, _)| root);
    let size = reader.n;
    bar.finish_and_clear();
    let root = match result {
        Ok(root) => root,
        Err(source) => {
            return Err(match sink.error.take() {
                Some(e) => FirmwareError::Store(e),
                None => FirmwareError::Import {
                    path: file.to_path_buf(),
                    source,
                },
            });
        }
    };
    let mut cids = sink.cids;
    cids.sort();
    cids.dedup();
    store.pin(&root, &cids).map_err(FirmwareError::Store)?;
    if let Some(car) = car {
        let src = StoreBlocks::new(&store);
        write_atomically(car, |w, tmp| {
            write_dag_car(w, &src, &root)
                .map(|_| ())
                .map_err(|e| export_error(&store, &src, e, tmp))
        })?;
    }
    Ok(Added {
        root,
        size,
        blocks: cids.len(),
    })
}

/// Maps an export failure over the store: a store error met while reading, a missing block (named
/// with the store), a write failure (on `out`) or a bad block.
fn export_error(
    store: &Blockstore,
    src: &StoreBlocks<'_>,
    e: ExportError,
    out: &Path,
) -> FirmwareError {
    match (src.take_error(), e) {
        (Some(source), ExportError::Missing(_)) => FirmwareError::Store(source),
        (_, ExportError::Missing(cid)) => FirmwareError::MissingBlock {
            cid,
            store: store.root().to_path_buf(),
        },
        (_, ExportError::Write(e)) => io("write", out)(e),
        (_, source) => FirmwareError::Export(source),
    }
}

/// The result of [`import_car`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarImport {
    /// The CAR's roots.
    pub roots: Vec<Cid>,
    /// Blocks read.
    pub blocks: usize,
    /// Blocks the store did not have.
    pub new_blocks: usize,
    /// Roots not pinned because their DAG is incomplete in the store, with a missing block.
    pub incomplete: Vec<(Cid, Cid)>,
}

/// Stores every block of the CAR `car` (each verified against its CID; a mismatch stops the
/// import with [`CarError::BlockMismatch`]) and pins each root whose DAG is complete. Blocks
/// stored before a failure stay, unpinned, until the next [`Blockstore::gc`].
pub fn import_car(car: &Path, store_dir: &Path) -> Result<CarImport, FirmwareError> {
    let car_err = |source| FirmwareError::Car {
        path: car.to_path_buf(),
        source: Box::new(source),
    };
    let f = File::open(car).map_err(io("open", car))?;
    let len = f.metadata().map_err(io("stat", car))?.len();
    let mut reader = CarReader::new(BufReader::new(f)).map_err(car_err)?;
    let store = open_store(store_dir)?;
    let bar = progress_bar(len, "importing");
    let (mut blocks, mut new_blocks, mut done) = (0usize, 0usize, 0u64);
    while let Some((cid, data)) = reader.next_block().map_err(car_err)? {
        if store.put(&cid, &data).map_err(FirmwareError::Store)? {
            new_blocks += 1;
        }
        blocks += 1;
        done += data.len() as u64;
        bar.set_position(done);
    }
    bar.finish_and_clear();
    let roots = reader.roots().to_vec();
    let mut incomplete = Vec::new();
    for root in &roots {
        match pin_image(&store, root) {
            Ok(_) => {}
            Err(UpdateError::Export(ExportError::Missing(missing))) => {
                incomplete.push((*root, missing));
            }
            Err(UpdateError::Blockstore(e)) => return Err(FirmwareError::Store(e)),
            Err(UpdateError::Export(source)) => return Err(FirmwareError::Export(source)),
            Err(e) => return Err(FirmwareError::stage(e)),
        }
    }
    Ok(CarImport {
        roots,
        blocks,
        new_blocks,
        incomplete,
    })
}

/// The file size the root block announces (for the progress bar only; not trusted).
fn size_hint<B: BlockSource + ?Sized>(source: &B, root: &Cid) -> u64 {
    let Some(block) = source.get(root) else {
        return 0;
    };
    match root.codec() {
        RAW_CODEC => block.len() as u64,
        DAG_PB_CODEC => PbNode::decode(&block)
            .ok()
            .and_then(|n| n.data)
            .and_then(|d| UnixFsData::decode(&d).ok())
            .and_then(|d| d.filesize)
            .unwrap_or(0),
        _ => 0,
    }
}

/// Rebuilds the file `root` from `source` into `output`, verifying every block; `output`
/// appears only once complete. `explain` turns export failures into errors. Returns the size.
pub fn get_from<B: BlockSource + ?Sized>(
    source: &B,
    root: &Cid,
    output: &Path,
    explain: impl FnOnce(ExportError, &Path) -> FirmwareError,
) -> Result<u64, FirmwareError> {
    let bar = progress_bar(size_hint(source, root), "rebuilding");
    let result = write_atomically(output, |w, tmp| {
        let mut counting = Counting {
            inner: w,
            n: 0,
            bar: &bar,
        };
        export(source, root, &mut counting).map_err(|e| explain(e, tmp))
    });
    bar.finish_and_clear();
    result
}

/// [`get_from`] the local blockstore.
pub fn get(store: &Blockstore, root: &Cid, output: &Path) -> Result<u64, FirmwareError> {
    let src = StoreBlocks::new(store);
    get_from(&src, root, output, |e, tmp| {
        export_error(store, &src, e, tmp)
    })
}

/// A single-threaded tokio runtime for the mesh commands.
fn runtime() -> Result<tokio::runtime::Runtime, FirmwareError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start", Path::new("tokio runtime")))
}

/// A spinner on stderr for a fetch whose total is unknown: blocks and bytes so far.
fn fetch_bar() -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} fetching: {msg}, {bytes} ({bytes_per_sec}), {elapsed}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let bar = ProgressBar::new_spinner()
        .with_style(style)
        .with_message("connecting");
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// [`get`], fetching the blocks missing from the store at `store_dir` (created if needed) from
/// `peers` over the mesh first, with a progress spinner; the fetched image is pinned. If the
/// store already holds the whole image, no network is used.
pub fn get_with_peers(
    store_dir: &Path,
    root: &Cid,
    output: &Path,
    fetch: &PeerArgs,
) -> Result<u64, FirmwareError> {
    let store = open_store(store_dir)?;
    if is_complete(&StoreBlocks::new(&store), root) {
        return get(&store, root, output);
    }
    fetch_from_peers(store, root, fetch)?;
    let store = open_store(store_dir)?;
    let n = get(&store, root, output)?;
    match pin_image(&store, root) {
        Ok(_) => {}
        Err(UpdateError::Blockstore(e)) => return Err(FirmwareError::Store(e)),
        Err(UpdateError::Export(source)) => return Err(FirmwareError::Export(source)),
        Err(e) => return Err(FirmwareError::stage(e)),
    }
    Ok(n)
}

/// Fetches the DAG under `root` into `store` from mesh `peers`, with a progress bar on stderr
/// (blocks already in the store are not fetched again).
fn fetch_from_peers(store: Blockstore, root: &Cid, fetch: &PeerArgs) -> Result<(), FirmwareError> {
    let identity = match fetch.key.as_deref() {
        Some(k) => read_mesh_key(k)?,
        None => generate_identity()?,
    };
    let records = fetch.peers.iter().map(PeerAddr::record).collect();
    let bar = fetch_bar();
    let shown = bar.clone();
    let result = runtime()?.block_on(crate::firmware_net::fetch(
        store,
        identity,
        records,
        *root,
        &fetch.options(),
        move |p| {
            shown.set_position(p.bytes_fetched);
            shown.set_message(format!(
                "{} blocks fetched, {} held",
                p.blocks_fetched, p.blocks_held
            ));
        },
    ));
    bar.finish_and_clear();
    let report = result?;
    eprintln!(
        "fetched {} blocks ({} bytes) from {} peer(s) in {:.1}s; {} blocks were already here",
        report.progress.blocks_fetched,
        report.progress.bytes_fetched,
        report.peers,
        report.elapsed.as_secs_f64(),
        report.progress.blocks_held
    );
    Ok(())
}

/// A reader or writer advancing a progress bar by the bytes it moves.
struct Counting<'a, T> {
    inner: T,
    n: u64,
    bar: &'a ProgressBar,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        self.n += k as u64;
        self.bar.set_position(self.n);
        Ok(k)
    }
}

impl<W: Write> Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let k = self.inner.write(buf)?;
        self.n += k as u64;
        self.bar.set_position(self.n);
        Ok(k)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Signs `manifest` with `key` and writes the signed encoding to `output` (atomically).
pub fn publish(
    manifest: Manifest,
    key: &ed25519_dalek::SigningKey,
    output: &Path,
) -> Result<SignedManifest, FirmwareError> {
    let bad = |source| FirmwareError::Manifest {
        path: output.to_path_buf(),
        source,
    };
    let signed = manifest.sign(key).map_err(bad)?;
    let bytes = signed.encode().map_err(bad)?;
    write_atomically(output, |w, tmp| {
        w.write_all(&bytes).map_err(io("write", tmp))
    })?;
    Ok(signed)
}

/// Reads and decodes a signed manifest file (signature not checked here).
pub fn read_manifest(path: &Path) -> Result<SignedManifest, FirmwareError> {
    let f = File::open(path).map_err(io("open", path))?;
    let mut bytes = Vec::new();
    let limit = (MAX_MANIFEST_LEN + firmware::manifest::SIGNATURE_TRAILER_LEN + 1) as u64;
    f.take(limit)
        .read_to_end(&mut bytes)
        .map_err(io("read", path))?;
    SignedManifest::decode(&bytes).map_err(|source| FirmwareError::Manifest {
        path: path.to_path_buf(),
        source,
    })
}

/// Whether a device would accept `signed`: a trusted signer and a valid signature; if `model` is
/// given, that model; if `current` is given, a strictly newer version.
pub fn verify(
    signed: &SignedManifest,
    trusted: &[VerifyingKey],
    model: Option<&str>,
    current: Option<Version>,
) -> Result<(), FirmwareError> {
    let manifest = authenticate(signed, trusted).map_err(FirmwareError::refused)?;
    if let Some(model) = model
        && manifest.model != model
    {
        return Err(FirmwareError::refused(UpdateError::WrongModel {
            expected: model.to_owned(),
            found: manifest.model.clone(),
        }));
    }
    if let Some(current) = current
        && !check_version(manifest.version, current).map_err(FirmwareError::refused)?
    {
        return Err(FirmwareError::UpToDate(current));
    }
    Ok(())
}

/// Checks `signed` against `policy`, stages its image from the store at `store_dir` into
/// `staging` (see [`Stager`]) and pins it in the store, first fetching missing blocks from
/// `fetch.peers` if any. Returns the staged image's path.
pub fn stage(
    policy: &UpdatePolicy,
    signed: &SignedManifest,
    store_dir: &Path,
    staging: &Path,
    fetch: &PeerArgs,
) -> Result<PathBuf, FirmwareError> {
    let update = match policy.check(signed).map_err(FirmwareError::refused)? {
        Decision::Update(u) => u,
        Decision::UpToDate { version } => return Err(FirmwareError::UpToDate(version)),
    };
    let root = update.manifest().root;
    if !fetch.peers.is_empty() {
        let store = open_store(store_dir)?;
        if !is_complete(&StoreBlocks::new(&store), &root) {
            fetch_from_peers(store, &root, fetch)?;
        }
    }
    let store = open_existing_store(store_dir)?;
    let stager = Stager::open(staging).map_err(FirmwareError::stage)?;
    let src = StoreBlocks::new(&store);
    let bar = progress_bar(update.manifest().size, "staging");
    let result = stager.stage_with_progress(&update, &src, &mut |n| bar.set_position(n));
    bar.finish_and_clear();
    let staged = result.map_err(|e| match e {
        UpdateError::Export(source) => export_error(&store, &src, source, stager.dir()),
        other => FirmwareError::stage(other),
    })?;
    pin_image(&store, &staged.root).map_err(FirmwareError::stage)?;
    eprintln!(
        "staged {} {} ({} bytes, root {})",
        update.manifest().model,
        staged.version,
        staged.size,
        staged.root
    );
    Ok(staged.path)
}
