# -*- test-case-name: tests.test_recipes -*-
"""
The recipes of C{docs/recipes/}, run as they are written.

Each recipe page holds the files an operator copies. A file is the fenced
block that follows an HTML comment naming it::

    <!-- recipe: provisioner.yaml -->
    ```yaml
    ...
    ```

L{recipeFiles} reads them from the markdown at test time, and the tests use
them verbatim: written into the appliance's working directory under that
name (the configurations use paths relative to it, as the recipes tell the
operator to run from C{/srv/provisioner}), or given to the other programs
(dnsmasq's C{dnsmasq.conf}). So a recipe cannot drift from what is tested.

The end-to-end tests run the appliance (twistd) and real clients in network
namespaces (L{tests.netlab.NetLab}), on 198.18.151.0/24 (proxyDHCP),
198.18.152.0/24 (isolated network) and 198.18.153.0/24 (Debian install);
the server's interface is renamed to what the recipe names. No QEMU: the
firmware's DHCP is played from the packets captured in C{tests/data/dhcp}.
"""

import hashlib
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys

from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner.config import loadConfig
from provisioner.menus.inventory import parseInventory
from tests.netlab import PYTHON, REPO, Appliance, NetLab, requireE2E
from tests.qemu_lab import readEvents, writeUdhcpcScript

RECIPES = os.path.join(REPO, "docs", "recipes")
GOLDEN = os.path.join(REPO, "tests", "data", "dhcp")
IPXE_DIR = "/usr/lib/ipxe"
BENCHMARK = ipaddress.ip_network("198.18.0.0/15")

_BLOCK = re.compile(
    r"<!--\s*recipe:\s*(?P<name>\S+)\s*-->[ \t]*\n```[^\n]*\n(?P<text>.*?)^```[ \t]*$",
    re.S | re.M)
_MARKER = re.compile(r"<!--\s*recipe:")


def recipeFiles(page):
    """
    The files of a recipe page.

    @param page: the page's file name in C{docs/recipes/}, or markdown text
        (anything with a newline).
    @return: a C{dict} of file name to text, in the order of the page.
    @raise ValueError: a marker not followed by a fenced block, or a name
        given twice.
    """
    if "\n" in page:
        text = page
    else:
        with open(os.path.join(RECIPES, page)) as f:
            text = f.read()
    files = {}
    for match in _BLOCK.finditer(text):
        name = match.group("name")
        if name in files:
            raise ValueError("%s: recipe file %s given twice" % (page[:40], name))
        files[name] = match.group("text")
    if len(_MARKER.findall(text)) != len(files):
        raise ValueError("%s: a recipe marker without a fenced block after it" % (page[:40],))
    return files


def writeFiles(directory, files, names):
    """
    Write the recipe files C{names} into C{directory}.
    """
    for name in names:
        with open(os.path.join(directory, name), "w") as f:
            f.write(files[name])


def renameInterface(host, name):
    """
    Rename a lab host's interface (C{eth0}) to C{name}, as the recipe
    calls it.
    """
    if name == host.ifname:
        return
    host.run(["ip", "link", "set", host.ifname, "down"])
    host.run(["ip", "link", "set", host.ifname, "name", name])
    host.run(["ip", "link", "set", name, "up"])
    host.ifname = name


def setMAC(host, mac):
    """
    Give a lab host's interface the MAC the recipe's inventory names.
    """
    host.run(["ip", "link", "set", host.ifname, "address", mac])
    host.mac = mac


def readBytes(path):
    with open(path, "rb") as f:
        return f.read()


def sha256(data):
    return hashlib.sha256(data).hexdigest()


# The firmware side of the proxyDHCP test, run inside the client's namespace
# (python -c): EDK2's DISCOVER, the REQUEST to the server that offered an
# address, EDK2's boot server REQUEST on 4011, then snponly.efi's DISCOVER
# (iPXE), each the captured packet with this client's MAC and a new xid.

def _summary(packet, source):
    from provisioner.dhcp.wire import MESSAGE_TYPES, OPT
    return {"type": MESSAGE_TYPES.get(packet.messageType), "source": source[0],
            "yiaddr": packet.yiaddr, "siaddr": packet.siaddr,
            "file": packet.file.decode("latin-1"),
            "server": packet.ipOption(OPT.SERVER_ID), "mask": packet.ipOption(OPT.SUBNET_MASK),
            "router": packet.ipOption(OPT.ROUTER),
            "vendor": packet.textOption(OPT.VENDOR_CLASS)}


