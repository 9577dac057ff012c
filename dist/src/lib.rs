//! # dspnet-dist
//!
//! Multi-process data parallel over PyTorch's c10d, the engine under `torch.distributed` and
//! DDP: Gloo on CPU, NCCL on CUDA, rendezvous through a TCPStore. Reached from Rust through a
//! small C++ shim (`src/shim.cpp`, compiled by `build.rs` against the torch wheel's libtorch).
//!
//! * [`ProcessGroup::from_env`] joins the job described by the variables torchrun (or SLURM with
//!   a few exports, see docs/distributed.md) sets: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
//!   MASTER_PORT.
//! * [`ProcessGroup::broadcast`], [`ProcessGroup::all_reduce_sum`],
//!   [`ProcessGroup::all_reduce_avg`] work on FLAT BUCKETS: the tensors are concatenated into
//!   buckets of about [`DEFAULT_BUCKET_BYTES`], one collective per bucket, and copied back (as
//!   DDP's reducer does). [`ProcessGroup::all_reduce_grads_avg`] does this for the gradients of a
//!   parameter list.
//! * [`ProcessGroup::all_reduce_sum_autograd`] is a differentiable all-reduce (backward: the same
//!   all-reduce of the gradient) for synchronised batch norm; [`ProcessGroup`] implements
//!   [`dspnet_model::CrossReplicaSum`] with it.
//! * A rank that dies makes the others fail with [`DistError::PeerFailed`], which names the
//!   ranks that stopped heart-beating, instead of hanging: every collective and the store have a
//!   timeout, and a background heartbeat in the store tells who is gone.

mod ffi;

use std::ffi::{c_char, c_void, CStr, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

/// Bucket size of the flat collectives: 25 MiB, DDP's default `bucket_cap_mb`.
pub const DEFAULT_BUCKET_BYTES: usize = 25 * 1024 * 1024;

/// Default timeout of the store and of every collective (a dead or hung peer is reported after
/// at most this long; a killed peer's closed connections are usually noticed at once).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// How long a failed rank watches the peers' heartbeats (beating every 1 s) before naming the
/// ones that stopped.
const HEARTBEAT_WINDOW: Duration = Duration::from_millis(3000);

/// Errors of this crate. Each `Display` is one line naming the variable, rank or fix.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launcher variable (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) missing or
    /// malformed.
    #[error("{0}")]
    Env(String),
    /// Joining the group failed (store unreachable, rendezvous timeout, port in use, ...).
    #[error("could not join the process group as rank {rank} of {world} at {addr}:{port}: {detail}")]
    Init { rank: usize, world: usize, addr: String, port: u16, detail: String },
    /// A collective failed because a peer died, hung or diverged.
    #[error("{0}")]
    PeerFailed(String),
    /// A bad argument (e.g. a root rank outside the group).
    #[error("{0}")]
    Usage(String),
    /// libtorch errors while packing/unpacking buckets.
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
}

/// Which c10d backend carries the collectives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: CPU tensors (TCP).
    Gloo,
    /// NCCL: CUDA tensors (needs a build against CUDA libtorch; see build.rs).
    Nccl,
}

impl Backend {
    /// "gloo" or "nccl".
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }

    /// NCCL for CUDA devices, Gloo otherwise.
    pub fn for_device(device: Device) -> Self {
        if device.is_cuda() {
            Backend::Nccl
        } else {
            Backend::Gloo
        }
    }

    /// True when this build can create an NCCL group.
    pub fn nccl_compiled() -> bool {
        cfg!(dspnet_nccl)
    }
}

/// The launcher's description of this process's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank in [0, world).
    pub rank: usize,
    /// Number of processes.
    pub world: usize,
    /// Rank on this node (the CUDA device index under torchrun); 0 when unset.
    pub local_rank: usize,
    /// Rendezvous host (rank 0's node, or torchrun's agent).
    pub master_addr: String,
    /// Rendezvous TCP port.
    pub master_port: u16,
    /// torchrun's agent already hosts the store (TORCHELASTIC_USE_AGENT_STORE=True): every rank
    /// connects as a client instead of rank 0 serving it.
    pub agent_store: bool,
    /// torchrun's restart counter: keys of a restarted attempt live in their own namespace.
    pub restart_count: u64,
}

