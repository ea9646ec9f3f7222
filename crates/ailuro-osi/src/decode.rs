//! Symbolic names for system-call argument values (i386 Linux ABI values) and byte escaping.

use std::fmt::Write as _;

/// `a|b|c` from the bits of `v` named in `names`; leftover bits as hex; `zero` when nothing.
fn bits(v: u64, names: &[(u64, &str)], zero: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut rest = v;
    for &(bit, name) in names {
        if bit != 0 && rest & bit == bit {
            parts.push(name.to_string());
            rest &= !bit;
        }
    }
    if rest != 0 {
        parts.push(format!("{rest:#x}"));
    }
    if parts.is_empty() {
        zero.to_string()
    } else {
        parts.join("|")
    }
}

/// `open` flags (asm-generic/fcntl.h, which x86 uses).
pub fn open_flags(v: u64) -> String {
    let acc = match v & 3 {
        0 => "O_RDONLY",
        1 => "O_WRONLY",
        2 => "O_RDWR",
        _ => "O_ACCMODE",
    };
    let rest = v & !3;
    // O_SYNC is __O_SYNC|O_DSYNC; O_TMPFILE is __O_TMPFILE|O_DIRECTORY.
    let names: &[(u64, &str)] = &[
        (0o4010000, "O_SYNC"),
        (0o20200000, "O_TMPFILE"),
        (0o100, "O_CREAT"),
        (0o200, "O_EXCL"),
        (0o400, "O_NOCTTY"),
        (0o1000, "O_TRUNC"),
        (0o2000, "O_APPEND"),
        (0o4000, "O_NONBLOCK"),
        (0o10000, "O_DSYNC"),
        (0o20000, "O_ASYNC"),
        (0o40000, "O_DIRECT"),
        (0o100000, "O_LARGEFILE"),
        (0o200000, "O_DIRECTORY"),
        (0o400000, "O_NOFOLLOW"),
        (0o1000000, "O_NOATIME"),
        (0o2000000, "O_CLOEXEC"),
        (0o10000000, "O_PATH"),
    ];
    if rest == 0 {
        acc.to_string()
    } else {
        format!("{acc}|{}", bits(rest, names, ""))
    }
}

/// `O_CLOEXEC`.
pub const O_CLOEXEC: u64 = 0o2000000;

/// `mmap`/`mprotect` protection.
pub fn prot(v: u64) -> String {
    bits(
        v,
        &[
            (1, "PROT_READ"),
            (2, "PROT_WRITE"),
            (4, "PROT_EXEC"),
            (8, "PROT_SEM"),
            (0x0100_0000, "PROT_GROWSDOWN"),
            (0x0200_0000, "PROT_GROWSUP"),
        ],
        "PROT_NONE",
    )
}

/// `mmap` flags (x86).
pub fn map_flags(v: u64) -> String {
    let ty = match v & 0xf {
        1 => "MAP_SHARED".to_string(),
        2 => "MAP_PRIVATE".to_string(),
        3 => "MAP_SHARED_VALIDATE".to_string(),
        t => format!("{t:#x}"),
    };
    let rest = v & !0xf;
    if rest == 0 {
        return ty;
    }
    let names: &[(u64, &str)] = &[
        (0x10, "MAP_FIXED"),
        (0x20, "MAP_ANONYMOUS"),
        (0x40, "MAP_32BIT"),
        (0x100, "MAP_GROWSDOWN"),
        (0x800, "MAP_DENYWRITE"),
        (0x1000, "MAP_EXECUTABLE"),
        (0x2000, "MAP_LOCKED"),
        (0x4000, "MAP_NORESERVE"),
        (0x8000, "MAP_POPULATE"),
        (0x10000, "MAP_NONBLOCK"),
        (0x20000, "MAP_STACK"),
        (0x40000, "MAP_HUGETLB"),
        (0x80000, "MAP_SYNC"),
        (0x100000, "MAP_FIXED_NOREPLACE"),
        (0x4000000, "MAP_UNINITIALIZED"),
    ];
    format!("{ty}|{}", bits(rest, names, ""))
}

