# -*- test-case-name: tests.test_logformat -*-
"""
Tests for the log's format and level (L{provisioner.logfilter}, the
plugin's C{--log-format} and C{--log-level}, the C{log} section), and for
the control channel's connections logged at debug.
"""

import io
import json
import math
import os
import signal
import subprocess

from twisted.internet.testing import StringTransport
from twisted.logger import Logger, LogLevel, globalLogPublisher
from twisted.python import usage
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from provisioner import logfilter
from provisioner.logfilter import configure, jsonLine, jsonSafe, observer

from tests import netlab

CORE = ("time", "level", "subsystem", "message")


class Thing:
    def __repr__(self):
        return "<Thing at 0xdeadbeef>"

    def __str__(self):
        return "a thing"


class JSONLineTests(SynchronousTestCase):
    """
    L{jsonLine}: one event, one object on one line.
    """

    def event(self, **fields):
        events = []
        log = Logger(namespace="provisioner.test", observer=events.append)
        log.info("sent {path} to {peer}", **fields)
        return events[0]

    def test_fields(self):
        """
        A line has time (UTC, ISO 8601), level, subsystem (the namespace),
        the formatted message and the event's named fields, JSON-safe:
        tuples as lists, bytes decoded, a float that is not finite and
        any other object as text (C{str}, not a repr).
        """
        line = jsonLine(self.event(path=b"boot.ipxe", peer=("10.0.0.5", 2070),
                                   rate=float("nan"), thing=Thing()))
        self.assertTrue(line.endswith("\n"))
        self.assertEqual(line.count("\n"), 1)
        out = json.loads(line)
        self.assertRegex(out["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual((out["level"], out["subsystem"]), ("info", "provisioner.test"))
        self.assertEqual(out["path"], "boot.ipxe")
        self.assertEqual(out["peer"], ["10.0.0.5", 2070])
        self.assertEqual((out["rate"], out["thing"]), ("nan", "a thing"))
        self.assertIn("sent", out["message"])
        self.assertNotIn("log_format", out)

    def test_coreNames(self):
        """
        A field named like a key every line has keeps its value under its
        name with C{_} after it.
        """
        events = []
        Logger(namespace="n", observer=events.append).warn("x {subsystem}", subsystem="mine")
        out = json.loads(jsonLine(events[0]))
        self.assertEqual((out["subsystem"], out["subsystem_"], out["message"]),
                         ("n", "mine", "x mine"))

    def test_failure(self):
        """
        A failure's line carries its traceback.
        """
        events = []
        try:
            1 / 0
        except ZeroDivisionError:
            Logger(namespace="n", observer=events.append).failure("it broke", Failure())
        out = json.loads(jsonLine(events[0]))
        self.assertEqual(out["level"], "critical")
        self.assertIn("ZeroDivisionError", out["traceback"])

    def test_jsonSafe(self):
        """
        Containers are made JSON-safe all the way down; keys become text.
        """
        self.assertEqual(jsonSafe({1: {b"x", }, "t": (1.5, None, True)}),
                         {"1": ["x"], "t": [1.5, None, True]})
        self.assertEqual(jsonSafe(math.inf), "inf")
        self.assertEqual(jsonSafe(b"\xff"), "\\xff")


class ObserverTests(SynchronousTestCase):
    """
    L{observer} as L{configure} set it.
    """

    def setUp(self):
        self.addCleanup(configure)

    def test_jsonAtLevel(self):
        """
        With format json and level warn, info events are dropped and a warn
        event is one JSON line.
        """
        configure(format="json", level="warn")
        out = io.StringIO()
        log = Logger(observer=observer({}, out), namespace="t")
        log.info("hidden {x}", x=1)
        log.warn("shown {x}", x=2)
        [line] = out.getvalue().splitlines()
        self.assertEqual(json.loads(line)["message"], "shown 2")

    def test_levelBeforeEnvironment(self):
        """
        A configured level wins over C{PROVISIONER_LOG_LEVEL}; with none,
        the environment's applies.
        """
        configure(level="debug")
        out = io.StringIO()
        Logger(observer=observer({"PROVISIONER_LOG_LEVEL": "error"}, out),
               namespace="t").debug("seen")
        self.assertIn("seen", out.getvalue())
        configure()
        out = io.StringIO()
        Logger(observer=observer({"PROVISIONER_LOG_LEVEL": "error"}, out),
               namespace="t").warn("dropped")
        self.assertEqual(out.getvalue(), "")

    def test_logfile(self):
        """
        With no C{PROVISIONER_LOG_FILE}, the observer writes to twistd's
        C{--logfile}.
        """
        path = os.path.abspath(self.mktemp())
        configure(format="json", logfile=path)
        log = Logger(observer=observer({}), namespace="t")
        log.info("to the file")
        with open(path) as f:
            self.assertEqual(json.loads(f.read())["message"], "to the file")


class OptionsTests(SynchronousTestCase):
    """
    The plugin's options.
    """

    def setUp(self):
        self.addCleanup(configure)
        self.patch(os, "environ", {k: v for k, v in os.environ.items()
                                   if k != "PROVISIONER_LOG_LEVEL"})

    def parse(self, *args, parent=None):
        from provisioner.tap import Options
        options = Options()
        if parent is not None:
            options.parent = parent
        options.parseOptions(["--tftp-port", "0"] + list(args))
        return options

    def refusal(self, *args):
        error = self.assertRaises(usage.UsageError, self.parse, *args)
        self.assertNotIn("\n", str(error))
        return str(error)

    def test_badLevel(self):
        """
        A level that is not one is refused in one line naming the option,
        the environment variable or the key.
        """
        self.assertTrue(self.refusal("--log-level", "loud").startswith("--log-level: "))
        self.assertTrue(self.refusal("--log-format", "xml").startswith("--log-format: "))
        self.assertIn("log.level: must be one of", self.refusal("--set", "log.level=loud"))
        os.environ["PROVISIONER_LOG_LEVEL"] = "noisy"
        self.assertTrue(self.refusal().startswith("PROVISIONER_LOG_LEVEL: "))

    def test_configured(self):
        """
        The flags reach the configuration and the observer's settings; the
        flag's level wins over the environment and the file.
        """
        os.environ["PROVISIONER_LOG_LEVEL"] = "error"
        options = self.parse("--log-format", "json", "--log-level", "DEBUG")
        self.assertEqual(options["loaded"]["log"], {"format": "json", "level": "debug"})
        self.assertEqual((logfilter.settings()["format"], logfilter.settings()["level"]),
                         ("json", "debug"))

    def test_installsObserver(self):
        """
        If a log setting is given and twistd has no C{--logger}, the plugin
        names its observer as twistd's logger and records twistd's
        C{--logfile}; with no log setting, or another logger, twistd's is
        left alone.
        """
        parent = {"logger": None, "logfile": "/var/log/p.log", "nodaemon": True}
        self.parse("--log-format", "json", parent=parent)
        self.assertEqual(parent["logger"], "provisioner.logfilter.observer")
        self.assertEqual(logfilter.settings()["logfile"], "/var/log/p.log")
        parent = {"logger": None}
        self.parse(parent=parent)
        self.assertIsNone(parent["logger"])
        mine = object()
        parent = {"logger": mine}
        self.parse("--log-level", "warn", parent=parent)
        self.assertIs(parent["logger"], mine)


class ControlChannelTests(SynchronousTestCase):
    """
    The imagecast control channel's connections are logged at debug.
    """

    def test_connectionAtDebug(self):
        """
        A control connection that opens and closes logs nothing above
        debug (AMP logged two info lines with address reprs), and its
        factory is not noisy.
        """
        from provisioner.config import loadConfig
        from provisioner.imagecast.controller import Controller
        from provisioner.imagecast.service import ControlFactory
        from twisted.internet.task import Clock
        from twisted.internet.address import IPv4Address
        config = loadConfig(None, [("imagecast.authentication", "none")])["imagecast"]
        factory = ControlFactory(Controller(Clock(), config), ["127.0.0.0/8"])
        self.assertFalse(factory.noisy)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000))
        protocol.makeConnection(transport)
        protocol.connectionLost(Failure(Exception("closed")))
        self.assertEqual([e for e in events if e["log_level"] > LogLevel.debug], [])
        self.assertEqual(len([e for e in events if "control connection" in e["log_format"]]),
                         2)