impl DistEnv {
    /// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (as torchrun sets them),
    /// TORCHELASTIC_USE_AGENT_STORE and TORCHELASTIC_RESTART_COUNT.
    ///
    /// Returns `Ok(None)` when WORLD_SIZE is unset or 1 (a single process).
    ///
    /// Errors: [`DistError::Env`] naming the variable (not a number, RANK >= WORLD_SIZE,
    /// MASTER_ADDR/MASTER_PORT missing for WORLD_SIZE > 1).
    pub fn from_env() -> Result<Option<Self>, DistError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// As [`DistEnv::from_env`] over any variable lookup (for tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, DistError> {
        let num = |name: &str| -> Result<Option<u64>, DistError> {
            match get(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<u64>().map(Some).map_err(|_| {
                    DistError::Env(format!("environment variable {name}={v} is not a whole number; fix the launcher"))
                }),
            }
        };
        let world = num("WORLD_SIZE")?.unwrap_or(1) as usize;
        if world <= 1 {
            return Ok(None);
        }
        let rank = num("RANK")?.ok_or_else(|| {
            DistError::Env(format!(
                "WORLD_SIZE={world} but RANK is unset; launch with torchrun or export RANK per process"
            ))
        })? as usize;
        if rank >= world {
            return Err(DistError::Env(format!("RANK={rank} is not below WORLD_SIZE={world}")));
        }
        let local_rank = num("LOCAL_RANK")?.unwrap_or(0) as usize;
        let master_addr = get("MASTER_ADDR").filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            DistError::Env(format!(
                "WORLD_SIZE={world} but MASTER_ADDR is unset; export the rendezvous host (rank 0's node), e.g. MASTER_ADDR=127.0.0.1"
            ))
        })?;
        let port = num("MASTER_PORT")?.ok_or_else(|| {
            DistError::Env(format!(
                "WORLD_SIZE={world} but MASTER_PORT is unset; export a free TCP port, e.g. MASTER_PORT=29500"
            ))
        })?;
        let master_port = u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| DistError::Env(format!("MASTER_PORT={port} is not a TCP port (1..65535)")))?;
        Ok(Some(DistEnv {
            rank,
            world,
            local_rank,
            master_addr: master_addr.trim().to_string(),
            master_port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE").as_deref() == Some("True"),
            restart_count: num("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0),
        }))
    }
}

/// Options of [`ProcessGroup::new`].
#[derive(Clone, Debug)]
pub struct DistOptions {
    /// Timeout of the rendezvous, the store and every collective.
    pub timeout: Duration,
    /// Collective backend.
    pub backend: Backend,
    /// Bucket size of the flat collectives, bytes.
    pub bucket_bytes: usize,
}

impl Default for DistOptions {
    fn default() -> Self {
        DistOptions { timeout: DEFAULT_TIMEOUT, backend: Backend::Gloo, bucket_bytes: DEFAULT_BUCKET_BYTES }
    }
}

/// One process's membership in a c10d process group (store + Gloo/NCCL backend + heartbeat).
///
/// Collectives must be called in the same order with the same shapes on every rank (as in
/// torch.distributed). After a failed collective the group is unusable: later calls return
/// the same error at once, and dropping it does not wait for the peers.
pub struct ProcessGroup {
    handle: *mut c_void,
    rank: usize,
    world: usize,
    local_rank: usize,
    backend: Backend,
    bucket_bytes: usize,
    addr: String,
    port: u16,
    timeout: Duration,
    agent_store: bool,
    failed: AtomicBool,
    failure: std::sync::Mutex<Option<String>>,
}

// SAFETY: the C++ group is internally synchronised (c10d backends queue work from any thread;
// the heartbeat has its own store connection). Callers keep collective order per rank.
unsafe impl Send for ProcessGroup {}
unsafe impl Sync for ProcessGroup {}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ProcessGroup({} rank {} of {} via {}:{})",
            self.backend.name(),
            self.rank,
            self.world,
            self.addr,
            self.port
        )
    }
}

fn take_error(p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string malloc'd by the shim, freed here exactly once.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    unsafe { ffi::dspnet_dist_free_string(p) };
    Some(s)
}

impl ProcessGroup {
    /// Joins the job described by the environment (see [`DistEnv::from_env`]); `Ok(None)` for a
    /// single process (WORLD_SIZE unset or 1).
    ///
    /// Errors: [`DistError::Env`], [`DistError::Init`].
    pub fn from_env(options: &DistOptions) -> Result<Option<Self>, DistError> {
        match DistEnv::from_env()? {
            None => Ok(None),
            Some(env) => Self::new(&env, options).map(Some),
        }
    }

