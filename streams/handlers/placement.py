"""PURE: a proposal is decided on its service's partition, whoever produced it.

The velocity guard counts a service's autonomous executions in order on one partition
(the proposals topic is keyed by service, murmur2 as Kafka's Java clients and aiokafka
partition). A producer with another partitioner (librdkafka's and kcat's default is
CRC32) would spread one service over several partitions, decided by several workers
at once. Such a proposal is not decided where it landed: it is re-produced, unchanged,
to the partition its key belongs to, and decided there.
"""

from __future__ import annotations

from streams.handlers.effects import AuditDraft, Count, Effects, Origin, Send
from streams.models import Proposal


def misplaced(proposal: Proposal, origin: Origin, home: int) -> Effects | None:
    """The effects that move a proposal to ``home``, the partition Kafka's murmur2
    partitioner gives its service (the shell computes it); ``None`` when it is there."""
    key = proposal.action.target.service.encode()
    if origin.partition == home:
        return None
    audit = AuditDraft(
        "proposal_repartitioned",
        event_id=f"moved:{origin.topic}:{origin.partition}:{origin.offset}",
        at=origin.instant,
        actor=proposal.source.ai_system,
        proposal_id=proposal.proposal_id,
        data={"from_partition": origin.partition, "to_partition": home},
        fields={"service": proposal.action.target.service},
    )
    return Effects(
        sends=(Send("proposals", origin.value, key, partition=home),),
        audits=(audit,),
        metrics=(Count("repartitioned"),),
    )
