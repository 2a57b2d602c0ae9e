# -*- test-case-name: tests.test_client_receiver -*-
"""
The receiving side, resumable.

  - L{OutputFile}: the preallocated output, written with C{pwrite} at each
    datagram's offset.
  - L{StateFile}: the ranges received so far, next to the output
    (C{PATH.imagecast-state}); a restarted receiver with the same image resumes
    from it.
  - L{Receiver}: the control-channel responders and the data-channel
    protocol; reports what is missing after each round, repairs the rest
    over the control channel when the rounds are over, verifies the sha256.
  - L{ReceiverClient}: keeps the control connection up with C{ClientService}
    (reconnecting and re-registering) and ends with an exit status.
"""

import errno
import fcntl
import hashlib
import json
import os
import socket
import struct
import termios

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols import amp

from provisioner.imagecast import commands
from provisioner.imagecast import ranges as R
from provisioner.client import sockfilter
from provisioner.imagecast.datagram import OVERHEAD, SessionKey
from provisioner.hashing import hashRange, sha256File
from provisioner.net.sockopt import CONTROL_RTO_MIN, memoryBacked, quickRecovery, setReceiveBuffer
from provisioner.net import udpbatch

__all__ = ["ReceiveError", "OutputFile", "StateFile", "Receiver", "ReceiverClient",
           "DataProtocol", "sha256File"]


class ReceiveError(Exception):
    """
    The receiver cannot go on; C{str()} is the operator's message.
    """


def _describeOSError(e, path, what):
    if e.errno == errno.ENOSPC:
        return "%s: disk full (No space left on device) while %s" % (path, what)
    if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "%s: not writable (%s)" % (path, e.strerror)
    if e.errno in (errno.ENOENT, errno.ENOTDIR):
        return "%s: directory does not exist (%s)" % (path, e.strerror)
    if e.errno == errno.EISDIR:
        return "%s: is a directory" % (path,)
    return "%s: %s while %s" % (path, e.strerror or e, what)


def _checkRoom(fd, needed):
    """
    Raise C{ENOSPC} when the file system of C{fd} has fewer than C{needed}
    bytes free.
    """
    st = os.fstatvfs(fd)
    if needed > 0 and st.f_bavail * st.f_frsize < needed:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


class OutputFile:
    """
    The output file, opened (or created) at once so that an unwritable path
    is reported before any network traffic.
    """

    def __init__(self, path):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise ReceiveError(_describeOSError(e, path, "opening"))
        self.size = None

    def prepare(self, size):
        """
        Make the file C{size} bytes long, with the blocks allocated.

        @raise ReceiveError: if the disk cannot hold it.
        """
        try:
            current = os.fstat(self.fd).st_size
            if current > size:
                os.ftruncate(self.fd, size)
            try:
                if memoryBacked(self.fd):
                    # tmpfs: fallocate would commit and zero every page now,
                    # and the writes would then miss the cache on all of
                    # them; check the room instead, and let pages come with
                    # the data
                    _checkRoom(self.fd, size - current)
                    os.ftruncate(self.fd, size)
                elif size:
                    os.posix_fallocate(self.fd, 0, size)
            except OSError as e:
                if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.ftruncate(self.fd, size)
        except OSError as e:
            raise ReceiveError(_describeOSError(
                e, self.path, "allocating %d bytes" % (size,)))
        self.size = size

    def write(self, offset, data):
        """
        Write C{data} at C{offset} now.
        """
        try:
            os.pwrite(self.fd, data, offset)
        except OSError as e:
            raise ReceiveError(_describeOSError(e, self.path, "writing at %d" % (offset,)))

    IOV_MAX = 1024

    def writeRun(self, offset, buffers):
        """
        Write C{buffers} back to back from C{offset} now, with one
        C{pwritev} (per C{IOV_MAX} buffers): a run of datagram payloads
        without joining them first.
        """
        fd = self.fd
        try:
            for i in range(0, len(buffers), self.IOV_MAX):
                part = buffers[i:i + self.IOV_MAX]
                want = sum(map(len, part))
                done = os.pwritev(fd, part, offset)
                if done < want:
                    # short write (a signal, the disk filling): the rest
                    # one pwrite at a time, raising what the disk says
                    rest = b"".join(part)[done:]
                    at = offset + done
                    while rest:
                        n = os.pwrite(fd, rest, at)
                        rest = rest[n:]
                        at += n
                offset += want
        except OSError as e:
            raise ReceiveError(_describeOSError(e, self.path, "writing at %d" % (offset,)))

    def datasync(self):
        """
        C{fdatasync} what was written (blocking; safe from a thread).
        """
        fd = self.fd
        if fd is None:
            return
        try:
            os.fdatasync(fd)
        except OSError:
            pass

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


