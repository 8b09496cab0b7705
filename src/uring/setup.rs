//! Setting up an io_uring: the probe, the setup flags and the features the
//! backend needs.

use std::io;
use std::os::unix::io::AsRawFd;
use std::time::Duration;

use io_uring::types::{CancelBuilder, Fd, SubmitArgs, Timespec};
use io_uring::{opcode, IoUring};

use super::buf_ring;
use super::keys::CANCEL;

/// The opcodes this backend posts, with their names for error messages.
const OPCODES: [(u8, &str); 6] = [
    (opcode::Accept::CODE, "Accept"),
    (opcode::Recv::CODE, "Recv"),
    (opcode::Send::CODE, "Send"),
    (opcode::Connect::CODE, "Connect"),
    (opcode::AsyncCancel::CODE, "AsyncCancel"),
    (opcode::Read::CODE, "Read"),
];

/// Check that this kernel (and sandbox) lets us build a ring with every feature
/// and opcode this backend uses.
///
/// Returns the OS error if the ring cannot be made at all (for example `EPERM`
/// when seccomp refuses `io_uring_setup`), or an [`io::ErrorKind::Unsupported`]
/// error naming the missing opcode or feature. A kernel without
/// provided-buffer rings passes (with a log line): the backend then gives each
/// port-chosen recv a pooled buffer instead.
pub fn probe() -> io::Result<()> {
    let (mut ring, _) = build_ring(8, 16)?;
    check_features(&ring)?;
    let mut probe = io_uring::Probe::new();
    ring.submitter()
        .register_probe(&mut probe)
        .map_err(|e| unsupported(format!("io_uring opcode probe failed: {}", e)))?;
    for (code, name) in OPCODES {
        if !probe.is_supported(code) {
            return Err(unsupported(format!(
                "io_uring opcode {} is not supported by this kernel",
                name
            )));
        }
    }
    // Cancelling every op on a file descriptor (Linux 5.19) is not visible in the
    // probe: try it on the ring's own fd, where it finds nothing to cancel.
    let fd = ring.as_raw_fd();
    let cancel = opcode::AsyncCancel2::new(CancelBuilder::fd(Fd(fd)).all())
        .build()
        .user_data(CANCEL);
    // SAFETY: a cancel request points to no memory of ours.
    unsafe { ring.submission().push(&cancel) }
        .map_err(|_| io::Error::other("io_uring probe: submission queue full"))?;
    let ts = Timespec::from(Duration::from_secs(1));
    ring.submitter()
        .submit_with_args(1, &SubmitArgs::new().timespec(&ts))?;
    let res = ring
        .completion()
        .next()
        .map(|cqe| cqe.result())
        .ok_or_else(|| io::Error::other("io_uring probe: cancel request did not complete"))?;
    if res >= 0 || res == -libc::ENOENT {
        if !buf_ring::supported(&ring) {
            log::info!(
                "io_uring here has no provided-buffer rings (Linux 5.19): \
                 idle connections will hold a receive buffer each"
            );
        }
        Ok(())
    } else {
        Err(unsupported(format!(
            "io_uring cannot cancel by file descriptor: {}",
            io::Error::from_raw_os_error(-res)
        )))
    }
}

#[cold]
fn unsupported(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, message)
}

/// Build a ring with the best setup flags the kernel accepts; also returns their name.
pub(super) fn build_ring(sq_entries: u32, cq_entries: u32) -> io::Result<(IoUring, &'static str)> {
    let mut refused = None;
    for tier in 0..3 {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries);
        let name = match tier {
            0 => {
                builder
                    .setup_submit_all()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
                "SUBMIT_ALL|SINGLE_ISSUER|DEFER_TASKRUN"
            }
            1 => {
                builder.setup_submit_all().setup_coop_taskrun();
                "SUBMIT_ALL|COOP_TASKRUN"
            }
            _ => "no flags",
        };
        match builder.build(sq_entries) {
            Ok(ring) => return Ok((ring, name)),
            // EINVAL: an older kernel that does not know a flag; try fewer.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => refused = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(refused.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)))
}

/// The features `wait` and the completion rules depend on.
pub(super) fn check_features(ring: &IoUring) -> io::Result<()> {
    let params = ring.params();
    let missing = if !params.is_feature_ext_arg() {
        "EXT_ARG (timeouts on enter, Linux 5.11)"
    } else if !params.is_feature_nodrop() {
        "NODROP (no lost completions, Linux 5.5)"
    } else {
        return Ok(());
    };
    Err(unsupported(format!("io_uring lacks {}", missing)))
}
