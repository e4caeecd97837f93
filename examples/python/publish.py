#!/usr/bin/env python3
"""Publish HP Norton records the way docs/message-format.md asks, in Python.

An upstream system's publisher, written from the contract alone: the records
exchange and routing keys, persistent messages with publisher confirms and
`mandatory` (a message no queue takes comes back as an error), JSON bodies
of one record or an array, deletes (the key, `"_deleted": true`, a
version), and versions from the caller's own change
sequence (in each record's `_version`, or for a whole message in the
`x-hpn-version` header).

    HPN_AMQP_URL=amqp://user:pass@host:5672/%2f python3 publish.py

publishes a small demonstration set (see `main`); `Publisher` is the part
to copy.
"""
import json
import os
import sys
import time

import pika

CONTENT_TYPE = "application/json"
KINDS = ("customer", "product", "rental")


class Publisher:
    """Confirmed, mandatory, persistent publishes to the records exchange."""

    def __init__(self, url, prefix="hp_norton", app_id="python-example"):
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()
        # Every publish waits for the broker's confirm, and an unroutable one
        # raises UnroutableError instead of vanishing.
        self.channel.confirm_delivery()
        self.exchange = f"{prefix}.records"
        self.app_id = app_id

    def publish(self, kind, records, version=None):
        """Publish one record (a dict) or a list of them of one kind.

        `version`: the version of every record that has no `_version` of its
        own (the x-hpn-version header). Returns once the broker confirmed."""
        if kind not in KINDS:
            raise ValueError(f"kind is one of {KINDS}, not {kind!r}")
        headers = {"x-published-ms": int(time.time() * 1000)}
        if version is not None:
            headers["x-hpn-version"] = int(version)
        properties = pika.BasicProperties(
            content_type=CONTENT_TYPE,
            delivery_mode=pika.DeliveryMode.Persistent,
            type=kind,
            app_id=self.app_id,
            timestamp=int(time.time()),
            headers=headers,
        )
        body = json.dumps(records, ensure_ascii=False).encode("utf-8")
        # Raises pika.exceptions.UnroutableError or NackError if the broker
        # did not take it: then it is not delivered, and may be sent again.
        self.channel.basic_publish(self.exchange, kind, body, properties, mandatory=True)

    def close(self):
        self.connection.close()


def main():
    url = os.environ.get("HPN_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f").split(",")[0]
    prefix = os.environ.get("HPN_QUEUE_PREFIX", "hp_norton")
    publisher = Publisher(url, prefix)
    customers = [
        {"user_id": f"PY{i:03}", "name": f"Customer {i}", "address": f"{i} Main St", "zip_code": "98101",
         "phone_number": "206-555-0100", "email": f"c{i}@example.com", "_version": 10}
        for i in range(100)
    ]
    # An array of 100 customers, each with its own version.
    publisher.publish("customer", customers)
    # One customer on its own, newer: it replaces PY000's first version.
    publisher.publish("customer", dict(customers[0], name="Customer 0, renamed", _version=11))
    # An older version of PY001, published later: the store keeps version 10.
    publisher.publish("customer", dict(customers[1], name="Customer 1, stale", _version=9))
    # Products versioned for the whole message by the header.
    products = [{"product_id": f"PYP{i}", "description": f"Chair {i}", "product_type": "livingroom",
                 "quantity_available": i} for i in range(10)]
    publisher.publish("product", products, version=5)
    publisher.publish("rental", [{"product_id": "PYP1", "user_id": "PY000", "_version": 1}])
    # Deletes: the key, the marker and a version newer than the record's.
    publisher.publish("customer", [{"user_id": "PY002", "_deleted": True, "_version": 12},
                                   {"user_id": "PY003", "_deleted": True, "_version": 12}])
    # PY003's version 10 again, published after its delete: it stays deleted.
    publisher.publish("customer", customers[3])
    # A record the importer refuses (no name): it goes to the dead-letter
    # queue with the reason, the others are stored.
    publisher.publish("customer", {"user_id": "PYBAD", "address": "x", "phone_number": "1", "email": "b@x.com"})
    publisher.close()
    print(json.dumps({"customers": 98, "deleted": 2, "products": 10, "rentals": 1, "refused": 1}))


if __name__ == "__main__":
    sys.exit(main())