class StateFile:
    """
    The received ranges of one image, saved atomically as JSON.
    """

    def __init__(self, path):
        self.path = path

    def load(self, sha256, size):
        """
        Return the ranges saved for this image, or C{[]}.
        """
        try:
            with open(self.path, "r") as f:
                state = json.load(f)
            if state.get("sha256") != sha256 or state.get("size") != size:
                return []
            return R.normalise((int(s), int(e)) for s, e in state["ranges"]
                               if 0 <= int(s) < int(e) <= size)
        except (OSError, ValueError, KeyError, TypeError):
            return []

    def save(self, sha256, size, ranges):
        tmp = self.path + ".tmp"
        try:
            # dumps, not dump: one call into the C encoder (dump goes
            # through the pure-Python iterator, 7 ms for 5,000 ranges)
            text = json.dumps({"sha256": sha256, "size": size, "ranges": ranges})
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except OSError:
            pass

    def remove(self):
        for p in (self.path, self.path + ".tmp"):
            try:
                os.unlink(p)
            except OSError:
                pass


class DataProtocol(protocol.DatagramProtocol):
    """
    The data channel: hands every batch of datagrams (a
    L{provisioner.net.udpbatch} port) or single datagram to the L{Receiver}.
    """

    def __init__(self, receiver):
        self.receiver = receiver

    def datagramsReceived(self, payloads, addresses):
        self.receiver.datagramsReceived(payloads, addresses)

    def readBatch(self, sock, batch, size):
        return self.receiver.readBatch(sock, batch, size)

    def datagramReceived(self, data, addr):
        self.receiver.datagramsReceived((data,), (addr,))


def _cut(payloads, start, pieceStart, pieceEnd):
    """
    The parts of C{payloads} (back to back from C{start}) that cover
    C{[pieceStart, pieceEnd)}, as slices.
    """
    out = []
    at = start
    for p in payloads:
        end = at + len(p)
        if end > pieceStart and at < pieceEnd:
            out.append(p[max(pieceStart, at) - at:min(pieceEnd, end) - at])
        if end >= pieceEnd:
            break
        at = end
    return out