/// `clone` flags; the low byte is the exit signal.
pub fn clone_flags(v: u64) -> String {
    let names: &[(u64, &str)] = &[
        (0x100, "CLONE_VM"),
        (0x200, "CLONE_FS"),
        (0x400, "CLONE_FILES"),
        (0x800, "CLONE_SIGHAND"),
        (0x1000, "CLONE_PIDFD"),
        (0x2000, "CLONE_PTRACE"),
        (0x4000, "CLONE_VFORK"),
        (0x8000, "CLONE_PARENT"),
        (0x10000, "CLONE_THREAD"),
        (0x20000, "CLONE_NEWNS"),
        (0x40000, "CLONE_SYSVSEM"),
        (0x80000, "CLONE_SETTLS"),
        (0x100000, "CLONE_PARENT_SETTID"),
        (0x200000, "CLONE_CHILD_CLEARTID"),
        (0x400000, "CLONE_DETACHED"),
        (0x800000, "CLONE_UNTRACED"),
        (0x1000000, "CLONE_CHILD_SETTID"),
        (0x2000000, "CLONE_NEWCGROUP"),
        (0x4000000, "CLONE_NEWUTS"),
        (0x8000000, "CLONE_NEWIPC"),
        (0x10000000, "CLONE_NEWUSER"),
        (0x20000000, "CLONE_NEWPID"),
        (0x40000000, "CLONE_NEWNET"),
        (0x80000000, "CLONE_IO"),
    ];
    let sig = v & 0xff;
    let mut s = bits(v & !0xff, names, "");
    if sig != 0 {
        if !s.is_empty() {
            s.push('|');
        }
        s.push_str(&signal(sig));
    }
    if s.is_empty() {
        s.push('0');
    }
    s
}

const SIGNALS: [&str; 32] = [
    "0",
    "SIGHUP",
    "SIGINT",
    "SIGQUIT",
    "SIGILL",
    "SIGTRAP",
    "SIGABRT",
    "SIGBUS",
    "SIGFPE",
    "SIGKILL",
    "SIGUSR1",
    "SIGSEGV",
    "SIGUSR2",
    "SIGPIPE",
    "SIGALRM",
    "SIGTERM",
    "SIGSTKFLT",
    "SIGCHLD",
    "SIGCONT",
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGURG",
    "SIGXCPU",
    "SIGXFSZ",
    "SIGVTALRM",
    "SIGPROF",
    "SIGWINCH",
    "SIGIO",
    "SIGPWR",
    "SIGSYS",
];

/// A signal number (`SIGRTMIN+n` above 31).
pub fn signal(v: u64) -> String {
    match v {
        0..=31 => SIGNALS[v as usize].to_string(),
        32..=64 => format!("SIGRT_{}", v - 32),
        _ => format!("{}", v as u32 as i32),
    }
}

