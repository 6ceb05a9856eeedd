#!/bin/busybox sh
# PID 1 of the fastcheck test VM (packed into the initramfs by tools/vm/vmimage.py).
#
# Owns: turning the booted kernel into "the host's root, writable in RAM" and running one
# command there, then powering off. Knows nothing about what the command is: the host
# writes that into the control share (tag fcctl) as mounts.sh (extra shares) and cmd.sh
# (cwd, environment, argv), and reads back rc (the command's exit status).
# Must not: touch the host (its root is mounted read-only; only shares are writable),
# or stay alive when anything fails (every error path powers off, so qemu exits).
#
# stage 1 (from the initramfs):  modules, 9p root + tmpfs overlay, shares, switch_root
# stage 2 (PID 1 in the new root): run cmd.sh with stdout/stderr on the virtio ports

BB=/bin/busybox
STATE=/run/fastcheck-vm
CTL=$STATE/ctl
P9="trans=virtio,version=9p2000.L,msize=512000"

die() {
    echo "fastcheck-vm: $*" >/dev/console
    $BB sync
    $BB poweroff -f
    $BB reboot -f   # not reached; with -no-reboot this ends qemu too
}

stage1() {
    $BB mount -t proc proc /proc || die "mount /proc"
    $BB --install -s /bin
    export PATH=/bin
    mount -t sysfs sysfs /sys || die "mount /sys"
    mount -t devtmpfs devtmpfs /dev || die "mount /dev"

    while read -r ko; do
        insmod "/modules/$ko" || die "insmod $ko failed"
    done </modules/order

    mount -t 9p -o "$P9,ro,cache=loose" hostroot /lower || die "mount host root (9p)"
    mount -t tmpfs -o mode=0755 overlay-rw /rw || die "mount tmpfs"
    mkdir -p /rw/upper /rw/work
    mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot \
        || die "mount overlay"

    for d in proc sys dev; do
        mount --move "/$d" "/newroot/$d" || die "move /$d"
    done
    mkdir -p /newroot/dev/pts /newroot/dev/shm
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /newroot/dev/pts
    mount -t tmpfs -o mode=1777 shm /newroot/dev/shm
    mount -t tmpfs -o mode=0755 run /newroot/run || die "mount /run"

    mkdir -p "/newroot$CTL"
    mount -t 9p -o "$P9,cache=none" fcctl "/newroot$CTL" || die "mount control share"
    cp /bin/busybox /init "/newroot$STATE/" || die "copy busybox"

    # mounts.sh calls: share TAG ABSOLUTE-PATH  (one per --share DIR)
    share() {
        mkdir -p "/newroot$2" && mount -t 9p -o "$P9,cache=none" "$1" "/newroot$2" \
            || die "mount share $2"
    }
    . "/newroot$CTL/mounts.sh"

    hostname fastcheck-vm
    ip link set lo up
    exec switch_root /newroot "$STATE/busybox" sh "$STATE/init" stage2
    die "switch_root failed"
}

port() {  # the /dev node of the virtio serial port named $1
    for p in /sys/class/virtio-ports/*; do
        if [ "$($BB cat "$p/name" 2>/dev/null)" = "$1" ]; then
            echo "/dev/${p##*/}"
            return 0
        fi
    done
    echo /dev/console
}

stage2() {
    BB=$STATE/busybox
    out=$(port fastcheck.stdout)
    err=$(port fastcheck.stderr)
    $BB env -i /bin/sh "$CTL/cmd.sh" </dev/null >"$out" 2>"$err"
    echo $? >"$CTL/rc.tmp" && $BB mv "$CTL/rc.tmp" "$CTL/rc"
    $BB sync
    $BB poweroff -f
    $BB reboot -f
}

if [ "$1" = stage2 ]; then
    stage2
else
    stage1
fi
die "init fell through"
