//! ONNX Runtime's CPU allocator, replaced by one that can say no.
//!
//! A model decides its own output sizes: a 175-byte graph whose
//! `ConstantOfShape` takes its shape from the input asks ONNX Runtime for
//! 40 GB, and Linux's overcommit lets that allocation succeed until the
//! pages are touched and the kernel kills the whole server. Checking an
//! output's size after the run is too late. So every session uses this
//! allocator (registered once in ONNX Runtime's environment, sessions opt
//! in with `session.use_env_allocators`), and a model run sets a limit for
//! its thread: the bytes the request has left in its memory tier. An
//! allocation past it is refused the way ONNX Runtime's own allocator
//! refuses one, with a C++ `std::bad_alloc` (thrown by `refuse.cc`: ONNX
//! Runtime does not check a custom allocator's result for null). The run
//! then fails cleanly and ends with [`Scope::exceeded`] set.
//!
//! What is counted: allocations made on the thread that runs the model,
//! which are the outputs and the intermediate tensors (ONNX Runtime's
//! sequential executor allocates on the caller's thread). Allocations from
//! the intra-op workers and from outside any run are not limited.
//!
//! Each block carries a small header naming the scope it was charged to,
//! so it is refunded to that scope whichever thread frees it.

use ort::sys::{OrtAllocator, OrtAllocatorType, OrtMemType, OrtMemoryInfo};
use std::cell::RefCell;
use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// Alignment ONNX Runtime's kernels expect (its own CPU allocator uses 64).
const ALIGN: usize = 64;
/// The header in front of each block: its size and its scope.
const HEADER: usize = ALIGN;

/// One model run's allowance.
#[derive(Debug)]
struct Allowance {
    used: AtomicUsize,
    limit: usize,
    exceeded: AtomicBool,
}

thread_local! {
    static CURRENT: RefCell<Option<Arc<Allowance>>> = const { RefCell::new(None) };
}

/// While alive, allocations on this thread count against a limit.
pub(crate) struct Scope {
    allowance: Arc<Allowance>,
    previous: Option<Arc<Allowance>>,
}

impl Scope {
    /// Limits allocations on this thread to `limit` bytes until dropped.
    pub(crate) fn enter(limit: usize) -> Scope {
        let allowance = Arc::new(Allowance { used: AtomicUsize::new(0), limit, exceeded: AtomicBool::new(false) });
        let previous = CURRENT.with(|c| c.replace(Some(allowance.clone())));
        Scope { allowance, previous }
    }

    /// Whether an allocation was refused in this scope.
    pub(crate) fn exceeded(&self) -> bool {
        self.allowance.exceeded.load(Ordering::Relaxed)
    }
}

impl Drop for Scope {
    fn drop(&mut self) {
        CURRENT.with(|c| *c.borrow_mut() = self.previous.take());
    }
}

/// The registered allocator: a table of function pointers.
struct Registered(OrtAllocator);

// SAFETY: a table of function pointers, never written after registration.
unsafe impl Send for Registered {}
unsafe impl Sync for Registered {}

static REGISTERED: OnceLock<Result<Box<Registered>, String>> = OnceLock::new();

/// What the allocator reports about itself: CPU memory, set before it is
/// registered (registration asks for it) and never freed.
static INFO: AtomicPtr<OrtMemoryInfo> = AtomicPtr::new(std::ptr::null_mut());

/// Registers the allocator in ONNX Runtime's environment (once).
pub(crate) fn register() -> Result<(), String> {
    REGISTERED.get_or_init(make).as_ref().map(drop).map_err(Clone::clone)
}

fn make() -> Result<Box<Registered>, String> {
    let api = ort::api();
    let mut info = std::ptr::null_mut();
    // SAFETY: plain ONNX Runtime C API calls with valid out-pointers.
    unsafe {
        check((api.CreateCpuMemoryInfo)(
            OrtAllocatorType::OrtDeviceAllocator,
            OrtMemType::OrtMemTypeDefault,
            &mut info,
        ))?;
    }
    INFO.store(info, Ordering::Release);
    let mut registered = Box::new(Registered(OrtAllocator {
        version: ort::sys::ORT_API_VERSION,
        Alloc: Some(alloc_fn()),
        Free: Some(free),
        Info: Some(info_of),
        Reserve: Some(reserve_fn()),
    }));
    let env = ort::environment::get_environment().map_err(|e| e.to_string())?;
    // SAFETY: the allocator lives in a static for the rest of the process,
    // as ONNX Runtime requires of a registered allocator.
    unsafe {
        check((api.RegisterAllocator)(ort::AsPointer::ptr(env).cast_mut(), &mut registered.0))?;
    }
    Ok(registered)
}

fn check(status: ort::sys::OrtStatusPtr) -> Result<(), String> {
    if status.0.is_null() {
        return Ok(());
    }
    let api = ort::api();
    // SAFETY: a non-null status from ONNX Runtime, released once here.
    unsafe {
        let message = std::ffi::CStr::from_ptr((api.GetErrorMessage)(status.0)).to_string_lossy().into_owned();
        (api.ReleaseStatus)(status.0);
        Err(message)
    }
}