/// `errno` names (asm-generic/errno-base.h and errno.h) and the kernel-internal restart codes.
pub fn errno_name(e: u64) -> Option<&'static str> {
    const BASE: [&str; 134] = [
        "",
        "EPERM",
        "ENOENT",
        "ESRCH",
        "EINTR",
        "EIO",
        "ENXIO",
        "E2BIG",
        "ENOEXEC",
        "EBADF",
        "ECHILD",
        "EAGAIN",
        "ENOMEM",
        "EACCES",
        "EFAULT",
        "ENOTBLK",
        "EBUSY",
        "EEXIST",
        "EXDEV",
        "ENODEV",
        "ENOTDIR",
        "EISDIR",
        "EINVAL",
        "ENFILE",
        "EMFILE",
        "ENOTTY",
        "ETXTBSY",
        "EFBIG",
        "ENOSPC",
        "ESPIPE",
        "EROFS",
        "EMLINK",
        "EPIPE",
        "EDOM",
        "ERANGE",
        "EDEADLK",
        "ENAMETOOLONG",
        "ENOLCK",
        "ENOSYS",
        "ENOTEMPTY",
        "ELOOP",
        "",
        "ENOMSG",
        "EIDRM",
        "ECHRNG",
        "EL2NSYNC",
        "EL3HLT",
        "EL3RST",
        "ELNRNG",
        "EUNATCH",
        "ENOCSI",
        "EL2HLT",
        "EBADE",
        "EBADR",
        "EXFULL",
        "ENOANO",
        "EBADRQC",
        "EBADSLT",
        "",
        "EBFONT",
        "ENOSTR",
        "ENODATA",
        "ETIME",
        "ENOSR",
        "ENONET",
        "ENOPKG",
        "EREMOTE",
        "ENOLINK",
        "EADV",
        "ESRMNT",
        "ECOMM",
        "EPROTO",
        "EMULTIHOP",
        "EDOTDOT",
        "EBADMSG",
        "EOVERFLOW",
        "ENOTUNIQ",
        "EBADFD",
        "EREMCHG",
        "ELIBACC",
        "ELIBBAD",
        "ELIBSCN",
        "ELIBMAX",
        "ELIBEXEC",
        "EILSEQ",
        "ERESTART",
        "ESTRPIPE",
        "EUSERS",
        "ENOTSOCK",
        "EDESTADDRREQ",
        "EMSGSIZE",
        "EPROTOTYPE",
        "ENOPROTOOPT",
        "EPROTONOSUPPORT",
        "ESOCKTNOSUPPORT",
        "EOPNOTSUPP",
        "EPFNOSUPPORT",
        "EAFNOSUPPORT",
        "EADDRINUSE",
        "EADDRNOTAVAIL",
        "ENETDOWN",
        "ENETUNREACH",
        "ENETRESET",
        "ECONNABORTED",
        "ECONNRESET",
        "ENOBUFS",
        "EISCONN",
        "ENOTCONN",
        "ESHUTDOWN",
        "ETOOMANYREFS",
        "ETIMEDOUT",
        "ECONNREFUSED",
        "EHOSTDOWN",
        "EHOSTUNREACH",
        "EALREADY",
        "EINPROGRESS",
        "ESTALE",
        "EUCLEAN",
        "ENOTNAM",
        "ENAVAIL",
        "EISNAM",
        "EREMOTEIO",
        "EDQUOT",
        "ENOMEDIUM",
        "EMEDIUMTYPE",
        "ECANCELED",
        "ENOKEY",
        "EKEYEXPIRED",
        "EKEYREVOKED",
        "EKEYREJECTED",
        "EOWNERDEAD",
        "ENOTRECOVERABLE",
        "ERFKILL",
        "EHWPOISON",
    ];
    match e {
        1..=133 => Some(BASE[e as usize]).filter(|s| !s.is_empty()),
        512 => Some("ERESTARTSYS"),
        513 => Some("ERESTARTNOINTR"),
        514 => Some("ERESTARTNOHAND"),
        515 => Some("ENOIOCTLCMD"),
        516 => Some("ERESTART_RESTARTBLOCK"),
        _ => None,
    }
}

/// `AT_FDCWD` or the number.
pub fn dirfd(v: u64) -> String {
    let i = v as u32 as i32;
    if i == -100 {
        "AT_FDCWD".into()
    } else {
        i.to_string()
    }
}

/// `lseek` whence.
pub fn whence(v: u64) -> String {
    match v {
        0 => "SEEK_SET".into(),
        1 => "SEEK_CUR".into(),
        2 => "SEEK_END".into(),
        3 => "SEEK_DATA".into(),
        4 => "SEEK_HOLE".into(),
        _ => v.to_string(),
    }
}

/// `fcntl` command.
pub fn fcntl_cmd(v: u64) -> String {
    let n = match v {
        0 => "F_DUPFD",
        1 => "F_GETFD",
        2 => "F_SETFD",
        3 => "F_GETFL",
        4 => "F_SETFL",
        5 => "F_GETLK",
        6 => "F_SETLK",
        7 => "F_SETLKW",
        8 => "F_SETOWN",
        9 => "F_GETOWN",
        10 => "F_SETSIG",
        11 => "F_GETSIG",
        12 => "F_GETLK64",
        13 => "F_SETLK64",
        14 => "F_SETLKW64",
        1030 => "F_DUPFD_CLOEXEC",
        _ => return v.to_string(),
    };
    n.into()
}

/// `ioctl` requests: the tty ones busybox uses, else hex.
pub fn ioctl_req(v: u64) -> String {
    let n = match v {
        0x5401 => "TCGETS",
        0x5402 => "TCSETS",
        0x5403 => "TCSETSW",
        0x5404 => "TCSETSF",
        0x5409 => "TCSBRK",
        0x540b => "TCFLSH",
        0x540e => "TIOCSCTTY",
        0x540f => "TIOCGPGRP",
        0x5410 => "TIOCSPGRP",
        0x5413 => "TIOCGWINSZ",
        0x5414 => "TIOCSWINSZ",
        0x541b => "FIONREAD",
        0x5421 => "FIONBIO",
        0x5422 => "TIOCNOTTY",
        0x5429 => "TIOCGSID",
        0x5451 => "FIOCLEX",
        0x5450 => "FIONCLEX",
        _ => return format!("{v:#x}"),
    };
    n.into()
}

