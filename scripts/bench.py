#!/usr/bin/env python3
"""Ailuro benchmark: guest MIPS of a plain run, record overhead, replay speed, log size, peak memory,
and QEMU (TCG) on the same guest when qemu-system-i386 is installed.

Usage: scripts/bench.py [--iters N] [--ram MiB] [--runs K] [--markdown]
Build first: cargo build --release. The CPU-bound guest is the bundled `cpubound`.
"""
import argparse
import glob
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMU = os.path.join(ROOT, "target", "release", "ailuro-system-i386")


def guest_path(name):
    hits = sorted(glob.glob(os.path.join(ROOT, "target", "release", "build", "ailuro-guests-*", "out", name + ".elf")),
                  key=os.path.getmtime)
    if not hits:
        sys.exit(f"bench: guest {name} not built (run cargo build --release)")
    return hits[-1]


def timed(cmd, stdin=subprocess.DEVNULL):
    """Run cmd; return (seconds, peak RSS of the child in MiB, stdout, stderr, status)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # ru_maxrss of RUSAGE_CHILDREN is the max over all children so far: run each measured command
    # in a fresh Python-level process group would be exact; we report it as an upper bound.
    rss = max(after.ru_maxrss, before.ru_maxrss) / 1024.0
    return dt, rss, p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"), p.returncode


def peak_rss(cmd):
    """Peak RSS (MiB) of one command, measured in a child Python so the maximum is its own."""
    code = ("import resource,subprocess,sys;subprocess.run(sys.argv[1:],stdout=subprocess.DEVNULL,"
            "stderr=subprocess.DEVNULL,stdin=subprocess.DEVNULL);"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", code] + cmd, stdout=subprocess.PIPE, check=True)
    return int(out.stdout.strip()) / 1024.0


def best(f, runs):
    results = [f() for _ in range(runs)]
    return min(results, key=lambda r: r[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=50_000_000, help="cpubound loop iterations")
    ap.add_argument("--ram", type=int, default=128, help="guest RAM in MiB")
    ap.add_argument("--runs", type=int, default=3, help="best of K runs")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--accel", default="jit", choices=["jit", "interp"], help="Ailuro's engine (-accel)")
    a = ap.parse_args()
    if not os.path.exists(EMU):
        sys.exit("bench: build first: cargo build --release")
    g = guest_path("cpubound")
    work = tempfile.mkdtemp(prefix="ailuro-bench-")
    name = os.path.join(work, "bench")
    base = [EMU, "-m", str(a.ram), "-kernel", g, "-append", f"iters={a.iters}", "-display", "none",
            "-icount", "sleep=off", "-serial", "null", "-no-reboot", "-accel", a.accel]

    plain = best(lambda: timed(base), a.runs)

    def rec():
        for f in glob.glob(name + "-rr-*"):
            os.remove(f)
        return timed(base + ["-record", name])

    record = best(rec, a.runs)
    m = re.search(r"complete: (\d+) instructions", record[3])
    if not m:
        sys.exit("bench: recording failed:\n" + record[3])
    insns = int(m.group(1))
    replay = best(lambda: timed([EMU, "-replay", name, "-serial", "null", "-accel", a.accel]), a.runs)
    if replay[4] != 0:
        sys.exit("bench: replay failed:\n" + replay[3])
    rss_plain = peak_rss(base)
    rss_replay = peak_rss([EMU, "-replay", name, "-serial", "null", "-accel", a.accel])
    log_bytes = os.path.getsize(name + "-rr-nondet.log")
    snp_bytes = os.path.getsize(name + "-rr-snp")

    rows = [
        ("guest", f"cpubound iters={a.iters}, {a.ram} MiB RAM, -accel {a.accel}"),
        ("guest instructions", f"{insns:,}"),
        ("plain run", f"{plain[0]:.3f} s, {insns / plain[0] / 1e6:.0f} MIPS"),
        ("record", f"{record[0]:.3f} s, {insns / record[0] / 1e6:.0f} MIPS, overhead {record[0] / plain[0]:.2f}x"),
        ("replay", f"{replay[0]:.3f} s, {insns / replay[0] / 1e6:.0f} MIPS, {replay[0] / plain[0]:.2f}x of plain"),
        ("nondet log", f"{log_bytes:,} bytes, {log_bytes * 1000 / max(insns, 1):.4f} bytes/1000 insns"),
        ("snapshot", f"{snp_bytes:,} bytes"),
        ("peak RSS", f"plain {rss_plain:.0f} MiB, replay {rss_replay:.0f} MiB (guest RAM {a.ram} MiB)"),
    ]
    qemu = shutil.which("qemu-system-i386")
    if qemu:
        q = best(lambda: timed([qemu, "-m", str(a.ram), "-kernel", g, "-append", f"iters={a.iters}",
                                "-display", "none", "-serial", "null", "-no-reboot", "-accel", "tcg",
                                "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]), a.runs)
        rows.append(("QEMU TCG (same guest)", f"{q[0]:.3f} s, {insns / q[0] / 1e6:.0f} MIPS-equivalent, "
                                               f"Ailuro plain is {q[0] / plain[0]:.2f}x QEMU's speed"))
    shutil.rmtree(work, ignore_errors=True)
    if a.markdown:
        print("| measure | result |\n|---|---|")
        for k, v in rows:
            print(f"| {k} | {v} |")
    else:
        for k, v in rows:
            print(f"{k:24} {v}")


if __name__ == "__main__":
    main()