unsafe extern "system" fn info_of(_: *const OrtAllocator) -> *const OrtMemoryInfo {
    INFO.load(Ordering::Acquire)
}

unsafe extern "C-unwind" {
    /// Throws `std::bad_alloc` (see `refuse.cc`).
    fn nimbus_refuse_allocation() -> !;
}

/// `alloc` as ONNX Runtime's table types it. The ABI is the same ("system"
/// is "C" here); only Rust's no-unwind promise differs, and the caller is
/// C++, which expects the exception.
type AllocFn = unsafe extern "system" fn(*mut OrtAllocator, usize) -> *mut c_void;
type ReserveFn = unsafe extern "system" fn(*const OrtAllocator, usize) -> *mut c_void;

fn alloc_fn() -> AllocFn {
    // SAFETY: identical signatures and calling convention (see `AllocFn`).
    unsafe {
        std::mem::transmute::<unsafe extern "C-unwind" fn(*mut OrtAllocator, usize) -> *mut c_void, AllocFn>(alloc)
    }
}

fn reserve_fn() -> ReserveFn {
    // SAFETY: as for `alloc_fn`.
    unsafe {
        std::mem::transmute::<unsafe extern "C-unwind" fn(*const OrtAllocator, usize) -> *mut c_void, ReserveFn>(
            reserve,
        )
    }
}

unsafe extern "C-unwind" fn reserve(this: *const OrtAllocator, size: usize) -> *mut c_void {
    // SAFETY: same contract as `alloc`.
    unsafe { alloc(this.cast_mut(), size) }
}

/// Refuses an allocation: throws into ONNX Runtime. Nothing of ours that
/// needs dropping is alive on the stack when it is called.
fn refuse() -> ! {
    // SAFETY: called only from `alloc`, whose caller is ONNX Runtime's C++.
    unsafe { nimbus_refuse_allocation() }
}

/// Charges `size` to this thread's allowance, if any; whether it fits.
fn charge(allowance: &Option<Arc<Allowance>>, size: usize) -> bool {
    let Some(a) = allowance else { return true };
    let used = a.used.fetch_add(size, Ordering::Relaxed).saturating_add(size);
    if used > a.limit {
        a.used.fetch_sub(size, Ordering::Relaxed);
        a.exceeded.store(true, Ordering::Relaxed);
        return false;
    }
    true
}

/// Allocates `size` bytes after a header, charged to this thread's
/// allowance; null if it does not fit or memory is out.
fn try_alloc(size: usize) -> *mut c_void {
    let allowance = CURRENT.with(|c| c.borrow().clone());
    if !charge(&allowance, size) {
        return std::ptr::null_mut();
    }
    let mut block = std::ptr::null_mut();
    // SAFETY: posix_memalign with a power-of-two multiple of the pointer size.
    let failed = match size.checked_add(HEADER) {
        Some(total) => (unsafe { libc::posix_memalign(&mut block, ALIGN, total) }) != 0,
        None => true,
    };
    if failed {
        if let Some(a) = &allowance {
            a.used.fetch_sub(size, Ordering::Relaxed);
        }
        return std::ptr::null_mut();
    }
    // SAFETY: the block has HEADER bytes before the caller's part, aligned
    // for a usize and a pointer.
    unsafe {
        let header = block.cast::<usize>();
        header.write(size);
        header.add(1).cast::<*const Allowance>().write(allowance.map_or(std::ptr::null(), Arc::into_raw));
        block.cast::<u8>().add(HEADER).cast()
    }
}

unsafe extern "C-unwind" fn alloc(_: *mut OrtAllocator, size: usize) -> *mut c_void {
    let block = try_alloc(size);
    if block.is_null() {
        refuse();
    }
    block
}

unsafe extern "system" fn free(_: *mut OrtAllocator, p: *mut c_void) {
    if p.is_null() {
        return;
    }
    // SAFETY: `p` came from `alloc`, so its header sits HEADER bytes before.
    unsafe {
        let block = p.cast::<u8>().sub(HEADER);
        let header = block.cast::<usize>();
        let size = header.read();
        let allowance = header.add(1).cast::<*const Allowance>().read();
        if !allowance.is_null() {
            let a = Arc::from_raw(allowance);
            a.used.fetch_sub(size, Ordering::Relaxed);
        }
        libc::free(block.cast());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scope_refuses_past_its_limit_and_refunds_on_free() {
        let scope = Scope::enter(1000);
        // SAFETY: blocks from `try_alloc` are freed once with `free`.
        unsafe {
            let a = try_alloc(600);
            assert!(!a.is_null());
            assert_eq!(a as usize % ALIGN, 0);
            assert!(try_alloc(600).is_null(), "over the limit");
            assert!(scope.exceeded());
            free(std::ptr::null_mut(), a);
            let b = try_alloc(900);
            assert!(!b.is_null(), "freed bytes are refunded");
            drop(scope);
            let c = try_alloc(1 << 20);
            assert!(!c.is_null(), "no limit outside a scope");
            free(std::ptr::null_mut(), b);
            free(std::ptr::null_mut(), c);
        }
    }
}
