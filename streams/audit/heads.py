# Copyright 2026 Escalation Gate contributors. SPDX-License-Identifier: Apache-2.0
"""Find the heads of several chains that share one audit partition, reading it backwards.

Several chains live in one audit partition (``proposals:2``, ``control:2``, ... and
the checkpoint chains of the writers that held them). A worker assigned some of
them must know where each ends before it seals anything. The last record of the
partition says that for one chain only, and a chain written rarely (``control:2``)
may end millions of records back. So the partition is read backwards, one window
at a time (the newest first, each read forwards), and a chain is resolved by the
newest thing the partition says about it: its own last event, or the newest
checkpoint that lists it (a checkpoint lists every chain its writer held in the
partition, empty ones with seq -1). With a checkpoint every few seconds, the scan
stops within a few seconds' worth of records whatever the partition's length.

Pure: :class:`HeadScan` is fed the windows' records; the Kafka reading is in
:mod:`streams.audit.resync`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from streams.audit.chain import GENESIS, ChainHead
from streams.errors import AuditChainError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from streams.keys import PublicKeys


def _body(raw: bytes) -> dict[str, Any] | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    body = obj.get("event", obj) if isinstance(obj, dict) else None
    return body if isinstance(body, dict) else None


@dataclass(slots=True)
class HeadScan:
    """The heads of ``wanted`` chains of one audit partition, from windows fed newest first.

    ``keys``: the gate's public keys; when given, a checkpoint whose signature does not
    verify is ignored (a forged checkpoint cannot move a chain's head).
    """

    wanted: frozenset[str]
    keys: PublicKeys | None = None
    heads: dict[str, ChainHead] = field(default_factory=dict)
    windows: int = 0
    records: int = 0
    unreadable: int = 0

    @property
    def done(self) -> bool:
        """Every wanted chain is resolved."""
        return self.wanted <= self.heads.keys()

    def window(self, records: Iterable[bytes]) -> None:
        """One window of the partition, its records in offset order; windows newest first."""
        self.windows += 1
        newest: dict[str, ChainHead] = {}
        for raw in records:
            self.records += 1
            body = _body(raw)
            if body is None:
                self.unreadable += 1
                continue
            try:
                self._read(body, newest)
            except (AuditChainError, KeyError, TypeError, AttributeError):
                self.unreadable += 1
        for chain, head in newest.items():
            self.heads.setdefault(chain, head)

    def _read(self, body: dict[str, Any], newest: dict[str, ChainHead]) -> None:
        chain = body["chain"]
        if not isinstance(chain, str):
            msg = "chain: not a string"
            raise TypeError(msg)
        if chain in self.wanted:
            newest[chain] = ChainHead(chain=chain, seq=body["seq"], hash=body["hash"])
        if body.get("kind") != "checkpoint":
            return
        data = body["data"]
        listed = data["heads"]
        if not self.wanted & listed.keys():
            return
        if self.keys is not None and self.keys.verify(data) is not None:
            self.unreadable += 1
            return
        for name in self.wanted & listed.keys():
            head = listed[name]
            seq = head["seq"]
            newest[name] = (
                ChainHead.empty(name)
                if seq == -1 and head["hash"] == GENESIS
                else ChainHead(chain=name, seq=seq, hash=head["hash"])
            )

    def result(self) -> dict[str, ChainHead]:
        """Every wanted chain's head; a chain the partition says nothing about is empty."""
        return {name: self.heads.get(name, ChainHead.empty(name)) for name in sorted(self.wanted)}