def pxeClient(ifname, mac):
    """
    Play an EDK2 PXE client and the iPXE it loads, and print what each step
    got as one JSON object: C{offers} (to the DISCOVER), C{ack} (of the
    address), C{bootServer} (the ACK on 4011), C{ipxeOffers}. The address
    acknowledged is configured on C{ifname}.
    """
    import random
    import select
    import socket
    import time

    from provisioner.dhcp import wire
    from provisioner.dhcp.wire import OPT, DHCPPacket

    chaddr = bytes.fromhex(mac.replace(":", ""))

    def golden(name):
        packet = DHCPPacket.from_wire(readBytes(os.path.join(GOLDEN, name + ".bin")))
        packet.chaddr = chaddr
        packet.xid = random.getrandbits(32)
        if packet.option(OPT.CLIENT_ID) is not None:
            packet.setOption(OPT.CLIENT_ID, b"\x01" + chaddr)
        return packet

    def bound(port, address="0.0.0.0"):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, ifname.encode())
        s.bind((address, port))
        return s

    def collect(s, xid, seconds, done=lambda got: False):
        got = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done(got):
            ready, _, _ = select.select([s], [], [], max(0, deadline - time.monotonic()))
            if not ready:
                break
            data, source = s.recvfrom(4096)
            try:
                packet = DHCPPacket.from_wire(data)
            except wire.MalformedPacket:
                continue
            if packet.op == wire.BOOTREPLY and packet.xid == xid and packet.chaddr == chaddr:
                got.append((packet, source))
        return got

    def hasBoth(got):
        return (any(p.yiaddr != "0.0.0.0" for p, _ in got) and
                any(p.yiaddr == "0.0.0.0" for p, _ in got))

    result = {}
    s = bound(68)
    discover = golden("edk2-x64-discover")
    s.sendto(discover.to_wire(), ("255.255.255.255", 67))
    offers = collect(s, discover.xid, 6, hasBoth)
    result["offers"] = [_summary(p, src) for p, src in offers]
    addressOffers = [p for p, _ in offers if p.yiaddr != "0.0.0.0"]
    proxyOffers = [p for p, _ in offers if p.yiaddr == "0.0.0.0"]
    if addressOffers:
        offer = addressOffers[0]
        request = golden("edk2-x64-discover")
        request.xid = discover.xid
        request.setOption(OPT.MESSAGE_TYPE, bytes((wire.DHCPREQUEST,)))
        request.setOption(OPT.REQUESTED_IP, wire.ip2bytes(offer.yiaddr))
        request.setOption(OPT.SERVER_ID, offer.option(OPT.SERVER_ID))
        s.sendto(request.to_wire(), ("255.255.255.255", 67))
        acks = collect(s, request.xid, 6, lambda got: bool(got))
        if acks:
            ack = acks[0][0]
            result["ack"] = _summary(*acks[0])
            prefix = ipaddress.ip_network("0.0.0.0/%s" % (
                ack.ipOption(OPT.SUBNET_MASK) or "255.255.255.0",)).prefixlen
            subprocess.run(["ip", "addr", "add", "%s/%d" % (ack.yiaddr, prefix), "dev", ifname],
                           check=True)
            if proxyOffers:
                server = proxyOffers[0].option(OPT.SERVER_ID)
                server = wire.bytes2ip(server) if server else proxyOffers[0].siaddr
                binl = golden("edk2-x64-bootserver-request")
                binl.ciaddr = ack.yiaddr
                b = bound(4011, ack.yiaddr)
                b.sendto(binl.to_wire(), (server, 4011))
                answers = collect(b, binl.xid, 6, lambda got: bool(got))
                if answers:
                    result["bootServer"] = _summary(*answers[0])
    ipxe = golden("snponly-efi-discover")
    s.sendto(ipxe.to_wire(), ("255.255.255.255", 67))
    result["ipxeOffers"] = [_summary(p, src) for p, src in collect(s, ipxe.xid, 6, hasBoth)]
    sys.stdout.write(json.dumps(result) + "\n")


