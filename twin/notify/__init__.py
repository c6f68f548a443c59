"""Notifications out: alarms and case assignments pushed through webhooks and apprise.

Anything that leaves the twin goes through the outbox (:data:`twin.schema.OUTBOX`), written in
the transaction of what caused it, and is delivered at least once by ``gridtwin notify``
workers (docs/notify.md). Nothing here needs the network until a worker sends.

Raising a notification (any feature)::

    from twin import notify

    notify.enqueue(store, event, subject, data, *, grids=(), recipients=(), personal=None,
                   view=None, key=None, at=None, channels=None) -> int

* ``event`` — a dotted name (``case.assigned``, ``alarm.opened``; a new feature adds its own,
  e.g. ``task.assigned``, with its texts ``notify.<event>.title`` / ``.text`` in its i18n
  fragment, formatted with ``data``);
* ``subject`` — what it is about (``case:<id>``, ``task:<id>``);
* ``data`` — the facts every recipient may see (JSON values; ``{"zh": …, "en": …}`` values
  are taken in each channel's language);
* ``grids`` — the unit grid / responsibility grid it lies in: channels of those grids (and
  channels of every grid) take it;
* ``recipients`` — users or departments it is addressed to: a channel bound to one recipient
  takes only events addressed to them;
* ``personal``, ``view`` — personal fields, sent only as ``view(personal, role, kind)`` returns
  for the channel's role (default: none; :func:`twin.trust.outgoing.notification_view` is the
  trust layer's decision);
* ``key`` — the event's idempotency key (default ``event:subject``): enqueued twice, stored once
  per channel; the row id sent as ``Idempotency-Key`` derives from it;
* returns the number of rows written (0: no channel takes it).

To write the rows in the transaction of the change that causes them, build them with
:func:`outbox_rows` (same arguments) and pass them to the store write:
``store.update_case(…, outbox=rows)``, ``store.create_case(…, outbox=rows)``,
``store.open_alarms(alarms, outbox=alarm_rows(store, alarms))``. If the write fails, no
notification exists.

Channels are administered through :mod:`twin.trust.outgoing` (permission ``notify.manage``);
delivery is :func:`deliver_due` / :func:`run`; webhook receivers check signatures with
:func:`verify`.
"""

from __future__ import annotations

from twin.notify.channels import EVENTS, Channel, read_channels, redact_url
from twin.notify.delivery import (
    DeliveryError,
    DeliveryReport,
    RetryPolicy,
    deliver_due,
    run,
    status,
)
from twin.notify.outbox import (
    alarm_event,
    alarm_rows,
    case_event,
    case_personal,
    enqueue,
    local_time,
    no_personal,
    outbox_rows,
    row_id,
)
from twin.notify.signing import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
    verify,
)

__all__ = [
    "EVENTS", "EVENT_HEADER", "IDEMPOTENCY_HEADER", "SIGNATURE_HEADER", "TIMESTAMP_HEADER",
    "Channel", "DeliveryError", "DeliveryReport", "RetryPolicy", "alarm_event", "alarm_rows",
    "case_event", "case_personal", "deliver_due", "enqueue", "local_time", "no_personal",
    "outbox_rows", "read_channels", "redact_url", "row_id", "run", "signature", "status",
    "verify",
]
