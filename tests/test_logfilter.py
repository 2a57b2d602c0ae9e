"""
Tests for L{provisioner.logfilter}.
"""

import io

from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from provisioner.logfilter import levelFromEnvironment, observer


class LogFilterTests(SynchronousTestCase):
    """
    Tests for the twistd log observer.
    """

    def test_level(self):
        """
        The level comes from the environment, default info, nonsense info.
        """
        self.assertEqual(levelFromEnvironment({}), LogLevel.info)
        self.assertEqual(levelFromEnvironment({"PROVISIONER_LOG_LEVEL": "DEBUG"}),
                         LogLevel.debug)
        self.assertEqual(levelFromEnvironment({"PROVISIONER_LOG_LEVEL": "loud"}),
                         LogLevel.info)

    def test_filters(self):
        """
        If the level is info, debug events are dropped and info events are
        written.
        """
        out = io.StringIO()
        log = Logger(observer=observer({}, out), namespace="t")
        log.debug("hidden {x}", x=1)
        log.info("shown {x}", x=2)
        self.assertNotIn("hidden", out.getvalue())
        self.assertIn("shown 2", out.getvalue())
