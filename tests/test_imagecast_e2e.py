"""
End-to-end tests of control-channel multicast: the appliance runs under
twistd in a sender namespace, receivers run C{python -m provisioner receive}
in their own namespaces on one bridge, loss comes from iptables statistic.

The sender's lab interface has C{gso_max_segs 1}: the kernel then cuts UDP
GSO batches into single datagrams before the veth, as a real NIC does on
the wire, so that the iptables loss on the receivers applies per datagram.

The appliance authenticates receivers (C{imagecast.authentication:
secret}, the default): each receiver's secret is added to the lab's
receivers file and given to it with C{--secret-file}.
"""

import binascii
import hashlib
import json
import os
import re
import signal
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from provisioner.imagecast import ranges as R
from tests.netlab import PYTHON, REPO, Appliance, NetLab, requireE2E

PROVISIONER = [PYTHON, "-m", "provisioner"]


_WATCHER = """
import os, signal, sys
from twisted.internet import endpoints, protocol, reactor, task
from twisted.protocols import amp
from provisioner.imagecast import commands
session, pid = int(sys.argv[1]), int(sys.argv[2])

def poll(proto):
    def check(result):
        card = result["scorecard"]["sessions"][0]
        if card["round"] >= 2 or card["state"] == "done":
            if card["round"] == 2:
                os.kill(pid, signal.SIGSTOP)
            print("round %d" % (card["round"],), flush=True)
            reactor.stop()
        else:
            reactor.callLater(0.02, poll, proto)
    proto.callRemote(commands.Status, session=session).addCallback(check)

ep = endpoints.TCP4ClientEndpoint(reactor, "127.0.0.1", 7010)
ep.connect(protocol.Factory.forProtocol(amp.AMP)).addCallback(poll)
reactor.run()
"""


