#!/bin/busybox sh
# The deploy environment's /init: network up by DHCP, the orders from the
# kernel command line (docs/deployenv.md), the image received onto the disk
# by provisioner receive, the result reported to the host's callback URL.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /var/lib/provisioner/receive /usr/sbin /sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts 2>/dev/null
export PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root PYTHONDONTWRITEBYTECODE=1
. /lib/deployenv/functions.sh

# fail REASON: report failed with REASON and stop (provisioner.onfailure=
# shell (default), poweroff or reboot).
fail() {
  say "FAILED $1"
  report failed "$1"
  [ -n "$progressPid" ] && kill "$progressPid" 2>/dev/null
  sync
  case "$onfailure" in
    poweroff) say "powering off"; poweroff -f ;;
    reboot) say "rebooting"; reboot -f ;;
  esac
  say "a shell on the console (exit to power off)"
  setsid cttyhack sh
  poweroff -f
}

readCmdline
say "start kernel=$(uname -r) token=$([ -n "$token" ] && echo yes || echo none)"
say "modules"
loadModules
ip link set lo up
[ -n "$interface" ] || interface=$(firstLinkInterface 20) || fail "no network interface has a link"
say "dhcp interface=$interface"
udhcpc -i "$interface" -q -n -t 10 -T 2 -s /lib/deployenv/udhcpc.sh >/dev/null 2>&1 \
  || fail "no DHCP answer on $interface"
address=$(ipv4Address "$interface")
say "network interface=$interface address=$address"
# the orders: provisioner.orders=, else beside the callback URL
# (.../hosts/NAME/orders); only an explicit provisioner.orders= must answer.
# No wget -T: busybox's static wget crashes with it; timeout bounds it.
ordersUrl=$(ordersURL)
if [ -n "$ordersUrl" ]; then
  if timeout 30 wget -q -O /tmp/orders "$(withToken "$ordersUrl")"; then
    parseWords "$(cat /tmp/orders)"
    say "orders from $ordersUrl"
  elif [ -n "$orders" ]; then
    fail "cannot fetch the orders from $orders"
  else
    say "no orders at $ordersUrl: the command line's only"
  fi
fi
[ -n "$disk" ] || disk=$(firstDisk) || fail "no disk found$(diskRule)"
[ -b "$disk" ] || fail "$disk is not a block device"
[ -n "$(imagecastServer)" ] || fail "no imagecast server (provisioner.imagecast= or provisioner.callback=)"
writeSecret
say "orders image=${image:-any} disk=$disk imagecast=$(imagecastServer)${imagecast:+ ($imagecast)}"
report deploying "deploy environment up on $interface ($address): receiving ${image:-the announced image} onto $disk"
if [ "$progress" -gt 0 ] 2>/dev/null; then
  ( start=$(date +%s)
    while sleep "$progress"; do
      report deploying "receiving onto $disk: $(( $(date +%s) - start )) s" >/dev/null
    done ) &
  progressPid=$!
fi
say "receive $(receiveCommand)"
$(receiveCommand) > /tmp/receive.json 2> /tmp/receive.err
status=$?
[ -n "$progressPid" ] && kill "$progressPid" 2>/dev/null
progressPid=
cat /tmp/receive.err
say "receive status=$status $(cat /tmp/receive.json | tr '\n' ' ' | cut -c1-400)"
if [ "$status" -ne 0 ]; then
  reason=$(grep -v '^ *$' /tmp/receive.err | tail -n 1 | cut -c1-300)
  fail "provisioner receive ended with status $status: ${reason:-no message}"
fi
sync
report deployed "image written to $disk and verified" || say "the callback was refused; rebooting anyway"
say "DEPLOYED rebooting"
reboot -f
