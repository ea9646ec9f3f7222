#!/usr/bin/env python3
"""Write a reproducible newc (SVR4, "070701") cpio archive, as the Linux kernel's initramfs wants.

    newc-cpio.py [--mtime N] SPEC OUT

SPEC lists the entries, one per line, in the format of the kernel's usr/gen_init_cpio
('#' starts a comment; paths inside the archive are absolute, they are stored without the '/'):

    dir   /dev                 755 0 0
    nod   /dev/console         600 0 0 c 5 1
    file  /init  guests/linux/init 755 0 0
    slink /bin/sh  busybox     777 0 0

Reproducible by construction: the entries are sorted by path (a directory before its contents),
inode numbers are 1, 2, ... in that order, every mtime is --mtime (default: $SOURCE_DATE_EPOCH,
else 0), uid/gid are the ones in SPEC, device numbers of the archive itself are 0, and nothing is
read from the build machine but the contents of the files named in SPEC. Relative source paths
are taken relative to the SPEC file's directory unless --base is given.
"""

import argparse
import os
import stat
import sys


def die(msg):
    sys.stderr.write("newc-cpio: %s\n" % msg)
    sys.exit(1)


def header(ino, mode, uid, gid, nlink, mtime, size, rmaj, rmin, name):
    name_b = name.encode() + b"\0"
    fields = [ino, mode, uid, gid, nlink, mtime, size, 0, 0, rmaj, rmin, len(name_b), 0]
    h = b"070701" + b"".join(b"%08X" % f for f in fields) + name_b
    return h + b"\0" * (-len(h) % 4)


def parse(spec_path, base):
    entries = {}
    with open(spec_path) as f:
        for lineno, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            w = line.split()
            kind = w[0]
            where = "%s:%d" % (spec_path, lineno)
            try:
                if kind == "dir" and len(w) == 5:
                    path, perm, uid, gid = w[1], w[2], w[3], w[4]
                    e = (stat.S_IFDIR, perm, uid, gid, b"", 0, 0)
                elif kind == "file" and len(w) == 6:
                    path, src, perm, uid, gid = w[1], w[2], w[3], w[4], w[5]
                    src = src if os.path.isabs(src) else os.path.join(base, src)
                    with open(src, "rb") as s:
                        data = s.read()
                    e = (stat.S_IFREG, perm, uid, gid, data, 0, 0)
                elif kind == "slink" and len(w) == 6:
                    path, target, perm, uid, gid = w[1], w[2], w[3], w[4], w[5]
                    e = (stat.S_IFLNK, perm, uid, gid, target.encode(), 0, 0)
                elif kind == "nod" and len(w) == 8:
                    path, perm, uid, gid, t, maj, mnr = w[1:8]
                    ft = {"c": stat.S_IFCHR, "b": stat.S_IFBLK}.get(t)
                    if ft is None:
                        die("%s: device type must be c or b" % where)
                    e = (ft, perm, uid, gid, b"", int(maj), int(mnr))
                else:
                    die("%s: cannot parse %r" % (where, line))
            except OSError as err:
                die("%s: %s" % (where, err))
            if not path.startswith("/") or path == "/":
                die("%s: path must be absolute and not /: %r" % (where, path))
            name = os.path.normpath(path).lstrip("/")
            if name in entries:
                die("%s: duplicate entry %s" % (where, path))
            ft, perm, uid, gid, data, maj, mnr = e
            entries[name] = (ft | int(perm, 8), int(uid), int(gid), data, maj, mnr)
    # every parent directory must be listed (the kernel does not create them)
    for name in entries:
        parent = os.path.dirname(name)
        while parent:
            if parent not in entries or not stat.S_ISDIR(entries[parent][0]):
                die("parent directory /%s of /%s is not in the spec" % (parent, name))
            parent = os.path.dirname(parent)
    return entries


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mtime", type=int, default=int(os.environ.get("SOURCE_DATE_EPOCH", "0")))
    ap.add_argument("--base", help="directory for relative source paths (default: the SPEC's)")
    ap.add_argument("spec")
    ap.add_argument("out")
    a = ap.parse_args()
    base = a.base if a.base is not None else os.path.dirname(os.path.abspath(a.spec))
    entries = parse(a.spec, base)

    out = bytearray()
    for ino, name in enumerate(sorted(entries, key=lambda n: n.split("/")), 1):
        mode, uid, gid, data, maj, mnr = entries[name]
        nlink = 2 if stat.S_ISDIR(mode) else 1
        out += header(ino, mode, uid, gid, nlink, a.mtime, len(data), maj, mnr, name)
        out += data + b"\0" * (-len(data) % 4)
    out += header(0, 0, 0, 0, 1, 0, 0, 0, 0, "TRAILER!!!")
    out += b"\0" * (-len(out) % 512)
    tmp = a.out + ".tmp"
    with open(tmp, "wb") as f:
        f.write(out)
    os.replace(tmp, a.out)


if __name__ == "__main__":
    main()
