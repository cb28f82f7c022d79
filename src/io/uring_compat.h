// Kernel io_uring ABI values newer than the liburing 2.3 headers of Debian 12.
//
// The running kernel (6.x) has these features; liburing 2.3 only lacks the names and helpers.
// Each value is the kernel's UAPI number (include/uapi/linux/io_uring.h); every use is guarded
// by a run-time probe (ring_features), so an older kernel just reports the feature missing.
// Private to src/io. Never: redefine a name liburing already has.
#pragma once

#include <liburing.h>

namespace ringmta::io::compat {

// Opcodes after IORING_OP_SENDMSG_ZC (48).
inline constexpr unsigned op_fixed_fd_install = 54;  // 6.8

// sqe->install_fd_flags (shares the rw_flags word) for op_fixed_fd_install.
inline constexpr unsigned fixed_fd_no_cloexec = 1u << 0;

// sqe->timeout_flags: re-arm after each expiry; sqe->off is the repeat count (0: forever). 6.4
inline constexpr unsigned timeout_multishot = 1u << 6;

// io_uring_buf_reg.flags (the `pad` field in liburing 2.3): consume buffers incrementally. 6.12
inline constexpr unsigned short pbuf_ring_incremental = 2;

// cqe->flags: the provided buffer is only partly used; later completions continue in it. 6.12
inline constexpr unsigned cqe_buffer_more = 1u << 4;

// sqe->ioprio for SEND_ZC: the notification's res reports whether the data was copied. 6.2
inline constexpr unsigned send_zc_report_usage = 1u << 3;
inline constexpr unsigned notif_usage_zc_copied = 1u << 31;

// io_uring_params.features. 6.10
inline constexpr unsigned feat_recvsend_bundle = 1u << 14;

}  // namespace ringmta::io::compat
