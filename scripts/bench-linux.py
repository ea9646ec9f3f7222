#!/usr/bin/env python3
"""Linux benchmark: Debian's i386 or amd64 kernel + busybox initramfs (scripts/fetch-linux-guest.sh
i386 | amd64),
booted to the guests/linux/init workload and powered off, under Ailuro (plain run, record, replay)
and under QEMU (TCG plain run, and its own record/replay with -icount shift=auto,rr=...).

Reports guest instructions, MIPS in the boot phase (power-on to "=== AILURO WORKLOAD BEGIN ===")
and in the workload phase (to "=== AILURO WORKLOAD END ==="), record overhead, replay speed,
nondet-log bytes per 1000 instructions, snapshot size and peak memory.

Phase instruction counts come from Ailuro's replay (the `console` plugin gives the instruction count
at which each console line was written); phase times from the host time at which the marker lines
appear on each emulator's console. QEMU's MIPS figures divide Ailuro's instruction counts by
QEMU's times (the same guest doing the same work; QEMU does not count instructions itself).

Usage: scripts/bench-linux.py [--arch i386|amd64] [--ram MiB] [--no-qemu] [--markdown]
(--arch amd64: ailuro-system-x86_64 beside qemu-system-x86_64.)
Build first: cargo build --release.
"""
import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Per guest architecture: the Ailuro binary, QEMU's, and the Debian kernel package.
ARCHES = {
    "i386": ("ailuro-system-i386", "qemu-system-i386", "linux-image-6.1.0-50-686"),
    "amd64": ("ailuro-system-x86_64", "qemu-system-x86_64", "linux-image-6.1.0-50-amd64"),
}
BEGIN = "=== AILURO WORKLOAD BEGIN ==="
END = "=== AILURO WORKLOAD END ==="


def run_timed(cmd, cwd):
    """Run cmd, timestamp console lines; return dict(wall, t_begin, t_end, rss_mib, stdout, stderr, rc)."""
    code = ("import resource,subprocess,sys,time,json\n"
            "t0=time.perf_counter()\n"
            "p=subprocess.Popen(sys.argv[1:],stdout=subprocess.PIPE,stderr=open('stderr.txt','wb'),stdin=subprocess.DEVNULL)\n"
            "marks={}\nout=[]\n"
            "for line in p.stdout:\n"
            "    s=line.decode(errors='replace')\n"
            "    out.append(s)\n"
            "    for m in ('" + BEGIN + "','" + END + "'):\n"
            "        if m in s and m not in marks: marks[m]=time.perf_counter()-t0\n"
            "rc=p.wait()\nwall=time.perf_counter()-t0\n"
            "open('stdout.txt','w').write(''.join(out))\n"
            "print(json.dumps({'wall':wall,'marks':marks,'rc':rc,"
            "'rss':resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))\n")
    out = subprocess.run([sys.executable, "-c", code] + cmd, cwd=cwd, stdout=subprocess.PIPE, check=True)
    import json
    r = json.loads(out.stdout)
    with open(os.path.join(cwd, "stderr.txt"), errors="replace") as f:
        r["stderr"] = f.read()
    with open(os.path.join(cwd, "stdout.txt"), errors="replace") as f:
        r["stdout"] = f.read()
    r["rss_mib"] = r["rss"] / 1024.0
    r["t_begin"] = r["marks"].get(BEGIN)
    r["t_end"] = r["marks"].get(END)
    return r


