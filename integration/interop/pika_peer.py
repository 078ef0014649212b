#!/usr/bin/env python3
"""A service in another language on Hexeract's bus, with nothing but pika.

Two commands, used by integration/tests/rabbitmq_interop.rs and readable as
an example of docs/wire-format.md:

  publish  sends a JSON message the way a foreign service would: only a
           message id, the message name as `type`, the content type and an
           application header. Prints `PUBLISHED <message_id>`.

  consume  takes one message from a queue and checks every property and
           header Hexeract promises. Prints `VERDICT ok`, or
           `VERDICT fail: <what differs>` and exits 1.

    python3 pika_peer.py publish --url amqp://guest:guest@127.0.0.1:5672/%2f \
        --exchange hexeract.events --type orders.placed.v1 --body '{"id": 1}'
    python3 pika_peer.py consume --url ... --queue q --type orders.placed.v1 \
        --message-id ... --correlation-id ... --causation-id ... --app-id hexeract
"""

import argparse
import json
import sys
import time
import uuid

import pika


def connect(url):
    parameters = pika.URLParameters(url)
    # Fail in seconds, not minutes, when the broker is not there.
    parameters.socket_timeout = 5
    parameters.blocked_connection_timeout = 5
    return pika.BlockingConnection(parameters)


def publish(args):
    message_id = str(uuid.uuid4())
    properties = pika.BasicProperties(
        message_id=message_id,
        type=args.type,  # the message name: Hexeract routes on it
        content_type="application/json",
        delivery_mode=pika.DeliveryMode.Persistent,
        # Application headers reach the handler as `ctx.meta().headers`;
        # numbers are read as their decimal text.
        headers={"tenant": "acme", "source-version": 3},
    )
    connection = connect(args.url)
    try:
        channel = connection.channel()
        # Publisher confirms, and `mandatory` so that an unroutable message
        # is an error here rather than a silent drop.
        channel.confirm_delivery()
        channel.basic_publish(
            exchange=args.exchange,
            routing_key=args.routing_key or args.type,
            body=args.body.encode("utf-8"),
            properties=properties,
            mandatory=True,
        )
    finally:
        connection.close()
    print(f"PUBLISHED {message_id}", flush=True)


def get_one(channel, queue, timeout):
    """The next message on `queue`, waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue=queue, auto_ack=False)
        if method is not None:
            return method, properties, body
        time.sleep(0.05)
    return None, None, None


def text(value):
    """A header as text: pika gives long strings as str, or bytes when they are not UTF-8."""
    return value.decode("utf-8") if isinstance(value, bytes) else value


def check(args, properties, body):
    """Every way the message differs from what Hexeract promises."""
    problems = []

    def expect(what, found, wanted):
        if found != wanted:
            problems.append(f"{what} is {found!r}, expected {wanted!r}")

    now = time.time()
    expect("message_id", properties.message_id, args.message_id)
    expect("correlation_id", properties.correlation_id, args.correlation_id)
    expect("type", properties.type, args.type)
    expect("content_type", properties.content_type, "application/json")
    expect("delivery_mode", properties.delivery_mode, 2)
    expect("app_id", properties.app_id, args.app_id)
    if not isinstance(properties.timestamp, int) or abs(properties.timestamp - now) > 300:
        problems.append(f"timestamp {properties.timestamp!r} is not a recent Unix time in seconds")

    headers = {name: text(value) for name, value in (properties.headers or {}).items()}
    if args.causation_id:
        expect("header x-causation-id", headers.get("x-causation-id"), args.causation_id)
    expect("header x-attempt", headers.get("x-attempt"), "1")
    millis = headers.get("x-timestamp-ms")
    if millis is None or not millis.isdigit():
        problems.append(f"header x-timestamp-ms is {millis!r}, expected Unix milliseconds")
    elif isinstance(properties.timestamp, int) and int(millis) // 1000 != properties.timestamp:
        problems.append(f"header x-timestamp-ms {millis} and timestamp {properties.timestamp} disagree")
    for pair in args.header:
        name, _, value = pair.partition("=")
        expect(f"header {name}", headers.get(name), value)

    try:
        payload = json.loads(body)
    except ValueError as error:
        problems.append(f"the body is not JSON: {error}")
    else:
        if args.body is not None:
            expect("body", payload, json.loads(args.body))
    return problems


def consume(args):
    connection = connect(args.url)
    try:
        channel = connection.channel()
        method, properties, body = get_one(channel, args.queue, args.timeout)
        if method is None:
            print(f"VERDICT fail: no message on {args.queue} within {args.timeout} s", flush=True)
            return 1
        problems = check(args, properties, body)
        # Ack only what was understood; anything else goes back to the queue.
        if problems:
            channel.basic_nack(method.delivery_tag, requeue=True)
        else:
            channel.basic_ack(method.delivery_tag)
    finally:
        connection.close()
    if problems:
        print("VERDICT fail: " + "; ".join(problems), flush=True)
        return 1
    print("VERDICT ok", flush=True)
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    sender = commands.add_parser("publish", help="publish one JSON message")
    sender.add_argument("--url", required=True)
    sender.add_argument("--exchange", default="hexeract.events")
    sender.add_argument("--routing-key", help="default: the message name")
    sender.add_argument("--type", required=True, help="the message name")
    sender.add_argument("--body", required=True, help="JSON text")

    receiver = commands.add_parser("consume", help="take one message and check it")
    receiver.add_argument("--url", required=True)
    receiver.add_argument("--queue", required=True)
    receiver.add_argument("--type", required=True)
    receiver.add_argument("--message-id", required=True)
    receiver.add_argument("--correlation-id", required=True)
    receiver.add_argument("--causation-id")
    receiver.add_argument("--app-id", default="hexeract")
    receiver.add_argument("--header", action="append", default=[], help="name=value, repeatable")
    receiver.add_argument("--body", help="the expected JSON body")
    receiver.add_argument("--timeout", type=float, default=15)

    args = parser.parse_args()
    if args.command == "publish":
        publish(args)
        return 0
    return consume(args)


if __name__ == "__main__":
    sys.exit(main())