class ApplianceLogTests(TestCase):
    """
    The appliance run by twistd with C{log.format: json}.
    """

    timeout = 90

    def test_everyLineJSON(self):
        """
        If the appliance logs in JSON while it serves a file, refuses a
        missing one, refuses a bad reload and stops, every line of its log
        parses, with time, level, subsystem and message, and the transfer's
        line carries its fields.
        """
        netlab.requireE2E(tools=["tftp"])
        directory = os.path.abspath(self.mktemp())
        root = os.path.join(directory, "root")
        os.makedirs(root)
        with open(os.path.join(root, "hello.bin"), "wb") as f:
            f.write(b"x" * 3000)
        config = ("tftp:\n  port: 0\n  root: %s\nlog:\n  format: json\n  level: debug\n" % (
            root,))
        appliance = netlab.Appliance(directory, config)
        self.addCleanup(appliance.stop)
        appliance.start()
        port = appliance.listeningPort("TFTP")
        for name in ("hello.bin", "missing.bin"):
            subprocess.run(["tftp", "-m", "binary", "127.0.0.1", str(port), "-c", "get", name,
                            os.path.join(directory, name)], timeout=30, check=False,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        appliance.waitLog("missing.bin")
        appliance.waitLog("hello.bin.*complete")
        appliance.writeConfig(config + "tftp_typo: 1\n")
        appliance.signal(signal.SIGHUP)
        appliance.waitLog("reload refused")
        appliance.stop()
        lines = appliance.log().splitlines()
        self.assertGreater(len(lines), 5)
        records = []
        for line in lines:
            record = json.loads(line)
            self.assertEqual([k for k in CORE if not isinstance(record.get(k), str)], [], line)
            records.append(record)
        [transfer] = [r for r in records if r.get("outcome") == "complete"]
        self.assertEqual((transfer["path"], transfer["bytes"], transfer["level"]),
                         ("hello.bin", 3000, "info"))
        self.assertEqual(transfer["subsystem"], "provisioner.tftp.server.TFTPServer")
        self.assertIn("debug", {r["level"] for r in records})
        self.assertIn("error", {r["level"] for r in records if "reload" in r["message"]})


class BadLevelTests(TestCase):
    """
    twistd given a bad level.
    """

    timeout = 60

    def test_oneLine(self):
        """
        If C{--log-level} is not a level, twistd exits with one line naming
        the option, and no traceback.
        """
        directory = os.path.abspath(self.mktemp())
        os.makedirs(directory)
        out = subprocess.run(netlab.TWISTD + ["-n", "--pidfile=", "provisioner", "--tftp-port",
                                              "0", "--log-level", "loud"], cwd=directory,
                             env=dict(os.environ, PYTHONPATH=netlab.REPO),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=50)
        text = out.stdout.decode()
        self.assertEqual(out.returncode, 1, text)
        self.assertNotIn("Traceback", text)
        self.assertRegex(text.rstrip().splitlines()[-1],
                         r": --log-level: must be one of debug, info, warn, error, critical "
                         r"\(got 'loud'\)$")