class RecipeFilesTests(SynchronousTestCase):
    """
    The recipe pages: their files are found, valid and safe to run.
    """

    PAGES = {
        "proxydhcp.md": ("dnsmasq.conf", "provisioner.yaml", "inventory.yaml"),
        "isolated.md": ("provisioner.yaml", "inventory.yaml"),
        "debian-install.md": ("provisioner.yaml", "inventory.yaml", "preseed.cfg"),
    }

    def test_extraction(self):
        """
        If a page marks fenced blocks with C{<!-- recipe: NAME -->}, each is
        returned under its name, exactly (unmarked blocks are left out); a
        marker without a block after it, or a name given twice, is an
        error.
        """
        page = ("text\n\n<!-- recipe: a.yaml -->\n```yaml\nx: 1\n  y: 2\n```\n\n"
                "```\nnot a recipe\n```\n<!-- recipe: b.conf -->\n```\nb\n```\n")
        self.assertEqual(recipeFiles(page), {"a.yaml": "x: 1\n  y: 2\n", "b.conf": "b\n"})
        self.assertRaises(ValueError, recipeFiles, "<!-- recipe: a -->\ntext\n")
        self.assertRaises(ValueError, recipeFiles,
                          "<!-- recipe: a -->\n```\n1\n```\n<!-- recipe: a -->\n```\n2\n```\n")

    def test_pagesHaveTheirFiles(self):
        """
        If the recipe pages are read, each has its files, its configuration
        is valid (as C{provisioner check-config} checks it) and so is its
        inventory.
        """
        for page, names in self.PAGES.items():
            files = recipeFiles(page)
            self.assertEqual(sorted(files), sorted(names), page)
            config = loadConfig(text=files["provisioner.yaml"])
            self.assertTrue(config["dhcp"]["enabled"], page)
            self.assertTrue(config["inventory"]["enabled"], page)
            inventory = parseInventory(files["inventory.yaml"])
            self.assertTrue(inventory.hosts, page)

    def test_addresses(self):
        """
        If an IPv4 address (not a netmask nor 0.0.0.0) appears in a
        recipe's files, it is inside 198.18.0.0/15, so that copying a
        recipe unchanged never points at someone's real network.
        """
        for page in self.PAGES:
            for name, text in recipeFiles(page).items():
                for address in re.findall(r"(?<![\d.])\d+\.\d+\.\d+\.\d+(?![\d.])", text):
                    if address.startswith("255.") or address == "0.0.0.0":
                        continue  # a netmask, or "any address"
                    self.assertIn(ipaddress.ip_address(address), BENCHMARK,
                                  "%s %s: %s" % (page, name, address))

    def test_index(self):
        """
        If the recipes' README is read, it links every recipe page, and the
        boot-once recipe.
        """
        with open(os.path.join(RECIPES, "README.md")) as f:
            index = f.read()
        for page in list(self.PAGES) + ["boot-once.md"]:
            self.assertIn("](%s)" % (page,), index)


class _RecipeBed:
    """
    A lab and the appliance run with a recipe's files in its directory.
    """

    timeout = 180
    subnet = None
    page = None

    def setUpLab(self, hosts, tools=()):
        requireE2E(root=True, netns=True, tools=["busybox", "ip", "tftp", "curl"] + list(tools))
        self.files = recipeFiles(self.page)
        self.directory = os.path.abspath(self.mktemp())
        os.makedirs(self.directory)
        self.lab = NetLab(hosts=0, subnet=self.subnet)
        self.addCleanup(self.lab.close)
        return [self.lab.addHost(addresses=False) for _ in range(hosts)]

    def startAppliance(self, host, names=("provisioner.yaml", "inventory.yaml")):
        """
        Write the recipe's files into the directory, start the appliance in
        C{host} and wait for the image catalogue.
        """
        writeFiles(self.directory, self.files, [n for n in names if n != "provisioner.yaml"])
        self.appliance = Appliance(self.directory, self.files["provisioner.yaml"], host=host)
        self.addCleanup(self.appliance.stop)
        self.appliance.start()
        self.appliance.waitLog("image catalogue ready", 60)
        return self.appliance

    def tftp(self, host, server, name):
        """
        Fetch C{name} from C{server} with tftp-hpa in C{host}; return its
        bytes.
        """
        local = os.path.join(self.directory, "got-" + name.replace("/", "_"))
        result = host.run(["tftp", "-m", "binary", server, "-c", "get", name, local],
                          check=False, timeout=60)
        self.assertTrue(os.path.exists(local) and result.returncode == 0,
                        "tftp get %s: %s\nlog:\n%s" % (
                            name, result.stdout.decode(errors="replace"),
                            self.appliance.log()[-3000:]))
        return readBytes(local)

    def curl(self, host, url):
        """
        Fetch C{url} with curl in C{host}; return its bytes (fail on an
        HTTP error).
        """
        local = os.path.join(self.directory, "curl-%d" % (len(os.listdir(self.directory)),))
        result = host.run(["curl", "-sS", "-f", "-o", local, url], check=False, timeout=120)
        self.assertEqual(result.returncode, 0, "curl %s: %s" % (
            url, result.stdout.decode(errors="replace")))
        return readBytes(local)


