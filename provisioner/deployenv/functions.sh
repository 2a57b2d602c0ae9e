# The deploy environment's shell functions (busybox sh), sourced by /init.
# tests/test_deployenv.py sources this file alone, in a chroot of the
# initramfs, and calls them one by one: keep side effects out of the top level.
# The paths they read can be pointed elsewhere: DE_SYS (/sys), DE_MODULES
# (/lib/modules), INSMOD (insmod), DE_WGET (wget).

DE_SYS=${DE_SYS:-/sys}
DE_MODULES=${DE_MODULES:-/lib/modules}
INSMOD=${INSMOD:-insmod}
DE_WGET=${DE_WGET:-wget}

# say WORDS: one line on the console for people and for tests to follow.
say() {
  echo "DEPLOYENV $*"
}

# parseWords WORDS: set the variables of the provisioner.* words among WORDS
# (the kernel command line, or an orders document: the same syntax).
parseWords() {
  for w in $*; do
    case "$w" in
      provisioner.token=*) token=${w#*=} ;;
      provisioner.callback=*) callback=${w#*=} ;;
      provisioner.orders=*) orders=${w#*=} ;;
      provisioner.image=*) image=${w#*=} ;;
      provisioner.disk=*) disk=${w#*=} ;;
      provisioner.disk_min_gib=*) diskMinGib=${w#*=} ;;
      provisioner.disk_serial=*) diskSerial=${w#*=} ;;
      provisioner.imagecast=*) imagecast=${w#*=} ;;
      provisioner.secret=*) secret=${w#*=} ;;
      provisioner.id=*) receiverId=${w#*=} ;;
      provisioner.interface=*) interface=${w#*=} ;;
      provisioner.receive=*) receiveArgs=$(echo "${w#*=}" | tr , ' ') ;;
      provisioner.onfailure=*) onfailure=${w#*=} ;;
      provisioner.progress=*) progress=${w#*=} ;;
    esac
  done
}

# readCmdline [FILE]: the orders of the kernel command line (/proc/cmdline),
# with the defaults of what it does not say.
readCmdline() {
  token= callback= orders= image= disk= diskMinGib= diskSerial= imagecast= secret=
  receiverId= interface=
  receiveArgs= onfailure=shell progress=30
  parseWords "$(cat "${1:-/proc/cmdline}")"
}

# callbackHost URL: the host (name or address) of an http:// URL.
callbackHost() {
  local rest=${1#*://}
  rest=${rest%%/*}
  echo "${rest%:*}"
}

# hostName URL: NAME of .../hosts/NAME/callback, or nothing.
hostName() {
  case "$1" in
    */hosts/*/callback) local rest=${1%/callback}; echo "${rest##*/}" ;;
  esac
}

# ordersURL: where the orders are: provisioner.orders=, else the callback URL's
# .../hosts/NAME/orders (.../hosts/NAME/callback -> .../hosts/NAME/orders), else
# nothing.
ordersURL() {
  if [ -n "$orders" ]; then
    echo "$orders"
    return 0
  fi
  case "$callback" in
    */hosts/*/callback) echo "${callback%/callback}/orders" ;;
  esac
}

# withToken URL: URL with token=$token added to its query.
withToken() {
  case "$1" in
    *\?*) echo "$1&token=$token" ;;
    *) echo "$1?token=$token" ;;
  esac
}

# imagecastServer / imagecastPort: provisioner.imagecast=HOST[:PORT], the
# host defaulting to the callback URL's and the port to the receiver's own
# default (nothing printed: no --port).
imagecastServer() {
  case "$imagecast" in
    "") callbackHost "$callback" ;;
    *:*) echo "${imagecast%:*}" ;;
    *) echo "$imagecast" ;;
  esac
}
imagecastPort() {
  case "$imagecast" in
    *:*) echo "${imagecast##*:}" ;;
  esac
}

# urlencode TEXT: TEXT for a form body (application/x-www-form-urlencoded).
urlencode() {
  echo "$1" | sed -e 's/%/%25/g' -e 's/&/%26/g' -e 's/+/%2B/g' -e 's/=/%3D/g' \
    -e 's/#/%23/g' -e 's/;/%3B/g' -e 's/?/%3F/g' -e 's/ /+/g'
}

# report STATE [MESSAGE]: POST state (deploying, deployed, failed) and message
# to the callback URL with the token; prints DEPLOYENV callback ... ok|refused.
report() {
  if [ -z "$callback" ] || [ -z "$token" ]; then
    say "callback state=$1 skipped (no provisioner.callback or provisioner.token)"
    return 1
  fi
  local body="token=$token&state=$1"
  [ -n "$2" ] && body="$body&message=$(urlencode "$2")"
  # No wget -T: busybox 1.35 static wget crashes with it (SIGSEGV); timeout bounds it.
  if timeout 30 $DE_WGET -q -O /tmp/callback.answer --post-data "$body" "$callback" 2>/dev/null; then
    say "callback state=$1 ok"
  else
    say "callback state=$1 refused"
    return 1
  fi
}

# loadModules: insmod every module of DE_MODULES/deployenv.order, in that
# order (the build wrote it dependencies first).
loadModules() {
  local m
  while read -r m; do
    [ -n "$m" ] || continue
    $INSMOD "$DE_MODULES/$m" 2>/dev/null || say "module $m not loaded"
  done < "$DE_MODULES/deployenv.order"
}

# interfaces: the network interfaces but lo, by name.
interfaces() {
  local i
  for i in "$DE_SYS"/class/net/*; do
    i=${i##*/}
    [ "$i" = lo ] || [ "$i" = "*" ] || echo "$i"
  done
}

