# -*- test-case-name: tests.test_imagecast_cli -*-
"""
Tests for L{provisioner.imagecast.cli}: the operator's C{provisioner
imagecast send|status} (parsing and the printed scorecard; a whole session
is in L{tests.test_imagecast_e2e}).
"""

import io
import sys

from twisted.trial.unittest import SynchronousTestCase

from provisioner import cli
from provisioner.imagecast import cli as imagecastCLI


def _card(**overrides):
    session = {
        "session": 42, "name": "disk.img", "size": 1000, "sha256": "ab" * 32,
        "state": "done", "round": 2, "rate_mbps": 400.0, "group": "239.255.42.1",
        "port": 7011, "permanent_group": ["a", "b"], "current_group": [],
        "complete": ["a"],
        "rounds": [{"round": 1, "bytes": 1000, "ranges": 1, "datagrams": 1,
                    "rate_mbps": 400.0, "reports": {"a": 100, "b": 0}},
                   {"round": 2, "bytes": 100, "ranges": 1, "datagrams": 1,
                    "rate_mbps": 500.0, "reports": {"a": 0}}],
        "members": {"a": {"address": "198.18.0.2", "state": "complete", "reason": None},
                    "b": {"address": "198.18.0.3", "state": "failed",
                          "reason": "disk full"}},
        "tail_bytes": 0, "unrecoverable_bytes": 0,
    }
    session.update(overrides)
    return {"sessions": [session], "receivers": ["a", "b"]}


class ParserTests(SynchronousTestCase):
    """
    The C{imagecast} subcommands of C{provisioner}.
    """

    def test_send(self):
        """
        If C{imagecast send} is given the start conditions, they reach its
        handler, with the connection options.
        """
        args = cli.buildParser().parse_args([
            "imagecast", "send", "disk.img", "--min-receivers", "3", "--max-wait", "5",
            "--rate", "100", "--max-rounds", "4", "--server", "198.18.0.1"])
        self.assertIs(args.func, imagecastCLI._send)
        self.assertEqual((args.image, args.min_receivers, args.max_wait, args.rate,
                          args.max_rounds, args.server), ("disk.img", 3, 5.0, 100.0, 4,
                                                          "198.18.0.1"))

    def test_noSubcommand(self):
        """
        If C{imagecast} comes without a subcommand, the usage goes to
        standard error and the exit status is 2.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(cli.main(["imagecast"]), 2)
        self.assertIn("send", err.getvalue())
        self.assertIn("status", err.getvalue())


class PrintCardTests(SynchronousTestCase):
    """
    Tests for the scorecard as C{status} and C{send} print it.
    """

    def printed(self, card):
        out = io.StringIO()
        imagecastCLI._printCard(card, out)
        return out.getvalue().splitlines()

    def test_session(self):
        """
        If a session is printed, its line, its groups, every round with the
        bytes each receiver still missed, and every receiver with its state
        and reason are there.
        """
        lines = self.printed(_card())
        self.assertEqual(lines[0], "session 42: disk.img (1000 bytes, sha256 abababababababab) "
                                   "done, round 2, 400.0 Mbit/s, group 239.255.42.1:7011")
        self.assertEqual(lines[1:3], ["  permanent group: a, b", "  current group:   -"])
        self.assertEqual(lines[3:5], [
            "  round 1: 1000 bytes in 1 ranges, 1 datagrams, 400.0 Mbit/s; missing after it: "
            "a=100, b=0",
            "  round 2: 100 bytes in 1 ranges, 1 datagrams, 500.0 Mbit/s; missing after it: "
            "a=0"])
        self.assertEqual(lines[5:], ["  a (198.18.0.2): complete",
                                     "  b (198.18.0.3): failed - disk full"])

    def test_tailAndUnrecoverable(self):
        """
        If bytes went over the control channel, the card says how many and
        why.
        """
        lines = self.printed(_card(tail_bytes=300, unrecoverable_bytes=0))
        self.assertIn("  last 300 bytes sent over the control channel (fewer than tail_bytes "
                      "after a repair round)", lines)
        lines = self.printed(_card(tail_bytes=0, unrecoverable_bytes=700))
        self.assertIn("  unrecoverable by multicast: 700 bytes (sent over the control "
                      "channel)", lines)

    def test_noSessions(self):
        """
        If there is no session, the card says so.
        """
        self.assertEqual(self.printed({"sessions": [], "receivers": []}), ["no sessions"])