def fmt(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", choices=sorted(ARCHES), default="i386")
    ap.add_argument("--ram", type=int, default=256)
    ap.add_argument("--no-qemu", action="store_true")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--accel", default="jit", choices=["jit", "interp"], help="Ailuro's engine (-accel)")
    a = ap.parse_args()
    emu_name, qemu_name, kpkg = ARCHES[a.arch]
    EMU = os.path.join(ROOT, "target", "release", emu_name)
    CACHE = os.path.join(os.environ.get("AILURO_CACHE", os.path.expanduser("~/.cache/ailuro")), "linux", a.arch)
    kernel, initrd = os.path.join(CACHE, "vmlinuz"), os.path.join(CACHE, "initramfs.cpio.gz")
    for p in (EMU, kernel, initrd):
        if not os.path.exists(p):
            sys.exit(f"bench-linux: {p} missing (cargo build --release; scripts/fetch-linux-guest.sh {a.arch})")
    work = tempfile.mkdtemp(prefix="ailuro-bench-linux-")
    append = "console=ttyS0 panic=-1"
    base = [EMU, "-m", str(a.ram), "-kernel", kernel, "-initrd", initrd, "-append", append,
            "-display", "none", "-no-reboot", "-icount", "sleep=off", "-rtc", "base=2026-01-01",
            "-accel", a.accel]
    res = {}
    d = os.path.join(work, "plain"); os.mkdir(d)
    res["plain"] = run_timed(base, d)
    d = os.path.join(work, "record"); os.mkdir(d)
    res["record"] = run_timed(base + ["-record", "lx"], d)
    rec = os.path.join(d, "lx")
    m = re.search(r"complete: (\d+) instructions", res["record"]["stderr"])
    if not m or res["record"]["rc"] != 0:
        sys.exit("bench-linux: recording failed:\n" + res["record"]["stderr"])
    insns = int(m.group(1))
    log_bytes = os.path.getsize(rec + "-rr-nondet.log")
    snp_bytes = os.path.getsize(rec + "-rr-snp")
    d = os.path.join(work, "replay"); os.mkdir(d)
    marks_file = os.path.join(d, "console.txt")
    res["replay"] = run_timed([EMU, "-replay", rec, "-display", "none", "-accel", a.accel,
                               "-panda", f"console:file={marks_file}"], d)
    if "Replay completed successfully" not in res["replay"]["stderr"]:
        sys.exit("bench-linux: replay failed:\n" + res["replay"]["stderr"])
    ic = {}
    for line in open(marks_file, errors="replace"):
        parts = line.strip().split(" ", 1)
        if len(parts) == 2 and parts[1].strip() in (BEGIN, END):
            ic.setdefault(parts[1].strip(), int(parts[0]))
    boot_insns = ic.get(BEGIN)
    work_insns = ic[END] - ic[BEGIN] if BEGIN in ic and END in ic else None

    qemu = shutil.which(qemu_name)
    if qemu and not a.no_qemu:
        qbase = [qemu, "-m", str(a.ram), "-kernel", kernel, "-initrd", initrd, "-append", append,
                 "-display", "none", "-serial", "stdio", "-monitor", "none", "-no-reboot",
                 "-rtc", "base=2026-01-01"]
        d = os.path.join(work, "qemu"); os.mkdir(d)
        res["qemu"] = run_timed(qbase, d)
        d = os.path.join(work, "qemu-rr"); os.mkdir(d)
        rrf = os.path.join(d, "q.rr")
        res["qemu-record"] = run_timed(qbase + ["-icount", f"shift=auto,rr=record,rrfile={rrf}"], d)
        qlog = os.path.getsize(rrf) if os.path.exists(rrf) else None
        res["qemu-replay"] = run_timed(qbase + ["-icount", f"shift=auto,rr=replay,rrfile={rrf}"], d)
    else:
        qlog = None

    def row(name, r):
        wall = r["wall"]
        tb, te = r.get("t_begin"), r.get("t_end")
        boot = boot_insns / tb / 1e6 if boot_insns and tb else None
        wl = work_insns / (te - tb) / 1e6 if work_insns and tb and te and te > tb else None
        return (name, fmt(wall, 2), fmt(insns / wall / 1e6), fmt(boot), fmt(wl), fmt(r["rss_mib"], 0), r["rc"])

    rows = [row(k, res[k]) for k in ("plain", "record", "replay", "qemu", "qemu-record", "qemu-replay") if k in res]
    print(f"guest: Debian {kpkg} + busybox initramfs, -m {a.ram}, boot + workload + poweroff; Ailuro -accel {a.accel}")
    print(f"instructions (Ailuro): {insns} total, boot phase {boot_insns}, workload phase {work_insns}")
    print(f"Ailuro nondet log: {log_bytes} bytes = {log_bytes * 1000 / insns:.4f} bytes per 1000 instructions; "
          f"snapshot {snp_bytes} bytes ({snp_bytes / (a.ram << 20) * 100:.2f}% of RAM)")
    if qlog is not None:
        print(f"QEMU rr log: {qlog} bytes = {qlog * 1000 / insns:.4f} bytes per 1000 (Ailuro) instructions")
    rec_over = res["record"]["wall"] / res["plain"]["wall"]
    rep_speed = res["replay"]["wall"] / res["plain"]["wall"]
    print(f"record overhead: {rec_over:.3f}x of the plain run; replay time: {rep_speed:.3f}x of the plain run")
    hdr = ("run", "wall s", "MIPS (whole)", "MIPS boot", "MIPS workload", "peak RSS MiB", "exit")
    if a.markdown:
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for r in rows:
            print("| " + " | ".join(str(x) for x in r) + " |")
    else:
        print("  ".join(f"{h:>14}" for h in hdr))
        for r in rows:
            print("  ".join(f"{str(x):>14}" for x in r))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
