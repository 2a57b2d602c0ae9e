# -*- test-case-name: tests.test_images -*-
"""
The C{images} service: keeps L{provisioner.images.catalog.Catalog} in step
with the watched directory and publishes it as C{appliance.catalog}.

Other services serve images by adding C{appliance.catalog.resolver} (an
L{provisioner.interfaces.IFileResolver}) to their resolver chain; it serves
only catalogued files, as C{<images.prefix>/<name>}. When the TFTP service
runs (C{appliance.tftp}), this service inserts the resolver into its chain
itself, right after the virtual files; the HTTP service asks it directly.
"""

import os

from twisted.application import service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from provisioner.images.catalog import Catalog
from provisioner.images.watch import makeWatcher

__all__ = ["ImagesService", "makeService"]


class ImagesService(service.Service):
    """
    Watch C{images.directory}, hash new files in a thread pool, persist the
    catalogue in C{images.state_dir}.

    @ivar catalog: the L{Catalog} (also C{appliance.catalog}).
    @ivar ready: a Deferred that fires when the first scan after start is
        complete.
    """

    log = Logger()

    def __init__(self, appliance, runInThread=None):
        self.appliance = appliance
        self.reactor = appliance.reactor
        self.section = dict(appliance.config["images"])
        self._runInThread = runInThread
        self._pool = None
        self._watcher = None
        self._rescanCall = None
        self._unhookTFTP = None
        self.ready = defer.Deferred()
        self.catalog = self._makeCatalog(self.section)
        appliance.catalog = self.catalog

    def _makeCatalog(self, section):
        return Catalog(self.reactor, section["directory"], stateDir=section["state_dir"],
                       prefix=section["prefix"], ignore=section["ignore"],
                       kinds=section["kinds"], runInThread=self._inThread,
                       retryDelay=min(section["poll_interval"], 1.0), saveDelay=0.5,
                       followSymlinks=section["follow_symlinks"])

    def _inThread(self, f, *args):
        if self._runInThread is not None:
            return self._runInThread(f, *args)
        if self._pool is None:
            return defer.maybeDeferred(f, *args)
        return deferToThreadPool(self.reactor, self._pool, f, *args)

    def startService(self):
        service.Service.startService(self)
        section = self.section
        for path in (section["directory"], section["state_dir"]):
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                self.log.error("cannot create {path}: {error}", path=path,
                               error=e.strerror or str(e))
        if self._runInThread is None:
            self._pool = ThreadPool(minthreads=0, maxthreads=section["hash_threads"],
                                    name="provisioner-images-hash")
            self._pool.start()
        self._startWatching()
        self._hookTFTP()

    def _hookTFTP(self):
        """
        Put the catalogue's resolver in the TFTP service's chain (after the
        virtual files, before the TFTP root), when TFTP runs.
        """
        tftp = getattr(self.appliance, "tftp", None)
        addResolver = getattr(tftp, "addResolver", None)
        if addResolver is None or self._unhookTFTP is not None:
            return
        chain = getattr(getattr(tftp, "resolvers", None), "resolvers", ())
        if self.catalog.resolver in chain:
            return  # TFTP took it from appliance.catalog itself
        self._unhookTFTP = addResolver(self.catalog.resolver, 0)
        self.log.info("images served over TFTP as {prefix}/NAME",
                      prefix=self.catalog.prefix or "")

    def _startWatching(self):
        section = self.section
        catalog = self.catalog
        restored = catalog.restore()
        self._watcher = makeWatcher(self.reactor, catalog.directory, self._event,
                                    mode=section["watch"], interval=section["poll_interval"],
                                    recursive=True, accept=catalog.accept)
        try:
            self._watcher.start()
        except Exception as e:
            self.log.warn("cannot watch {directory} with inotify ({error}); polling instead",
                          directory=catalog.directory, error=str(e))
            self._watcher = makeWatcher(self.reactor, catalog.directory, self._event,
                                        mode="poll", interval=section["poll_interval"],
                                        recursive=True, accept=catalog.accept)
            self._watcher.start()
        self.log.info("watching {directory} ({how}); {restored} images restored without "
                      "hashing", directory=catalog.directory,
                      how=type(self._watcher).__name__, restored=restored)
        d = catalog.rescan()
        d.addBoth(self._firstScanDone)
        interval = section["rescan_interval"]
        if interval and type(self._watcher).__name__ == "INotifyWatcher":
            self._rescanCall = self.reactor.callLater(interval, self._periodicRescan)

    def _firstScanDone(self, result):
        self.log.info("image catalogue ready: {count} images", count=len(self.catalog))
        if not self.ready.called:
            self.ready.callback(self.catalog)

    def _periodicRescan(self):
        self._rescanCall = None
        try:
            self.catalog.rescan()
        except Exception:
            self.log.failure("periodic rescan of the image directory failed")
        self._rescanCall = self.reactor.callLater(self.section["rescan_interval"],
                                                  self._periodicRescan)

    def _event(self, kind, relpath):
        catalog = self.catalog
        if kind == "complete":
            catalog.changed(relpath)
        elif kind == "removed":
            catalog.removed(relpath)
        else:
            catalog.rescan(relpath)

    def _stopWatching(self):
        if self._rescanCall is not None and self._rescanCall.active():
            self._rescanCall.cancel()
        self._rescanCall = None
        if self._watcher is not None:
            self._watcher.stop()
            self._watcher = None

    def stopService(self):
        service.Service.stopService(self)
        self._stopWatching()
        if self._unhookTFTP is not None:
            self._unhookTFTP()
            self._unhookTFTP = None
        d = self.catalog.stop()

        def stopPool(_):
            pool, self._pool = self._pool, None
            if pool is not None:
                pool.stop()
        return d.addCallback(stopPool)

    def reconfigure(self, config):
        """
        Take a reloaded configuration: ignore rules, kinds and the prefix
        change in place; a new directory, state directory, watch mode or
        symlink policy starts a new catalogue (transfers in flight keep
        their files).
        """
        new = dict(config["images"])
        old, self.section = self.section, new
        catalog = self.catalog
        catalog.prefix = new["prefix"]
        catalog.kinds = dict(new["kinds"])
        catalog.ignore = list(new["ignore"])
        restart = any(old[k] != new[k] for k in ("directory", "state_dir", "watch",
                                                  "poll_interval", "follow_symlinks"))
        if not restart:
            if old["ignore"] != new["ignore"] or old["kinds"] != new["kinds"]:
                catalog.rescan()
            return
        if not self.running:
            return
        self._stopWatching()
        oldCatalog = self.catalog
        self.catalog = self._makeCatalog(new)
        self.catalog._listeners = list(oldCatalog._listeners)
        # Resolvers already in other services' chains follow the new one.
        self.catalog.resolver = oldCatalog.resolver
        self.catalog.resolver.catalog = self.catalog
        self.appliance.catalog = self.catalog
        oldCatalog.stop()
        os.makedirs(new["directory"], exist_ok=True)
        self._startWatching()
        self.catalog._changedNotify()


def makeService(appliance):
    """
    Build the C{images} service and publish its catalogue as
    C{appliance.catalog}.
    """
    return ImagesService(appliance)