class MulticastLab:
    """
    A sender namespace running the appliance and receiver namespaces.
    """

    def __init__(self, case, receivers, size, rate=200, extra="", reportTimeout=5):
        """
        @param extra: more lines of the C{imagecast} section.
        """
        requireE2E(netns=True, tools=("ip", "iptables"))
        self.case = case
        self.dir = os.path.abspath(case.mktemp())
        os.makedirs(os.path.join(self.dir, "images"))
        self.image = os.path.join(self.dir, "images", "disk.img")
        with open(self.image, "wb") as f:
            f.write(os.urandom(size))
        with open(self.image, "rb") as f:
            self.sha256 = hashlib.sha256(f.read()).hexdigest()
        self.lab = NetLab(hosts=receivers + 1, subnet=40)
        case.addCleanup(self.lab.close)
        self.sender = self.lab.hosts[0]
        self.sender.run(["ip", "link", "set", "dev", "eth0", "gso_max_segs", "1"])
        self.env = dict(os.environ, PYTHONPATH=REPO)
        # receivers are added to it as they start (the appliance reads it
        # again when it changes)
        self.receiversFile = os.path.join(self.dir, "receivers")
        with open(self.receiversFile, "w") as f:
            f.write("# id secret\n")
        os.chmod(self.receiversFile, 0o600)
        self.appliance = Appliance(
            self.dir, "tftp: {enabled: false}\n"
            "imagecast:\n  enabled: true\n  address: 0.0.0.0\n  root: %s\n"
            "  interface: %s\n  rate: %s\n  report_timeout: %s\n  client_timeout: 20\n"
            "  receivers_file: %s\n%s" % (
                os.path.join(self.dir, "images"), self.sender.ip, rate, reportTimeout,
                self.receiversFile, extra), host=self.sender)
        self.appliance.start(ready="imagecast control channel on", timeout=120)
        self.receivers = {}

    def lossy(self, host, probability):
        host.loss(probability, chain="INPUT", protocol="udp")
        host.loss(probability, chain="INPUT", protocol="tcp")
        host.loss(probability, chain="OUTPUT", protocol="tcp")

    def secretArgs(self, name):
        """
        Give receiver C{name} a secret: a line of the receivers file and a
        file of its own.

        @return: the C{receive} arguments that pass it.
        """
        path = os.path.join(self.dir, name + ".secret")
        if not os.path.exists(path):
            secret = binascii.hexlify(os.urandom(32)).decode()
            with open(path, "w") as f:
                f.write(secret + "\n")
            with open(self.receiversFile, "a") as f:
                f.write("%s %s\n" % (name, secret))
        return ["--secret-file", path]

    def receive(self, host, name, prefix=(), extra=()):
        out = os.path.join(self.dir, name)
        log = open(os.path.join(self.dir, name + ".log"), "wb")
        self.case.addCleanup(log.close)
        argv = list(prefix) + PROVISIONER + [
            "receive", "--server", self.sender.ip, "--output", out, "--id", name,
            "--json", "-q", "--timeout", "30"] + self.secretArgs(name) + list(extra)
        proc = host.popen(argv, env=self.env, stdout=log)
        self.receivers[name] = (proc, out, log)
        return proc

    def send(self, minReceivers, maxWait=20):
        proc = self.sender.popen(PROVISIONER + [
            "imagecast", "send", "disk.img", "--min-receivers", str(minReceivers),
            "--max-wait", str(maxWait), "--json"], env=self.env, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        first = proc.stderr.readline().decode()
        m = re.match(r"session (\d+):", first)
        if not m:
            raise AssertionError("send did not start a session: %r %r" % (
                first, proc.stderr.read()))
        return proc, int(m.group(1))

    def status(self, session=None, detail=False):
        argv = PROVISIONER + ["imagecast", "status", "--json"]
        if session is not None:
            argv += ["--session", str(session)]
        if detail:
            argv.append("--detail")
        out = subprocess.run(self.sender.argv(argv), env=self.env, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL).stdout
        return json.loads(out.decode())

    def summary(self, name):
        proc, out, log = self.receivers[name]
        with open(os.path.join(self.dir, name + ".log"), "rb") as f:
            text = f.read().decode(errors="replace")
        for line in reversed(text.splitlines()):
            if line.startswith("{"):
                return json.loads(line), text
        return None, text

    def finish(self, proc, timeout=180):
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            raise AssertionError("send did not finish: %s" % (err.decode()[-2000:],))
        return proc.returncode, json.loads(out.decode()), err.decode()

    def assertByteExact(self, name):
        proc, out, log = self.receivers[name]
        self.case.assertEqual(proc.wait(60), 0, self.summary(name)[1][-2000:])
        with open(out, "rb") as f:
            self.case.assertEqual(hashlib.sha256(f.read()).hexdigest(), self.sha256,
                                  "%s is not byte-exact" % (name,))


def _assertRoundTwoIsUnion(case, card):
    """
    Round 2 carried exactly the coalesced union of what was reported after
    round 1 (the gap rule with coalesce_gap 0 adds no bytes).
    """
    if len(card["rounds"]) < 2:
        return
    reports = []
    for cid, m in card["members"].items():
        ranges = m.get("reported_ranges", {}).get("1")
        if ranges:
            reports.append([tuple(r) for r in ranges])
    union = R.coalesce(R.union(*reports))
    case.assertEqual(card["rounds"][1]["bytes"], R.total(union))
    case.assertEqual(card["rounds"][1]["ranges"], len(union))


class LossTests(SynchronousTestCase):
    """
    Eight receivers at 0%, 2% and 10% loss on data and control packets.
    """

    def _session(self, loss):
        lab = MulticastLab(self, receivers=8, size=4 << 20)
        names = []
        for i, host in enumerate(lab.lab.hosts[1:]):
            lab.lossy(host, loss)
            name = "r%d" % (i,)
            lab.receive(host, name)
            names.append(name)
        proc, session = lab.send(minReceivers=8)
        status, card, err = lab.finish(proc)
        self.assertEqual(status, 0, err)
        for name in names:
            lab.assertByteExact(name)
        self.assertEqual(sorted(card["complete"]), sorted(names))
        detail = lab.status(session, detail=True)["sessions"][0]
        _assertRoundTwoIsUnion(self, detail)
        return card

    def test_noLoss(self):
        """
        If nothing is lost, one round delivers the image to all eight,
        byte-exact.
        """
        card = self._session(0.0)
        self.assertEqual(len(card["rounds"]), 1)

    def test_twoPercent(self):
        """
        If 2% of data and control packets are lost, every receiver still
        ends byte-exact, and round 2 is exactly the union of the reports.
        """
        card = self._session(0.02)
        self.assertGreaterEqual(len(card["rounds"]), 2)

    def test_tenPercent(self):
        """
        If 10% of data and control packets are lost, every receiver still
        ends byte-exact (none is dropped), and round 2 is exactly the union
        of the reports.
        """
        card = self._session(0.10)
        self.assertGreaterEqual(len(card["rounds"]), 2)


class ChurnTests(SynchronousTestCase):
    """
    A late joiner, a receiver killed and restarted, a spoofed datagram and a
    full disk, in one session.
    """

    def test_churn(self):
        """
        If a receiver joins during round 2, another is killed and restarted,
        spoofed datagrams arrive and one receiver's disk is full: the
        spoofed datagrams are rejected, the full disk gives a clear error
        and is recorded, the restarted one resumes, and every other receiver
        ends byte-exact.
        """
        requireE2E(netns=True, tools=("ip", "iptables", "unshare", "mount"))
        lab = MulticastLab(self, receivers=7, size=8 << 20, rate=40,
                           extra="  max_wait: 0\n", reportTimeout=20)
        hosts = lab.lab.hosts[1:]
        steady = ["s0", "s1", "s2"]
        for name, host in zip(steady, hosts[:3]):
            lab.lossy(host, 0.02)
            lab.receive(host, name)
        lab.lossy(hosts[3], 0.02)
        lab.receive(hosts[3], "restarted")
        small = os.path.join(lab.dir, "small")
        os.makedirs(small)
        lab.receive(hosts[4], "full", prefix=[
            "unshare", "-m", "--propagation", "private", "sh", "-c",
            'mount -t tmpfs -o size=1m tmpfs "$0" && exec "$@"', small],
            extra=["--output", os.path.join(small, "disk.img")])
        attacker = hosts[6]
        proc, session = lab.send(minReceivers=5)
        # spoofed datagrams: the right session id, group and port, no key;
        # for bytes near the end of the image, which the receivers do not
        # hold yet while round 1 runs (a datagram for bytes already held is
        # dropped before its tag is checked, and not counted)
        spoof = (
            "import socket,struct,time\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_IF,socket.inet_aton('%s'))\n"
            "for i in range(400):\n"
            "  o=%d-1000*(1+i)\n"
            "  h=struct.pack('!BIHHIH',1,%d,1,0,o,1000)\n"
            "  s.sendto(h+b'X'*1000+b'\\0'*12,('239.255.42.1',7011))\n"
            "  s.sendto(struct.pack('!BIHHIH',1,%d,2,0,o,1000)+b'Y'*1012,('239.255.42.1',7011))\n"
            "  time.sleep(0.01)\n" % (attacker.ip, 8 << 20, session, session))
        attackerProc = attacker.popen([PYTHON, "-c", spoof])
        # kill the restarted one once it has saved some progress
        state = os.path.join(lab.dir, "restarted.imagecast-state")
        deadline = time.time() + 60
        while not os.path.exists(state) and time.time() < deadline:
            time.sleep(0.05)
        self.assertTrue(os.path.exists(state), "no progress saved before the kill")
        victim = lab.receivers["restarted"][0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        # the late joiner comes in during round 2: a watcher on the sender
        # polls the scorecard over one control connection and, as soon as
        # round 2 is announced, stops one steady receiver (SIGSTOP), so that
        # round 2 waits for its report (report_timeout) while the late
        # joiner starts; it is continued afterwards
        paused = lab.receivers["s0"][0]
        watcher = lab.sender.popen([PYTHON, "-c", _WATCHER, str(session), str(paused.pid)],
                                   env=lab.env, stdout=subprocess.PIPE)
        line = watcher.stdout.readline().decode().strip()
        watcher.wait(30)
        self.assertEqual(line, "round 2", "the session did not reach round 2 as expected")
        lab.lossy(hosts[5], 0.02)
        lab.receive(hosts[5], "late")
        deadline = time.time() + 60
        while time.time() < deadline:
            card = lab.status(session)["sessions"][0]
            if "late" in card["permanent_group"]:
                break
            time.sleep(0.2)
        paused.send_signal(signal.SIGCONT)
        self.assertEqual(card["round"], 2, "the late joiner did not enroll during round 2")
        lab.receive(hosts[3], "restarted")
        attackerProc.wait(30)
        status, card, err = lab.finish(proc)
        for name in steady + ["late", "restarted"]:
            lab.assertByteExact(name)
        summary, text = lab.summary("restarted")
        self.assertGreater(summary["bytes_resumed"], 0, text)
        rejected = sum(lab.summary(n)[0]["rejected_datagrams"] for n in steady)
        self.assertGreater(rejected, 0)
        fullProc = lab.receivers["full"][0]
        self.assertEqual(fullProc.wait(30), 1)
        summary, text = lab.summary("full")
        self.assertIn("disk full", text)
        self.assertEqual(card["members"]["full"]["state"], "failed")
        self.assertIn("disk full", card["members"]["full"]["reason"])
        self.assertEqual(status, 1, "send must report the receiver that failed")
        self.assertIn("late", card["permanent_group"])
        self.assertGreaterEqual(card["members"]["restarted"]["reconnects"], 1)
        detail = lab.status(session, detail=True)["sessions"][0]
        _assertRoundTwoIsUnion(self, detail)


# A registered attacker (issue 14, finding 3): it registers with its own
# secret, so it is sent everything a receiver is (the data key, the
# session, group and port, the piece digests), and multicasts datagrams
# with valid tags and its own bytes for every datagram of the first two
# rounds, from the end of each round backwards (ahead of the sender, which
# goes forwards), then leaves.
_ATTACKER = """
import socket, sys
from twisted.internet import endpoints, protocol, reactor
from twisted.protocols import amp
from provisioner.imagecast import commands
from provisioner.imagecast.datagram import SessionKey
server, iface, name, secretPath = sys.argv[1:5]
with open(secretPath, "rb") as f:
    secret = f.read().split()[-1]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(iface))
state = {"forged": 0}

def forge(session, chunk, group, port, key, roundNumber, ranges):
    signer = SessionKey(key, session, fast=False)
    for start, end in reversed(ranges):
        for offset in reversed(range(start, end, chunk)):
            size = min(chunk, end - offset)
            sock.sendto(signer.encode(roundNumber, offset, b"\\xee" * size), (group, port))
            state["forged"] += 1
    if roundNumber >= 2:
        d = state["proto"].callRemote(commands.Leave, session=session, reason="done")
        d.addBoth(lambda _: reactor.callLater(0.5, reactor.stop))

class Mallory(amp.CommandLocator):
    @commands.Pieces.responder
    def pieces(self, session, pieceSize, digests):
        return {}

    @commands.Announce.responder
    def announce(self, session, name, size, sha256, chunkSize, ranges, group, port, key,
                 round):
        if round <= 2:
            reactor.callLater(0, forge, session, chunkSize, group, port, key, round, ranges)
        return {}

    @commands.EndRound.responder
    def endRound(self, session, round):
        return {}

    @commands.EndSession.responder
    def endSession(self, session, unrecoverable, reason=None):
        reactor.callLater(0, reactor.stop)
        return {}

    @commands.Ping.responder
    def ping(self):
        return {}

def connected(proto):
    state["proto"] = proto

    def register(challenge):
        proof = commands.registrationProof(secret, challenge["nonce"], name,
                                           challenge["server"])
        return proto.callRemote(commands.Register, clientId=name, address=iface,
                                proof=proof)
    d = proto.callRemote(commands.Challenge).addCallback(register)
    d.addCallback(lambda _: print("registered", flush=True))

ep = endpoints.TCP4ClientEndpoint(reactor, server, 7010)
ep.connect(protocol.Factory.forProtocol(lambda: amp.AMP(locator=Mallory()))).addCallback(
    connected)
reactor.callLater(60, reactor.stop)
reactor.run()
print("forged %d" % (state["forged"],), flush=True)
"""


class RegisteredAttackerTests(SynchronousTestCase):
    """
    A registered receiver that forges data for the others.
    """

    def test_forgedDataRejected(self):
        """
        If a registered attacker multicasts datagrams with valid tags and
        its own bytes ahead of the sender in the first two rounds, the
        receivers drop the pieces that do not match their digests, get
        them again, and end byte-exact with C{sha256 ok}; the scorecard
        counts them complete and the attacker as failed.
        """
        lab = MulticastLab(self, receivers=3, size=4 << 20)
        names = ["r0", "r1"]
        for name, host in zip(names, lab.lab.hosts[1:3]):
            lab.receive(host, name)
        attacker = lab.lab.hosts[3]
        secret = lab.secretArgs("mallory")[1]
        proc = attacker.popen([PYTHON, "-c", _ATTACKER, lab.sender.ip, attacker.ip,
                               "mallory", secret], env=lab.env, stdout=subprocess.PIPE)
        self.assertEqual(proc.stdout.readline().decode().strip(), "registered")
        send, session = lab.send(minReceivers=3)
        status, card, err = lab.finish(send)
        out = proc.communicate(timeout=60)[0].decode()
        self.assertIn("forged", out)
        for name in names:
            lab.assertByteExact(name)
        rejected = sum(lab.summary(n)[0]["pieces_rejected"] for n in names)
        self.assertGreater(rejected, 0, "no forged piece reached a receiver: %s" % (out,))
        self.assertEqual(sorted(card["complete"]), names)
        self.assertEqual(card["members"]["mallory"]["state"], "failed")