# firstLinkInterface [TRIES]: bring every interface up and print the first
# with a carrier, trying TRIES times a second apart (default 20).
firstLinkInterface() {
  local tries=${1:-20} i
  for i in $(interfaces); do ip link set "$i" up 2>/dev/null; done
  while [ "$tries" -gt 0 ]; do
    for i in $(interfaces); do
      if [ "$(cat "$DE_SYS/class/net/$i/carrier" 2>/dev/null)" = 1 ]; then
        echo "$i"
        return 0
      fi
    done
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] && sleep 1
  done
  return 1
}

# diskSerialOf NAME: the serial number of /sys/block/NAME: its serial
# (virtio), device/serial (NVMe), or the unit serial number VPD page
# (device/vpd_pg80: SCSI, SATA), without spaces; or nothing.
diskSerialOf() {
  local d="$DE_SYS/block/$1" f s
  for f in "$d/serial" "$d/device/serial"; do
    [ -r "$f" ] || continue
    s=$(tr -d ' \000\n' < "$f")
    if [ -n "$s" ]; then
      echo "$s"
      return 0
    fi
  done
  [ -r "$d/device/vpd_pg80" ] && tail -c +5 "$d/device/vpd_pg80" | tr -d ' \000\n'
}

# diskRule: the rule of provisioner.disk_min_gib= and provisioner.disk_serial=,
# for messages (" of at least N GiB", " with serial S"), or nothing.
diskRule() {
  [ -n "$diskMinGib" ] && printf ' of at least %s GiB' "$diskMinGib"
  [ -n "$diskSerial" ] && printf ' with serial %s' "$diskSerial"
  return 0
}

# firstDisk: /dev/NAME of the first whole disk (virtio, SCSI/SATA, NVMe)
# with a size, by name; of at least provisioner.disk_min_gib GiB and with
# serial provisioner.disk_serial when they are given.
firstDisk() {
  local d n sectors
  for d in "$DE_SYS"/block/vd* "$DE_SYS"/block/sd* "$DE_SYS"/block/nvme*n* \
      "$DE_SYS"/block/hd*; do
    n=${d##*/}
    [ -e "$d/size" ] || continue
    sectors=$(cat "$d/size")
    [ "$sectors" -gt 0 ] 2>/dev/null || continue
    if [ -n "$diskMinGib" ]; then
      awk -v s="$sectors" -v g="$diskMinGib" 'BEGIN { exit !(s * 512 >= g * 1073741824) }' \
        || continue
    fi
    if [ -n "$diskSerial" ]; then
      [ "$(diskSerialOf "$n")" = "$diskSerial" ] || continue
    fi
    echo "/dev/$n"
    return 0
  done
  return 1
}

# ipv4Address IFACE: the interface's IPv4 address, or nothing.
ipv4Address() {
  ip -4 -o addr show dev "$1" 2>/dev/null | sed -n 's/.* inet \([0-9.]*\).*/\1/p' | head -n 1
}

# receiveCommand: the receiver's command line for these orders.
receiveCommand() {
  local server port id
  server=$(imagecastServer)
  port=$(imagecastPort)
  id=${receiverId:-$(hostName "$callback")}
  echo "python3 -m provisioner.cli receive --server $server${port:+ --port $port}" \
    "--output $disk${image:+ --image $image}${id:+ --id $id:$disk}" \
    "--state /tmp/receive.state${secret:+ --secret-file /tmp/imagecast.secret}" \
    "--quiet --json${receiveArgs:+ $receiveArgs}"
}

# writeSecret: the receiver's secret (provisioner.secret=) in
# /tmp/imagecast.secret, readable by root only, for --secret-file.
writeSecret() {
  [ -n "$secret" ] || return 0
  (umask 077; echo "$secret" > /tmp/imagecast.secret)
}