class ProxyDHCPRecipeTests(_RecipeBed, TestCase):
    """
    C{docs/recipes/proxydhcp.md}: dnsmasq gives the addresses, provisioner
    (proxy mode) the boot files and menus.
    """

    subnet = 151
    page = "proxydhcp.md"
    SITE = "198.18.151.1"
    APPLIANCE = "198.18.151.10"

    def setUp(self):
        site, server, self.client = self.setUpLab(3, tools=[
            "dnsmasq", os.path.join(IPXE_DIR, "snponly.efi")])
        site.run(["ip", "addr", "add", self.SITE + "/24", "dev", "eth0"])
        server.run(["ip", "addr", "add", self.APPLIANCE + "/24", "dev", "eth0"])
        inventory = parseInventory(self.files["inventory.yaml"])
        self.host = inventory.hosts["node1"]
        setMAC(self.client, self.host.macs[0])
        config = loadConfig(text=self.files["provisioner.yaml"])
        self.assertEqual(config["http"]["address"], self.APPLIANCE)
        renameInterface(server, config["dhcp"]["interfaces"][0])
        writeFiles(self.directory, self.files, ["dnsmasq.conf"])
        self.dnsmasqLog = os.path.join(self.directory, "dnsmasq.log")
        dnsmasq = site.popen([
            "dnsmasq", "--keep-in-foreground", "--port=0", "--pid-file=",
            "--conf-file=" + os.path.join(self.directory, "dnsmasq.conf"),
            "--dhcp-leasefile=" + os.path.join(self.directory, "dnsmasq.leases"),
            "--log-dhcp", "--log-facility=" + self.dnsmasqLog])

        def stopDnsmasq():
            dnsmasq.terminate()
            dnsmasq.wait(10)
        self.addCleanup(stopDnsmasq)
        self.startAppliance(server)
        self.assertIn("DHCP proxy responder on eth0 (%s)" % (self.APPLIANCE,),
                      self.appliance.log())

    def test_pxeClient(self):
        """
        If a UEFI PXE client boots on the recipe's network, its address
        comes from the site's DHCP server and its boot file from
        provisioner's boot server; it fetches C{snponly.efi} over TFTP, and
        the iPXE stage gets C{boot.ipxe}: its inventory host's menu, over
        TFTP and HTTP.
        """
        result = self.client.run(
            [PYTHON, "-c", "import sys; from tests.test_recipes import pxeClient; "
             "pxeClient(*sys.argv[1:])", "eth0", self.client.mac],
            cwd=self.directory, env=dict(os.environ, PYTHONPATH=REPO), timeout=60)
        got = json.loads(result.stdout.decode().strip().splitlines()[-1])
        context = "%r\nprovisioner:\n%s" % (got, self.appliance.log()[-3000:])
        # The address: offered and acknowledged by the site's server only.
        addressed = [o for o in got["offers"] if o["yiaddr"] != "0.0.0.0"]
        self.assertEqual({o["server"] for o in addressed}, {self.SITE}, context)
        self.assertIn("ack", got, context)
        ack = got["ack"]
        self.assertEqual((ack["type"], ack["server"], ack["router"]),
                         ("ACK", self.SITE, self.SITE), context)
        ip = ack["yiaddr"]
        self.assertTrue(100 <= int(ip.rsplit(".", 1)[1]) <= 199, ip)
        # provisioner's proxy offer: no address, PXEClient, redirect (no file).
        proxy = [o for o in got["offers"] if o["server"] == self.APPLIANCE]
        self.assertEqual(len(proxy), 1, context)
        self.assertEqual((proxy[0]["yiaddr"], proxy[0]["vendor"], proxy[0]["file"]),
                         ("0.0.0.0", "PXEClient", ""), context)
        # The boot server on 4011: the NBP.
        self.assertIn("bootServer", got, context)
        self.assertEqual(got["bootServer"]["file"], "snponly.efi", context)
        self.assertEqual(got["bootServer"]["siaddr"], self.APPLIANCE, context)
        self.assertEqual(self.tftp(self.client, self.APPLIANCE, "snponly.efi"),
                         readBytes(os.path.join(IPXE_DIR, "snponly.efi")))
        # iPXE asks again: provisioner gives boot.ipxe, the site an address.
        scripts = [o["file"] for o in got["ipxeOffers"] if o["server"] == self.APPLIANCE]
        self.assertEqual(scripts, ["boot.ipxe"], context)
        self.assertEqual([o["yiaddr"] for o in got["ipxeOffers"] if o["server"] == self.SITE],
                         [ip], context)
        for menu in (self.tftp(self.client, self.APPLIANCE, "boot.ipxe"),
                     self.curl(self.client, "http://%s:8080/boot.ipxe" % (self.APPLIANCE,))):
            self.assertTrue(menu.startswith(b"#!ipxe"), menu)
            self.assertIn(b"node1 (%s)" % (self.client.mac.encode(),), menu)
            self.assertIn(b"Boot from local disk", menu)
        log = self.appliance.log()
        self.assertRegex(log, r"boot decision: %s arch=7 .* -> snponly.efi" % (self.client.mac,))
        self.assertRegex(log, r"boot decision: %s arch=7 .*ipxe=True -> boot.ipxe" % (
            self.client.mac,))
        with open(self.dnsmasqLog) as f:
            self.assertIn("DHCPACK(eth0) %s %s" % (ip, self.client.mac), f.read())

    def test_ordinaryClient(self):
        """
        If a client that does not network-boot (busybox udhcpc) asks for an
        address, the site's server gives it one and provisioner says
        nothing to it.
        """
        script, events = writeUdhcpcScript(self.directory)
        result = self.client.run(["busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t",
                                  "5", "-T", "1", "-s", script], check=False, timeout=60)
        bound = [f for e, f in readEvents(events) if e == "bound"]
        self.assertTrue(bound, result.stdout)
        self.assertEqual((bound[0]["serverid"], bound[0]["boot_file"]), (self.SITE, ""))
        self.assertTrue(bound[0]["ip"].startswith("198.18.151."))
        self.assertNotIn(self.client.mac, self.appliance.log())