    /// Creates the TCPStore (served by rank 0 unless torchrun's agent serves it), waits for all
    /// ranks (up to `options.timeout`) and builds the backend.
    ///
    /// Errors: [`DistError::Init`] with c10d's message (e.g. "address already in use" for a
    /// taken MASTER_PORT, a timeout when some rank never arrives).
    pub fn new(env: &DistEnv, options: &DistOptions) -> Result<Self, DistError> {
        if options.backend == Backend::Nccl && !Backend::nccl_compiled() {
            return Err(DistError::Init {
                rank: env.rank,
                world: env.world,
                addr: env.master_addr.clone(),
                port: env.master_port,
                detail: "this build has no NCCL (libtorch without CUDA, or the CUDA/NCCL headers were not found at build time); train on CPU with gloo".into(),
            });
        }
        let init_err = |detail: String| DistError::Init {
            rank: env.rank,
            world: env.world,
            addr: env.master_addr.clone(),
            port: env.master_port,
            detail,
        };
        let host =
            CString::new(env.master_addr.clone()).map_err(|_| init_err("MASTER_ADDR contains a NUL byte".into()))?;
        let prefix = CString::new(format!("dspnet/{}/", env.restart_count)).expect("no NUL");
        let backend = CString::new(options.backend.name()).expect("no NUL");
        let timeout_ms = options.timeout.as_millis().clamp(1, i64::MAX as u128) as i64;
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: valid C strings for the duration of the call; `handle` is written on success.
        let err = unsafe {
            ffi::dspnet_dist_new(
                host.as_ptr(),
                env.master_port,
                env.rank as i32,
                env.world as i32,
                timeout_ms,
                env.agent_store as i32,
                prefix.as_ptr(),
                backend.as_ptr(),
                &mut handle,
            )
        };
        if let Some(e) = take_error(err) {
            return Err(init_err(e));
        }
        tracing::info!(
            rank = env.rank,
            world = env.world,
            backend = options.backend.name(),
            store = %format!("{}:{}", env.master_addr, env.master_port),
            "joined the process group"
        );
        Ok(ProcessGroup {
            handle,
            rank: env.rank,
            world: env.world,
            local_rank: env.local_rank,
            backend: options.backend,
            bucket_bytes: options.bucket_bytes.max(1),
            addr: env.master_addr.clone(),
            port: env.master_port,
            timeout: options.timeout,
            agent_store: env.agent_store,
            failed: AtomicBool::new(false),
            failure: std::sync::Mutex::new(None),
        })
    }

    /// This process's rank in [0, world_size).
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of processes.
    pub fn world_size(&self) -> usize {
        self.world
    }

    /// LOCAL_RANK of this process (CUDA device index under torchrun).
    pub fn local_rank(&self) -> usize {
        self.local_rank
    }

    /// The backend carrying the collectives.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Bucket size of the flat collectives, bytes.
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    fn check(&self) -> Result<(), DistError> {
        if self.failed.load(Ordering::SeqCst) {
            let msg = self.failure.lock().map(|m| m.clone()).unwrap_or(None);
            return Err(DistError::PeerFailed(msg.unwrap_or_else(|| "the process group failed earlier".into())));
        }
        Ok(())
    }

    /// Turns a failed collective into [`DistError::PeerFailed`] naming the dead ranks (from the
    /// heartbeats) and marks the group failed.
    fn fail(&self, op: &str, detail: String) -> DistError {
        self.failed.store(true, Ordering::SeqCst);
        let mut dead = vec![0i32; self.world];
        // SAFETY: handle is live; `dead` has world entries.
        let probe = take_error(unsafe {
            ffi::dspnet_dist_find_dead(self.handle, HEARTBEAT_WINDOW.as_millis() as i64, dead.as_mut_ptr())
        });
        let who = match probe {
            Some(e) if self.agent_store => format!(
                "torchrun's rendezvous store at {}:{} does not answer ({e}), so the node hosting it is gone",
                self.addr, self.port
            ),
            Some(e) => format!(
                "rank 0, which hosts the rendezvous store at {}:{}, is gone (the store does not answer: {e})",
                self.addr, self.port
            ),
            None => {
                let gone: Vec<String> =
                    dead.iter().enumerate().filter(|(_, d)| **d != 0).map(|(r, _)| r.to_string()).collect();
                match gone.len() {
                    0 => format!(
                        "every peer still heart-beats, so one is hung, on another step or out of sync (timeout {:.0} s)",
                        self.timeout.as_secs_f64()
                    ),
                    1 => format!("rank {} stopped (no heartbeat for {:.1} s): see its log", gone[0], HEARTBEAT_WINDOW.as_secs_f64()),
                    _ => format!("ranks {} stopped (no heartbeat for {:.1} s): see their logs", gone.join(", "), HEARTBEAT_WINDOW.as_secs_f64()),
                }
            }
        };
        let msg = format!(
            "data-parallel {op} failed on rank {} of {}: {who}; c10d said: {}",
            self.rank,
            self.world,
            detail.trim()
        );
        if let Ok(mut m) = self.failure.lock() {
            *m = Some(msg.clone());
        }
        DistError::PeerFailed(msg)
    }

