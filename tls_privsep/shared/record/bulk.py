"""The bulk receive path: a run of application data records, decrypted into one buffer.

``next_event(max_data)`` in the steady state (application phase, a read key, nothing skipped, no
handshake message half read) takes the whole application_data records already buffered in one
go, so a bulk reader pays per transport read rather than per record: the run is decrypted straight
into the event's buffer. Anything the run cannot take goes the general way, in order.
"""

from __future__ import annotations

from typing import TypeAlias

from tls_privsep.shared.errors import LocalAlert
from tls_privsep.shared.record.events import ApplicationData
from tls_privsep.shared.record.framing import HEADER_LEN, ContentType, ReceiveBuffer, read_header
from tls_privsep.shared.record.limits import Limits
from tls_privsep.shared.record.protection import RecordProtection

# What a run stopped at, for the next call to deal with: a record it opened that is not application
# data (a KeyUpdate, an alert), or an error it met after some data.
Stop: TypeAlias = tuple[int, bytes] | LocalAlert | None
# Bound once: looking a member up on its enum class costs about 0.1 us in CPython 3.11.
_APPLICATION_DATA = ContentType.application_data


def read_run(
    rx: ReceiveBuffer, read: RecordProtection, max_data: int, limits: Limits
) -> tuple[ApplicationData | None, Stop] | None:
    """Decrypt the run at the front of ``rx``: (its data, what it stopped at), or None if the first
    record is not one a run takes. The data is None if every record of the run was empty.

    The first record is always taken whole; the run stops before a record whose content would not
    fit what is left of ``max_data`` (its type byte counts), and after one that is not application
    data. An error on the first record is raised; after some data it is returned as the stop.
    """
    buf, pos, stop = rx.buf, rx.off, rx.end
    expansion = read.expansion
    # First the framing: where each whole application_data record of the run ends.
    ends: list[int] = []
    room = max_data
    while stop - pos >= HEADER_LEN:
        try:
            ctype, length = read_header(buf, pos)
        except LocalAlert:
            break  # raised by the general path, once the records before it are delivered
        end = pos + HEADER_LEN + length
        if ctype != _APPLICATION_DATA or length <= expansion or stop < end:
            break
        if ends and length - expansion > room:
            break
        room -= length - expansion
        ends.append(end)
        pos = end
    if not ends:
        return None
    # Then the records, each decrypted into the event's buffer right after the content before it.
    pos = rx.off
    out = bytearray(ends[-1] - pos)  # roomier than the plaintext: every record has a header and a tag
    filled = records = 0
    stopped_at: Stop = None
    with memoryview(buf) as src, memoryview(out) as dst:
        for end in ends:
            body = pos + HEADER_LEN
            # The inner plaintext's type byte and padding are overwritten by the next record's.
            slot = filled + end - body - expansion
            try:
                with src[pos:body] as head, src[body:end] as ciphertext, dst[filled:slot] as inner:
                    ctype, n = read.open_into(head, ciphertext, inner)
                rx.off = pos = end
                if ctype != _APPLICATION_DATA:
                    stopped_at = (ctype, bytes(dst[filled : filled + n]))
                    break
                if not n:
                    limits.empty_record()
                    continue
            except LocalAlert as exc:
                if not filled:
                    raise
                stopped_at = exc
                break
            limits.application_data()
            filled += n
            records += 1
    del out[filled:]
    return (ApplicationData(out, records) if filled else None), stopped_at