class IsolatedRecipeTests(_RecipeBed, TestCase):
    """
    C{docs/recipes/isolated.md}: provisioner alone on its network.
    """

    subnet = 152
    page = "isolated.md"
    SERVER = "198.18.152.1"

    def setUp(self):
        server, self.client = self.setUpLab(2, tools=[os.path.join(IPXE_DIR, "undionly.kpxe")])
        config = loadConfig(text=self.files["provisioner.yaml"])
        renameInterface(server, config["dhcp"]["interfaces"][0])
        server.run(["ip", "addr", "add", self.SERVER + "/24", "dev", server.ifname])
        self.host = parseInventory(self.files["inventory.yaml"]).hosts["web01"]
        setMAC(self.client, self.host.macs[0])
        rescue = os.path.join(self.directory, "images", "rescue")
        os.makedirs(rescue)
        self.kernel = os.urandom(3 << 20)
        with open(os.path.join(rescue, "vmlinuz"), "wb") as f:
            f.write(self.kernel)
        with open(os.path.join(rescue, "initrd.img"), "wb") as f:
            f.write(os.urandom(1 << 20))
        self.startAppliance(server)
        self.appliance.waitLog(r"image catalogue ready: 2 images", 60)

    def test_bootFlow(self):
        """
        If web01 asks for an address as a BIOS PXE client (udhcpc with a PXE
        vendor class), it gets its inventory address, the router and
        C{undionly.kpxe}; over TFTP it fetches the NBP and its menu, and
        over HTTP the same menu and the kernel the menu names.
        """
        script, events = writeUdhcpcScript(self.directory)
        result = self.client.run(
            ["busybox", "udhcpc", "-q", "-n", "-f", "-i", "eth0", "-t", "5", "-T", "1",
             "-V", "PXEClient:Arch:00000:UNDI:002001", "-x", "0x5d:0000", "-s", script],
            check=False, timeout=60)
        bound = [f for e, f in readEvents(events) if e == "bound"]
        self.assertTrue(bound, "%s\n%s" % (result.stdout, self.appliance.log()[-3000:]))
        bound = bound[0]
        self.assertEqual(
            (bound["ip"], bound["router"], bound["serverid"], bound["siaddr"],
             bound["boot_file"]),
            (self.host.vars["ip"], self.SERVER, self.SERVER, self.SERVER, "undionly.kpxe"))
        self.assertEqual(self.tftp(self.client, self.SERVER, "undionly.kpxe"),
                         readBytes(os.path.join(IPXE_DIR, "undionly.kpxe")))
        kernelURL = "http://%s:8080/images/rescue/vmlinuz" % (self.SERVER,)
        for menu in (self.tftp(self.client, self.SERVER, "boot.ipxe"),
                     self.curl(self.client, "http://%s:8080/boot.ipxe" % (self.SERVER,))):
            self.assertIn(b"web01 (%s)" % (self.client.mac.encode(),), menu)
            self.assertIn(b"kernel " + kernelURL.encode(), menu)
            self.assertIn(b"initrd http://%s:8080/images/rescue/initrd.img" % (
                self.SERVER.encode(),), menu)
        self.assertEqual(sha256(self.curl(self.client, kernelURL)), sha256(self.kernel))
        self.assertRegex(self.appliance.log(),
                         r"boot decision: %s arch=0 .* -> undionly.kpxe" % (self.client.mac,))