class Receiver(amp.CommandLocator):
    """
    One image being received.

    @ivar received: a L{R.RangeSet} of what is on disk.
    @ivar result: a Deferred fired with the exit status.
    """

    log = Logger()

    def __init__(self, reactor, output, clientId, image=None, interface=None, hasher=None,
                 settle=0.03, settleMax=2.0, saveInterval=1.0, progress=None):
        self.reactor = reactor
        self.output = output
        self.state = StateFile(output.path + ".imagecast-state")
        self.clientId = clientId
        self.image = image
        self.interface = interface
        self.hasher = hasher or self._threadHash
        self.settle = settle
        self.settleMax = settleMax
        self.saveInterval = saveInterval
        self.progress = progress
        self.connection = None
        self.session = None
        self.name = None
        self.size = None
        self.sha256 = None
        self.key = None
        self.round = 0
        self.rounds = set()
        self.roundRanges = []
        self.group = None
        self.port = None
        self.received = R.RangeSet()
        self.resumed = 0
        self.bytesReceived = 0
        self.bytesRepaired = 0
        self.bytesFetched = 0
        self.rejected = 0
        self.stale = 0
        self.started = None
        self.joined = None
        self.dataPort = None
        self.finishing = False
        self.failed = None
        self.lastDatagram = 0.0
        self._verifier = None
        self.chunkSize = None
        self.result = defer.Deferred()
        self._dirty = False
        self._saving = False
        self._prefixHash = hashlib.sha256()
        self._hashedUpTo = 0
        self._saveCall = None
        self._position = 0
        self._roundOver = 0
        self._roundEnd = None
        self._reportedRound = 0
        self._progressCall = None
        self.progressInterval = 0.05
        self._settleCall = None
        self.verifySeconds = None
        self.hashedInOrder = 0
        self.hashedAhead = 0
        self._catchingUp = None
        self._filter = None
        self._hashGeneration = 0

    def _inThread(self, f, *args):
        if not hasattr(self.reactor, "getThreadPool"):
            return defer.maybeDeferred(f, *args)
        from twisted.internet import threads
        return threads.deferToThreadPool(self.reactor, self.reactor.getThreadPool(), f, *args)

    def _threadHash(self, path):
        output = self.output
        prefix, upTo = self._prefixHash.copy(), self._hashedUpTo

        def syncAndHash():
            output.datasync()
            return sha256File(path, prefix, upTo)
        return self._inThread(syncAndHash)

    # -- control channel: server pushes -----------------------------------

    @commands.Announce.responder
    def announce(self, session, name, size, sha256, chunkSize, ranges, group, port, key, round):
        ranges = commands.checkRanges(ranges, size)
        if self.finishing or self.failed:
            return {}
        if self.session is not None and session != self.session:
            if sha256 != self.sha256 or size != self.size:
                self.log.info("ignoring session {session} ({name}): already receiving {mine}",
                              session=session, name=name, mine=self.name)
                return {}
        if self.session != session:
            self._adopt(session, name, size, sha256, chunkSize, group, port, key)
        self.round = round
        self.rounds.add(round)
        self.roundRanges = ranges
        need = R.intersect(ranges, self.missing())
        if need:
            self._join()
            self._armFilter(ranges, need)
        else:
            self._leave()
            if self._filter is not None:
                self._filter.disarm()
        if self._reportedRound != round - 1:
            # (after its report of the previous round the position restarted
            # at 0: whatever moved it since is this round's data, taken
            # before this announcement)
            self._position = 0
        # where the round's data ends: once a datagram reaching it is read
        # and the socket is empty, nothing more of the round can come
        self._roundEnd = ranges[-1][1] if ranges else None
        if self._progressCall is not None and self._progressCall.active():
            self._progressCall.cancel()
        self._progressCall = None
        if need:
            # flow control in every round this receiver takes data in
            self._progressCall = self.reactor.callLater(self.progressInterval,
                                                        self._sendProgress, round)
        return {}

    def _armFilter(self, ranges, need):
        """
        Have the kernel drop the datagrams of this round that carry only
        bytes held here (L{sockfilter}): a repair round's receivers each
        want a small part of it.
        """
        sock = getattr(self.dataPort, "socket", None)
        if not isinstance(sock, socket.socket):
            return
        if self._filter is None or self._filter.sock is not sock:
            self._filter = sockfilter.RepairFilter(sock, self.session)
        self._filter.session = self.session
        self._filter.arm(ranges, need, self.chunkSize)

    def _sendProgress(self, roundNumber):
        """
        Flow control: tell the server how far this round's data has been
        taken off the socket, every C{progressInterval} while the round's
        data flows.
        """
        self._progressCall = None
        if (self.failed or self.finishing or roundNumber != self.round
                or self._roundOver == roundNumber or self.joined is None):
            return
        if self.connection is not None:
            try:
                d = self.connection.callRemote(commands.Progress, session=self.session,
                                               round=roundNumber, position=self._position)
            except Exception:
                d = None
            if d is not None:
                d.addErrback(lambda f: None)
        self._progressCall = self.reactor.callLater(self.progressInterval,
                                                    self._sendProgress, roundNumber)

    def _adopt(self, session, name, size, sha256, chunkSize, group, port, key):
        first = self.session is None
        self.session = session
        self.name = name
        self.sha256 = sha256
        self.key = key
        self._verifier = SessionKey(key, session)
        self.chunkSize = chunkSize
        if self.group is not None and (group, port) != (self.group, self.port):
            self._leave()
            self._closeData()
        self.group = group
        self.port = port
        if first or size != self.size:
            self.size = size
            try:
                self.output.prepare(size)
            except ReceiveError as e:
                self.fail(str(e))
                raise commands.BadRequest(str(e))
            resume = self.state.load(sha256, size)
            self.received = R.RangeSet(resume)
            self._prefixHash = hashlib.sha256()
            self._hashedUpTo = 0
            self._hashGeneration += 1
            self.resumed = self.received.total()
            if self.resumed:
                self.log.info("resuming {name}: {bytes} of {size} bytes already here",
                              name=name, bytes=self.resumed, size=size)
        if self.started is None:
            self.started = self.reactor.seconds()
        if self._saveCall is None:
            self._saveCall = self.reactor.callLater(self.saveInterval, self._periodicSave)

    @commands.EndRound.responder
    def endRound(self, session, round):
        if session != self.session or self.finishing or self.failed:
            return {}
        if self._reportedRound >= round or (self._roundOver == round
                                             and self._settleCall is not None):
            # reported (or settling) already: the round's last datagram
            # came before this
            return {}
        self._roundOver = round
        if self._settleCall is not None and self._settleCall.active():
            self._settleCall.cancel()
        self._settleUntil = self.reactor.seconds() + self.settleMax
        self._settleCall = self.reactor.callLater(self.settle, self._settled, round)
        return {}

    def _dataPending(self):
        """
        Whether datagrams wait in the data socket (C{FIONREAD}): a round
        has not settled while this receiver still has data to read.
        """
        sock = getattr(self.dataPort, "socket", None)
        if sock is None or self.joined is None:
            return False
        try:
            raw = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
        except (OSError, ValueError):
            return False
        return struct.unpack("i", raw)[0] > 0

    def _settled(self, roundNumber, seenLast=False):
        """
        Report once the round's data has stopped: the socket empty and no
        datagram for C{settle} seconds after C{EndRound}, or, when the
        round's last datagram has been read (C{seenLast}), the socket empty
        (datagrams of a round come in order: none can follow it). At most
        C{settleMax} seconds either way.
        """
        self._settleCall = None
        now = self.reactor.seconds()
        if (((not seenLast and now - self.lastDatagram < self.settle)
                or self._dataPending()) and now < self._settleUntil):
            self._settleCall = self.reactor.callLater(self.settle, self._settled, roundNumber,
                                                      seenLast)
            return
        self._report(roundNumber)

    def _lastDatagramRead(self):
        """
        The round's last datagram has been read: settle (and report) now
        rather than after C{EndRound} and C{settle} seconds of quiet.
        """
        roundNumber = self.round
        self._roundOver = roundNumber
        if self._settleCall is not None and self._settleCall.active():
            self._settleCall.cancel()
        self._settleUntil = self.reactor.seconds() + self.settleMax
        self._settleCall = self.reactor.callLater(0, self._settled, roundNumber, True)

    def _report(self, roundNumber):
        if self.failed or self.finishing or roundNumber != self.round:
            return
        if self._reportedRound >= roundNumber:
            return
        missing = self.missing()
        self._reportedRound = roundNumber
        # the round's data is over: whatever moves the position from now on
        # belongs to the next round (flow control)
        self._position = 0
        if self._filter is not None:
            # the next round's datagrams may come before its announcement:
            # a window of this round must not judge them
            self._filter.disarm()
        self._save()
        if not missing:
            self._leave()
        else:
            self._hashAhead(missing)
        d = self.connection.callRemote(commands.ReportMissing, session=self.session,
                                       round=roundNumber, ranges=missing)

        def reported(_):
            if not missing:
                self._finish()

        def refused(f):
            f.trap(commands.StaleRound, commands.UnknownSession, commands.NotRegistered)
            self.log.info("report for round {round} refused: {error}", round=roundNumber,
                          error=f.getErrorMessage())
        d.addCallbacks(reported, refused)
        d.addErrback(self._lostCall)
        return d

    #: between rounds, hash ahead only when at least this much held data
    #: follows the hashed prefix
    HASH_AHEAD_MIN = 1 << 20

    def _hashAhead(self, missing):
        """
        Between rounds (after a report): the holes a repair round filled
        may have joined held data to the in-order prefix; hash the held bytes from the end of the prefix up to the
        first byte still missing, off the reactor thread, while the next
        rounds run, so that the check at the end reads less back. SHA-256
        only takes data in order, so this stops at the first hole.

        The bytes hashed are held, so no datagram writes them meanwhile
        nor extends the prefix at its old end; the result is adopted only
        if the prefix has not changed (a new image resets it).

        @param missing: what this receiver still lacks (not empty).
        """
        start = self._hashedUpTo
        end = missing[0][0]
        if self._catchingUp is not None or end - start < self.HASH_AHEAD_MIN:
            return
        generation = self._hashGeneration
        done = self._catchingUp = defer.Deferred()
        d = self._inThread(hashRange, self.output.path, self._prefixHash.copy(), start, end)

        def hashed(digest):
            if self._hashGeneration == generation and self._hashedUpTo == start:
                self._prefixHash = digest
                self._hashedUpTo = end
                self.hashedAhead += end - start

        def failed(f):
            # the check at the end reads these bytes back instead
            self.log.info("hashing ahead failed: {error}", error=f.getErrorMessage())

        def over(_):
            self._catchingUp = None
            done.callback(None)
        d.addCallbacks(hashed, failed).addBoth(over)

    @commands.EndSession.responder
    def endSession(self, session, unrecoverable, reason=None):
        commands.checkRanges(unrecoverable)
        if session != self.session or self.finishing or self.failed:
            if self.session is None:
                # never got an announcement: nothing to repair from
                return {}
            return {}
        self._leave()
        self.log.info("no more rounds ({reason}); fetching {bytes} bytes over the control "
                      "channel", reason=reason, bytes=R.total(self.missing()))
        self.reactor.callLater(0, self._repair)
        return {}

    #: FetchRange calls in flight at once while repairing
    FETCH_WINDOW = 8

    @defer.inlineCallbacks
    def _repair(self):
        chunks = R.chunks(self.missing(), commands.FETCH_MAX)
        fetchers = [self._fetch(chunks) for _ in range(self.FETCH_WINDOW)]
        try:
            yield defer.gatherResults(fetchers, consumeErrors=True)
        except defer.FirstError as e:
            error = e.subFailure.value
            if isinstance(error, ReceiveError):
                self.fail(str(error))
            else:
                self.log.info("repair interrupted: {error}", error=error)
            return
        if not self.missing():
            self._finish()

    @defer.inlineCallbacks
    def _fetch(self, chunks):
        """
        One of the L{FETCH_WINDOW} fetchers of L{_repair}: fetch and write
        the next chunk of C{chunks} until there is none.
        """
        for offset, length in chunks:
            if self.failed or self.connection is None:
                return
            result = yield self.connection.callRemote(
                commands.FetchRange, session=self.session, offset=offset, length=length)
            data = result["data"]
            if len(data) != length:
                raise ReceiveError("server returned %d bytes for %d at %d" % (
                    len(data), length, offset))
            if self.failed:
                return
            self.output.write(offset, data)
            new = self.received.add(offset, offset + length)
            self.bytesReceived += new
            self.bytesRepaired += new
            self.bytesFetched += new
            self._dirty = True

    # -- data channel -----------------------------------------------------

    def datagramReceived(self, data, addr):
        """
        One datagram (see L{datagramsReceived}).
        """
        self.datagramsReceived((data,), (addr,))

    def datagramsReceived(self, datagrams, addresses):
        """
        A batch of data datagrams (C{memoryview}s valid during the call
        only): every tag is verified, then the bookkeeping is done once per
        run of consecutive datagrams: the parts of a run this receiver
        lacks are written with one C{pwritev} each, added to the received
        ranges once, and hashed into the in-order prefix when they extend
        it. Bad and stale datagrams are counted, not logged one by one.
        """
        verifier = self._verifier
        if verifier is None or self.finishing or self.failed:
            return
        runs, rejected, stale = verifier.verifyBatch(datagrams, self.round, self.size,
                                                     self.received)
        self._dropped(rejected, stale, addresses[0] if addresses else None)
        if not runs:
            return
        self.lastDatagram = self.reactor.seconds()
        received = self.received
        write = self.output.writeRun
        prefix = self._prefixHash
        position = self._position
        new = 0
        try:
            for start, end, payloads in runs:
                if end > position:
                    position = end
                pieces = received.gaps(start, end)
                if not pieces:
                    continue
                for pieceStart, pieceEnd in pieces:
                    if pieceStart == start and pieceEnd == end:
                        buffers = payloads
                    else:
                        buffers = _cut(payloads, start, pieceStart, pieceEnd)
                    write(pieceStart, buffers)
                    if pieceStart == self._hashedUpTo:
                        # in order: hash it now, so that the check at the
                        # end only reads what came out of order
                        for b in buffers:
                            prefix.update(b)
                        self._hashedUpTo = pieceEnd
                    new += received.add(pieceStart, pieceEnd)
        except ReceiveError as e:
            self.fail(str(e))
            return
        finally:
            self._position = position
        self._afterRuns(position, new)

    def _dropped(self, rejected, stale, peer):
        """
        Count a batch's bad and stale datagrams (not logged one by one);
        C{peer} is the source of a bad one, for the debug log.
        """
        if rejected:
            self.rejected += rejected
            self.log.debug("dropped {count} datagrams from {peer} (malformed, bad tag, other "
                           "session or beyond the image)", count=rejected, peer=peer)
        if stale:
            self.stale += stale

    _readBuffer = None

    def readBatch(self, sock, batch, size):
        """
        Take up to C{batch} datagrams off the data socket with the C fast
        path (L{SessionKey.receiveBatch}: read, verify and write in one
        call, no Python object per datagram), then do the bookkeeping of
        L{datagramsReceived} once per run. The runs are written whole: a
        run's bytes that were already here are the same verified bytes of
        the same image, and a datagram wholly here is dropped before its
        tag.

        @return: the datagrams read, or L{None} when the fast path cannot
            be used now (not built, no session, finishing): the port then
            reads and hands the batch to L{datagramsReceived}.
        """
        verifier = self._verifier
        if (verifier is None or self.finishing or self.failed
                or not verifier.canReceive() or self.output.fd is None):
            return None
        buf = self._readBuffer
        if buf is None or len(buf) < batch * size:
            buf = self._readBuffer = bytearray(batch * size)
        (count, runs, rejected, stale, truncated, peer, error,
         at) = verifier.receiveBatch(sock.fileno(), buf, size, batch, self.round, self.size,
                                     self.received, self.output.fd, self._hashedUpTo)
        # (peer is None unless a datagram was rejected)
        self._dropped(rejected + truncated, stale, udpbatch._decodeName(peer) if peer else None)
        if runs:
            self.lastDatagram = self.reactor.seconds()
            received = self.received
            prefix = self._prefixHash
            position = self._position
            new = 0
            for start, end, data in runs:
                if end > position:
                    position = end
                if data is not None:
                    # in order: hash it now (see datagramsReceived)
                    prefix.update(data)
                    self._hashedUpTo = end
                new += received.add(start, end)
            self._position = position
        if error:
            self.fail(_describeOSError(OSError(error, os.strerror(error)), self.output.path,
                                       "writing at %d" % (at,)))
            return count
        if runs:
            self._afterRuns(position, new)
        return count

    def _afterRuns(self, position, new):
        """
        After a batch's runs are written: move the kernel filter's window,
        report at the round's end, count the new bytes.
        """
        window = self._filter
        if window is not None and window.end is not None and position >= window.end:
            window.advance(position)
        if (self._roundEnd is not None and position >= self._roundEnd
                and self._roundOver != self.round and self._reportedRound < self.round):
            self._lastDatagramRead()
        if new:
            self.bytesReceived += new
            if self.round > 1:
                self.bytesRepaired += new
            self._dirty = True

    def _join(self):
        if self.joined == self.group:
            return
        from twisted.internet import error as ierror
        if self.dataPort is None:
            try:
                # recvmmsg batches: one system call and one bookkeeping
                # pass per up to 64 datagrams
                self.dataPort = udpbatch.listenMulticast(
                    self.reactor, self.port, DataProtocol(self),
                    maxPacketSize=max(2048, (self.chunkSize or 0) + OVERHEAD),
                    listenMultiple=True)
            except ierror.CannotListenError as e:
                self.fail("cannot listen on UDP port %d: %s" % (self.port, e))
                return
            sock = getattr(self.dataPort, "socket", None)
            if sock is not None:
                setReceiveBuffer(sock, 64 * 1024 * 1024)
        self.dataPort.joinGroup(self.group, self.interface or "0.0.0.0")
        self.joined = self.group
        self.log.debug("joined {group}:{port}", group=self.group, port=self.port)

    def _leave(self):
        if self.joined is None or self.dataPort is None:
            return
        try:
            self.dataPort.leaveGroup(self.joined, self.interface or "0.0.0.0")
        except Exception:
            pass
        self.joined = None

    def _closeData(self):
        self._filter = None
        if self.dataPort is not None:
            self.dataPort.stopListening()
            self.dataPort = None

    # -- bookkeeping ------------------------------------------------------

    def missing(self):
        """
        Return what the image still lacks here.
        """
        if self.size is None:
            return []
        return R.subtract([(0, self.size)] if self.size else [], self.received.ranges())

    def _save(self):
        """
        Save the received ranges: off the reactor thread (C{fdatasync} can
        take long and the data socket must be read meanwhile), make the data
        durable and write the state file with the ranges as they were when
        this was called. A state file never names bytes that are not on
        disk.
        """
        if self.session is None or not self._dirty or self._saving:
            return
        self._dirty = False
        snapshot = self.received.ranges()
        sha256, size, output, state = self.sha256, self.size, self.output, self.state

        def durable():
            output.datasync()
            state.save(sha256, size, snapshot)
        self._saving = True
        d = self._inThread(durable)

        def done(result):
            self._saving = False
        d.addBoth(done)

    def _periodicSave(self):
        self._saveCall = None
        if self.finishing or self.failed:
            return
        self._save()
        if self.progress is not None:
            self.progress(self)
        self._saveCall = self.reactor.callLater(self.saveInterval, self._periodicSave)

    def _finish(self):
        if self.finishing or self.failed:
            return
        self.finishing = True
        self._leave()
        self._closeData()
        verifyStarted = self.reactor.seconds()
        # hashing ahead may still run: the check starts where it ends
        pending = self._catchingUp
        d = defer.succeed(None) if pending is None else pending

        def check(_):
            self.hashedInOrder = self._hashedUpTo
            return self.hasher(self.output.path)
        d = d.addCallback(check)

        def hashed(digest):
            self.verifySeconds = self.reactor.seconds() - verifyStarted
            if digest != self.sha256:
                self.state.remove()
                raise ReceiveError("sha256 mismatch: got %s, the image is %s" % (
                    digest, self.sha256))
            return self.connection.callRemote(commands.Complete, session=self.session,
                                              sha256=digest)

        def completed(_):
            self.state.remove()
            self._done(0)

        def failed(f):
            if f.check(ReceiveError):
                self.finishing = False
                self.fail(f.getErrorMessage())
            elif f.check(commands.ChecksumMismatch):
                self.finishing = False
                self.fail("server refused the checksum: %s" % (f.getErrorMessage(),))
            else:
                # connection lost while completing: verified locally, report
                # again after reconnecting
                self.log.info("completion not acknowledged ({error}); again after "
                              "reconnecting", error=f.getErrorMessage())
        d.addCallback(hashed).addCallbacks(completed, failed)

    def _lostCall(self, f):
        self.log.debug("control call failed: {error}", error=f.getErrorMessage())

    def fail(self, message):
        """
        Give up with C{message}; tell the server, exit with status 1.
        """
        if self.failed:
            return
        self.failed = message
        self._leave()
        self._closeData()
        self._save()
        if self.connection is not None and self.session is not None:
            d = self.connection.callRemote(commands.Leave, session=self.session,
                                           reason=message[:500])
            d.addErrback(lambda f: None)
            d.addBoth(lambda _: self._done(1))
        else:
            self._done(1)

    def _done(self, status):
        if self._progressCall is not None and self._progressCall.active():
            self._progressCall.cancel()
        self._progressCall = None
        if self._saveCall is not None and self._saveCall.active():
            self._saveCall.cancel()
        self._saveCall = None
        if not self.result.called:
            self.result.callback(status)

    def connected(self, connection):
        """
        A (new) control connection is up and registered.
        """
        self.connection = connection
        # a report sent on the old connection may have been lost with it:
        # the server's EndRound after re-registering asks for it again
        self._reportedRound = 0
        if self.finishing and not self.failed and not self.result.called:
            # completion was lost with the old connection: verify again
            self.finishing = False
            self._finish()

    def summary(self):
        elapsed = (self.reactor.seconds() - self.started) if self.started else 0.0
        return {"image": self.name, "size": self.size, "rounds": len(self.rounds),
                "bytes_received": self.bytesReceived, "bytes_repaired": self.bytesRepaired,
                "bytes_fetched": self.bytesFetched, "bytes_resumed": self.resumed,
                "rejected_datagrams": self.rejected, "stale_datagrams": self.stale,
                "seconds": round(elapsed, 3),
                "verify_seconds": (None if self.verifySeconds is None
                                   else round(self.verifySeconds, 3)),
                "hashed_in_order": self.hashedInOrder}