/// `access` mode.
pub fn access_mode(v: u64) -> String {
    if v == 0 {
        return "F_OK".into();
    }
    bits(v, &[(4, "R_OK"), (2, "W_OK"), (1, "X_OK")], "F_OK")
}

/// `AT_*` flags.
pub fn at_flags(v: u64) -> String {
    bits(
        v,
        &[
            (0x100, "AT_SYMLINK_NOFOLLOW"),
            (0x200, "AT_REMOVEDIR"),
            (0x400, "AT_SYMLINK_FOLLOW"),
            (0x800, "AT_NO_AUTOMOUNT"),
            (0x1000, "AT_EMPTY_PATH"),
            (0x2000, "AT_STATX_FORCE_SYNC"),
            (0x4000, "AT_STATX_DONT_SYNC"),
            (0x8000, "AT_RECURSIVE"),
        ],
        "0",
    )
}

/// `wait4`/`waitpid`/`waitid` options.
pub fn wait_opts(v: u64) -> String {
    bits(
        v,
        &[
            (1, "WNOHANG"),
            (2, "WUNTRACED"),
            (4, "WEXITED"),
            (8, "WCONTINUED"),
            (0x0100_0000, "WNOWAIT"),
            (0x2000_0000, "__WNOTHREAD"),
            (0x4000_0000, "__WALL"),
            (0x8000_0000, "__WCLONE"),
        ],
        "0",
    )
}

/// `sigprocmask` how.
pub fn sig_how(v: u64) -> String {
    match v {
        0 => "SIG_BLOCK".into(),
        1 => "SIG_UNBLOCK".into(),
        2 => "SIG_SETMASK".into(),
        _ => v.to_string(),
    }
}

/// Clock ids.
pub fn clock_id(v: u64) -> String {
    let n = match v {
        0 => "CLOCK_REALTIME",
        1 => "CLOCK_MONOTONIC",
        2 => "CLOCK_PROCESS_CPUTIME_ID",
        3 => "CLOCK_THREAD_CPUTIME_ID",
        4 => "CLOCK_MONOTONIC_RAW",
        5 => "CLOCK_REALTIME_COARSE",
        6 => "CLOCK_MONOTONIC_COARSE",
        7 => "CLOCK_BOOTTIME",
        8 => "CLOCK_REALTIME_ALARM",
        9 => "CLOCK_BOOTTIME_ALARM",
        11 => "CLOCK_TAI",
        _ => return (v as u32 as i32).to_string(),
    };
    n.into()
}

/// `reboot` commands (include/uapi/linux/reboot.h).
pub fn reboot_cmd(v: u64) -> String {
    let n = match v {
        0x0123_4567 => "LINUX_REBOOT_CMD_RESTART",
        0xcdef_0123 => "LINUX_REBOOT_CMD_HALT",
        0x4321_fedc => "LINUX_REBOOT_CMD_POWER_OFF",
        0x89ab_cdef => "LINUX_REBOOT_CMD_CAD_ON",
        0 => "LINUX_REBOOT_CMD_CAD_OFF",
        0xa1b2_c3d4 => "LINUX_REBOOT_CMD_RESTART2",
        0xd000_fce2 => "LINUX_REBOOT_CMD_SW_SUSPEND",
        0x4558_4543 => "LINUX_REBOOT_CMD_KEXEC",
        _ => return format!("{v:#x}"),
    };
    n.into()
}

/// `prctl` options (include/uapi/linux/prctl.h, the common ones; others as a number).
pub fn prctl_option(v: u64) -> String {
    let n = match v {
        1 => "PR_SET_PDEATHSIG",
        2 => "PR_GET_PDEATHSIG",
        3 => "PR_GET_DUMPABLE",
        4 => "PR_SET_DUMPABLE",
        8 => "PR_SET_KEEPCAPS",
        15 => "PR_SET_NAME",
        16 => "PR_GET_NAME",
        22 => "PR_SET_SECCOMP",
        36 => "PR_SET_CHILD_SUBREAPER",
        38 => "PR_SET_NO_NEW_PRIVS",
        39 => "PR_GET_NO_NEW_PRIVS",
        _ => return (v as u32 as i32).to_string(),
    };
    n.into()
}