NETBOOT_PACKAGE = "debian-installer-12-netboot-amd64"
NETBOOT_CACHE = "/var/cache/provisioner-tests"
NETBOOT_DIR = "usr/lib/debian-installer/images/12/amd64/text/debian-installer/amd64"


def debianNetboot(cache=NETBOOT_CACHE):
    """
    Debian 12's netboot installer for amd64 (C{linux}, C{initrd.gz}), from
    the package C{debian-installer-12-netboot-amd64}: downloaded with
    C{apt-get download} into C{cache} the first time, unpacked beside it,
    both reused afterwards.

    @return: a C{dict} of C{"linux"} and C{"initrd.gz"} to their paths.
    @raise SkipTest: (or C{AssertionError} under
        C{PROVISIONER_REQUIRE_E2E=1}) when the package cannot be had.
    """
    os.makedirs(cache, exist_ok=True)

    def debs():
        return sorted(n for n in os.listdir(cache)
                      if n.startswith(NETBOOT_PACKAGE + "_") and n.endswith(".deb"))
    if not debs():
        # As root apt warns that it cannot drop to _apt for the download.
        # Package lists that do not know the package yet: update them once.
        for update in (False, True):
            if update:
                subprocess.run(["apt-get", "update", "-qq"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT)
            download = subprocess.run(["apt-get", "download", NETBOOT_PACKAGE], cwd=cache,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if download.returncode == 0 and debs():
                break
        if not debs():
            requireE2E(tools=["%s (apt-get download: %s)" % (
                NETBOOT_PACKAGE, download.stdout.decode(errors="replace").strip()[-300:])])
    deb = os.path.join(cache, debs()[-1])
    unpacked = deb[:-len(".deb")]
    files = {name: os.path.join(unpacked, NETBOOT_DIR, name) for name in ("linux", "initrd.gz")}
    if not all(os.path.isfile(p) for p in files.values()):
        partial = unpacked + ".part"
        shutil.rmtree(partial, ignore_errors=True)
        os.makedirs(partial)
        subprocess.run("dpkg-deb --fsys-tarfile '%s' | tar -x -C '%s' './%s/linux' "
                       "'./%s/initrd.gz'" % (deb, partial, NETBOOT_DIR, NETBOOT_DIR),
                       shell=True, check=True)
        shutil.rmtree(unpacked, ignore_errors=True)
        os.rename(partial, unpacked)
    return files


class DebianInstallRecipeTests(_RecipeBed, TestCase):
    """
    C{docs/recipes/debian-install.md}: Debian's real netboot kernel and
    initrd and the recipe's preseed, catalogued and named by the host's
    menus (the installer is not booted).
    """

    subnet = 153
    page = "debian-install.md"
    SERVER = "198.18.153.1"
    CLIENT = "198.18.153.50"

    def setUp(self):
        server, self.client = self.setUpLab(2, tools=["apt-get", "dpkg-deb", "tar"])
        netboot = debianNetboot()
        config = loadConfig(text=self.files["provisioner.yaml"])
        renameInterface(server, config["dhcp"]["interfaces"][0])
        server.run(["ip", "addr", "add", self.SERVER + "/24", "dev", server.ifname])
        self.client.run(["ip", "addr", "add", self.CLIENT + "/24", "dev", "eth0"])
        inventory = parseInventory(self.files["inventory.yaml"])
        self.host = inventory.hosts["db01"]
        profile = inventory.profiles[self.host.profile]
        self.entry = [e for e in profile.entries if e["label"] == profile.default_entry][0]
        debian = os.path.join(self.directory, "images", "debian-12")
        os.makedirs(debian)
        self.expected = {}
        for name, path in netboot.items():
            shutil.copy(path, debian)
            self.expected["debian-12/" + name] = sha256(readBytes(path))
        writeFiles(debian, self.files, ["preseed.cfg"])
        self.expected["debian-12/preseed.cfg"] = sha256(self.files["preseed.cfg"].encode())
        self.startAppliance(server)
        self.appliance.waitLog(r"image catalogue ready: 3 images", 120)

    def test_catalogued(self):
        """
        If the recipe's files are in place, the netboot kernel and initrd
        are catalogued as kernel and initrd with their sha256, the preseed
        too, and the install entry names them.
        """
        log = self.appliance.log()
        for name, kind in (("debian-12/linux", "kernel"), ("debian-12/initrd.gz", "initrd"),
                           ("debian-12/preseed.cfg", "other")):
            self.assertRegex(log, r"image %s catalogued: \d+ bytes, %s, sha256 %s" % (
                re.escape(name), kind, self.expected[name]))
        self.assertEqual((self.entry["kernel"], self.entry["initrd"]),
                         ("debian-12/linux", ["debian-12/initrd.gz"]))

    def test_menusAndFiles(self):
        """
        If db01's menus are fetched (iPXE over HTTP, BIOS and UEFI; pxelinux
        and GRUB over TFTP), each boots the netboot kernel and initrd with the install
        command line; kernel, initrd and the preseed at the URL of that
        command line come over HTTP byte for byte.
        """
        mac = self.host.macs[0]
        cmdline = self.entry["cmdline"]
        for word in ("auto=true", "priority=critical", "interface=auto"):
            self.assertIn(word, cmdline.split())
        preseed = re.search(r"(?:^| )url=(\S+)", cmdline).group(1)
        base = "http://%s:8080/images/" % (self.SERVER,)
        self.assertEqual(preseed, base + "debian-12/preseed.cfg")
        for path in ("menus/%s/boot.ipxe" % (mac,), "boot.ipxe?mac=%s&arch=efi-x64" % (mac,)):
            ipxe = self.curl(self.client, "http://%s:8080/%s" % (self.SERVER, path)).decode()
            self.assertIn("db01 (%s)" % (mac,), ipxe)
            self.assertRegex(ipxe, r"\nkernel %sdebian-12/linux .*%s" % (
                re.escape(base), re.escape(cmdline)))
            self.assertIn("\ninitrd %sdebian-12/initrd.gz" % (base,), ipxe)
        pxelinux = self.tftp(self.client, self.SERVER,
                             "pxelinux.cfg/01-" + mac.replace(":", "-")).decode()
        self.assertRegex(pxelinux, r"KERNEL images/debian-12/linux\n")
        self.assertRegex(pxelinux, r"INITRD images/debian-12/initrd.gz\n")
        self.assertRegex(pxelinux, r"APPEND %s" % (re.escape(cmdline),))
        grub = self.tftp(self.client, self.SERVER,
                         "grub/grub.cfg-01-" + mac.replace(":", "-")).decode()
        self.assertRegex(grub, r"linux /images/debian-12/linux %s" % (re.escape(cmdline),))
        self.assertRegex(grub, r"initrd /images/debian-12/initrd.gz\n")
        for url, name in ((base + "debian-12/linux", "debian-12/linux"),
                          (base + "debian-12/initrd.gz", "debian-12/initrd.gz"),
                          (preseed, "debian-12/preseed.cfg")):
            self.assertEqual(sha256(self.curl(self.client, url)), self.expected[name], url)