    fn call(&self, op: &str, f: impl FnOnce() -> *mut c_char) -> Result<(), DistError> {
        self.check()?;
        match take_error(f()) {
            None => Ok(()),
            Some(e) => Err(self.fail(op, e)),
        }
    }

    /// Blocks until every rank has called `barrier`.
    ///
    /// Errors: [`DistError::PeerFailed`].
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: live handle.
        self.call("barrier", || unsafe { ffi::dspnet_dist_barrier(self.handle) })
    }

    /// Copies rank `root`'s values of `tensors` into every rank's tensors (in place; any shapes,
    /// dtypes and strides, same list on every rank), one broadcast per flat bucket.
    ///
    /// Errors: [`DistError::Usage`] for `root >= world_size`; [`DistError::PeerFailed`].
    pub fn broadcast(&self, tensors: &[Tensor], root: usize) -> Result<(), DistError> {
        if root >= self.world {
            return Err(DistError::Usage(format!(
                "broadcast root {root} is not a rank of this group of {}",
                self.world
            )));
        }
        self.bucketed(tensors, |flat| {
            // SAFETY: live handle; `flat` is a live, contiguous tensor.
            self.call("broadcast", || unsafe {
                ffi::dspnet_dist_broadcast(self.handle, flat.as_ptr() as *mut _, root as i32)
            })
        })
    }

    /// Replaces every tensor by its sum over the ranks (in place), one all-reduce per flat
    /// bucket of about [`ProcessGroup::bucket_bytes`].
    ///
    /// Errors: [`DistError::PeerFailed`].
    pub fn all_reduce_sum(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.all_reduce(tensors, false)
    }

    /// Replaces every tensor by its mean over the ranks (sum, then divided by the world size),
    /// bucketed as [`ProcessGroup::all_reduce_sum`].
    ///
    /// Errors: [`DistError::PeerFailed`].
    pub fn all_reduce_avg(&self, tensors: &[Tensor]) -> Result<(), DistError> {
        self.all_reduce(tensors, true)
    }

    fn all_reduce(&self, tensors: &[Tensor], avg: bool) -> Result<(), DistError> {
        let op = if avg { "all_reduce(avg)" } else { "all_reduce(sum)" };
        self.bucketed(tensors, |flat| {
            // SAFETY: live handle; `flat` is a live, contiguous tensor.
            self.call(op, || unsafe { ffi::dspnet_dist_all_reduce(self.handle, flat.as_ptr() as *mut _, avg as i32) })
        })
    }

    /// Averages the gradients of `params` over the ranks, as DDP does after the backward
    /// pass: the gradients are concatenated into flat buckets of about
    /// [`ProcessGroup::bucket_bytes`] (parameters in the given order, which must be the same on
    /// every rank), one all-reduce per bucket, and copied back. A parameter without a gradient
    /// contributes zeros and is left without one.
    ///
    /// Errors: [`DistError::PeerFailed`].
    pub fn all_reduce_grads_avg(&self, params: &[Tensor]) -> Result<(), DistError> {
        let grads: Vec<Option<Tensor>> = params
            .iter()
            .map(|p| {
                let g = p.grad();
                g.defined().then_some(g)
            })
            .collect();
        let stand_ins: Vec<Tensor> = params
            .iter()
            .zip(&grads)
            .map(|(p, g)| match g {
                Some(g) => g.shallow_clone(),
                None => tch::no_grad(|| p.zeros_like()),
            })
            .collect();
        self.all_reduce(&stand_ins, true)
    }

    /// Differentiable sum over the ranks: returns `y = Σ_r x_r` (a new tensor of `x`'s shape and
    /// dtype); the backward pass all-reduces the incoming gradient, which is the exact gradient
    /// when every rank's loss depends on `y` (∂(Σ_s L_s)/∂x_r = Σ_s ∂L_s/∂y). Used by
    /// synchronised batch norm for the batch sum and sum of squares.
    ///
    /// Errors: [`DistError::PeerFailed`].
    pub fn all_reduce_sum_autograd(&self, x: &Tensor) -> Result<Tensor, DistError> {
        self.check()?;
        let mut out: *mut torch_sys::C_tensor = std::ptr::null_mut();
        // SAFETY: live handle and tensor; on success `out` is a new heap at::Tensor we own.
        let err = unsafe { ffi::dspnet_dist_all_reduce_sum_autograd(self.handle, x.as_ptr(), &mut out) };
        if let Some(e) = take_error(err) {
            return Err(self.fail("all_reduce (sync batch norm)", e));
        }
        // SAFETY: `out` was allocated by the shim with `new at::Tensor`.
        Ok(unsafe { Tensor::from_ptr(out) })
    }

    /// Packs `tensors` into flat buckets (consecutive tensors of one dtype and device, about
    /// `bucket_bytes` each), runs `op` on each flat tensor in place, and copies the results back.
    fn bucketed(
        &self,
        tensors: &[Tensor],
        mut op: impl FnMut(&Tensor) -> Result<(), DistError>,
    ) -> Result<(), DistError> {
        for bucket in plan_buckets(tensors, self.bucket_bytes) {
            let members: Vec<&Tensor> = bucket.iter().map(|&i| &tensors[i]).collect();
            tch::no_grad(|| -> Result<(), DistError> {
                let flats: Vec<Tensor> = members.iter().map(|t| t.detach().reshape([-1])).collect();
                let flat = Tensor::f_cat(&flats, 0)?.f_contiguous()?;
                op(&flat)?;
                let sizes: Vec<i64> = members.iter().map(|t| t.numel() as i64).collect();
                for (t, chunk) in members.iter().zip(flat.f_split_with_sizes(&sizes, 0)?) {
                    let mut dst = t.detach();
                    dst.f_copy_(&chunk.f_view(t.size().as_slice())?)?;
                }
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Clean shutdown: waits for every rank (barrier), stops the heartbeat and releases the
    /// group. Rank 0 hosts the store, so call this on every rank before exiting.
    ///
    /// Errors: [`DistError::PeerFailed`] from the final barrier.
    pub fn shutdown(self) -> Result<(), DistError> {
        self.barrier() // then `drop` releases the group
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        if self.handle.is_null() {
            return;
        }
        if self.failed.load(Ordering::SeqCst) {
            // Destroying a c10d group whose peer died can block on its worker threads: stop the
            // heartbeat and leave the rest to process exit.
            // SAFETY: live handle.
            unsafe { ffi::dspnet_dist_stop_heartbeat(self.handle) };
        } else {
            // SAFETY: live handle, released exactly once.
            unsafe { ffi::dspnet_dist_free(self.handle) };
        }
        self.handle = std::ptr::null_mut();
    }
}

impl dspnet_model::CrossReplicaSum for ProcessGroup {
    fn cross_replica_sum(&self, x: &Tensor) -> Result<Tensor, String> {
        self.all_reduce_sum_autograd(x).map_err(|e| e.to_string())
    }

    fn replicas(&self) -> usize {
        self.world
    }

    fn replica(&self) -> usize {
        self.rank
    }
}

/// Groups tensor indices into buckets: consecutive tensors of the same dtype and device, a new
/// bucket once the current one holds at least `cap` bytes (a tensor larger than `cap` gets a
/// bucket of its own). Empty tensors are skipped.
pub fn plan_buckets(tensors: &[Tensor], cap: usize) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0usize;
    let mut key: Option<(Kind, Device)> = None;
    for (i, t) in tensors.iter().enumerate() {
        let n = t.numel();
        if n == 0 {
            continue;
        }
        let k = (t.kind(), t.device());
        let size = n * t.kind().elt_size_in_bytes();
        if key != Some(k) || bytes >= cap || out.is_empty() {
            out.push(Vec::new());
            bytes = 0;
            key = Some(k);
        }
        out.last_mut().expect("pushed").push(i);
        bytes += size;
    }
    out
}