/// `arch_prctl` codes (arch/x86/include/uapi/asm/prctl.h).
pub fn arch_prctl_code(v: u64) -> String {
    let n = match v {
        0x1001 => "ARCH_SET_GS",
        0x1002 => "ARCH_SET_FS",
        0x1003 => "ARCH_GET_FS",
        0x1004 => "ARCH_GET_GS",
        0x1011 => "ARCH_GET_CPUID",
        0x1012 => "ARCH_SET_CPUID",
        0x2001 => "ARCH_MAP_VDSO_X32",
        0x2002 => "ARCH_MAP_VDSO_32",
        0x2003 => "ARCH_MAP_VDSO_64",
        _ => return format!("{v:#x}"),
    };
    n.into()
}

/// `socketcall` call numbers.
pub fn socketcall(v: u64) -> String {
    const N: [&str; 21] = [
        "",
        "SYS_SOCKET",
        "SYS_BIND",
        "SYS_CONNECT",
        "SYS_LISTEN",
        "SYS_ACCEPT",
        "SYS_GETSOCKNAME",
        "SYS_GETPEERNAME",
        "SYS_SOCKETPAIR",
        "SYS_SEND",
        "SYS_RECV",
        "SYS_SENDTO",
        "SYS_RECVFROM",
        "SYS_SHUTDOWN",
        "SYS_SETSOCKOPT",
        "SYS_GETSOCKOPT",
        "SYS_SENDMSG",
        "SYS_RECVMSG",
        "SYS_ACCEPT4",
        "SYS_RECVMMSG",
        "SYS_SENDMMSG",
    ];
    match v {
        1..=20 => N[v as usize].into(),
        _ => v.to_string(),
    }
}

/// Bytes as a C-like string literal: printable ASCII as is, `\n \t \r \" \\`, others `\xNN`.
/// `truncated` appends `...` after the closing quote.
pub fn escape(b: &[u8], truncated: bool) -> String {
    let mut s = String::with_capacity(b.len() + 2);
    s.push('"');
    for &c in b {
        match c {
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            b'"' => s.push_str("\\\""),
            b'\\' => s.push_str("\\\\"),
            0x20..=0x7e => s.push(c as char),
            _ => {
                let _ = write!(s, "\\x{c:02x}");
            }
        }
    }
    s.push('"');
    if truncated {
        s.push_str("...");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_decode_symbolically() {
        assert_eq!(open_flags(0), "O_RDONLY");
        assert_eq!(open_flags(0o1101), "O_WRONLY|O_CREAT|O_TRUNC");
        assert_eq!(open_flags(0o2200000 | 0o100000), "O_RDONLY|O_LARGEFILE|O_DIRECTORY|O_CLOEXEC");
        assert_eq!(open_flags(0o4010002), "O_RDWR|O_SYNC");
        assert_eq!(prot(0), "PROT_NONE");
        assert_eq!(prot(5), "PROT_READ|PROT_EXEC");
        assert_eq!(map_flags(0x22), "MAP_PRIVATE|MAP_ANONYMOUS");
        assert_eq!(map_flags(0x812), "MAP_PRIVATE|MAP_FIXED|MAP_DENYWRITE");
        assert_eq!(clone_flags(0x1200011), "CLONE_CHILD_CLEARTID|CLONE_CHILD_SETTID|SIGCHLD");
        assert_eq!(clone_flags(0x4111), "CLONE_VM|CLONE_VFORK|SIGCHLD");
        assert_eq!(clone_flags(0), "0");
        assert_eq!(signal(15), "SIGTERM");
        assert_eq!(errno_name(2), Some("ENOENT"));
        assert_eq!(errno_name(41), None);
        assert_eq!(errno_name(512), Some("ERESTARTSYS"));
        assert_eq!(dirfd(0xffff_ff9c), "AT_FDCWD");
        assert_eq!(access_mode(6), "R_OK|W_OK");
        assert_eq!(at_flags(0x200), "AT_REMOVEDIR");
        assert_eq!(reboot_cmd(0x4321_fedc), "LINUX_REBOOT_CMD_POWER_OFF");
        assert_eq!(prctl_option(15), "PR_SET_NAME");
        assert_eq!(prctl_option(99), "99");
        assert_eq!(arch_prctl_code(0x1002), "ARCH_SET_FS");
        assert_eq!(arch_prctl_code(0x9999), "0x9999");
        assert_eq!(escape(b"hi\n\x01\"", false), "\"hi\\n\\x01\\\"\"");
        assert_eq!(escape(b"ab", true), "\"ab\"...");
    }
}