class _ReceiverAMP(amp.AMP):
    #: see C{multicast.control_rto_min}: a lost report or progress message
    #: is sent again after tens of milliseconds, not hundreds
    rtoMin = CONTROL_RTO_MIN

    def __init__(self, receiver):
        amp.AMP.__init__(self, locator=receiver)
        self.receiver = receiver

    def connectionMade(self):
        amp.AMP.connectionMade(self)
        quickRecovery(self.transport, self.rtoMin)


class _ReceiverFactory(protocol.Factory):
    def __init__(self, receiver):
        self.receiver = receiver

    def buildProtocol(self, addr):
        p = _ReceiverAMP(self.receiver)
        p.factory = self
        return p


class ReceiverClient:
    """
    The control connection of a L{Receiver}: connects, registers, reconnects
    and re-registers after a loss, and gives up when the server has been
    unreachable for C{timeout} seconds.
    """

    log = Logger()

    def __init__(self, reactor, endpoint, receiver, address, timeout=60.0, serverName=""):
        self.reactor = reactor
        self.endpoint = endpoint
        self.receiver = receiver
        self.address = address
        self.timeout = timeout
        self.serverName = serverName
        self.lastUp = reactor.seconds()
        self.everConnected = False
        self.service = ClientService(
            endpoint, _ReceiverFactory(receiver),
            retryPolicy=backoffPolicy(initialDelay=0.3, maxDelay=3.0, factor=1.7),
            clock=reactor, prepareConnection=self._register)
        self._watch = None

    def _register(self, proto):
        # The server may push Announce while it handles Register (the
        # receiver that completes min_receivers starts the session): answers
        # to it, Leave included, go on this connection, after Register.
        self.receiver.connection = proto
        address = self.address
        if not address:
            try:
                address = proto.transport.getHost().host
            except Exception:
                address = ""
        d = proto.callRemote(commands.Register, clientId=self.receiver.clientId,
                             address=address, image=self.receiver.image)

        def registered(_):
            self.everConnected = True
            self.receiver.connected(proto)
            proto.connectionLost = self._wrapLost(proto.connectionLost)
        return d.addCallback(registered)

    def _wrapLost(self, original):
        def connectionLost(reason):
            self.lastUp = self.reactor.seconds()
            if self.receiver.connection is not None:
                self.receiver.connection = None
                if not self.receiver.result.called:
                    self.log.info("control connection lost; reconnecting")
            return original(reason)
        return connectionLost

    def _check(self):
        self._watch = None
        if self.receiver.result.called:
            return
        if self.receiver.connection is None and \
                self.reactor.seconds() - self.lastUp > self.timeout:
            what = "lost the server" if self.everConnected else "cannot reach the server"
            self.receiver.fail("%s %s (no control connection for %.0f s)" % (
                what, self.serverName, self.timeout))
            return
        self._watch = self.reactor.callLater(0.5, self._check)

    def run(self):
        """
        @return: a Deferred firing with the exit status.
        """
        self.service.startService()
        self._watch = self.reactor.callLater(0.5, self._check)
        d = self.receiver.result

        def stop(status):
            if self._watch is not None and self._watch.active():
                self._watch.cancel()
            stopped = self.service.stopService()
            return stopped.addBoth(lambda _: status)
        return d.addCallback(stop)
